#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of gnuradio.fedlora.virtual_radio, in one process (tests/virtual_radio_test.sh runs the processes):

- virtual_channel: two devices' tagged bursts pushed over ZeroMQ come out as channel_kernel makes them on the
  timeline their tx_time tags define, sample for sample; with n_rounds the flowgraph ends by itself after the
  last payload burst;
- end_after_bursts reports a stream carrying another device's bursts; end_after_messages finishes its blocks after
  n_rounds messages, and the flowgraph ends;
- bad parameters are refused, naming them.
"""

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, zeromq
from gnuradio import fedlora
from gnuradio.fedlora import virtual_radio

FS = 15.36e6


def tag(offset, key, value):
    return gr.tag_utils.python_to_tag((offset, pmt.intern(key), value, pmt.intern("qa")))


def tx_time(sample):
    full = int(sample // FS)
    return pmt.make_tuple(pmt.from_uint64(full), pmt.from_double((sample - full * FS) / FS))


def burst_info(device, kind):
    d = pmt.make_dict()
    d = pmt.dict_add(d, pmt.intern("device"), pmt.from_long(device))
    return pmt.dict_add(d, pmt.intern("kind"), pmt.intern(kind))


def device_stream(rng, device, schedule):
    """Samples and tags of bursts [(time, length, kind)], tagged as aircomp_transmitter tags them; and the
    device's signal on the timeline."""
    parts, tags, pos = [], [], 0
    end = max(t + n for t, n, _ in schedule)
    timeline = np.zeros(end, np.complex64)
    for t, n, kind in schedule:
        x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
        tags += [tag(pos, "tx_sob", pmt.PMT_T), tag(pos, "tx_time", tx_time(t)),
                 tag(pos, "fedlora_burst", burst_info(device, kind)), tag(pos + n - 1, "tx_eob", pmt.PMT_T)]
        parts.append(x)
        timeline[t:t + n] = x
        pos += n
    return np.concatenate(parts), tags, timeline


CHANNEL = dict(sample_rate=FS, snr_db="20, 15", profile="EPA", fading="rayleigh", cfo_hz="3000", noise_variance=0.01,
               seed=3)


class qa_virtual_radio(gr_unittest.TestCase):
    def test_001_virtual_channel_equals_kernel_and_ends(self):
        rng = np.random.default_rng(1)
        # Two rounds of (pilots, payload) per device, the devices' bursts at the same times.
        schedule = [(100, 60, "pilots"), (300, 40, "payload"), (500, 60, "pilots"), (700, 40, "payload")]
        streams = [device_stream(rng, k, schedule) for k in range(2)]
        tb = gr.top_block()
        pushes = []
        for x, tags, _ in streams:
            push = zeromq.push_sink(gr.sizeof_gr_complex, 1, "tcp://127.0.0.1:*", 100, True, -1)
            tb.connect(blocks.vector_source_c(x.tolist(), False, 1, tags), push)
            pushes.append(push)
        air = virtual_radio.virtual_channel(2, ",".join(p.last_endpoint() for p in pushes), n_rounds=2, **CHANNEL)
        sink = blocks.vector_sink_c()
        tb.connect(air, sink)
        tb.run()  # returns only if the flowgraph ends by itself
        got = np.array(sink.data(), dtype=np.complex64)
        want = fedlora.channel_kernel(n_devices=2, n_tx=1, n_rx=1, sample_rate=FS, snr_db=[20.0, 15.0],
                                      profile="EPA", fading="rayleigh", cfo_hz=[3000.0], noise_variance=0.01,
                                      seed=3).process([s[2] for s in streams])[0]
        self.assertEqual(got.size, 740)
        np.testing.assert_array_equal(got, want)
        self.assertEqual([e.rounds for e in air.ends], [2, 2])
        self.assertEqual([e.wrong_device for e in air.ends], [None, None])

    def test_002_wrong_device_is_reported(self):
        rng = np.random.default_rng(2)
        x, tags, _ = device_stream(rng, 1, [(10, 20, "pilots"), (40, 20, "payload")])
        end = virtual_radio.end_after_bursts(1, device=0, name="input 0")
        tb = gr.top_block()
        tb.connect(blocks.vector_source_c(x.tolist(), False, 1, tags), end)
        tb.run()
        self.assertEqual((end.rounds, end.wrong_device), (1, 1))

    def test_003_end_after_messages_finishes_its_blocks(self):
        tb = gr.top_block()
        # A source that never ends by itself: nothing publishes there.
        src = zeromq.sub_msg_source("tcp://127.0.0.1:9", 100, False)
        end = virtual_radio.end_after_messages(2).finish_with(src)
        dbg = blocks.message_debug()
        tb.msg_connect((src, "out"), (dbg, "store"))
        tb.msg_connect((src, "out"), (end, "in"))  # in the flowgraph, so that its messages are handled
        tb.start()
        for i in range(2):
            end.to_basic_block()._post(pmt.intern("in"), pmt.from_long(i))
        tb.wait()  # returns once the source has been finished
        self.assertEqual(end.count, 2)

    def test_004_bad_parameters_are_named(self):
        with self.assertRaisesRegex(ValueError, r"1 device address\(es\).*n_devices = 2"):
            virtual_radio.virtual_channel(2, "tcp://127.0.0.1:5710")
        with self.assertRaisesRegex(ValueError, "not distinct"):
            virtual_radio.virtual_channel(2, "tcp://127.0.0.1:5710,tcp://127.0.0.1:5710")
        with self.assertRaisesRegex(ValueError, "n_devices = 0"):
            virtual_radio.virtual_channel(0, "")
        with self.assertRaisesRegex(ValueError, "snr_db: 'loud' is not a number"):
            virtual_radio.virtual_channel(1, "tcp://127.0.0.1:5710", snr_db="20,loud")
        with self.assertRaisesRegex(ValueError, "n_rounds = -1"):
            virtual_radio.end_after_bursts(-1)
        with self.assertRaisesRegex(ValueError, "n_rounds = 1.5"):
            virtual_radio.end_after_messages(1.5)
        self.assertEqual(virtual_radio.main(["--rounds", "0"]), 1)


if __name__ == "__main__":
    gr_unittest.run(qa_virtual_radio)
