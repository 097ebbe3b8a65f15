// Analytic FLOP counts of the models' training steps, for throughput figures (fedlora bench train).
//
// Only matrix products are counted, at 2·m·n·k FLOPs for an [m, k] × [k, n] product (multiply and add); the
// element-wise work (LayerNorm, softmax, GELU, residual adds, the loss, the optimiser update) is left out. It is a
// few percent of the total for these models and is not what a matmul benchmark measures.
//
// Forward: every dense layer (rows × in × out; the ViT head runs on the class token only, the GPT's tied output
// head on every position), the patch-embedding convolution as a product, the two attention products per head
// (QKᵀ and AV, full N×N even under the causal mask, as LibTorch computes them), and each LoRA branch
// (x·Aᵀ then ·Bᵀ: rows·r·(in + out)).
//
// Backward of a LoRA step follows what autograd actually computes: frozen weights get no weight gradient, and a
// product's input gradient is formed only when that input depends on a trainable tensor. So a frozen dense layer
// costs one more forward-sized product iff its input requires grad (dX = dY·W); a LoRA branch costs dZ = dY·B,
// dB = dYᵀ·Z, dA = dZᵀ·X (and dX = dZ·A iff its input requires grad); an attention product whose operands require
// grad costs twice its forward (a gradient for each operand). The residual stream starts without grad (frozen
// embeddings) and requires it from the first adapted layer on: e.g. with LoRA on every block's qkv, the first
// block's frozen qkv product has no backward at all, and the patch embedding never has one.
#pragma once

#include <cstdint>

#include "fedlora/learn/models.h"

namespace fedlora::learn {

struct StepFlops {
    double forward = 0.0;
    double backward = 0.0;
    double total() const { return forward + backward; }
};

// One LoRA training step (forward + backward) of the model as it is (its adapted layers and rank) on a batch of
// `batch` images, resp. `batch` sequences of `seq_len` tokens (seq_len <= context). A model without adapters
// counts as full fine-tuning of nothing: forward only (backward 0).
StepFlops lora_step_flops(const ViTImpl& model, std::int64_t batch);
StepFlops lora_step_flops(const GptImpl& model, std::int64_t batch, std::int64_t seq_len);

}  // namespace fedlora::learn
