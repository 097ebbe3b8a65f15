#include "fedlora/learn/activations.h"

#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>

// Compiled with -fno-trapping-math (lib/learn/CMakeLists.txt) so that the clamps below vectorise; each kernel is
// built for AVX-512, AVX2 and baseline x86-64 and picked at load time (GCC function multi-versioning).
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FEDLORA_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FEDLORA_SIMD_CLONES
#endif

namespace fedlora::learn {
namespace {

constexpr float kTwoC = 1.5957691216057308f;  // 2·√(2/π)
constexpr float kA = 0.044715f;

// e^v, branch-free so that loops over it vectorise: v = n·ln2 + r with n = round(v·log2 e) and |r| <= ln2/2
// (ln 2 split in two parts, Cody-Waite), e^r by a degree-7 polynomial (Cephes expf coefficients), 2^n through
// the exponent bits. Inputs are clamped to [-87, 88], where the result stays a normal float.
inline float exp_approx(float v) {
    v = v < -87.0f ? -87.0f : v;
    v = v > 88.0f ? 88.0f : v;
    const float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5·2²³ trick)
    const float r = (v - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;  // n + 127 >= 1 after the clamp
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

FEDLORA_SIMD_CLONES
void gelu_tanh_forward_kernel(const float* __restrict x, float* __restrict y, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        const float s = 1.0f / (1.0f + exp_approx(-kTwoC * v * (1.0f + kA * v * v)));  // σ(2u)
        y[i] = v * s;
    }
}

FEDLORA_SIMD_CLONES
void gelu_tanh_backward_kernel(const float* __restrict g, const float* __restrict x, float* __restrict dx,
                               std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        const float v2 = v * v;
        const float s = 1.0f / (1.0f + exp_approx(-kTwoC * v * (1.0f + kA * v2)));
        dx[i] = g[i] * (s + v * s * (1.0f - s) * kTwoC * (1.0f + 3.0f * kA * v2));
    }
}

constexpr std::int64_t kGrain = 1 << 15;  // elements per parallel chunk

bool fast_path(const torch::Tensor& x) { return x.device().is_cpu() && x.scalar_type() == torch::kFloat; }

torch::Tensor forward_float(const torch::Tensor& input) {
    const auto x = input.contiguous();
    auto y = torch::empty_like(x, at::MemoryFormat::Contiguous);
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, x.numel(), kGrain, [&](std::int64_t b, std::int64_t e) {
        gelu_tanh_forward_kernel(xp + b, yp + b, e - b);
    });
    return y;
}

torch::Tensor backward_float(const torch::Tensor& grad, const torch::Tensor& input) {
    const auto g = grad.contiguous();
    const auto x = input.contiguous();
    auto dx = torch::empty_like(x, at::MemoryFormat::Contiguous);
    const float* gp = g.data_ptr<float>();
    const float* xp = x.data_ptr<float>();
    float* dp = dx.data_ptr<float>();
    at::parallel_for(0, x.numel(), kGrain, [&](std::int64_t b, std::int64_t e) {
        gelu_tanh_backward_kernel(gp + b, xp + b, dp + b, e - b);
    });
    return dx;
}

class GeluTanhFunction : public torch::autograd::Function<GeluTanhFunction> {
public:
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
        ctx->save_for_backward({x});
        return forward_float(x);
    }
    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::tensor_list grads) {
        const auto saved = ctx->get_saved_variables();
        return {backward_float(grads[0], saved[0])};
    }
};

}  // namespace

torch::Tensor gelu_tanh(const torch::Tensor& x) {
    if (!fast_path(x))
        return torch::gelu(x, "tanh");
    if (torch::GradMode::is_enabled() && x.requires_grad())
        return GeluTanhFunction::apply(x);
    return forward_float(x);
}

}  // namespace fedlora::learn
