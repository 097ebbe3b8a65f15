// LoRA linear layer: y = x Wᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ with W, b frozen and A (r×in), B (out×r)
// trainable. B starts at zero so a fresh adapter leaves the base model unchanged.
#pragma once

#include <torch/torch.h>

namespace fedlora::learn {

struct LoraConfig {
    int64_t rank = 8;
    double alpha = 16.0;
    double dropout = 0.0;
    void validate() const;  // throws std::invalid_argument naming the bad field
};

class LoraLinearImpl : public torch::nn::Module {
public:
    LoraLinearImpl(int64_t in_features, int64_t out_features, LoraConfig cfg, bool bias = true);

    torch::Tensor forward(const torch::Tensor& x);

    // Folds scaling·BA into the frozen weight (inference) and back out. Idempotent.
    void merge();
    void unmerge();
    bool merged() const { return merged_; }

    double scaling() const { return cfg_.alpha / static_cast<double>(cfg_.rank); }
    const LoraConfig& config() const { return cfg_; }

    torch::Tensor weight;  // frozen, out×in
    torch::Tensor bias;    // frozen, out (undefined without bias)
    torch::Tensor lora_A;  // trainable, r×in
    torch::Tensor lora_B;  // trainable, out×r

private:
    LoraConfig cfg_;
    bool merged_ = false;
    torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(LoraLinear);

}  // namespace fedlora::learn
