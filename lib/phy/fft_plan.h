// Internal to fedlora_phy: one lock for FFTW's planner (not thread-safe), shared by every kernel that plans, and an
// RAII out-of-place transform with aligned buffers.
#pragma once

#include <complex>
#include <mutex>

#include <fftw3.h>

#include "fedlora/phy/fft.h"

namespace fedlora::phy {

// Every fftwf_plan_* and fftwf_destroy_plan call in the library happens under this lock.
std::mutex& fftw_planner_mutex();
// FFTW_MEASURE or FFTW_ESTIMATE, as set_fft_planning (fedlora/phy/fft.h) chose.
unsigned fftw_planner_flags();

// One out-of-place complex FFT of fixed size, input() → output(), with 64-byte aligned buffers (fftwf_malloc),
// planned with fftw_planner_flags(). Out of place, FFTW needs no transposition or copy inside the transform (about
// twice as fast as in place at the OFDM sizes). The input is preserved. sign: FFTW_FORWARD (e^{-j...}) or
// FFTW_BACKWARD (e^{+j...}); neither is normalised.
class FftPlan {
public:
    FftPlan(int n, int sign);
    ~FftPlan();
    FftPlan(const FftPlan&) = delete;
    FftPlan& operator=(const FftPlan&) = delete;

    std::complex<float>* input() { return in_; }
    const std::complex<float>* output() const { return out_; }
    void execute() { fftwf_execute(plan_); }
    int size() const { return n_; }

private:
    int n_;
    std::complex<float>* in_ = nullptr;
    std::complex<float>* out_ = nullptr;
    fftwf_plan plan_ = nullptr;
};

}  // namespace fedlora::phy
