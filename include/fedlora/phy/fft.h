// How fedlora_phy plans its FFTs (FFTW), process-wide.
//
//   Measure (default)  FFTW times candidate algorithms and keeps the fastest. Fastest, but the choice, and with it
//                      the last bits of every transform, can differ from one run to the next.
//   Estimate           a fixed heuristic choice: every run computes bit-identical results. Experiments that must
//                      be reproducible bit for bit (fedlora sim: resume after a crash, equal runs by seed) use it.
// The setting applies to kernels constructed after the call; kernels already built keep their plans.
#pragma once

namespace fedlora::phy {

enum class FftPlanning { Measure, Estimate };

void set_fft_planning(FftPlanning planning);
FftPlanning fft_planning();

}  // namespace fedlora::phy
