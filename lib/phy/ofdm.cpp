#include "fedlora/phy/ofdm.h"

#include "fft_plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fedlora::phy {

namespace {
std::vector<int> bins_of(const Numerology& num) {
    std::vector<int> bins;
    for (int c : num.occupied_carriers())
        bins.push_back(num.bin_of(c));
    return bins;
}
const Numerology& validated(const Numerology& num) {
    num.validate();
    return num;
}
}  // namespace

OfdmModulator::OfdmModulator(const Numerology& num)
    : num_(validated(num)),
      bins_(bins_of(num)),
      scale_(1.0f / std::sqrt(static_cast<float>(num.fft_size))),
      fft_(std::make_unique<FftPlan>(num.fft_size, FFTW_BACKWARD)) {}
OfdmModulator::~OfdmModulator() = default;
OfdmModulator::OfdmModulator(OfdmModulator&&) noexcept = default;
OfdmModulator& OfdmModulator::operator=(OfdmModulator&&) noexcept = default;

void OfdmModulator::modulate(const cf32* in, cf32* out, std::size_t n_symbols) {
    const int n = num_.fft_size;
    const int cp = num_.cp_len;
    const std::size_t n_occ = bins_.size();
    cf32* buf = fft_->input();
    const cf32* res = fft_->output();
    for (std::size_t s = 0; s < n_symbols; ++s) {
        std::fill(buf, buf + n, cf32{});
        const cf32* x = in + s * n_occ;
        for (std::size_t i = 0; i < n_occ; ++i)
            buf[bins_[i]] = x[i] * scale_;
        fft_->execute();
        cf32* y = out + s * static_cast<std::size_t>(n + cp);
        std::memcpy(y, res + (n - cp), sizeof(cf32) * static_cast<std::size_t>(cp));
        std::memcpy(y + cp, res, sizeof(cf32) * static_cast<std::size_t>(n));
    }
}

OfdmDemodulator::OfdmDemodulator(const Numerology& num)
    : num_(validated(num)),
      bins_(bins_of(num)),
      scale_(1.0f / std::sqrt(static_cast<float>(num.fft_size))),
      fft_(std::make_unique<FftPlan>(num.fft_size, FFTW_FORWARD)) {}
OfdmDemodulator::~OfdmDemodulator() = default;
OfdmDemodulator::OfdmDemodulator(OfdmDemodulator&&) noexcept = default;
OfdmDemodulator& OfdmDemodulator::operator=(OfdmDemodulator&&) noexcept = default;

void OfdmDemodulator::demodulate(const cf32* in, cf32* out, std::size_t n_symbols) {
    const int n = num_.fft_size;
    const int cp = num_.cp_len;
    const std::size_t n_occ = bins_.size();
    cf32* buf = fft_->input();
    const cf32* res = fft_->output();
    for (std::size_t s = 0; s < n_symbols; ++s) {
        const cf32* x = in + s * static_cast<std::size_t>(n + cp) + cp;
        std::memcpy(buf, x, sizeof(cf32) * static_cast<std::size_t>(n));
        fft_->execute();
        cf32* y = out + s * n_occ;
        for (std::size_t i = 0; i < n_occ; ++i)
            y[i] = res[bins_[i]] * scale_;
    }
}

}  // namespace fedlora::phy
