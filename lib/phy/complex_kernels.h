// Internal to fedlora_phy: elementwise complex-float kernels of the receiver's hot loops, in real arithmetic.
//
// A std::complex<float> multiply carries a NaN-recovery branch (C Annex G) that keeps loops from vectorising; these
// kernels compute the textbook products (ar br − ai bi, ai br + ar bi), which are what std::complex returns for
// finite inputs. Each has a baseline-ISA form and an AVX form picked once at run time; neither contracts to FMA
// (this translation unit is built with -ffp-contract=off), so both round the same products and sums and every
// x86-64 host computes the same bits.
#pragma once

#include <complex>
#include <cstddef>

namespace fedlora::phy::kernels {

using cf32 = std::complex<float>;

// acc[m] += a[m] · b[m], m < n.
void multiply_accumulate(const cf32* a, const cf32* b, cf32* acc, std::size_t n);
// out[m] = a[m] · s, m < n (in-place allowed).
void multiply_scalar(const cf32* a, cf32 s, cf32* out, std::size_t n);
// out[m] = in[m] · (t[m] · s), m < n (in-place allowed).
void rotate(const cf32* in, const cf32* t, cf32 s, cf32* out, std::size_t n);

}  // namespace fedlora::phy::kernels
