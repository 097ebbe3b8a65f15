#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the multi-user channel block: its output equals fedlora_phy's MultiUserChannel on the same input and
seed (the kernel called directly), whatever the scheduler's chunking; bad parameters fail by name."""

import numpy as np
from gnuradio import blocks, gr, gr_unittest
from gnuradio import fedlora


class qa_channel_model(gr_unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(7)

    def signals(self, n_streams, n):
        return [(self.rng.standard_normal(n) + 1j * self.rng.standard_normal(n)).astype(np.complex64)
                for _ in range(n_streams)]

    def run_block(self, params, inputs, max_items=None):
        tb = gr.top_block()
        ch = fedlora.channel_model(**params)
        if max_items:
            ch.set_max_noutput_items(max_items)
        for i, x in enumerate(inputs):
            tb.connect(blocks.vector_source_c(x.tolist(), False), (ch, i))
        sinks = [blocks.vector_sink_c() for _ in range(params["n_rx"])]
        for r, s in enumerate(sinks):
            tb.connect((ch, r), s)
        tb.run()
        return [np.array(s.data(), dtype=np.complex64) for s in sinks]

    def test_001_equals_kernel(self):
        params = dict(n_devices=3, n_tx=2, n_rx=2, sample_rate=15.36e6, snr_db=[10.0, 15.0, 20.0],
                      profile="EVA", fading="rayleigh", doppler_hz=50.0, cfo_hz=[100.0, -250.0, 0.0],
                      timing_offset=[0.0, 1.5, 3.25], noise_variance=1e-2, phase_noise_hz=10.0,
                      dc_offset=0.01 + 0.02j, seed=42)
        inputs = self.signals(6, 20000)
        kernel = fedlora.channel_kernel(**params).process(inputs)
        for max_items in (None, 17, 1000):  # scheduler chunking must not matter
            out = self.run_block(params, inputs, max_items)
            self.assertEqual(len(out), 2)
            for r in range(2):
                self.assertEqual(len(out[r]), 20000)
                np.testing.assert_allclose(out[r], kernel[r], rtol=0, atol=1e-5)

    def test_002_superposition_of_silent_devices_is_noise(self):
        # With every device silent the output is the server's AWGN plus DC: check both statistics.
        params = dict(n_devices=2, n_tx=1, n_rx=1, noise_variance=0.5, dc_offset=0.3 - 0.1j, seed=3)
        out = self.run_block(params, [np.zeros(200000, np.complex64)] * 2)[0]
        self.assertAlmostEqual(np.mean(out).real, 0.3, delta=0.01)
        self.assertAlmostEqual(np.mean(out).imag, -0.1, delta=0.01)
        self.assertAlmostEqual(np.var(out), 0.5, delta=0.01)

    def test_003_bad_parameters_raise_by_name(self):
        with self.assertRaisesRegex(ValueError, "snr_db has 2 values for 3 devices"):
            fedlora.channel_model(n_devices=3, snr_db=[1.0, 2.0])
        with self.assertRaisesRegex(ValueError, "profile"):
            fedlora.channel_model(profile="moon")


if __name__ == "__main__":
    gr_unittest.run(qa_channel_model)
