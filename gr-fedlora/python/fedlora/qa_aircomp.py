#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the AirComp blocks against the fedlora_phy kernels they wrap, on the same inputs:

- aircomp_transmitter: its bursts (samples and tx_sob/tx_eob/tx_time tags) equal DeviceTransmitter's output, with
  the bursts split over many work() calls;
- channel_model: bursts land where their tx_time says (silence elsewhere), late bursts follow the previous one;
- aircomp_receiver: its CSI and plan equal AircompReceiver's and plan_round's on the same samples fed in pieces;
- the loopback (K transmitters -> channel_model -> aircomp_receiver): its aggregate equals aircomp_round_waveform's
  for the same updates and channel seed, bit for bit, single- and multi-stream, round after round, whatever the
  scheduler's chunking.
"""

import threading

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio import fedlora
from gnuradio.fedlora import aircomp, virtual_radio

FS = 15.36e6
FRAME = dict(fft_size=256, cp_len=32, n_occupied=200, pilot_spacing=20, sample_rate=FS, gap=2048,
             pilot_repeats=2, reference_interval=8)
MIMO_FRAME = dict(FRAME, n_occupied=192, pilot_spacing=16, pilot_repeats=4)


def channel_params(n_devices, n_tx=1, n_rx=1, seed=7):
    return dict(n_devices=n_devices, n_tx=n_tx, n_rx=n_rx, sample_rate=FS, snr_db=[20.0], profile="EPA",
                fading="rayleigh", cfo_hz=[3000.0], noise_variance=0.01, seed=seed)


def tx_time(sample):
    t = sample / FS
    full = int(np.floor(t))
    return pmt.make_tuple(pmt.from_uint64(full), pmt.from_double((sample - full * FS) / FS))


def tag(offset, key, value):
    return gr.tag_utils.python_to_tag((offset, pmt.intern(key), value, pmt.intern("qa")))


def sample_of(value):
    full, frac = pmt.to_python(value)
    return int(round(full * FS + frac * FS))


def messages(dbg):
    return [dbg.get_message(i) for i in range(dbg.num_messages())]


class qa_aircomp(gr_unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Bit-identical FFTs in every kernel built from here on (the blocks and the references alike).
        fedlora.set_fft_planning("estimate")

    # ---- transmitter ----------------------------------------------------------------------------------------

    def test_001_transmitter_bursts_equal_kernel(self):
        K, device, n_tx, L = 2, 1, 2, 2
        frame = dict(fft_size=64, cp_len=16, n_occupied=48, pilot_spacing=8, sample_rate=FS, gap=100,
                     pilot_repeats=1, reference_interval=8)
        lay = fedlora.kernel_frame_layout(n_devices=K, n_tx=n_tx, **frame)
        rng = np.random.default_rng(3)
        x = rng.standard_normal(301).astype(np.float32)
        precoders = (rng.standard_normal(K * 48 * n_tx * L) + 1j * rng.standard_normal(K * 48 * n_tx * L))
        frame_at = 1000
        # plan_first: the plan is posted before the update. Messages on different ports keep no order between
        # them, so a plan may reach the transmitter before its round's update: it must be kept, not dropped.
        for max_items, plan_first in ((None, False), (37, False), (None, True), (37, True)):
            tb = gr.top_block()
            tx = fedlora.aircomp_transmitter(n_devices=K, device=device, n_tx=n_tx, budget=2.0, max_dim=512,
                                             start_time=frame_at / FS, n_rounds=1, **frame)
            if max_items:
                tx.set_max_noutput_items(max_items)
            sinks = [blocks.vector_sink_c() for _ in range(n_tx)]
            for a, s in enumerate(sinks):
                tb.connect((tx, a), s)
            meta = pmt.make_dict()
            for key, val in (("round", pmt.from_long(7)), ("weight", pmt.from_double(0.5)),
                             ("scale", pmt.from_double(2.0))):
                meta = pmt.dict_add(meta, pmt.intern(key), val)
            other = pmt.dict_add(meta, pmt.intern("device"), pmt.from_long(0))  # another device's: ignored
            mine = pmt.dict_add(meta, pmt.intern("device"), pmt.from_long(device))
            plan = pmt.make_dict()
            for key, val in (("round", pmt.from_long(7)), ("n_devices", pmt.from_long(K)),
                             ("n_carriers", pmt.from_long(48)), ("n_tx", pmt.from_long(n_tx)),
                             ("n_streams", pmt.from_long(L)), ("scale", pmt.from_double(2.0)),
                             ("precoders", pmt.init_c64vector(precoders.size, precoders.tolist()))):
                plan = pmt.dict_add(plan, pmt.intern(key), val)
            if plan_first:
                tx.to_basic_block()._post(pmt.intern("plan"), plan)
            tx.to_basic_block()._post(pmt.intern("update"), pmt.cons(other, pmt.init_f32vector(301, x.tolist())))
            tx.to_basic_block()._post(pmt.intern("update"), pmt.cons(mine, pmt.init_f32vector(301, x.tolist())))
            if not plan_first:
                tx.to_basic_block()._post(pmt.intern("plan"), plan)
            tb.run()
            self.assertEqual(tx.rounds_sent(), 1)

            kern = fedlora.device_kernel(n_devices=K, device=device, n_tx=n_tx, budget=2.0, **frame)
            pilots = kern.pilot_burst(n_tx, lay["payload_offset"])
            per = 48 * n_tx * L
            payload = kern.payload(x, 0.5, 2.0, precoders[device * per:(device + 1) * per], L, [], lay["n_data"])
            P, S = lay["payload_offset"], lay["symbol_len"]
            for a in range(n_tx):
                want = np.concatenate([pilots[a], payload[a], np.zeros(S, np.complex64)])
                got = np.array(sinks[a].data(), dtype=np.complex64)
                self.assertEqual(got.size, want.size)
                np.testing.assert_array_equal(got, want)
                tags = {(t.offset, pmt.symbol_to_string(t.key)): t.value for t in sinks[a].tags()}
                end = want.size
                self.assertIn((0, "tx_sob"), tags)
                self.assertIn((P - 1, "tx_eob"), tags)
                self.assertIn((P, "tx_sob"), tags)
                self.assertIn((end - 1, "tx_eob"), tags)
                self.assertEqual(sample_of(tags[(0, "tx_time")]), frame_at)
                self.assertEqual(sample_of(tags[(P, "tx_time")]), frame_at + P)
                info = pmt.to_python(tags[(P, "fedlora_burst")])
                self.assertEqual((info["round"], info["device"], info["kind"]), (7, device, "payload"))

    # ---- channel ----------------------------------------------------------------------------------------------

    def run_channel(self, params, streams, max_items=None):
        tb = gr.top_block()
        ch = fedlora.channel_model(**params)
        if max_items:
            ch.set_max_noutput_items(max_items)
        for i, (x, tags) in enumerate(streams):
            tb.connect(blocks.vector_source_c(x.tolist(), False, 1, tags), (ch, i))
        sink = blocks.vector_sink_c()
        tb.connect((ch, 0), sink)
        tb.run()
        return np.array(sink.data(), dtype=np.complex64)

    def test_002_channel_places_bursts_by_tx_time(self):
        rng = np.random.default_rng(5)

        def burst(n):
            return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)

        a, b, c, d, e = burst(50), burst(30), burst(80), burst(20), burst(29)
        # Device 0: A at 100, B at 400 (tx_time in seconds). Device 1: C at 120, D right after it (untagged),
        # E at 401. Both end at 430.
        dev0 = (np.concatenate([a, b]), [tag(0, "tx_sob", pmt.PMT_T), tag(0, "tx_time", tx_time(100)),
                                         tag(49, "tx_eob", pmt.PMT_T), tag(50, "tx_time", pmt.from_double(400 / FS))])
        dev1 = (np.concatenate([c, d, e]), [tag(0, "tx_time", tx_time(120)), tag(100, "tx_time", tx_time(401))])
        x0 = np.zeros(430, np.complex64)
        x1 = np.zeros(430, np.complex64)
        x0[100:150], x0[400:430] = a, b
        x1[120:200], x1[200:220], x1[401:430] = c, d, e
        params = channel_params(2, seed=11)
        want = fedlora.channel_kernel(**params).process([x0, x1])[0]
        for max_items in (None, 7, 64):
            got = self.run_channel(params, [dev0, dev1], max_items)
            self.assertEqual(got.size, 430)
            np.testing.assert_array_equal(got, want)

    def test_003_channel_late_burst_follows_previous(self):
        rng = np.random.default_rng(6)
        a = (rng.standard_normal(50) + 1j * rng.standard_normal(50)).astype(np.complex64)
        b = (rng.standard_normal(100) + 1j * rng.standard_normal(100)).astype(np.complex64)
        cont = (rng.standard_normal(300) + 1j * rng.standard_normal(300)).astype(np.complex64)
        # B's tx_time (120) falls inside A (100..150): late, sent from 150. Device 1 is an untagged stream.
        dev0 = (np.concatenate([a, b]), [tag(0, "tx_time", tx_time(100)), tag(50, "tx_time", tx_time(120))])
        x0 = np.zeros(250, np.complex64)
        x0[100:150], x0[150:250] = a, b
        params = channel_params(2, seed=12)
        want = fedlora.channel_kernel(**params).process([x0, cont[:250]])[0]
        got = self.run_channel(params, [dev0, (cont, [])], 33)
        self.assertEqual(got.size, 250)
        np.testing.assert_array_equal(got, want)

    # ---- receiver ---------------------------------------------------------------------------------------------

    def test_004_receiver_csi_and_plan_equal_kernel(self):
        K, lead = 3, 300
        lay = fedlora.kernel_frame_layout(n_devices=K, **FRAME)
        streams = []
        for k in range(K):
            p = fedlora.device_kernel(n_devices=K, device=k, budget=1.0, **FRAME).pilot_burst(1, lay["payload_offset"])
            streams.append(np.concatenate([np.zeros(lead, np.complex64), p[0]]))
        rx = fedlora.channel_kernel(**channel_params(K)).process(streams)[0]
        kern = fedlora.receiver_kernel(n_devices=K, budget=[1.0], **FRAME)
        kern.consume([rx])
        self.assertEqual(kern.stage, "need-plan")
        csi = kern.csi()

        updates = aircomp.make_updates(K, 2000, 1)
        _, info, scale = aircomp.round_messages(updates)
        weights = [1.0 / K] * K
        rms = list(pmt.to_python(pmt.dict_ref(info, pmt.intern("rms"), pmt.PMT_NIL)))
        signal_var = []
        for w, r in zip(weights, rms):
            s = w * r / scale
            signal_var.append(max(2.0 * s * s, 1e-30))
        want_plan = fedlora.kernel_plan_round(csi["h"], K, 1, 1, 200, 0, [1.0], "truncated", 0.1, signal_var,
                                              csi["noise_var"], csi["error_var"], 60)
        for max_items in (61, 4096):
            tb = gr.top_block()
            blk = fedlora.aircomp_receiver(n_devices=K, budget=[1.0], max_dim=4096, **FRAME)
            blk.set_max_noutput_items(max_items)
            src = blocks.vector_source_c(rx.tolist(), False)
            src.set_max_noutput_items(max_items)
            tb.connect(src, blk)
            dbg_csi, dbg_plan = blocks.message_debug(), blocks.message_debug()
            tb.msg_connect((blk, "csi"), (dbg_csi, "store"))
            tb.msg_connect((blk, "plan"), (dbg_plan, "store"))
            blk.to_basic_block()._post(pmt.intern("round"), info)
            tb.run()
            self.assertEqual(dbg_csi.num_messages(), 1)
            got = pmt.to_python(dbg_csi.get_message(0))
            np.testing.assert_array_equal(got["gain"], csi["gain"])
            np.testing.assert_array_equal(got["device_snr_db"], csi["snr_db"])
            np.testing.assert_array_equal(got["error_var"], csi["error_var"])
            self.assertEqual(got["noise_var"], csi["noise_var"])
            self.assertEqual(got["frame_start"], kern.frame_start)
            self.assertEqual(len(got["snr_db"]), K * 200)
            plan = pmt.to_python(dbg_plan.get_message(0))
            np.testing.assert_array_equal(plan["precoders"], want_plan["precoders"])
            np.testing.assert_array_equal(plan["eta"], want_plan["eta"])
            self.assertEqual(plan["truncated_fraction"], want_plan["truncated_fraction"])
            self.assertEqual((plan["round"], plan["n_streams"], plan["n_ofdm"]), (0, 1, 6))

    # ---- loopback ---------------------------------------------------------------------------------------------

    def loopback(self, K, dim, n_tx=1, n_rx=1, n_streams=0, rounds=1, max_items=None, lead=300, seed=5,
                 policy="truncated", support=None, leads=None, plan_over_wire=False):
        """Runs K transmitters -> channel_model -> aircomp_receiver for `rounds` rounds and the same rounds through
        kernel_aircomp_round_waveform on one channel; returns both, per round. leads[r] (samples of silence
        before round r's frame) places the frames by frame_time in the update PDUs; without it the first frame
        is at the transmitters' start_time (lead) and each next one follows the previous after its guard
        symbol. plan_over_wire: the plans go receiver -> pdu_to_wire -> ZeroMQ on 127.0.0.1 -> wire_to_pdu (dicts)
        -> transmitters, as between processes, instead of a message connection."""
        frame = MIMO_FRAME if n_streams else FRAME
        symbol_len = frame["fft_size"] + frame["cp_len"]
        lay = fedlora.kernel_frame_layout(n_devices=K, n_tx=n_tx, **frame)
        n_sym = ((dim if support is None else len(support)) + 1) // 2
        per = lay["n_data"] * max(n_streams, 1)
        frame_samples = lay["payload_offset"] + (n_sym + per - 1) // per * symbol_len
        chan = channel_params(K, n_tx, n_rx)
        tb = gr.top_block()
        timed = leads is not None
        start_time = 0.0 if timed else lead / FS  # with frame_time in the PDUs, start_time must not matter
        txs = [fedlora.aircomp_transmitter(n_devices=K, device=k, n_tx=n_tx, budget=1.0, max_dim=dim,
                                           start_time=start_time, n_rounds=rounds, **frame) for k in range(K)]
        ch = fedlora.channel_model(**chan)
        rx = fedlora.aircomp_receiver(n_devices=K, n_tx=n_tx, n_rx=n_rx, n_streams=n_streams, budget=[1.0],
                                      policy=policy, estimator="sparse", max_dim=dim, **frame)
        agg, qual, csi = blocks.message_debug(), blocks.message_debug(), blocks.message_debug()
        plan_source = rx, "plan"
        if plan_over_wire:
            to_wire = fedlora.pdu_to_wire("tcp://127.0.0.1:*", True, "POWER_PLAN")
            from_wire = fedlora.wire_to_pdu(to_wire.last_endpoint(), False, 1 << 24, True)
            tb.msg_connect((rx, "plan"), (to_wire, "pdus"))
            plan_source = from_wire, "pdus"
            # A ZeroMQ message source never ends by itself: it is told to after the last aggregate.
            end = virtual_radio.end_after_messages(rounds).finish_with(from_wire)
            tb.msg_connect((rx, "aggregate"), (end, "in"))
        for k, t in enumerate(txs):
            for a in range(n_tx):
                tb.connect((t, a), (ch, k * n_tx + a))
            tb.msg_connect(plan_source, (t, "plan"))
        for r in range(n_rx):
            tb.connect((ch, r), (rx, r))
        tb.msg_connect((rx, "aggregate"), (agg, "store"))
        tb.msg_connect((rx, "quality"), (qual, "store"))
        tb.msg_connect((rx, "csi"), (csi, "store"))
        if max_items:
            for b in txs + [ch, rx]:
                b.set_max_noutput_items(max_items)
        updates = [aircomp.make_updates(K, dim, seed + r) for r in range(rounds)]
        leads = leads or [lead] + [symbol_len] * (rounds - 1)
        at = 0
        for r in range(rounds):
            at += leads[r]
            aircomp.post_round(txs, rx, updates[r], round_id=r, support=support,
                               frame_time=at / FS if timed else None)
            at += frame_samples
        tb.run()
        self.assertEqual(agg.num_messages(), rounds)
        got = [(aircomp.aggregate_of(a), pmt.to_python(q), pmt.to_python(c))
               for a, q, c in zip(messages(agg), messages(qual), messages(csi))]
        kchan = fedlora.channel_kernel(**chan)
        ref = []
        for r in range(rounds):
            _, _, scale = aircomp.round_messages(updates[r], support=support)
            ref.append(fedlora.kernel_aircomp_round_waveform(
                updates[r], [1.0 / K] * K, scale, kchan, support=[] if support is None else list(support),
                n_tx=n_tx, n_streams=n_streams, policy=policy, lead=leads[r], **frame))
            self.assertEqual(ref[-1][1]["frame_samples"], frame_samples)
        return got, ref, leads

    def check_equal(self, result, what):
        got, ref, leads = result
        timeline = 0  # where each reference round's buffer starts on the flowgraph's timeline
        for r, ((est, quality, csi), (want, report)) in enumerate(zip(got, ref)):
            np.testing.assert_array_equal(est, want, err_msg=f"{what}, round {r}")
            self.assertEqual(quality["detected_start"], timeline + report["detected_start"], what)
            # The synchroniser works on groups of samples aligned to its own sample count, which starts at the
            # flowgraph's start but at each reference round's start: after the first round the reported CFO may
            # differ in its last bits (the correction applied, and so the aggregate, does not).
            self.assertAlmostEqual(quality["cfo"], report["cfo_estimate"], delta=0.0 if r == 0 else 1e-12,
                                   msg=what)
            self.assertEqual(quality["mean_cpe_rad"], report["mean_cpe_rad"], what)
            np.testing.assert_array_equal(csi["gain"], report["csi_gain"], err_msg=what)
            self.assertLess(report["nmse_measured"], 0.5, what)
            timeline += leads[r] + report["frame_samples"]

    def test_005_loopback_single_stream_equals_round_waveform(self):
        # The configured gap must be what the reference uses (it raises a smaller one to receiver_min_gap).
        self.assertGreaterEqual(FRAME["gap"], fedlora.receiver_min_gap(256, 32, 200, 20, FS, 0))
        for max_items in (None, 17, 1000):
            self.check_equal(self.loopback(3, 3001, max_items=max_items), f"K=3 single stream, max_items={max_items}")

    def test_006_loopback_mimo_equals_round_waveform(self):
        self.check_equal(self.loopback(2, 4000, n_tx=2, n_rx=2, n_streams=2), "K=2 2x2 L=2")
        self.check_equal(self.loopback(3, 4000, n_tx=2, n_rx=4, n_streams=2, max_items=100), "K=3 2x4 L=2")

    def test_007_loopback_rounds_back_to_back(self):
        self.check_equal(self.loopback(3, 3001, rounds=3, policy="mmse"), "three rounds, mmse")
        # Frames placed by frame_time in the update PDUs (the transmitters' start_time is 0), with silence
        # between them.
        self.check_equal(self.loopback(2, 2000, rounds=2, leads=[700, 1500]), "frame_time, two rounds")

    def test_009_loopback_sparse_support(self):
        # Only the entries on a shared support go on air; the aggregate is zero elsewhere.
        support = np.sort(np.random.default_rng(8).choice(5000, 1201, replace=False))
        result = self.loopback(3, 5000, support=support)
        self.check_equal(result, "support of 1201 of 5000")
        est = result[0][0][0]
        off = np.ones(5000, bool)
        off[support] = False
        self.assertTrue(np.all(est[off] == 0.0))

    # ---- parameters -------------------------------------------------------------------------------------------

    def test_012_plans_ahead_of_their_updates_are_kept(self):
        # Two rounds posted as (update 0, update 1, plan 0, plan 1) and as (plan 0, plan 1, update 0, update 1):
        # whichever port the transmitter reads first, a plan that arrives before its round has started (plan 1
        # while round 0 runs, or both before any update) must be kept for its round, and both payloads must be
        # the same bursts.
        K, device, dim = 2, 0, 301
        frame = dict(fft_size=64, cp_len=16, n_occupied=48, pilot_spacing=8, sample_rate=FS, gap=100,
                     pilot_repeats=1, reference_interval=8)
        rng = np.random.default_rng(8)
        xs = [rng.standard_normal(dim).astype(np.float32) for _ in range(2)]
        precs = [rng.standard_normal(K * 48) + 1j * rng.standard_normal(K * 48) for _ in range(2)]

        def run(plans_first):
            tb = gr.top_block()
            tx = fedlora.aircomp_transmitter(n_devices=K, device=device, budget=1.0, max_dim=512,
                                             start_time=1000 / FS, n_rounds=2, **frame)
            sink = blocks.vector_sink_c()
            tb.connect(tx, sink)
            updates, plans = [], []
            for r in range(2):
                meta = pmt.make_dict()
                for key, val in (("round", pmt.from_long(r)), ("device", pmt.from_long(device)),
                                 ("weight", pmt.from_double(0.5)), ("scale", pmt.from_double(2.0))):
                    meta = pmt.dict_add(meta, pmt.intern(key), val)
                updates.append(pmt.cons(meta, pmt.init_f32vector(dim, xs[r].tolist())))
                plan = pmt.make_dict()
                for key, val in (("round", pmt.from_long(r)), ("n_devices", pmt.from_long(K)),
                                 ("n_carriers", pmt.from_long(48)), ("n_tx", pmt.from_long(1)),
                                 ("n_streams", pmt.from_long(1)), ("scale", pmt.from_double(2.0)),
                                 ("precoders", pmt.init_c64vector(precs[r].size, precs[r].tolist()))):
                    plan = pmt.dict_add(plan, pmt.intern(key), val)
                plans.append(plan)
            order = [("plan", p) for p in plans] + [("update", u) for u in updates]
            if not plans_first:
                order = order[2:] + order[:2]
            for port, msg in order:
                tx.to_basic_block()._post(pmt.intern(port), msg)
            runner = threading.Thread(target=tb.run)
            runner.start()
            runner.join(60)
            if runner.is_alive():  # a dropped plan leaves the transmitter waiting: end it and fail
                tb.stop()
                runner.join()
                self.fail(f"the transmitter did not send both rounds (plans first: {plans_first})")
            self.assertEqual(tx.rounds_sent(), 2)
            return np.asarray(sink.data())

        a, b = run(False), run(True)
        self.assertGreater(a.size, 0)
        np.testing.assert_array_equal(a, b)

    def test_011_plans_over_the_wire_bridges(self):
        # The plan dict crosses the project's wire format (pdu_to_wire -> ZeroMQ -> wire_to_pdu as dicts; the
        # precoders as complex double): the loopback's aggregates still equal the reference, bit for bit, for a
        # single stream and for 2x2 with two streams.
        self.check_equal(self.loopback(3, 3001, plan_over_wire=True), "K=3 single stream, plans over the wire")
        self.check_equal(self.loopback(2, 2000, n_tx=2, n_rx=2, n_streams=2, plan_over_wire=True),
                         "2x2, two streams, plans over the wire")

    def test_010_tagged_output_passes_samples_and_tags_csi_quality(self):
        # The receiver's optional stream output: antenna 0's samples unchanged, and the csi / quality dicts it
        # publishes as tags on the sample where each was known, in the same flowgraph as the messages; the
        # aggregate stays that of the receiver without the output. Fed in pieces of 1000 samples.
        K, dim, rounds = 2, 3001, 2
        lay = fedlora.kernel_frame_layout(n_devices=K, n_tx=1, **FRAME)
        chan = channel_params(K)
        tb = gr.top_block()
        txs = [fedlora.aircomp_transmitter(n_devices=K, device=k, budget=1.0, max_dim=dim, start_time=300 / FS,
                                           n_rounds=rounds, **FRAME) for k in range(K)]
        ch = fedlora.channel_model(**chan)
        rx = fedlora.aircomp_receiver(n_devices=K, budget=[1.0], estimator="sparse", max_dim=dim, **FRAME)
        raw, tagged = blocks.vector_sink_c(), blocks.vector_sink_c()
        agg, qual, csi = blocks.message_debug(), blocks.message_debug(), blocks.message_debug()
        for k, t in enumerate(txs):
            tb.connect(t, (ch, k))
            tb.msg_connect((rx, "plan"), (t, "plan"))
        tb.connect(ch, rx, tagged)
        tb.connect(ch, raw)
        tb.msg_connect((rx, "aggregate"), (agg, "store"))
        tb.msg_connect((rx, "quality"), (qual, "store"))
        tb.msg_connect((rx, "csi"), (csi, "store"))
        for b in txs + [ch, rx]:
            b.set_max_noutput_items(1000)
        updates = [aircomp.make_updates(K, dim, 40 + r) for r in range(rounds)]
        for r in range(rounds):
            aircomp.post_round(txs, rx, updates[r], round_id=r)
        tb.run()
        self.assertEqual(agg.num_messages(), rounds)
        got = np.asarray(tagged.data())
        want = np.asarray(raw.data())
        self.assertGreater(got.size, 0)
        np.testing.assert_array_equal(got, want[:got.size])
        tags = {"csi": [], "quality": []}
        for t in tagged.tags():
            key = pmt.symbol_to_string(t.key)
            if key in tags:
                tags[key].append((t.offset, t.value))
        for key, dbg in (("csi", csi), ("quality", qual)):
            self.assertEqual(len(tags[key]), rounds, key)
            for (offset, value), msg in zip(tags[key], messages(dbg)):
                self.assertTrue(pmt.equal(value, msg), key)
                self.assertLess(offset, got.size, key)
        for r, ((c_off, c), (q_off, q)) in enumerate(zip(tags["csi"], tags["quality"])):
            start = pmt.to_uint64(pmt.dict_ref(c, pmt.intern("frame_start"), pmt.PMT_NIL))
            # CSI is known once the pilots are in (their FFT windows start timing_backoff = cp/8 samples early);
            # quality once the whole payload is.
            self.assertGreaterEqual(c_off + 1, start + lay["pilots_end"] - FRAME["cp_len"] // 8, f"round {r}")
            self.assertGreater(q_off, c_off, f"round {r}")
            self.assertEqual(pmt.to_long(pmt.dict_ref(q, pmt.intern("round"), pmt.PMT_NIL)), r)

    def test_008_bad_parameters_raise_by_name(self):
        with self.assertRaisesRegex(ValueError, "device = 5"):
            fedlora.aircomp_transmitter(n_devices=2, device=5)
        with self.assertRaisesRegex(ValueError, "gap = -1"):
            fedlora.aircomp_transmitter(gap=-1)
        with self.assertRaisesRegex(ValueError, "n_streams = 0"):
            fedlora.aircomp_receiver(n_tx=2, n_rx=2, n_streams=0)
        with self.assertRaisesRegex(ValueError, "policy"):
            fedlora.aircomp_receiver(policy="moon")
        with self.assertRaisesRegex(ValueError, "budget has 3 values for 2 devices"):
            fedlora.aircomp_receiver(n_devices=2, budget=[1.0, 2.0, 3.0])
        with self.assertRaisesRegex(ValueError, "estimator"):
            fedlora.aircomp_receiver(estimator="crystal-ball")
        with self.assertRaisesRegex(ValueError, "pilot_spacing"):
            fedlora.aircomp_receiver(pilot_spacing=0)


if __name__ == "__main__":
    gr_unittest.run(qa_aircomp)
