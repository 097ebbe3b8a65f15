// The receiver's complex kernels (lib/phy/complex_kernels.h) against std::complex<float> arithmetic: bit-equal for
// finite inputs, at every length (the vector body and the scalar tail), in place too.
#include <gtest/gtest.h>

#include <complex>
#include <cstring>
#include <random>
#include <vector>

#include "../lib/phy/complex_kernels.h"

namespace {

using cf32 = std::complex<float>;
namespace kernels = fedlora::phy::kernels;

std::vector<cf32> random_values(std::size_t n, std::mt19937& rng) {
    // Magnitudes over many binades, so that rounding differences would show.
    std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
    std::uniform_int_distribution<int> expo(-20, 20);
    std::vector<cf32> v(n);
    for (auto& x : v)
        x = {std::ldexp(mant(rng), expo(rng)), std::ldexp(mant(rng), expo(rng))};
    return v;
}

bool bit_equal(const std::vector<cf32>& a, const std::vector<cf32>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(cf32)) == 0);
}

TEST(PhyKernels, MultiplyAccumulateIsStdComplexBitForBit) {
    std::mt19937 rng(11);
    for (std::size_t n = 0; n < 40; ++n) {
        const auto a = random_values(n, rng), b = random_values(n, rng), acc0 = random_values(n, rng);
        auto got = acc0, want = acc0;
        kernels::multiply_accumulate(a.data(), b.data(), got.data(), n);
        for (std::size_t m = 0; m < n; ++m)
            want[m] += a[m] * b[m];
        EXPECT_TRUE(bit_equal(got, want)) << "n = " << n;
    }
}

TEST(PhyKernels, MultiplyScalarIsStdComplexBitForBitAlsoInPlace) {
    std::mt19937 rng(12);
    for (std::size_t n = 0; n < 40; ++n) {
        const auto a = random_values(n, rng);
        const cf32 s = random_values(1, rng)[0];
        std::vector<cf32> got(n), want(n), inplace = a;
        kernels::multiply_scalar(a.data(), s, got.data(), n);
        kernels::multiply_scalar(inplace.data(), s, inplace.data(), n);
        for (std::size_t m = 0; m < n; ++m)
            want[m] = a[m] * s;
        EXPECT_TRUE(bit_equal(got, want)) << "n = " << n;
        EXPECT_TRUE(bit_equal(inplace, want)) << "n = " << n;
    }
}

TEST(PhyKernels, RotateIsStdComplexBitForBit) {
    std::mt19937 rng(13);
    for (std::size_t n = 0; n < 40; ++n) {
        const auto x = random_values(n, rng), t = random_values(n, rng);
        const cf32 s = random_values(1, rng)[0];
        std::vector<cf32> got(n), want(n), inplace = x;
        kernels::rotate(x.data(), t.data(), s, got.data(), n);
        kernels::rotate(inplace.data(), t.data(), s, inplace.data(), n);
        for (std::size_t m = 0; m < n; ++m)
            want[m] = x[m] * (t[m] * s);
        EXPECT_TRUE(bit_equal(got, want)) << "n = " << n;
        EXPECT_TRUE(bit_equal(inplace, want)) << "n = " << n;
    }
}

}  // namespace
