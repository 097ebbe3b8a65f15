#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the calibration in the gr-fedlora blocks (docs/hardware.md; docs/math.md, "Calibration"):

- aircomp_transmitter with a calibration file: its bursts equal fedlora_phy's TransmitCorrector applied to
  DeviceTransmitter's bursts (timing advance, phase pre-rotation, CFO counter-rotation on the absolute timeline),
  sent advance() samples early; a budget in dBm becomes the file's TX gain (tx_command tag) and linear budget;
  lookups that fail name the serial, the channel, the frequency or the parameter;
- the calibrated loopback (K calibrated transmitters -> channel_model -> aircomp_receiver) equals
  aircomp_round_waveform with the same corrections, bit for bit;
- closed loop: virtual radios with timing offsets and CFOs measured through a cabled channel_model, the
  calibration file written from the estimates, then AirComp rounds through the loopback flowgraph: with the
  calibration the NMSE is within 1 dB of unimpaired radios, without it measurably worse;
- calibration_bursts equals CalibrationTransmitter's burst; alignment_estimator on the channel_model's output
  equals AlignmentEstimator on the same samples and recovers the injected impairments within the tolerances of
  docs/hardware.md (at 20 dB: 0.05 dB, 0.01 samples, 0.02 rad, 10 Hz).
"""

import math
import os
import tempfile
import time

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio import fedlora
from gnuradio.fedlora import aircomp, calibration

FS = 15.36e6
F0 = 2.45e9
FRAME = dict(fft_size=256, cp_len=32, n_occupied=200, pilot_spacing=20, sample_rate=FS, gap=2048,
             pilot_repeats=2, reference_interval=8)

CAL_YAML = """fedlora_calibration: 1
date: "2025-01-01T00:00:00Z"
reference: external
tx_reference_dbfs: -12
devices:
  - serial: "qa-radio"
    product: virtual
    channels:
      - channel: 0
        tx_power:
          frequencies_hz: [2.4e9, 2.5e9]
          gains_db: [40, 50, 60, 70]
          power_dbm:
            - [-21.0, -11.0, -1.0, 8.0]
            - [-23.0, -13.0, -3.0, 6.0]
        alignment:
          - frequency_hz: 2.45e9
            sample_rate_hz: 15.36e6
            timing_offset_samples: 7.37
            phase_rad: 0.8
            reference_time_s: 0.001
            cfo_hz: 1234.5
