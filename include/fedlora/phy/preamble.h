// Schmidl & Cox synchronisation preamble: two OFDM symbols (each with its cyclic prefix).
//
// Symbol 1 carries a fixed pseudo-random QPSK sequence on the EVEN occupied subcarriers only (odd ones are zero).
// A sum of tones whose indices are all even has period N/2, so the FFT window of symbol 1 consists of two identical
// halves of L = N/2 samples; the cyclic prefix, a copy of the tail, continues that period. The receiver's
// Schmidl & Cox metric correlates the two halves (sync.h). The even carriers are scaled by sqrt(n_occ / n_even) so
// that the average power per sample equals that of a data symbol with unit-power values on all n_occ carriers,
// i.e. n_occ / N.
//
// Symbol 2 carries another fixed pseudo-random QPSK sequence (unit magnitude) on ALL occupied carriers; it is the
// known training symbol for fine timing (cross-correlation with the whole preamble), fine/integer CFO and channel
// estimation.
//
// Both sequences come from std::mt19937 (whose output sequence the C++ standard fixes) seeded with `seed`, using its
// raw output bits, so the preamble is identical on every platform and standard library.
//
// Reference: T. M. Schmidl, D. C. Cox, "Robust Frequency and Timing Synchronization for OFDM",
// IEEE Trans. Commun. 45(12), 1997. Derivation in docs/math.md.
#pragma once

#include <complex>
#include <cstdint>
#include <vector>

#include "fedlora/phy/numerology.h"

namespace fedlora::phy {

class Preamble {
public:
    static constexpr std::uint32_t kDefaultSeed = 0x5C0F1A7u;

    // Throws std::invalid_argument naming the bad field (numerology fields, or n_occupied < 4: symbol 1 needs at
    // least one even carrier on each side of DC).
    explicit Preamble(const Numerology& num, std::uint32_t seed = kDefaultSeed);

    const Numerology& numerology() const { return num_; }

    // Half of the FFT size: the period of symbol 1 and the correlation lag of the Schmidl & Cox metric.
    int half_len() const { return num_.fft_size / 2; }
    // Total length in samples: 2 * (fft_size + cp_len).
    int length() const { return 2 * num_.symbol_len(); }
    // Number of non-zero carriers of symbol 1 (the even occupied ones).
    int even_carriers() const { return n_even_; }

    // Time domain, both symbols, each cyclic prefix first: length() samples. samples()[0] is the first CP sample
    // of symbol 1; symbol 1's FFT window starts at cp_len, symbol 2's CP at fft_size + cp_len.
    const std::vector<std::complex<float>>& samples() const { return time_; }
    // Frequency domain, n_occupied values each, in the carrier order of Numerology::occupied_carriers().
    const std::vector<std::complex<float>>& symbol1() const { return sym1_; }
    const std::vector<std::complex<float>>& symbol2() const { return sym2_; }

    // Mean of |x|^2 over all length() samples. Over each FFT window it is exactly n_occupied / fft_size
    // (Parseval); the cyclic prefixes make the whole-preamble mean differ from it slightly.
    double power() const { return power_; }

private:
    Numerology num_;
    int n_even_ = 0;
    std::vector<std::complex<float>> sym1_, sym2_, time_;
    double power_ = 0.0;
};

}  // namespace fedlora::phy
