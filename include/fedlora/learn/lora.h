// Dense layers and LoRA.
//
// Dense: y = x Wᵀ + b, with the weight stored in one of two layouts:
//   WeightLayout::OutIn — [out, in], as torch.nn.Linear (and timm's ViT) store it;
//   WeightLayout::InOut — [in, out], as GPT-2's Conv1D stores it (y = x W + b), so that GPT-2 checkpoints load
//                         and save tensor for tensor, without transposing.
//
// LoraLinear: a Dense whose weight and bias are frozen (registered without grad) plus a trainable low-rank
// adapter: y = x Wᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ, with A (r×in) and B (out×r) in BOTH layouts (the
// PEFT convention, fan_in_fan_out only changes how W is stored). B starts at zero so a fresh adapter leaves the
// base model unchanged. A LoraLinear is a Dense, so a model holding std::shared_ptr<DenseImpl> members can swap
// a plain layer for an adapted one (see models.h).
#pragma once

#include <torch/torch.h>

#include <ostream>

namespace fedlora::learn {

struct LoraConfig {
    int64_t rank = 8;
    double alpha = 16.0;
    double dropout = 0.0;
    void validate() const;  // throws std::invalid_argument naming the bad field
};

enum class WeightLayout {
    OutIn,  // [out, in]: torch.nn.Linear
    InOut,  // [in, out]: GPT-2 Conv1D
};
const char* to_string(WeightLayout layout);

class DenseImpl : public torch::nn::Module {
public:
    // Initialisation: OutIn as torch.nn.Linear (kaiming_uniform(a = sqrt 5), bias U(±1/sqrt(in))); InOut as
    // GPT-2's Conv1D (weight N(0, 0.02), bias 0). `trainable` = false registers weight and bias without grad.
    DenseImpl(int64_t in_features, int64_t out_features, bool bias = true,
              WeightLayout layout = WeightLayout::OutIn, bool trainable = true);

    virtual torch::Tensor forward(const torch::Tensor& x);

    int64_t in_features() const { return in_; }
    int64_t out_features() const { return out_; }
    WeightLayout layout() const { return layout_; }
    // The weight as an [out, in] matrix whatever the layout (a view for InOut).
    torch::Tensor weight_out_in() const;

    void pretty_print(std::ostream& stream) const override;

    torch::Tensor weight;  // [out, in] or [in, out], see layout()
    torch::Tensor bias;    // [out] (undefined without bias)

protected:
    // Adopts existing tensors (storage shared, detached from any graph) as the weight and bias.
    DenseImpl(const torch::Tensor& weight, const torch::Tensor& bias, WeightLayout layout, bool trainable);

private:
    int64_t in_ = 0;
    int64_t out_ = 0;
    WeightLayout layout_ = WeightLayout::OutIn;
};
TORCH_MODULE(Dense);

class LoraLinearImpl : public DenseImpl {
public:
    LoraLinearImpl(int64_t in_features, int64_t out_features, LoraConfig cfg, bool bias = true,
                   WeightLayout layout = WeightLayout::OutIn);
    // Wraps an existing dense layer: shares its weight and bias storage (now frozen) and its layout, and adds a
    // fresh adapter (A kaiming-uniform, B zero) of the base weight's dtype and device.
    LoraLinearImpl(const DenseImpl& base, LoraConfig cfg);

    torch::Tensor forward(const torch::Tensor& x) override;

    // Folds scaling·BA into the frozen weight (inference) and back out. Idempotent.
    void merge();
    void unmerge();
    bool merged() const { return merged_; }

    double scaling() const { return cfg_.alpha / static_cast<double>(cfg_.rank); }
    const LoraConfig& config() const { return cfg_; }
    // scaling · B A as an [out, in] matrix (the update the adapter makes to the base weight).
    torch::Tensor delta_weight() const;

    void pretty_print(std::ostream& stream) const override;

    torch::Tensor lora_A;  // trainable, r×in
    torch::Tensor lora_B;  // trainable, out×r

private:
    void init_adapter();

    LoraConfig cfg_;
    bool merged_ = false;
    torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(LoraLinear);

}  // namespace fedlora::learn
