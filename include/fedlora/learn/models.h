// Transformer models with LoRA: a ViT for small single-channel images (Fashion-MNIST) and a GPT-2-layout
// byte-level decoder. Both are LibTorch C++-frontend modules (TORCH_MODULE holders ViT and Gpt) whose parameter
// names are those of the reference implementations, so that their checkpoints load tensor for tensor:
//
// ViT (timm's VisionTransformer names; pre-norm blocks, LayerNorm eps 1e-6, exact erf GELU):
//   patch_embed.proj.{weight [D, C, P, P], bias [D]}   Conv2d, kernel = stride = patch
//   cls_token [1, 1, D]   pos_embed [1, 1 + (S/P)², D]
//   blocks.{i}.norm1.{weight, bias}   blocks.{i}.attn.qkv.{weight [3D, D], bias}   blocks.{i}.attn.proj.{weight [D, D], bias}
//   blocks.{i}.norm2.{weight, bias}   blocks.{i}.mlp.fc1.{weight [M, D], bias}     blocks.{i}.mlp.fc2.{weight [D, M], bias}
//   norm.{weight, bias}   head.{weight [classes, D], bias}
//   (every dense weight [out, in], as torch.nn.Linear)
//
// GPT (Hugging Face GPT2Model names; pre-norm blocks, LayerNorm eps 1e-5, GELU tanh approximation, causal
// self-attention, output head tied to wte: logits = h_final · wteᵀ):
//   wte.weight [V, D]   wpe.weight [T, D]
//   h.{i}.ln_1.{weight, bias}   h.{i}.attn.c_attn.{weight [D, 3D], bias [3D]}   h.{i}.attn.c_proj.{weight [D, D], bias}
//   h.{i}.ln_2.{weight, bias}   h.{i}.mlp.c_fc.{weight [D, M], bias [M]}        h.{i}.mlp.c_proj.{weight [M, D], bias}
//   ln_f.{weight, bias}
//   GPT-2's Conv1D stores its weight as [in, out], the transpose of torch.nn.Linear; the dense layers here use
//   WeightLayout::InOut and hold, load and save the weight in that layout, so a real GPT-2 safetensors file
//   loads as it is. Loading also accepts GPT2LMHeadModel files: a leading "transformer." is stripped, and
//   "lm_head.weight" (tied to wte) and the causal-mask buffers "h.{i}.attn.bias" / "h.{i}.attn.masked_bias" are
//   skipped.
//
// LoRA: inject_lora(targets, cfg) swaps every dense layer whose dotted name equals a target or ends with
// "." + target (so "c_proj" adapts both h.{i}.attn.c_proj and h.{i}.mlp.c_proj, "attn.c_proj" only the first)
// for a LoraLinear sharing its weight, and freezes every base parameter (requires_grad false). Adapter tensors
// are named "<layer>.lora_A" [r, in] and "<layer>.lora_B" [out, r] in both weight layouts. Only dense layers
// are candidates (the patch-embedding convolution and the embeddings are not).
//
// State dicts are lists of (name, tensor) in model order, detached and sharing the parameters' storage; they are
// written with save_safetensors and read back with load_safetensors (see safetensors.h). Every load is validated
// completely before any parameter changes: unknown names, missing names, non-floating dtypes and shape
// mismatches throw ModelError naming the tensor (and both shapes). Tensors are converted to the model's dtype.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedlora/learn/lora.h"
#include "fedlora/learn/safetensors.h"

