// Analog mapping of real vectors onto complex subcarrier symbols: two reals per symbol (I, Q).
#pragma once

#include <complex>
#include <cstddef>

namespace fedlora::phy {

// Number of complex symbols that carry n real values.
inline std::size_t symbols_for(std::size_t n_reals) { return (n_reals + 1) / 2; }

// out[i] = x[2i] + j x[2i+1]; an odd tail is padded with 0 in Q. `out` holds symbols_for(n) values.
void pack_reals(const float* x, std::size_t n, std::complex<float>* out);

// Inverse of pack_reals: reads symbols_for(n) symbols, writes n reals.
void unpack_reals(const std::complex<float>* in, std::size_t n, float* x);

}  // namespace fedlora::phy
