#include "complex_kernels.h"

#include <immintrin.h>

namespace fedlora::phy::kernels {

namespace {

// Scalar forms: the reference every vector form reproduces bit for bit.
inline void mul(float ar, float ai, float br, float bi, float& re, float& im) {
    re = ar * br - ai * bi;
    im = ai * br + ar * bi;
}

void multiply_accumulate_generic(const float* a, const float* b, float* acc, std::size_t n) {
    for (std::size_t m = 0; m < n; ++m) {
        float re, im;
        mul(a[2 * m], a[2 * m + 1], b[2 * m], b[2 * m + 1], re, im);
        acc[2 * m] += re;
        acc[2 * m + 1] += im;
    }
}

void multiply_scalar_generic(const float* a, float sr, float si, float* out, std::size_t n) {
    for (std::size_t m = 0; m < n; ++m) {
        float re, im;
        mul(a[2 * m], a[2 * m + 1], sr, si, re, im);
        out[2 * m] = re;
        out[2 * m + 1] = im;
    }
}

void rotate_generic(const float* in, const float* t, float sr, float si, float* out, std::size_t n) {
    for (std::size_t m = 0; m < n; ++m) {
        float ur, ui, re, im;
        mul(t[2 * m], t[2 * m + 1], sr, si, ur, ui);
        mul(in[2 * m], in[2 * m + 1], ur, ui, re, im);
        out[2 * m] = re;
        out[2 * m + 1] = im;
    }
}

// AVX, four complex values per step: for interleaved a and b, addsub(a · dup(re b), swap(a) · dup(im b)) =
// (ar br − ai bi, ai br + ar bi), the scalar form's products and sums.
__attribute__((target("avx"))) inline __m256 mul_avx(__m256 a, __m256 b) {
    return _mm256_addsub_ps(_mm256_mul_ps(a, _mm256_moveldup_ps(b)),
                            _mm256_mul_ps(_mm256_permute_ps(a, 0xB1), _mm256_movehdup_ps(b)));
}

__attribute__((target("avx"))) void multiply_accumulate_avx(const float* a, const float* b, float* acc,
                                                             std::size_t n) {
    std::size_t m = 0;
    for (; m + 4 <= n; m += 4) {
        const __m256 p = mul_avx(_mm256_loadu_ps(a + 2 * m), _mm256_loadu_ps(b + 2 * m));
        _mm256_storeu_ps(acc + 2 * m, _mm256_add_ps(_mm256_loadu_ps(acc + 2 * m), p));
    }
    multiply_accumulate_generic(a + 2 * m, b + 2 * m, acc + 2 * m, n - m);
}

__attribute__((target("avx"))) void multiply_scalar_avx(const float* a, float sr, float si, float* out,
                                                         std::size_t n) {
    const __m256 s = _mm256_setr_ps(sr, si, sr, si, sr, si, sr, si);
    std::size_t m = 0;
    for (; m + 4 <= n; m += 4)
        _mm256_storeu_ps(out + 2 * m, mul_avx(_mm256_loadu_ps(a + 2 * m), s));
    multiply_scalar_generic(a + 2 * m, sr, si, out + 2 * m, n - m);
}

__attribute__((target("avx"))) void rotate_avx(const float* in, const float* t, float sr, float si, float* out,
                                                std::size_t n) {
    const __m256 s = _mm256_setr_ps(sr, si, sr, si, sr, si, sr, si);
    std::size_t m = 0;
    for (; m + 4 <= n; m += 4) {
        const __m256 u = mul_avx(_mm256_loadu_ps(t + 2 * m), s);
        _mm256_storeu_ps(out + 2 * m, mul_avx(_mm256_loadu_ps(in + 2 * m), u));
    }
    rotate_generic(in + 2 * m, t + 2 * m, sr, si, out + 2 * m, n - m);
}

bool has_avx() {
    static const bool avx = __builtin_cpu_supports("avx");
    return avx;
}

inline const float* f(const cf32* p) { return reinterpret_cast<const float*>(p); }
inline float* f(cf32* p) { return reinterpret_cast<float*>(p); }

}  // namespace

void multiply_accumulate(const cf32* a, const cf32* b, cf32* acc, std::size_t n) {
    (has_avx() ? multiply_accumulate_avx : multiply_accumulate_generic)(f(a), f(b), f(acc), n);
}

void multiply_scalar(const cf32* a, cf32 s, cf32* out, std::size_t n) {
    (has_avx() ? multiply_scalar_avx : multiply_scalar_generic)(f(a), s.real(), s.imag(), f(out), n);
}

void rotate(const cf32* in, const cf32* t, cf32 s, cf32* out, std::size_t n) {
    (has_avx() ? rotate_avx : rotate_generic)(f(in), f(t), s.real(), s.imag(), f(out), n);
}

}  // namespace fedlora::phy::kernels
