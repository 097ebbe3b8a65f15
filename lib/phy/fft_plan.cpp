#include "fft_plan.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <stdexcept>
#include <string>

namespace fedlora::phy {

std::mutex& fftw_planner_mutex() {
    static std::mutex m;
    return m;
}

namespace {
std::atomic<FftPlanning> g_planning{FftPlanning::Measure};
}

void set_fft_planning(FftPlanning planning) { g_planning.store(planning); }
FftPlanning fft_planning() { return g_planning.load(); }
unsigned fftw_planner_flags() { return fft_planning() == FftPlanning::Estimate ? FFTW_ESTIMATE : FFTW_MEASURE; }

FftPlan::FftPlan(int n, int sign) : n_(n) {
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    const auto bytes = sizeof(std::complex<float>) * static_cast<std::size_t>(n);
    in_ = reinterpret_cast<std::complex<float>*>(fftwf_malloc(bytes));
    out_ = reinterpret_cast<std::complex<float>*>(fftwf_malloc(bytes));
    if (!in_ || !out_) {
        fftwf_free(in_);
        fftwf_free(out_);
        throw std::bad_alloc();
    }
    plan_ = fftwf_plan_dft_1d(n, reinterpret_cast<fftwf_complex*>(in_), reinterpret_cast<fftwf_complex*>(out_), sign,
                              fftw_planner_flags());
    if (!plan_) {
        fftwf_free(in_);
        fftwf_free(out_);
        throw std::runtime_error("FFTW could not plan a size-" + std::to_string(n) + " transform");
    }
    // FFTW_MEASURE overwrites the arrays while planning.
    std::fill(in_, in_ + n, std::complex<float>{});
    std::fill(out_, out_ + n, std::complex<float>{});
}

FftPlan::~FftPlan() {
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    fftwf_destroy_plan(plan_);
    fftwf_free(in_);
    fftwf_free(out_);
}

}  // namespace fedlora::phy
