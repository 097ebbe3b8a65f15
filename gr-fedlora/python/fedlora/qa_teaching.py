#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the teaching blocks (gnuradio.fedlora.teaching), each against an independent reference:

- aircomp_round_loop: every round's aggregate equals kernel_aircomp_round_waveform's for the same updates and
  channel seed, bit for bit (the loop runs the gr-fedlora blocks, the reference the fedlora_phy kernels in one
  call); the reference PDU and nmse_measured equal numpy's sum and NMSE; the quality dict carries the round's
  settings; the flowgraph ends by itself after n_rounds; a round without a frame is lost, and the loop goes on;
  bad parameters are refused by name;
- pdu_to_constellation, dict_to_vectors, dict_to_history: their streams equal numpy's packing, rows in dB and
  sliding windows of the same messages; malformed messages are dropped.
"""

import contextlib
import io

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio import fedlora
from gnuradio.fedlora import aircomp, teaching

FS = 15.36e6
FRAME = dict(fft_size=256, cp_len=32, n_occupied=200, pilot_spacing=20, sample_rate=FS, pilot_repeats=2,
             reference_interval=8)
DONE = pmt.cons(pmt.intern("done"), pmt.from_long(1))


def messages(dbg):
    return [dbg.get_message(i) for i in range(dbg.num_messages())]


def post(block, port, msg):
    block.to_basic_block()._post(pmt.intern(port), msg)


def run_loop(**kwargs):
    """Runs an aircomp_round_loop to its end; returns (its messages per port, its stdout, the block)."""
    tb = gr.top_block()
    loop = fedlora.aircomp_round_loop(interval=0.0, **kwargs)
    dbg = {p: blocks.message_debug() for p in ("aggregate", "reference", "csi", "quality")}
    for port, d in dbg.items():
        tb.msg_connect((loop, port), (d, "store"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tb.run()  # returns once the loop is done: it tells its message neighbours
    return {p: messages(d) for p, d in dbg.items()}, out.getvalue(), loop


def run_source(block, msgs, sinks):
    """Posts msgs and then GNU Radio's "done" to a message-driven source whose output i feeds sinks[i], runs it
    to its end and returns what each sink got."""
    tb = gr.top_block()
    for i, sink in enumerate(sinks):
        tb.connect((block, i), sink)
    for m in msgs:
        post(block, "in", m)
    post(block, "system", DONE)  # handled after the messages above: the source writes them, then finishes
    tb.run()
    return [np.asarray(sink.data()) for sink in sinks]


def f64_dict(**entries):
    d = pmt.make_dict()
    for key, val in entries.items():
        if isinstance(val, (list, np.ndarray)):
            v = pmt.init_f64vector(len(val), [float(x) for x in val])
        elif isinstance(val, int):
            v = pmt.from_long(val)
        else:
            v = pmt.from_double(float(val))
        d = pmt.dict_add(d, pmt.intern(key), v)
    return d


class qa_teaching(gr_unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Bit-identical FFTs in the loop's blocks and in the reference kernel alike.
        fedlora.set_fft_planning("estimate")

    # ---- aircomp_round_loop -------------------------------------------------------------------------------------

    def check_rounds(self, n_devices, snr_db, policy, alphabet, seed, n_rounds, dim=1024, g_th=0.1):
        got, out, loop = run_loop(n_devices=n_devices, snr_db=snr_db, policy=policy, alphabet=alphabet,
                                  seed=seed, n_rounds=n_rounds, dim=dim, g_th=g_th)
        self.assertTrue(loop.finished())
        self.assertEqual(loop.rounds(), n_rounds)
        self.assertEqual(loop.rounds_lost(), 0)
        for port in ("aggregate", "reference", "csi", "quality"):
            self.assertEqual(len(got[port]), n_rounds, port)
        lines = [l for l in out.splitlines() if l.startswith("round ")]
        self.assertEqual(len(lines), n_rounds)
        for r in range(n_rounds):
            updates = teaching.teaching_updates(n_devices, dim, alphabet, seed, r)
            _, _, scale = aircomp.round_messages(updates)
            channel = fedlora.channel_kernel(n_devices=n_devices, n_tx=1, n_rx=1, sample_rate=FS, snr_db=[snr_db],
                                             profile="EPA", fading="rayleigh", cfo_hz=[3000.0],
                                             noise_variance=0.01, seed=teaching.round_seed(seed, r))
            gap = fedlora.receiver_min_gap(256, 32, 200, 20, FS, channel.bulk_delay())
            want, report = fedlora.kernel_aircomp_round_waveform(
                updates, [1.0 / n_devices] * n_devices, scale, channel, lead=300, gap=gap, policy=policy,
                g_th=g_th, estimator="sparse", **FRAME)
            agg = aircomp.aggregate_of(got["aggregate"][r])
            self.assertTrue(np.array_equal(agg, want), f"round {r}: max diff {np.max(np.abs(agg - want))}")
            truth = sum(u.astype(np.float64) for u in updates) / n_devices
            ref = aircomp.aggregate_of(got["reference"][r])
            self.assertTrue(np.array_equal(ref, truth.astype(np.float32)))
            q = pmt.to_python(got["quality"][r])
            nmse = np.sum((agg.astype(np.float64) - truth) ** 2) / np.sum(truth ** 2)
            self.assertAlmostEqual(q["nmse_measured"], nmse, delta=1e-12 * nmse)
            self.assertAlmostEqual(q["nmse_measured"], report["nmse_measured"], delta=1e-9 * nmse)
            self.assertEqual(q["round"], r)
            self.assertEqual((q["n_devices"], q["snr_db"], q["policy"], q["g_th"], q["alphabet"]),
                             (n_devices, snr_db, policy, g_th, alphabet))
            csi = pmt.to_python(got["csi"][r])
            self.assertEqual(len(csi["gain"]), n_devices * 200)
            self.assertIn(f"round {r}: K={n_devices} SNR={snr_db:.1f} dB policy={policy}", lines[r])
            self.assertIn(f"NMSE measured {10 * np.log10(nmse):.2f} dB, "
                          f"analytic {10 * np.log10(q['nmse_predicted']):.2f} dB", lines[r])

    def test_001_rounds_equal_round_waveform_truncated_qpsk(self):
        self.check_rounds(3, 20.0, "truncated", "qpsk", seed=1, n_rounds=3)

    def test_002_rounds_equal_round_waveform_mmse_gaussian(self):
        self.check_rounds(2, 25.0, "mmse", "gaussian", seed=9, n_rounds=2, dim=1001)

    def test_003_rounds_equal_round_waveform_full_power(self):
        self.check_rounds(5, 15.0, "full", "qpsk", seed=4, n_rounds=1, g_th=0.3)

    def test_004_updates_and_seeds(self):
        u = teaching.teaching_updates(4, 100, "qpsk", 3, 2)
        self.assertEqual(len(u), 4)
        for x in u:
            self.assertEqual(x.dtype, np.float32)
            self.assertTrue(np.all(np.abs(x) == 1.0))
        self.assertFalse(np.array_equal(u[0], u[1]))
        self.assertTrue(np.array_equal(u[2], teaching.teaching_updates(4, 100, "qpsk", 3, 2)[2]))
        self.assertFalse(np.array_equal(u[0], teaching.teaching_updates(4, 100, "qpsk", 3, 1)[0]))
        g = teaching.teaching_updates(2, 20000, "gaussian", 3, 0)
        self.assertAlmostEqual(float(np.std(g[0])), 1.0, delta=0.03)
        self.assertNotEqual(teaching.round_seed(1, 0), teaching.round_seed(1, 1))
        self.assertNotEqual(teaching.round_seed(1, 0), teaching.round_seed(2, 0))
        self.assertEqual(teaching.round_seed(5, 7), teaching.round_seed(5, 7))

    def test_005_settings_apply_to_the_next_round(self):
        loop = fedlora.aircomp_round_loop(n_devices=3)
        loop.set_n_devices(5)
        loop.set_snr_db(12)
        loop.set_policy("full")
        loop.set_g_th(0.25)
        loop.set_alphabet("gaussian")
        self.assertEqual(loop.settings(), dict(n_devices=5, snr_db=12.0, policy="full", g_th=0.25,
                                               alphabet="gaussian"))

    def test_006_lost_round_goes_on(self):
        # -30 dB: the preamble drowns, the receiver finds no frame; the loop reports it and runs the next round.
        got, out, loop = run_loop(n_devices=2, snr_db=-30.0, n_rounds=2, dim=64)
        self.assertEqual(loop.rounds(), 2)
        self.assertEqual(loop.rounds_lost(), 2)
        self.assertEqual(sum(len(m) for m in got.values()), 0)
        self.assertEqual(out.count("lost, the receiver found no frame"), 2, out)

    def test_007_bad_parameters_raise_by_name(self):
        cases = [
            (dict(policy="greedy"), "policy = 'greedy'"),
            (dict(alphabet="bpsk"), "alphabet = 'bpsk'"),
            (dict(n_devices=0), "n_devices = 0"),
            (dict(dim=1), "dim = 1"),
            (dict(n_rounds=-1), "n_rounds = -1"),
            (dict(interval=-0.5), "interval = -0.5"),
            (dict(snr_db=float("nan")), "snr_db = nan"),
            (dict(g_th=-0.1), "g_th = -0.1"),
            (dict(log_level="loud"), "log_level = 'loud'"),
            (dict(lead=-1), "lead = -1"),
            (dict(round_timeout=0), "round_timeout = 0"),
            (dict(profile="XYZ"), "XYZ"),
        ]
        for kwargs, text in cases:
            with self.assertRaises(ValueError, msg=str(kwargs)) as ctx:
                fedlora.aircomp_round_loop(**kwargs)
            self.assertIn(text, str(ctx.exception))
        loop = fedlora.aircomp_round_loop()
        with self.assertRaisesRegex(ValueError, "policy = 'MMSE'"):
            loop.set_policy("MMSE")
        with self.assertRaisesRegex(ValueError, r"n_devices = 2.5"):
            loop.set_n_devices(2.5)
        with self.assertRaisesRegex(ValueError, "n_outputs = 0"):
            fedlora.dict_to_vectors("gain", 0, 10)
        with self.assertRaisesRegex(ValueError, "copies = 0"):
            fedlora.dict_to_vectors("gain", 2, 10, copies=0)
        with self.assertRaisesRegex(ValueError, "keys is empty"):
            fedlora.dict_to_history([], 5)
        with self.assertRaisesRegex(ValueError, "length = 0"):
            fedlora.dict_to_history(["a"], 0)
        with self.assertRaisesRegex(ValueError, "alphabet = 'x'"):
            teaching.teaching_updates(2, 10, "x", 1, 0)

    # ---- converters -------------------------------------------------------------------------------------------

    def test_010_pdu_to_constellation(self):
        rng = np.random.default_rng(2)
        a = rng.standard_normal(7).astype(np.float32)  # odd: the last point has imaginary part 0
        b = rng.standard_normal(6)
        msgs = [pmt.cons(pmt.make_dict(), pmt.init_f32vector(a.size, a.tolist())),
                pmt.make_dict(),  # not a PDU: dropped
                pmt.cons(pmt.make_dict(), pmt.init_s32vector(2, [1, 2])),  # not real values: dropped
                pmt.cons(pmt.make_dict(), pmt.init_f64vector(b.size, b.tolist()))]
        (out,) = run_source(fedlora.pdu_to_constellation(), msgs, [blocks.vector_sink_c()])
        want = [complex(a[0], a[1]), complex(a[2], a[3]), complex(a[4], a[5]), complex(a[6], 0.0)]
        want += [complex(b[0], b[1]), complex(b[2], b[3]), complex(b[4], b[5])]
        self.assertTrue(np.array_equal(out, np.asarray(want, np.complex64)), out)

    def test_011_dict_to_vectors(self):
        vlen, rows, copies, fill = 5, 3, 2, -100.0
        g1 = np.linspace(0.1, 2.0, 2 * vlen)  # two devices of three
        g2 = np.linspace(0.5, 4.0, 3 * vlen)
        g2[7] = 0.0  # no dB value: fill
        msgs = [f64_dict(gain=g1, round=0),
                f64_dict(snr_db=g1),  # no "gain": dropped
                f64_dict(gain=np.ones(7)),  # not rows of 5: dropped
                f64_dict(gain=np.ones(4 * vlen)),  # more rows than outputs: dropped
                f64_dict(gain=g2)]
        outs = run_source(fedlora.dict_to_vectors("gain", rows, vlen, True, copies, fill), msgs,
                          [blocks.vector_sink_f(vlen) for _ in range(rows)])
        for r in range(rows):
            want = []
            for g in (g1, g2):
                row = np.full(vlen, fill)
                if (r + 1) * vlen <= g.size:
                    x = g[r * vlen:(r + 1) * vlen]
                    row = np.where(x > 0, 10 * np.log10(np.where(x > 0, x, 1.0)), fill)
                want += [row] * copies
            np.testing.assert_allclose(outs[r], np.concatenate(want).astype(np.float32), rtol=1e-6)
        # Linear values, NaN fill by default, one copy.
        (out,) = run_source(fedlora.dict_to_vectors("gain", 1, 4, False, 1), [f64_dict(gain=[1, 2, 3, 4])],
                            [blocks.vector_sink_f(4)])
        self.assertTrue(np.array_equal(out, np.float32([1, 2, 3, 4])))

    def test_012_dict_to_history(self):
        length, copies, fill = 3, 2, -100.0
        a = [0.1, 0.2, 0.05, 0.4]
        b = [1.0, None, 3, 0.0]  # missing, an integer, and a value with no dB: fill
        msgs = []
        for x, y in zip(a, b):
            d = f64_dict(a=x)
            if y is not None:
                d = pmt.dict_add(d, pmt.intern("b"), pmt.from_long(y) if isinstance(y, int) else
                                 pmt.from_double(y))
            msgs.append(d)
        msgs.insert(2, pmt.intern("not a dict"))  # dropped
        outs = run_source(fedlora.dict_to_history(["a", "b"], length, True, copies, fill), msgs,
                          [blocks.vector_sink_f(length) for _ in range(2)])
        for key_values, out in zip((a, b), outs):
            db = [10 * np.log10(v) if v is not None and v > 0 else fill for v in key_values]
            want = []
            for i in range(len(db)):
                window = ([fill] * length + db[:i + 1])[-length:]
                want += window * copies
            np.testing.assert_allclose(out, np.float32(want), rtol=1e-6)
        # History length 1: a plain float stream, the newest value `copies` times.
        (out,) = run_source(fedlora.dict_to_history("a", 1, False, 16), msgs, [blocks.vector_sink_f()])
        self.assertTrue(np.array_equal(out, np.repeat(np.float32(a), 16)))


if __name__ == "__main__":
    gr_unittest.run(qa_teaching)
