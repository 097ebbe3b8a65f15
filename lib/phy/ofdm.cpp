#include "fedlora/phy/ofdm.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

namespace fedlora::phy {

namespace {
// FFTW's planner is not thread-safe; plan creation and destruction are serialised here.
std::mutex& planner_mutex() {
    static std::mutex m;
    return m;
}
}  // namespace

// One in-place complex FFT of fixed size with a 64-byte aligned work buffer (fftwf_malloc).
class FftPlan {
public:
    FftPlan(int n, int sign) : n_(n) {
        std::lock_guard<std::mutex> lock(planner_mutex());
        buf_ = reinterpret_cast<cf32*>(fftwf_malloc(sizeof(cf32) * static_cast<std::size_t>(n)));
        if (!buf_)
            throw std::bad_alloc();
        auto* b = reinterpret_cast<fftwf_complex*>(buf_);
        plan_ = fftwf_plan_dft_1d(n, b, b, sign, FFTW_MEASURE);
        if (!plan_) {
            fftwf_free(buf_);
            throw std::runtime_error("FFTW could not plan a size-" + std::to_string(n) + " transform");
        }
        std::fill(buf_, buf_ + n, cf32{});
    }
    ~FftPlan() {
        std::lock_guard<std::mutex> lock(planner_mutex());
        fftwf_destroy_plan(plan_);
        fftwf_free(buf_);
    }
    FftPlan(const FftPlan&) = delete;
    FftPlan& operator=(const FftPlan&) = delete;

    cf32* buffer() { return buf_; }
    void execute() { fftwf_execute(plan_); }
    int size() const { return n_; }

private:
    int n_;
    cf32* buf_ = nullptr;
    fftwf_plan plan_ = nullptr;
};

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
    cf32* buf = fft_->buffer();
    for (std::size_t s = 0; s < n_symbols; ++s) {
        std::fill(buf, buf + n, cf32{});
        const cf32* x = in + s * n_occ;
        for (std::size_t i = 0; i < n_occ; ++i)
            buf[bins_[i]] = x[i] * scale_;
        fft_->execute();
        cf32* y = out + s * static_cast<std::size_t>(n + cp);
        std::memcpy(y, buf + (n - cp), sizeof(cf32) * static_cast<std::size_t>(cp));
        std::memcpy(y + cp, buf, sizeof(cf32) * static_cast<std::size_t>(n));
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
    cf32* buf = fft_->buffer();
    for (std::size_t s = 0; s < n_symbols; ++s) {
        const cf32* x = in + s * static_cast<std::size_t>(n + cp) + cp;
        std::memcpy(buf, x, sizeof(cf32) * static_cast<std::size_t>(n));
        fft_->execute();
        cf32* y = out + s * n_occ;
        for (std::size_t i = 0; i < n_occ; ++i)
            y[i] = buf[bins_[i]] * scale_;
    }
}

}  // namespace fedlora::phy
