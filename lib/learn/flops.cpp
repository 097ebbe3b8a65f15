#include "fedlora/learn/flops.h"

#include <set>
#include <stdexcept>
#include <string>

namespace fedlora::learn {
namespace {

// Accumulates products along the model's data flow, tracking whether the residual stream requires grad.
class Counter {
public:
    Counter(std::set<std::string> adapted, std::int64_t rank) : adapted_(std::move(adapted)), rank_(rank) {}

    // A dense layer on `rows` rows; returns whether its output requires grad.
    bool dense(const std::string& name, double rows, double in, double out, bool input_grad) {
        const bool lora = adapted_.count(name) != 0;
        f_.forward += 2.0 * rows * in * out;
        if (input_grad)
            f_.backward += 2.0 * rows * in * out;  // dX = dY · W
        if (lora) {
            const double r = static_cast<double>(rank_);
            f_.forward += 2.0 * rows * in * r + 2.0 * rows * r * out;  // Z = X Aᵀ, Z Bᵀ
            f_.backward += 2.0 * rows * out * r                          // dZ = dY · B
                           + 2.0 * rows * out * r                        // dB = dYᵀ · Z
                           + 2.0 * rows * r * in;                        // dA = dZᵀ · X
            if (input_grad)
                f_.backward += 2.0 * rows * r * in;  // dX += dZ · A
        }
        return input_grad || lora;
    }
    // The two attention products of `heads` heads over n queries and n keys of width hd, per sequence.
    void attention(double batch, double heads, double n, double hd, bool grad) {
        const double one = 2.0 * batch * heads * n * n * hd;
        f_.forward += 2.0 * one;
        if (grad)
            f_.backward += 4.0 * one;
    }
    void plain(double flops) { f_.forward += flops; }
    StepFlops result() const { return f_; }

private:
    std::set<std::string> adapted_;
    std::int64_t rank_;
    StepFlops f_;
};

std::set<std::string> adapted_layers(const TransformerModelImpl& m) {
    const auto names = m.lora_layer_names();
    return {names.begin(), names.end()};
}

std::int64_t rank_of(const TransformerModelImpl& m) { return m.lora_config() ? m.lora_config()->rank : 0; }

}  // namespace

StepFlops lora_step_flops(const ViTImpl& model, std::int64_t batch) {
    if (batch < 1)
        throw std::invalid_argument("lora_step_flops: batch = " + std::to_string(batch) + " must be >= 1");
    const auto& c = model.config();
    const double b = static_cast<double>(batch), p = static_cast<double>(c.num_patches()), n = p + 1.0;
    const double d = static_cast<double>(c.dim), m = static_cast<double>(c.mlp_dim());
    const double h = static_cast<double>(c.heads), hd = d / h;
    Counter k(adapted_layers(model), rank_of(model));
    k.plain(2.0 * b * p * static_cast<double>(c.in_channels * c.patch_size * c.patch_size) * d);  // patch embedding
    bool stream = false;  // embeddings are frozen
    for (std::int64_t i = 0; i < c.depth; ++i) {
        const std::string pre = "blocks." + std::to_string(i) + ".";
        const bool qkv = k.dense(pre + "attn.qkv", b * n, d, 3.0 * d, stream);
        k.attention(b, h, n, hd, qkv);
        stream = k.dense(pre + "attn.proj", b * n, d, d, qkv) || stream;
        const bool fc1 = k.dense(pre + "mlp.fc1", b * n, d, m, stream);
        stream = k.dense(pre + "mlp.fc2", b * n, m, d, fc1) || stream;
    }
    k.dense("head", b, d, static_cast<double>(c.num_classes), stream);
    return k.result();
}

StepFlops lora_step_flops(const GptImpl& model, std::int64_t batch, std::int64_t seq_len) {
    const auto& c = model.config();
    if (batch < 1 || seq_len < 1 || seq_len > c.context)
        throw std::invalid_argument("lora_step_flops: batch = " + std::to_string(batch) + ", seq_len = " +
                                    std::to_string(seq_len) + " (need batch >= 1, 1 <= seq_len <= " +
                                    std::to_string(c.context) + ")");
    const double b = static_cast<double>(batch), t = static_cast<double>(seq_len);
    const double d = static_cast<double>(c.dim), m = static_cast<double>(c.mlp_dim());
    const double h = static_cast<double>(c.heads), hd = d / h;
    Counter k(adapted_layers(model), rank_of(model));
    bool stream = false;  // wte, wpe frozen
    for (std::int64_t i = 0; i < c.depth; ++i) {
        const std::string pre = "h." + std::to_string(i) + ".";
        const bool qkv = k.dense(pre + "attn.c_attn", b * t, d, 3.0 * d, stream);
        k.attention(b, h, t, hd, qkv);
        stream = k.dense(pre + "attn.c_proj", b * t, d, d, qkv) || stream;
        const bool fc = k.dense(pre + "mlp.c_fc", b * t, d, m, stream);
        stream = k.dense(pre + "mlp.c_proj", b * t, m, d, fc) || stream;
    }
    // Tied output head: logits = h · wteᵀ (wte frozen: input gradient only).
    k.dense("<lm_head>", b * t, d, static_cast<double>(c.vocab_size), stream);
    return k.result();
}

}  // namespace fedlora::learn
