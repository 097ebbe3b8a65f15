#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the OFDM modulator/demodulator blocks: the flowgraph output must equal the fedlora_phy kernel on the
same input, and both must equal an independent numpy reference."""

import numpy as np
from gnuradio import blocks, gr, gr_unittest
from gnuradio import fedlora


def numpy_modulate(symbols, fft_size, cp_len, n_occupied):
    """Independent reference: place carriers -n/2..-1, 1..n/2 in FFT bins, unitary IFFT, prepend the CP."""
    carriers = [k for k in range(-n_occupied // 2, n_occupied // 2 + 1) if k != 0]
    bins = [k % fft_size for k in carriers]
    x = symbols.reshape(-1, n_occupied)
    grid = np.zeros((x.shape[0], fft_size), dtype=np.complex128)
    grid[:, bins] = x
    t = np.fft.ifft(grid, axis=1) * np.sqrt(fft_size)
    return np.concatenate([t[:, fft_size - cp_len:], t], axis=1).reshape(-1)


class qa_ofdm(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()
        self.rng = np.random.default_rng(1234)

    def tearDown(self):
        self.tb = None

    def random_symbols(self, n_sym, n_occupied):
        n = n_sym * n_occupied
        return (self.rng.standard_normal(n) + 1j * self.rng.standard_normal(n)).astype(np.complex64)

    def run_block(self, block, data, vin, vout):
        src = blocks.vector_source_c(data.tolist(), False, vin)
        sink = blocks.vector_sink_c(vout)
        self.tb.connect(src, block, sink)
        self.tb.run()
        return np.array(sink.data(), dtype=np.complex64)

    def test_001_modulator_matches_kernel_and_numpy(self):
        for fft_size, cp_len, n_occ in [(64, 16, 48), (256, 32, 200), (1024, 72, 600)]:
            self.tb = gr.top_block()
            x = self.random_symbols(37, n_occ)
            y = self.run_block(fedlora.ofdm_modulator(fft_size, cp_len, n_occ), x, n_occ, fft_size + cp_len)
            k = fedlora.kernel_ofdm_modulate(x, fft_size, cp_len, n_occ)
            ref = numpy_modulate(x.astype(np.complex128), fft_size, cp_len, n_occ)
            self.assertEqual(len(y), 37 * (fft_size + cp_len))
            np.testing.assert_allclose(y, k, rtol=0, atol=1e-5)
            np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5)

    def test_002_demodulator_matches_kernel_and_inverts_modulator(self):
        fft_size, cp_len, n_occ = 256, 32, 200
        x = self.random_symbols(50, n_occ)
        t = numpy_modulate(x.astype(np.complex128), fft_size, cp_len, n_occ).astype(np.complex64)
        y = self.run_block(fedlora.ofdm_demodulator(fft_size, cp_len, n_occ), t, fft_size + cp_len, n_occ)
        k = fedlora.kernel_ofdm_demodulate(t, fft_size, cp_len, n_occ)
        np.testing.assert_allclose(y, k, rtol=0, atol=1e-5)
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)

    def test_003_carrier_order(self):
        self.assertEqual(fedlora.occupied_carriers(64, 16, 4), [-2, -1, 1, 2])

    def test_004_bad_parameters_raise(self):
        with self.assertRaisesRegex(ValueError, "fft_size = 100"):
            fedlora.ofdm_modulator(100, 16, 48)
        with self.assertRaisesRegex(ValueError, "n_occupied"):
            fedlora.ofdm_demodulator(64, 16, 63)
        with self.assertRaisesRegex(ValueError, "not a multiple"):
            fedlora.kernel_ofdm_modulate(np.zeros(47, np.complex64), 64, 16, 48)


if __name__ == "__main__":
    gr_unittest.run(qa_ofdm)
