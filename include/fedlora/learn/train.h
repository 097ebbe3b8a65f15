// Local training and evaluation of a LoRA-adapted model (models.h) on a client's data subset.
//
// train_local runs E optimiser steps over the model's adapter factors ONLY (AdamW or SGD by name), on mini-batches
// drawn without replacement from the client's indices (reshuffled when exhausted) by a std::mt19937_64 seeded
// from (options.seed, client, round); dropout draws from LibTorch's default CPU generator, seeded from the same
// triple for the duration of the call and restored afterwards, so the caller's RNG stream is not disturbed.
// Gradients are clipped by their global L2 norm; the optional SOFT regulariser (soft.h) joins the loss. Same
// inputs, seed and thread count → bit-identical adapter.
//
// The optimiser's state lives outside the optimiser (OptimizerState, checkpoint.h): it is installed before the
// steps and exported after, so one model can serve many simulated clients, each with its own moments, and a
// checkpoint can carry them.
//
// Tasks: a ViT classifies (cross-entropy on labels; evaluation reports accuracy); a GPT predicts the next token
// (GptImpl::lm_loss; evaluation reports perplexity = exp of the mean next-token cross-entropy over all tokens).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fedlora/learn/adapter.h"
#include "fedlora/learn/checkpoint.h"
#include "fedlora/learn/data.h"
#include "fedlora/learn/models.h"

namespace fedlora::learn {

struct TrainOptions {
    std::int64_t local_steps = 10;  // E
    std::int64_t batch_size = 32;
    std::string optimizer = "adamw";  // "adamw" | "sgd"
    double learning_rate = 1e-3;
    double weight_decay = 0.0;  // AdamW: decoupled; SGD: L2 added to the gradient
    double momentum = 0.0;      // SGD only
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW only
    double clip_norm = 1.0;     // max global gradient L2 norm; 0 disables clipping
    int threads = 0;            // intra-op threads (torch::set_num_threads); 0 keeps the current setting
    double soft_lambda = 0.0;   // SOFT regulariser weight λ; 0 disables
    bool train_lora_A = true;   // false freezes A (FFA-LoRA); see AggregationRule::trains
    bool train_lora_B = true;
    std::uint64_t seed = 0;     // mini-batch / dropout seeds derive from (seed, client, round)
    // Throws std::invalid_argument naming the field ("train.<field>").
    void validate() const;
};

// Examples for a model. ViT: inputs float [N, C, H, W], labels int64 [N]. GPT: inputs int64 token ids [N, T],
// labels undefined.
struct TaskData {
    at::Tensor inputs;
    at::Tensor labels;
    std::int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
    static TaskData from_images(const ImageDataset& dataset);
    // Byte-level language-model examples: the texts joined with '\n' and cut into non-overlapping blocks of
    // `block` bytes (the tail shorter than a block is dropped). Throws std::invalid_argument for block < 2.
    static TaskData from_texts(const std::vector<std::string>& texts, std::int64_t block);
};

struct LocalResult {
    double mean_loss = 0.0;         // mean task loss over the E steps (without the regulariser)
    double mean_regularizer = 0.0;  // mean λ·penalty over the steps (0 without SOFT)
    double mean_grad_norm = 0.0;    // mean global gradient norm before clipping
    std::int64_t clipped_steps = 0;
    std::int64_t steps = 0;
    std::int64_t examples = 0;      // examples processed (Σ batch sizes)
    Adapter update;                 // adapter after − before, every LoRA tensor (frozen ones are zero)
};

// Trains the model's current adapter in place (load the client's adapter first, see load_adapter). Only adapter
// factors are optimised (the base must be frozen, as inject_lora leaves it); options.train_lora_A/B select which.
// `optimizer_state` is installed before (it must match the trained parameters and options.optimizer, or be empty)
// and replaced by the state after. Warns once per process through warn_if_reference_blas (blas.h).
// Throws std::invalid_argument for bad options, data or indices, ModelError for a model without adapters.
LocalResult train_local(TransformerModelImpl& model, const TaskData& data, const std::vector<std::int64_t>& indices,
                        const TrainOptions& options, std::int64_t client, std::int64_t round,
                        OptimizerState& optimizer_state);

struct EvalResult {
    double loss = 0.0;        // mean cross-entropy (per example for the ViT, per predicted token for the GPT)
    double accuracy = 0.0;    // ViT: fraction correct; GPT: NaN
    double perplexity = 0.0;  // GPT: exp(loss); ViT: NaN
    std::int64_t examples = 0;
    std::int64_t tokens = 0;  // GPT: predicted tokens (N·(T−1))
};

// Evaluates in eval mode without gradients, in batches; `indices` empty = every example. The model's
// training/eval mode is restored afterwards.
EvalResult evaluate(TransformerModelImpl& model, const TaskData& data, std::int64_t batch_size = 256,
                    const std::vector<std::int64_t>& indices = {}, int threads = 0);

// The model's adapter as plain float32 data (layers in model order), and back (validated completely first:
// same layer names, ranks and shapes, finite values; converted to the model's dtype).
Adapter adapter_from_model(const TransformerModelImpl& model);
void load_adapter(TransformerModelImpl& model, const Adapter& adapter);

// The AdamW / SGD optimiser over `params` configured from `options` (what train_local uses).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                        const TrainOptions& options);
// Export / install an optimiser's per-parameter state by parameter name (names parallel to params).
OptimizerState export_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& kind,
                                      const NamedTensors& named_params);
void import_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& kind,
                            const NamedTensors& named_params, const OptimizerState& state);

}  // namespace fedlora::learn
