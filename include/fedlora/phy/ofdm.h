// OFDM modulator and demodulator kernels (FFTW plans and aligned buffers made once, in the constructor).
//
// Both are unitary: the time-domain symbol is ifft(X) * 1/sqrt(N) and the demodulator applies the inverse
// scaling, so average power per sample equals average power per occupied subcarrier times n_occupied / N.
// Neither allocates after construction; both are safe to move, not to share between threads.
#pragma once

#include <complex>
#include <cstddef>
#include <memory>
#include <vector>

#include "fedlora/phy/numerology.h"

namespace fedlora::phy {

using cf32 = std::complex<float>;

class FftPlan;  // RAII owner of an fftwf plan and its aligned buffers (ofdm.cpp)

class OfdmModulator {
public:
    explicit OfdmModulator(const Numerology& num);
    ~OfdmModulator();
    OfdmModulator(OfdmModulator&&) noexcept;
    OfdmModulator& operator=(OfdmModulator&&) noexcept;

    const Numerology& numerology() const { return num_; }

    // in:  n_symbols * n_occupied frequency-domain values, carrier order of Numerology::occupied_carriers()
    // out: n_symbols * (fft_size + cp_len) time-domain samples, cyclic prefix first
    void modulate(const cf32* in, cf32* out, std::size_t n_symbols);

private:
    Numerology num_;
    std::vector<int> bins_;
    float scale_;
    std::unique_ptr<FftPlan> fft_;
};

class OfdmDemodulator {
public:
    explicit OfdmDemodulator(const Numerology& num);
    ~OfdmDemodulator();
    OfdmDemodulator(OfdmDemodulator&&) noexcept;
    OfdmDemodulator& operator=(OfdmDemodulator&&) noexcept;

    const Numerology& numerology() const { return num_; }

    // in:  n_symbols * (fft_size + cp_len) samples, each symbol starting at its cyclic prefix
    // out: n_symbols * n_occupied subcarrier values
    void demodulate(const cf32* in, cf32* out, std::size_t n_symbols);

private:
    Numerology num_;
    std::vector<int> bins_;
    float scale_;
    std::unique_ptr<FftPlan> fft_;
};

}  // namespace fedlora::phy
