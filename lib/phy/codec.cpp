#include "fedlora/phy/codec.h"

namespace fedlora::phy {

void pack_reals(const float* x, std::size_t n, std::complex<float>* out) {
    const std::size_t pairs = n / 2;
    for (std::size_t i = 0; i < pairs; ++i)
        out[i] = {x[2 * i], x[2 * i + 1]};
    if (n % 2)
        out[pairs] = {x[n - 1], 0.0f};
}

void unpack_reals(const std::complex<float>* in, std::size_t n, float* x) {
    const std::size_t pairs = n / 2;
    for (std::size_t i = 0; i < pairs; ++i) {
        x[2 * i] = in[i].real();
        x[2 * i + 1] = in[i].imag();
    }
    if (n % 2)
        x[n - 1] = in[pairs].real();
}

}  // namespace fedlora::phy