namespace fedlora::learn {

class ModelError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Common base of the models: LoRA injection, adapter listing, merge, state dicts and checkpoints.
class TransformerModelImpl : public torch::nn::Module {
public:
    // Adapts the matching dense layers (see above) and freezes the base. Returns the adapted layers' names in model
    // order. Throws std::invalid_argument when `targets` is empty, when a target matches no dense layer (the
    // message lists the candidates), or when a matched layer already has an adapter; nothing changes then.
    std::vector<std::string> inject_lora(const std::vector<std::string>& targets, const LoraConfig& cfg);
    bool has_lora() const;
    // The configuration of the injected adapters (nullopt before inject_lora).
    const std::optional<LoraConfig>& lora_config() const { return lora_cfg_; }
    std::vector<std::string> dense_layer_names() const;  // every candidate, in model order
    std::vector<std::string> lora_layer_names() const;   // the adapted ones

    // Sets requires_grad = false on every parameter that is not a LoRA factor.
    void freeze_base();
    // Adapter factors only (what an optimiser is given), in model order.
    std::vector<torch::Tensor> lora_parameters() const;
    NamedTensors named_lora_parameters() const;  // the parameters themselves (not detached)

    // Fold every adapter into its base weight and back out (idempotent). Training needs them unmerged.
    void merge_lora();
    void unmerge_lora();
    bool lora_merged() const;  // true when every adapter is merged (false without adapters)

    NamedTensors lora_state_dict() const;  // "<layer>.lora_A", "<layer>.lora_B"
    NamedTensors base_state_dict() const;  // everything else; with adapters merged, the merged weights
    NamedTensors full_state_dict() const;  // both, in model order

    // Strict loads: the tensors must be exactly the model's adapter (resp. base) tensors. If the adapters are
    // merged they are unmerged before and merged again after. `origin` (a path) starts error messages.
    void load_lora_state_dict(const std::map<std::string, at::Tensor>& tensors,
                              const std::string& origin = "state dict");
    void load_base_state_dict(const std::map<std::string, at::Tensor>& tensors,
                              const std::string& origin = "state dict");
    // Base and, if the model has adapters, adapter tensors; the adapters may be absent from `tensors` when
    // `require_lora` is false (loading a base checkpoint into an adapted model).
    void load_full_state_dict(const std::map<std::string, at::Tensor>& tensors, bool require_lora = true,
                              const std::string& origin = "state dict");

    // Checkpoints (safetensors, with metadata() in the header; adapter files also record the LoRA config, and
    // loading one checks that its alpha and rank match the model's).
    void save_lora(const std::string& path) const;
    void save_base(const std::string& path) const;
    void save_full(const std::string& path) const;
    void load_lora(const std::string& path);
    void load_base(const std::string& path);
    void load_full(const std::string& path, bool require_lora = true);

    // Architecture description for checkpoint headers: "fedlora.model" plus the config fields, and with adapters
    // "lora.rank", "lora.alpha", "lora.dropout", "lora.layers" (comma-separated).
    virtual TensorMetadata metadata() const = 0;

protected:
    // A dense layer the model can adapt: its dotted name, the module it is registered in, its name there and the
    // member that holds it.
    struct DenseSlot {
        std::string name;
        torch::nn::Module* parent = nullptr;
        std::string local;
        std::shared_ptr<DenseImpl>* layer = nullptr;
    };
    virtual std::vector<DenseSlot> dense_slots() const = 0;
    // The "lora.*" entries of metadata() (empty without adapters).
    TensorMetadata lora_metadata() const;
    // Maps a checkpoint tensor name to the model's name; nullopt skips the tensor. Identity by default.
    virtual std::optional<std::string> checkpoint_name(const std::string& name) const { return name; }

private:
    enum class Scope { Base, Lora, Full };
    void load_scoped(const std::map<std::string, at::Tensor>& tensors, Scope scope, bool require_lora,
                     const std::string& origin);
    TensorMetadata checkpoint_metadata(bool with_lora) const;
    void check_lora_metadata(const TensorMetadata& metadata, const std::string& path) const;