"""
ADVANCE, PHASE, CFO, REF_SAMPLE = 7.37, 0.8, 1234.5, int(round(0.001 * FS))


def sample_of(value):
    return calibration.time_to_sample(value, FS)


def db(x):
    return 10.0 * math.log10(x)


class qa_calibration(gr_unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        fedlora.set_fft_planning("estimate")
        cls.tmp = tempfile.TemporaryDirectory()
        cls.cal = os.path.join(cls.tmp.name, "qa.yaml")
        with open(cls.cal, "w") as f:
            f.write(CAL_YAML)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    # ---- the transmitter -----------------------------------------------------------------------------------

    def one_round(self, frame_at, budget=1.0, max_items=None, **cal):
        """One round of device 1 of 2 through a calibrated transmitter: returns (transmitter, samples, tags,
        update, precoders)."""
        K, device, dim = 2, 1, 301
        rng = np.random.default_rng(3)
        x = rng.standard_normal(dim).astype(np.float32)
        precoders = rng.standard_normal(K * 200) + 1j * rng.standard_normal(K * 200)
        tb = gr.top_block()
        tx = fedlora.aircomp_transmitter(n_devices=K, device=device, budget=budget, max_dim=512,
                                         start_time=frame_at / FS, n_rounds=1, **FRAME, **cal)
        if max_items:
            tx.set_max_noutput_items(max_items)
        sink = blocks.vector_sink_c()
        tb.connect(tx, sink)
        meta = pmt.make_dict()
        for key, val in (("round", pmt.from_long(4)), ("device", pmt.from_long(device)),
                         ("weight", pmt.from_double(0.5)), ("scale", pmt.from_double(2.0))):
            meta = pmt.dict_add(meta, pmt.intern(key), val)
        tx.to_basic_block()._post(pmt.intern("update"), pmt.cons(meta, pmt.init_f32vector(dim, x.tolist())))
        plan = pmt.make_dict()
        for key, val in (("round", pmt.from_long(4)), ("n_devices", pmt.from_long(K)),
                         ("n_carriers", pmt.from_long(200)), ("n_tx", pmt.from_long(1)),
                         ("n_streams", pmt.from_long(1)), ("scale", pmt.from_double(2.0)),
                         ("precoders", pmt.init_c64vector(precoders.size, precoders.tolist()))):
            plan = pmt.dict_add(plan, pmt.intern(key), val)
        tx.to_basic_block()._post(pmt.intern("plan"), plan)
        tb.run()
        self.assertEqual(tx.rounds_sent(), 1)
        got = np.array(sink.data(), dtype=np.complex64)
        tags = {(t.offset, pmt.symbol_to_string(t.key)): t.value for t in sink.tags()}
        return tx, got, tags, x, precoders[device * 200:(device + 1) * 200]

    def reference(self, frame_at, budget, x, precoders, gain_db=0.0):
        """The same bursts from the kernels: DeviceTransmitter, then TransmitCorrector on the timeline."""
        lay = fedlora.kernel_frame_layout(n_devices=2, n_tx=1, **FRAME)
        P, S = lay["payload_offset"], lay["symbol_len"]
        kern = fedlora.device_kernel(n_devices=2, device=1, budget=budget, **FRAME)
        pilots = kern.pilot_burst(1, P)[0]
        payload = np.concatenate([kern.payload(x, 0.5, 2.0, precoders, 1, [], lay["n_data"])[0],
                                  np.zeros(S, np.complex64)])
        corr = fedlora.transmit_corrector_kernel(advance_samples=ADVANCE, phase_rad=PHASE, cfo_hz=CFO,
                                                 reference_sample=REF_SAMPLE, gain_db=gain_db, sample_rate=FS)
        lead = corr.lead
        want = np.concatenate([corr.apply(pilots, frame_at, P, frame_at - lead),
                               corr.apply(payload, frame_at + P, payload.size, frame_at + P - lead)])
        return want, lead, P

    def test_001_transmitter_equals_transmit_corrector(self):
        frame_at = 20000
        cal = dict(calibration=self.cal, serial="qa-radio", channel=0, frequency=F0)
        for max_items in (None, 37):
            tx, got, tags, x, prec = self.one_round(frame_at, max_items=max_items, **cal)
            want, lead, P = self.reference(frame_at, 1.0, x, prec)
            self.assertEqual(tx.advance(), lead)
            self.assertEqual(lead, 7 + 16)  # floor(7.37) + the 16-tap half length
            self.assertEqual(got.size, want.size)
            err = float(np.max(np.abs(got - want)))
            print(f"calibrated transmitter vs TransmitCorrector (max_items {max_items}): {got.size} samples, "
                  f"max |difference| {err:.3g}")
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
            np.testing.assert_array_equal(got, want)
            # Each burst keeps its length and its tx_time moves back by the advance.
            self.assertEqual(sample_of(tags[(0, "tx_time")]), frame_at - lead)
            self.assertEqual(sample_of(tags[(P, "tx_time")]), frame_at + P - lead)
            self.assertIn((P - 1, "tx_eob"), tags)
            self.assertIn((got.size - 1, "tx_eob"), tags)
            self.assertNotIn((0, "tx_command"), tags)  # linear budget: the radio's gain is left alone
            # The correction is not a no-op: the uncorrected pilot burst differs.
            uncorrected = fedlora.device_kernel(n_devices=2, device=1, budget=1.0, **FRAME).pilot_burst(1, P)[0]
            self.assertGreater(float(np.max(np.abs(got[:P] - uncorrected))), 0.01)

    def test_002_budget_in_dbm(self):
        frame_at = 20000
        cal = dict(calibration=self.cal, serial="qa-radio", frequency=F0, budget_unit="dBm")
        # At 2.45 GHz the table row is (-22, -12, -2, 7) dBm at gains (40, 50, 60, 70): -2 dBm is gain 60.
        tx, got, tags, x, prec = self.one_round(frame_at, budget=-2.0, **cal)
        self.assertAlmostEqual(tx.tx_gain(), 60.0, places=9)
        self.assertAlmostEqual(tx.linear_budget(), 1.0, places=12)
        self.assertAlmostEqual(pmt.to_python(tags[(0, "tx_command")])["gain"], 60.0, places=9)
        # Budgets in dBm: the samples at the file's reference level (tx_reference_dbfs = -12: phy power 1).
        want, _, P = self.reference(frame_at, tx.linear_budget(), x, prec, gain_db=-12.0)
        np.testing.assert_array_equal(got, want)
        self.assertIn((P, "tx_command"), tags)
        # The same budget at a given gain (the radio's, as read back): the digital level makes up the difference.
        tx, got, tags, x, prec = self.one_round(frame_at, budget=-2.0, tx_gain=55.0, **cal)
        self.assertAlmostEqual(tx.linear_budget(), 10 ** ((-2.0 + 7.0) / 10), places=9)
        self.assertAlmostEqual(pmt.to_python(tags[(0, "tx_command")])["gain"], 55.0, places=12)
        want, _, _ = self.reference(frame_at, tx.linear_budget(), x, prec, gain_db=-12.0)
        np.testing.assert_array_equal(got, want)
        lookup = fedlora.calibration_tx_power(self.cal, "qa-radio", 0, F0, -2.0, 55.0)
        self.assertAlmostEqual(lookup["linear_budget"], tx.linear_budget(), places=12)

    def test_003_errors_name_the_problem(self):
        def fails(exc, words, **kw):
            with self.assertRaises(exc) as c:
                fedlora.aircomp_transmitter(n_devices=2, device=0, **dict(FRAME, **kw))
            for w in words:
                self.assertIn(w, str(c.exception))
            return str(c.exception)

        ok = dict(calibration=self.cal, serial="qa-radio", frequency=F0)
        print(fails(RuntimeError, ["'B210-0042'", "qa-radio"], **dict(ok, serial="B210-0042")))
        print(fails(RuntimeError, ["915 MHz", "2450 MHz", "qa-radio"], **dict(ok, frequency=915e6)))
        print(fails(RuntimeError, ["no channel 1", "qa-radio"], **dict(ok, channel=1)))
        print(fails(RuntimeError, ["12.88 MS/s", "15.36 MS/s"], **dict(ok, sample_rate=12.88e6)))
        print(fails(RuntimeError, ["nowhere.yaml"], **dict(ok, calibration="/nowhere.yaml")))
        print(fails(ValueError, ["gap = 20"], **dict(ok, gap=20)))
        print(fails(ValueError, ["serial"], calibration=self.cal))
        print(fails(ValueError, ["budget_unit"], budget_unit="dBm"))
        print(fails(ValueError, ["budget_unit = 'watts'"], **dict(ok, budget_unit="watts")))
        print(fails(RuntimeError, ["exceeds the highest calibrated output power", "2450 MHz"],
                    **dict(ok, budget_unit="dBm", budget=20.0)))

    # ---- the calibrated loopback -------------------------------------------------------------------------------

    def write_file(self, path, serials, timing, cfo, phase=None, reference_sample=0):
        phase = phase or [0.0] * len(serials)
        entries = [dict(serial=s, product="virtual", channel=0, frequency_hz=F0, sample_rate_hz=FS,
                        timing_offset_samples=float(t), phase_rad=float(p),
                        reference_time_s=reference_sample / FS, cfo_hz=float(c))
                   for s, t, c, p in zip(serials, timing, cfo, phase)]
        fedlora.calibration_write_alignment(path, entries, "external", "qa_calibration")

    def loopback(self, K, dim, chan, cal_file=None, serials=(), lead=300, seed=5, timeout=120.0):
        """One round through K transmitters (calibrated with cal_file if given) -> channel_model ->
        aircomp_receiver. Returns (aggregate, updates) or (None, updates) if the receiver found no frame."""
        tb = gr.top_block()
        cal = [dict(calibration=cal_file, serial=s, frequency=F0) for s in serials] if cal_file else [{}] * K
        txs = [fedlora.aircomp_transmitter(n_devices=K, device=k, budget=1.0, max_dim=dim, start_time=lead / FS,
                                           n_rounds=1, **FRAME, **cal[k]) for k in range(K)]
        ch = fedlora.channel_model(**chan)
        rx = fedlora.aircomp_receiver(n_devices=K, budget=[1.0], policy="truncated", estimator="sparse",
                                      max_dim=dim, **FRAME)
        agg = blocks.message_debug()
        for k, t in enumerate(txs):
            tb.connect(t, (ch, k))
            tb.msg_connect((rx, "plan"), (t, "plan"))
        tb.connect(ch, rx)
        tb.msg_connect((rx, "aggregate"), (agg, "store"))
        updates = aircomp.make_updates(K, dim, seed)
        aircomp.post_round(txs, rx, updates, round_id=0)
        # The pilot bursts end at lead + payload offset (less the largest advance); the channel cannot run past
        # them before the payloads exist. A receiver that has read that far and still searches found no frame.
        # (nitems_read first: the stage changes inside the work() call that consumed those samples.)
        horizon = lead + fedlora.kernel_frame_layout(n_devices=K, **FRAME)["payload_offset"] - 64
        tb.start()
        deadline = time.monotonic() + timeout
        lost = False
        while agg.num_messages() == 0:
            if rx.nitems_read(0) >= horizon and rx.stage() == "searching" and rx.frames() == 0:
                lost = True
                break
            self.assertLess(time.monotonic(), deadline, "the loopback made no aggregate")
            time.sleep(0.01)
        tb.stop()
        tb.wait()
        return (None if lost else aircomp.aggregate_of(agg.get_message(0))), updates

    @staticmethod
    def nmse(est, updates):
        truth = np.mean(np.asarray(updates, np.float64), axis=0)
        return float(np.sum((est - truth) ** 2) / np.sum(truth ** 2))

    def test_004_calibrated_loopback_equals_round_waveform(self):
        K, dim, lead = 3, 3001, 300
        timing, cfo = [3.3, 0.0, 9.8], [3800.0, 1900.0, 3400.0]
        serials = [f"qa-{k}" for k in range(K)]
        path = os.path.join(self.tmp.name, "loop.yaml")
        self.write_file(path, serials, timing, [c - 3000.0 for c in cfo], phase=[0.3, -2.0, 1.1],
                        reference_sample=4000)
        chan = dict(n_devices=K, sample_rate=FS, snr_db=[20.0], profile="EPA", fading="rayleigh", cfo_hz=cfo,
                    timing_offset=timing, noise_variance=0.01, seed=7)
        corr = [fedlora.calibration_correction(path, s, 0, F0, FS) for s in serials]
        span = max(c["lead"] for c in corr) + max(c["tail"] for c in corr)
        bulk = fedlora.channel_kernel(**chan).bulk_delay()
        # The flowgraph's gap must be the reference's (it raises a smaller one to receiver_min_gap + the span).
        self.assertGreaterEqual(FRAME["gap"], fedlora.receiver_min_gap(256, 32, 200, 20, FS, bulk) + span)
        got, updates = self.loopback(K, dim, chan, path, serials, lead=lead)
        self.assertIsNotNone(got)
        _, _, scale = aircomp.round_messages(updates)
        want, report = fedlora.kernel_aircomp_round_waveform(
            updates, [1.0 / K] * K, scale, fedlora.channel_kernel(**chan), lead=lead, policy="truncated",
            estimator="sparse", corrections=corr, **FRAME)
        print(f"calibrated loopback vs aircomp_round_waveform with the corrections: max |difference| "
              f"{float(np.max(np.abs(got - want))):.3g}, NMSE {db(report['nmse_measured']):.2f} dB")
        np.testing.assert_array_equal(got, want)

    def test_005_calibration_restores_aircomp(self):
        """Virtual radios with per-device timing offsets and CFOs (the CalibrationRound setting of docs/math.md:
        K = 8 at 15 dB, EPA Rayleigh, truncated inversion from sparse estimates, 2 pilot repetitions), calibrated
        through a cabled channel_model with the alignment estimator, then rounds through the loopback flowgraph:
        unimpaired, impaired without and impaired with the calibration file."""
        K, dim, rounds = 8, 4000, 6
        rng = np.random.default_rng(2024)
        timing = rng.uniform(0.0, 16.0, K)
        cfo = rng.uniform(-1500.0, 1500.0, K)
        serials = [f"virtual-{k}" for k in range(K)]

        # 1. The alignment: a cabled setup (no fading) at 25 dB per carrier, one calibration burst.
        cabled = fedlora.channel_kernel(n_devices=K, sample_rate=FS, snr_db=[25.0], profile="flat", fading="none",
                                        cfo_hz=list(cfo), timing_offset=list(timing), noise_variance=1e-3, seed=99)
        est = fedlora.alignment_kernel(n_devices=K, system_delay=float(cabled.bulk_delay()))
        start, length = 512, est.layout["length"]
        n = start + length + est.tail + 512
        streams = []
        for k in range(K):
            s = np.zeros(n, np.complex64)
            s[start:start + length] = fedlora.calibration_burst_kernel(n_devices=K, device=k).burst()
            streams.append(s)
        rx = cabled.process(streams)[0]
        a = est.estimate(rx, 0, start)
        terr = max(abs(d["timing_offset_samples"] - t) for d, t in zip(a, timing))
        cerr = max(abs(d["cfo_hz"] - c) for d, c in zip(a, cfo))
        print(f"alignment at 25 dB: max timing error {terr:.4f} samples, max CFO error {cerr:.2f} Hz")
        self.assertLess(terr, 0.01)
        self.assertLess(cerr, 10.0)
        path = os.path.join(self.tmp.name, "virtual.yaml")
        self.write_file(path, serials, [d["timing_offset_samples"] for d in a], [d["cfo_hz"] for d in a],
                        phase=[d["phase_rad"] for d in a], reference_sample=a[0]["reference_sample"])

        # 2. AirComp rounds: the same fading, noise and updates in every variant.
        sums, lost = {}, {}
        for name, impaired, cal in (("unimpaired", False, None), ("without calibration", True, None),
                                    ("with calibration", True, path)):
            total, n_lost = 0.0, 0
            for r in range(rounds):
                chan = dict(n_devices=K, sample_rate=FS, snr_db=[15.0], profile="EPA", fading="rayleigh",
                            cfo_hz=list(cfo) if impaired else [0.0], timing_offset=list(timing) if impaired else [0.0],
                            noise_variance=0.01, seed=500 + r)
                got, updates = self.loopback(K, dim, chan, cal, serials if cal else (), seed=r)
                if got is None:  # a lost round counts as NMSE 1 (0 dB), as `fedlora calibrate --verify` does
                    n_lost += 1
                    total += 1.0
                else:
                    total += min(self.nmse(got, updates), 10.0)
            sums[name], lost[name] = db(total / rounds), n_lost
            print(f"NMSE {name:22s} {sums[name]:7.2f} dB over {rounds} rounds ({n_lost} lost)")
        self.assertEqual(lost["unimpaired"], 0)
        self.assertEqual(lost["with calibration"], 0)
        self.assertLess(abs(sums["with calibration"] - sums["unimpaired"]), 1.0)
        self.assertGreater(sums["without calibration"] - sums["unimpaired"], 3.0)

    # ---- the alignment blocks -------------------------------------------------------------------------------

    def test_006_calibration_bursts_equal_kernel(self):
        K, device, start, period, n_bursts = 3, 2, 0.01, 0.004, 3
        src = calibration.calibration_bursts(n_devices=K, device=device, sample_rate=FS, start_time=start,
                                             period=period, n_bursts=n_bursts)
        sink = blocks.vector_sink_c()
        tb = gr.top_block()
        tb.connect(src, sink)
        tb.run()
        burst = fedlora.calibration_burst_kernel(n_devices=K, device=device).burst()
        L = src.burst_length()
        self.assertEqual(L, burst.size + calibration.burst_padding(n_devices=K))
        got = np.array(sink.data(), np.complex64)
        self.assertEqual(got.size, n_bursts * L)
        tags = {(t.offset, pmt.symbol_to_string(t.key)): t.value for t in sink.tags()}
        for i in range(n_bursts):
            np.testing.assert_array_equal(got[i * L:i * L + burst.size], burst)
            np.testing.assert_array_equal(got[i * L + burst.size:(i + 1) * L], 0)
            self.assertEqual(sample_of(tags[(i * L, "tx_time")]), round(start * FS) + i * round(period * FS))
            self.assertIn((i * L, "tx_sob"), tags)
            self.assertIn(((i + 1) * L - 1, "tx_eob"), tags)
            self.assertEqual(pmt.to_python(tags[(i * L, "fedlora_calibration")]), {"burst": i, "device": device})
        with self.assertRaises(ValueError) as c:
            calibration.calibration_bursts(n_devices=K, device=0, period=0.0001)
        self.assertIn("period", str(c.exception))

    def test_007_alignment_estimator_recovers_impairments(self):
        """calibration_bursts (one per device) -> channel_model -> alignment_estimator, two bursts, against the
        kernel on the same samples and against the injected impairments."""
        K, start, period, n_bursts, snr = 4, 0.002, 0.003, 2, 20.0
        timing = [0.0, 5.25, 13.7, 2.4]
        cfo = [1200.0, -800.0, 2500.0, -2900.0]
        chan = dict(n_devices=K, sample_rate=FS, snr_db=[snr], profile="flat", fading="none", cfo_hz=cfo,
                    timing_offset=timing, noise_variance=1e-3, seed=31)
        bulk = float(fedlora.channel_kernel(**chan).bulk_delay())
        path = os.path.join(self.tmp.name, "aligned.yaml")
        serials = [f"dev-{k}" for k in range(K)]
        tb = gr.top_block()
        srcs = [calibration.calibration_bursts(n_devices=K, device=k, sample_rate=FS, start_time=start,
                                               period=period, n_bursts=n_bursts) for k in range(K)]
        ch = fedlora.channel_model(**chan)
        est = calibration.alignment_estimator(n_devices=K, sample_rate=FS, start_time=start, period=period,
                                              n_bursts=n_bursts, system_delay=bulk, serials=",".join(serials),
                                              frequency=F0, timing_reference=0, out_file=path, tx_gain=60.0)
        dbg = blocks.message_debug()
        for k, s in enumerate(srcs):
            tb.connect(s, (ch, k))
        tb.connect(ch, est)
        tb.msg_connect((est, "alignment"), (dbg, "store"))
        tb.run()
        self.assertEqual(len(est.results), n_bursts)
        self.assertEqual(dbg.num_messages(), n_bursts)

        # The same timeline through the kernels.
        L = srcs[0].burst_length()
        first, step = round(start * FS), round(period * FS)
        n = first + (n_bursts - 1) * step + L
        streams = []
        for k in range(K):
            x = np.zeros(n, np.complex64)
            b = fedlora.calibration_burst_kernel(n_devices=K, device=k).burst()
            for i in range(n_bursts):
                x[first + i * step:first + i * step + b.size] = b
            streams.append(x)
        rx = fedlora.channel_kernel(**chan).process(streams)[0]
        kern = fedlora.alignment_kernel(n_devices=K, system_delay=bulk)
        ch_true = fedlora.channel_kernel(**chan)
        gain_true = db(1e-3) + snr
        for i in range(n_bursts):
            bs = first + i * step
            ws = bs + math.floor(bulk)
            we = bs + math.ceil(bulk) + kern.layout["length"] + kern.tail
            want = kern.estimate(rx[ws:we], ws, bs)
            got = est.results[i]
            msg = pmt.to_python(dbg.get_message(i))
            self.assertEqual(msg["burst"], i)
            for k in range(K):
                for key in want[k]:
                    self.assertEqual(got[k][key], want[k][key], f"burst {i} device {k} {key}")
                self.assertAlmostEqual(msg["devices"][k]["cfo_hz"], want[k]["cfo_hz"], places=9)
                d = want[k]
                e_gain = d["gain_db"] - gain_true
                e_time = d["timing_offset_samples"] - timing[k]
                e_phase = math.remainder(d["phase_rad"] - fedlora.kernel_link_phase(ch_true, k,
                                                                                     d["reference_sample"]),
                                         2 * math.pi)
                e_cfo = d["cfo_hz"] - cfo[k]
                print(f"burst {i} device {k}: SNR {d['snr_db']:.1f} dB, errors: gain {e_gain:+.4f} dB, timing "
                      f"{e_time:+.5f} samples, phase {e_phase:+.5f} rad, CFO {e_cfo:+.2f} Hz")
                self.assertLess(abs(e_gain), 0.05)
                self.assertLess(abs(e_time), 0.01)
                self.assertLess(abs(e_phase), 0.02)
                self.assertLess(abs(e_cfo), 10.0)
        # The file holds the last burst's alignment, timing relative to device 0.
        last = est.results[-1]
        for k, s in enumerate(serials):
            c = fedlora.calibration_correction(path, s, 0, F0, FS)
            self.assertAlmostEqual(c["advance_samples"],
                                   last[k]["timing_offset_samples"] - last[0]["timing_offset_samples"], places=6)
            self.assertAlmostEqual(c["cfo_hz"], last[k]["cfo_hz"], places=6)
            self.assertAlmostEqual(c["phase_rad"], last[k]["phase_rad"], places=6)
            self.assertEqual(c["reference_sample"], last[k]["reference_sample"])


if __name__ == "__main__":
    gr_unittest.run(qa_calibration)
