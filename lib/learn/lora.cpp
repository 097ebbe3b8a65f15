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

LoraLinearImpl::LoraLinearImpl(int64_t in_features, int64_t out_features, LoraConfig cfg, bool with_bias)
    : cfg_(cfg) {
    cfg_.validate();
    if (in_features < 1 || out_features < 1)
        throw std::invalid_argument("LoraLinear: in_features = " + std::to_string(in_features) +
                                    ", out_features = " + std::to_string(out_features) + " must be >= 1");
    // Base initialisation as torch.nn.Linear: kaiming_uniform(a = sqrt(5)) and U(-1/sqrt(in), 1/sqrt(in)).
    auto w = torch::empty({out_features, in_features});
    torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0));
    weight = register_parameter("weight", w, /*requires_grad=*/false);
    if (with_bias) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
        bias = register_parameter("bias", torch::empty({out_features}).uniform_(-bound, bound), false);
    }
    auto a = torch::empty({cfg_.rank, in_features});
    torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
    lora_A = register_parameter("lora_A", a, true);
    lora_B = register_parameter("lora_B", torch::zeros({out_features, cfg_.rank}), true);
    dropout_ = register_module("lora_dropout", torch::nn::Dropout(cfg_.dropout));
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
    auto y = torch::nn::functional::linear(x, weight, bias);
    if (merged_)
        return y;
    auto z = torch::nn::functional::linear(dropout_->forward(x), lora_A);
    return y + torch::nn::functional::linear(z, lora_B) * scaling();
}

void LoraLinearImpl::merge() {
    if (merged_)
        return;
    torch::NoGradGuard ng;
    weight.add_(torch::matmul(lora_B, lora_A), scaling());
    merged_ = true;
}

void LoraLinearImpl::unmerge() {
    if (!merged_)
        return;
    torch::NoGradGuard ng;
    weight.sub_(torch::matmul(lora_B, lora_A), scaling());
    merged_ = false;
}

}  // namespace fedlora::learn
