#include "fedlora/learn/lora.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace fedlora::learn {

void LoraConfig::validate() const {
    if (rank < 1)
        throw std::invalid_argument("lora.rank = " + std::to_string(rank) + " must be >= 1");
    if (!(alpha > 0.0) || !std::isfinite(alpha))
        throw std::invalid_argument("lora.alpha = " + std::to_string(alpha) + " must be finite and > 0");
    if (!(dropout >= 0.0 && dropout < 1.0))
        throw std::invalid_argument("lora.dropout = " + std::to_string(dropout) + " must be in [0, 1)");
}

const char* to_string(WeightLayout layout) {
    switch (layout) {
    case WeightLayout::OutIn:
        return "out_in";
    case WeightLayout::InOut:
        return "in_out";
    }
    return "?";
}

// ---- Dense ----------------------------------------------------------------------------------------------------

DenseImpl::DenseImpl(int64_t in_features, int64_t out_features, bool with_bias, WeightLayout layout,
                     bool trainable)
    : in_(in_features), out_(out_features), layout_(layout) {
    if (in_features < 1 || out_features < 1)
        throw std::invalid_argument("Dense: in_features = " + std::to_string(in_features) +
                                    ", out_features = " + std::to_string(out_features) + " must be >= 1");
    torch::Tensor w, b;
    if (layout == WeightLayout::OutIn) {
        // As torch.nn.Linear: kaiming_uniform(a = sqrt(5)) and U(-1/sqrt(in), 1/sqrt(in)).
        w = torch::empty({out_features, in_features});
        torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0));
        if (with_bias) {
            const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
            b = torch::empty({out_features}).uniform_(-bound, bound);
        }
    } else {
        // As GPT-2's Conv1D: N(0, 0.02), zero bias.
        w = torch::empty({in_features, out_features}).normal_(0.0, 0.02);
        if (with_bias)
            b = torch::zeros({out_features});
    }
    weight = register_parameter("weight", w, trainable);
    if (with_bias)
        bias = register_parameter("bias", b, trainable);
}

DenseImpl::DenseImpl(const torch::Tensor& w, const torch::Tensor& b, WeightLayout layout, bool trainable)
    : layout_(layout) {
    if (!w.defined() || w.dim() != 2)
        throw std::invalid_argument("Dense: the adopted weight must be a defined 2-D tensor");
    in_ = layout == WeightLayout::OutIn ? w.size(1) : w.size(0);
    out_ = layout == WeightLayout::OutIn ? w.size(0) : w.size(1);
    if (b.defined() && (b.dim() != 1 || b.size(0) != out_))
        throw std::invalid_argument("Dense: the adopted bias must have shape [" + std::to_string(out_) + "]");
    weight = register_parameter("weight", w.detach(), trainable);
    if (b.defined())
        bias = register_parameter("bias", b.detach(), trainable);
}

torch::Tensor DenseImpl::weight_out_in() const { return layout_ == WeightLayout::OutIn ? weight : weight.t(); }

torch::Tensor DenseImpl::forward(const torch::Tensor& x) {
    return torch::nn::functional::linear(x, weight_out_in(), bias);
}

void DenseImpl::pretty_print(std::ostream& stream) const {
    stream << "fedlora::learn::Dense(in=" << in_ << ", out=" << out_ << ", bias=" << bias.defined()
           << ", layout=" << to_string(layout_) << ")";
}

// ---- LoraLinear -------------------------------------------------------------------------------------------------

namespace {
// Validates the adapter configuration before the base layer is built (used in the constructors' init lists).
template <typename T>
const T& after_validating(const LoraConfig& cfg, const T& value) {
    cfg.validate();
    return value;
}
}  // namespace

LoraLinearImpl::LoraLinearImpl(int64_t in_features, int64_t out_features, LoraConfig cfg, bool with_bias,
                               WeightLayout layout)
    : DenseImpl(after_validating(cfg, in_features), out_features, with_bias, layout, /*trainable=*/false), cfg_(cfg) {
    init_adapter();
}

LoraLinearImpl::LoraLinearImpl(const DenseImpl& base, LoraConfig cfg)
    : DenseImpl(after_validating(cfg, base.weight), base.bias, base.layout(), /*trainable=*/false), cfg_(cfg) {
    init_adapter();
}

void LoraLinearImpl::init_adapter() {
    const auto opts = weight.options().requires_grad(false);
    auto a = torch::empty({cfg_.rank, in_features()}, opts);
    torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
    lora_A = register_parameter("lora_A", a, true);
    lora_B = register_parameter("lora_B", torch::zeros({out_features(), cfg_.rank}, opts), true);
    dropout_ = register_module("lora_dropout", torch::nn::Dropout(cfg_.dropout));
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
    auto y = DenseImpl::forward(x);
    if (merged_)
        return y;
    // y + scaling · (dropout(x) Aᵀ) Bᵀ, the add and the scaling folded into one GEMM (addmm, beta 1, alpha scaling).
    auto z = torch::nn::functional::linear(dropout_->forward(x), lora_A);
    const int64_t out = y.size(-1);
    return torch::addmm(y.reshape({-1, out}), z.reshape({-1, cfg_.rank}), lora_B.t(), 1.0, scaling()).view(y.sizes());
}

torch::Tensor LoraLinearImpl::delta_weight() const { return torch::matmul(lora_B, lora_A) * scaling(); }

void LoraLinearImpl::merge() {
    if (merged_)
        return;
    torch::NoGradGuard ng;
    auto d = torch::matmul(lora_B, lora_A);
    weight.add_(layout() == WeightLayout::OutIn ? d : d.t(), scaling());
    merged_ = true;
}

void LoraLinearImpl::unmerge() {
    if (!merged_)
        return;
    torch::NoGradGuard ng;
    auto d = torch::matmul(lora_B, lora_A);
    weight.sub_(layout() == WeightLayout::OutIn ? d : d.t(), scaling());
    merged_ = false;
}

void LoraLinearImpl::pretty_print(std::ostream& stream) const {
    stream << "fedlora::learn::LoraLinear(in=" << in_features() << ", out=" << out_features()
           << ", bias=" << bias.defined() << ", layout=" << to_string(layout()) << ", rank=" << cfg_.rank
           << ", alpha=" << cfg_.alpha << ", dropout=" << cfg_.dropout << (merged_ ? ", merged" : "") << ")";
}

}  // namespace fedlora::learn
