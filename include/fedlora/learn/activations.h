// Fused activation kernels for the models' hot spots.
//
// gelu_tanh: GELU with the tanh approximation (GPT-2's "gelu_new"),
//   gelu_tanh(x) = ½·x·(1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³),
// evaluated as x·σ(2u) (since ½(1 + tanh u) = σ(2u)) with one exponential per element, and its derivative
//   d/dx = σ(2u) + x·σ(2u)(1 − σ(2u))·2√(2/π)(1 + 3·0.044715·x²).
// Float32 CPU tensors take a vectorised kernel (one pass forward, one pass backward; the exponential is a
// Cephes-style polynomial with Cody-Waite range reduction, relative error ~2e-7 over float's range); LibTorch
// 1.13's own tanh-GELU takes about 0.6 ms forward and as long backward on a [1024, 256] tensor here, ~8x its erf
// GELU. Any other dtype or device falls back to torch::gelu(x, "tanh"). Differentiable once (no double backward).
#pragma once

#include <torch/torch.h>

namespace fedlora::learn {

torch::Tensor gelu_tanh(const torch::Tensor& x);

}  // namespace fedlora::learn