    std::optional<LoraConfig> lora_cfg_;
};

// ---- ViT --------------------------------------------------------------------------------------------------------

struct ViTConfig {
    int64_t image_size = 28;  // square images
    int64_t patch_size = 7;   // divides image_size
    int64_t in_channels = 1;
    int64_t dim = 64;
    int64_t depth = 2;
    int64_t heads = 4;  // divides dim
    double mlp_ratio = 4.0;
    int64_t num_classes = 10;
    double dropout = 0.0;  // after the position embedding, on attention weights, after attn.proj, fc1 and fc2
    double layer_norm_eps = 1e-6;

    int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
    int64_t mlp_dim() const;
    void validate() const;  // throws std::invalid_argument naming the field ("vit.<field>")
};

class ViTPatchEmbedImpl;
class ViTBlockImpl;

class ViTImpl : public TransformerModelImpl {
public:
    explicit ViTImpl(const ViTConfig& cfg = {});

    // images [B, C, S, S] (any floating dtype the model has) -> logits [B, num_classes]
    torch::Tensor forward(const torch::Tensor& images);
    // The final-normed class token [B, dim] (the head's input).
    torch::Tensor features(const torch::Tensor& images);

    const ViTConfig& config() const { return cfg_; }
    TensorMetadata metadata() const override;

    torch::Tensor cls_token;  // [1, 1, dim]
    torch::Tensor pos_embed;  // [1, 1 + num_patches, dim]

protected:
    std::vector<DenseSlot> dense_slots() const override;

private:
    ViTConfig cfg_;
    std::shared_ptr<ViTPatchEmbedImpl> patch_embed_;
    std::vector<std::shared_ptr<ViTBlockImpl>> blocks_;
    torch::nn::Dropout pos_drop_{nullptr};
    torch::nn::LayerNorm norm_{nullptr};
    std::shared_ptr<DenseImpl> head_;
};
TORCH_MODULE(ViT);

// ---- GPT (GPT-2 layout) -------------------------------------------------------------------------------------------

struct GptConfig {
    int64_t vocab_size = 256;  // bytes
    int64_t context = 32;      // n_positions
    int64_t dim = 64;          // n_embd
    int64_t depth = 2;         // n_layer
    int64_t heads = 4;         // n_head, divides dim
    double mlp_ratio = 4.0;    // n_inner = mlp_ratio · dim
    double dropout = 0.0;      // embd_pdrop = attn_pdrop = resid_pdrop
    double layer_norm_eps = 1e-5;

    int64_t mlp_dim() const;
    void validate() const;  // throws std::invalid_argument naming the field ("gpt.<field>")
};

class GptBlockImpl;

class GptImpl : public TransformerModelImpl {
public:
    explicit GptImpl(const GptConfig& cfg = {});

    // ids [B, T] (integer, values < vocab_size, T <= context) -> logits [B, T, vocab_size]
    torch::Tensor forward(const torch::Tensor& ids);
    // Token embeddings wte[ids] [B, T, dim] (without positions: forward_embeds adds them).
    torch::Tensor embed(const torch::Tensor& ids);
    // Token embeddings [B, T, dim] -> logits [B, T, vocab_size]; forward(ids) = forward_embeds(embed(ids)).
    torch::Tensor forward_embeds(const torch::Tensor& token_embeds);
    // Mean next-token cross-entropy of logits [B, T, V] against ids [B, T] (positions 0..T-2 predict 1..T-1).
    static torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& ids);

    const GptConfig& config() const { return cfg_; }
    TensorMetadata metadata() const override;

    torch::nn::Embedding wte{nullptr};
    torch::nn::Embedding wpe{nullptr};

protected:
    std::vector<DenseSlot> dense_slots() const override;
    std::optional<std::string> checkpoint_name(const std::string& name) const override;

private:
    GptConfig cfg_;
    torch::nn::Dropout drop_{nullptr};
    std::vector<std::shared_ptr<GptBlockImpl>> blocks_;
    torch::nn::LayerNorm ln_f_{nullptr};
};
TORCH_MODULE(Gpt);

}  // namespace fedlora::learn
