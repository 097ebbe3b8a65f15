#include "fedlora/learn/models.h"

#include "fedlora/learn/activations.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

namespace fedlora::learn {

namespace {

namespace F = torch::nn::functional;

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_lora_name(const std::string& name) { return ends_with(name, ".lora_A") || ends_with(name, ".lora_B"); }

// A target matches a layer name when equal to it or to a whole dotted suffix of it.
bool target_matches(const std::string& name, const std::string& target) {
    return name == target || ends_with(name, "." + target);
}

std::string shape_string(at::IntArrayRef shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

std::string number_string(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

std::string join(const std::vector<std::string>& items, const std::string& sep, std::size_t limit) {
    std::string s;
    for (std::size_t i = 0; i < items.size() && i < limit; ++i)
        s += (i ? sep : "") + items[i];
    if (items.size() > limit)
        s += sep + "... (" + std::to_string(items.size() - limit) + " more)";
    return s;
}

void require(bool ok, const std::string& field, const std::string& what) {
    if (!ok)
        throw std::invalid_argument(field + " " + what);
}

torch::nn::LayerNorm make_layer_norm(int64_t dim, double eps) {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

}  // namespace

// ---- TransformerModelImpl -------------------------------------------------------------------------------------------

std::vector<std::string> TransformerModelImpl::inject_lora(const std::vector<std::string>& targets,
                                                           const LoraConfig& cfg) {
    cfg.validate();
    if (targets.empty())
        throw std::invalid_argument("inject_lora: no target module names given");
    if (lora_cfg_ && (lora_cfg_->rank != cfg.rank || lora_cfg_->alpha != cfg.alpha ||
                      lora_cfg_->dropout != cfg.dropout))
        throw std::invalid_argument("inject_lora: the model already has adapters with another configuration");
    auto slots = dense_slots();
    std::vector<bool> selected(slots.size(), false);
    for (const auto& target : targets) {
        if (target.empty())
            throw std::invalid_argument("inject_lora: empty target module name");
        bool any = false;
        for (std::size_t i = 0; i < slots.size(); ++i)
            if (target_matches(slots[i].name, target)) {
                selected[i] = true;
                any = true;
            }
        if (!any) {
            std::vector<std::string> locals;
            std::set<std::string> seen;
            for (const auto& s : slots)
                if (seen.insert(s.local).second)
                    locals.push_back(s.local);
            throw std::invalid_argument("inject_lora: target module '" + target +
                                        "' matches no dense layer of the model; layer names end in: " +
                                        join(locals, ", ", locals.size()));
        }
    }
    for (std::size_t i = 0; i < slots.size(); ++i)
        if (selected[i] && std::dynamic_pointer_cast<LoraLinearImpl>(*slots[i].layer))
            throw std::invalid_argument("inject_lora: layer '" + slots[i].name + "' already has a LoRA adapter");
    std::vector<std::string> adapted;
    for (std::size_t i = 0; i < slots.size(); ++i) {
        if (!selected[i])
            continue;
        auto& slot = slots[i];
        auto lora = std::make_shared<LoraLinearImpl>(**slot.layer, cfg);
        if (!is_training())
            lora->eval();
        *slot.layer = slot.parent->replace_module(slot.local, std::shared_ptr<DenseImpl>(lora));
        adapted.push_back(slot.name);
    }
    lora_cfg_ = cfg;
    freeze_base();
    return adapted;
}

bool TransformerModelImpl::has_lora() const { return !lora_layer_names().empty(); }

std::vector<std::string> TransformerModelImpl::dense_layer_names() const {
    std::vector<std::string> names;
    for (const auto& s : dense_slots())
        names.push_back(s.name);
    return names;
}

std::vector<std::string> TransformerModelImpl::lora_layer_names() const {
    std::vector<std::string> names;
    for (const auto& s : dense_slots())
        if (std::dynamic_pointer_cast<LoraLinearImpl>(*s.layer))
            names.push_back(s.name);
    return names;
}

void TransformerModelImpl::freeze_base() {
    for (auto& p : named_parameters(true))
        if (!is_lora_name(p.key()))
            p.value().set_requires_grad(false);
}

std::vector<torch::Tensor> TransformerModelImpl::lora_parameters() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : named_parameters(true))
        if (is_lora_name(p.key()))
            out.push_back(p.value());
    return out;
}

NamedTensors TransformerModelImpl::named_lora_parameters() const {
    NamedTensors out;
    for (const auto& p : named_parameters(true))
        if (is_lora_name(p.key()))
            out.emplace_back(p.key(), p.value());
    return out;
}

void TransformerModelImpl::merge_lora() {
    for (const auto& s : dense_slots())
        if (auto l = std::dynamic_pointer_cast<LoraLinearImpl>(*s.layer))
            l->merge();
}

void TransformerModelImpl::unmerge_lora() {
    for (const auto& s : dense_slots())
        if (auto l = std::dynamic_pointer_cast<LoraLinearImpl>(*s.layer))
            l->unmerge();
}

bool TransformerModelImpl::lora_merged() const {
    bool any = false;
    for (const auto& s : dense_slots())
        if (auto l = std::dynamic_pointer_cast<LoraLinearImpl>(*s.layer)) {
            if (!l->merged())
                return false;
            any = true;
        }
    return any;
}

NamedTensors TransformerModelImpl::lora_state_dict() const {
    NamedTensors out;
    for (const auto& p : named_parameters(true))
        if (is_lora_name(p.key()))
            out.emplace_back(p.key(), p.value().detach());
    return out;
}

NamedTensors TransformerModelImpl::base_state_dict() const {
    NamedTensors out;
    for (const auto& p : named_parameters(true))
        if (!is_lora_name(p.key()))
            out.emplace_back(p.key(), p.value().detach());
    return out;
}

NamedTensors TransformerModelImpl::full_state_dict() const {
    NamedTensors out;
    for (const auto& p : named_parameters(true))
        out.emplace_back(p.key(), p.value().detach());
    return out;
}

void TransformerModelImpl::load_scoped(const std::map<std::string, at::Tensor>& tensors, Scope scope,
                                       bool require_lora, const std::string& origin) {
    if (scope == Scope::Lora && !has_lora())
        throw ModelError(origin + ": the model has no LoRA adapters to load into (call inject_lora first)");
    const auto params = named_parameters(true);
    std::set<std::string> expected;  // the parameters this load sets
    for (const auto& p : params) {
        const bool lora = is_lora_name(p.key());
        if ((scope == Scope::Base && lora) || (scope == Scope::Lora && !lora))
            continue;
        expected.insert(p.key());
    }

    // Validate everything first: nothing changes unless the whole checkpoint fits.
    std::map<std::string, std::pair<std::string, at::Tensor>> found;  // model name -> (checkpoint name, tensor)
    auto label = [](const std::string& raw, const std::string& name) {
        return "tensor '" + raw + "'" + (raw == name ? "" : " (model name '" + name + "')");
    };
    for (const auto& [raw, src] : tensors) {
        const auto mapped = checkpoint_name(raw);
        if (!mapped)
            continue;
        const std::string& name = *mapped;
        if (expected.count(name) == 0) {
            if (params.contains(name))
                throw ModelError(origin + ": " + label(raw, name) +
                                 (scope == Scope::Base ? " is a LoRA adapter tensor, not part of the base model"
                                                       : " is a base-model tensor, not a LoRA adapter tensor"));
            if (is_lora_name(name))
                throw ModelError(origin + ": " + label(raw, name) + " is a LoRA adapter of layer '" +
                                 name.substr(0, name.rfind('.')) + "', which has no adapter in this model");
            throw ModelError(origin + ": unexpected " + label(raw, name) + ": the model has no parameter of that name");
        }
        if (const auto dup = found.find(name); dup != found.end())
            throw ModelError(origin + ": tensors '" + dup->second.first + "' and '" + raw + "' both load into '" +
                             name + "'");
        found.emplace(name, std::make_pair(raw, src));
    }
    // In model order, so that the first error reported is the earliest tensor (e.g. wte before h.0).
    std::vector<std::pair<torch::Tensor, at::Tensor>> plan;  // (parameter, source)
    std::vector<std::string> missing;
    for (const auto& p : params) {
        const auto& name = p.key();
        if (expected.count(name) == 0)
            continue;
        const auto it = found.find(name);
        if (it == found.end()) {
            if (!(scope == Scope::Full && !require_lora && is_lora_name(name)))
                missing.push_back(name);
            continue;
        }
        const auto& [raw, src] = it->second;
        if (!src.defined() || !src.is_floating_point())
            throw ModelError(origin + ": " + label(raw, name) + " has dtype " +
                             (src.defined() ? std::string(c10::toString(src.scalar_type())) : "undefined") +
                             ", expected a floating-point tensor");
        const auto& dst = p.value();
        if (src.sizes() != dst.sizes()) {
            std::string msg = origin + ": " + label(raw, name) + " has shape " + shape_string(src.sizes()) +
                              " in the checkpoint but " + shape_string(dst.sizes()) + " in the model";
            if (src.dim() == 2 && dst.dim() == 2 && src.size(0) == dst.size(1) && src.size(1) == dst.size(0))
                msg += " (transposed: nn.Linear stores weights [out, in], GPT-2's Conv1D [in, out])";
            throw ModelError(msg);
        }
        plan.emplace_back(dst, src);
    }
    if (!missing.empty())
        throw ModelError(origin + ": " + std::to_string(missing.size()) +
                         " model tensor(s) missing from the checkpoint: " + join(missing, ", ", 8));

    // Apply with the adapters unmerged, so that merged weights stay W + scaling·BA.
    std::vector<std::shared_ptr<LoraLinearImpl>> remerge;
    for (const auto& s : dense_slots())
        if (auto l = std::dynamic_pointer_cast<LoraLinearImpl>(*s.layer); l && l->merged()) {
            l->unmerge();
            remerge.push_back(l);
        }
    {
        torch::NoGradGuard ng;
        for (auto& [dst, src] : plan)
            dst.copy_(src);
    }
    for (auto& l : remerge)
        l->merge();
}

void TransformerModelImpl::load_lora_state_dict(const std::map<std::string, at::Tensor>& tensors,
                                                const std::string& origin) {
    load_scoped(tensors, Scope::Lora, true, origin);
}

void TransformerModelImpl::load_base_state_dict(const std::map<std::string, at::Tensor>& tensors,
                                                const std::string& origin) {
    load_scoped(tensors, Scope::Base, true, origin);
}

void TransformerModelImpl::load_full_state_dict(const std::map<std::string, at::Tensor>& tensors,
                                                bool require_lora, const std::string& origin) {
    load_scoped(tensors, Scope::Full, require_lora, origin);
}

TensorMetadata TransformerModelImpl::checkpoint_metadata(bool with_lora) const {
    auto m = metadata();
    m["format"] = "pt";
    if (!with_lora)
        for (auto it = m.begin(); it != m.end();)
            it = it->first.rfind("lora.", 0) == 0 ? m.erase(it) : std::next(it);
    return m;
}

TensorMetadata TransformerModelImpl::lora_metadata() const {
    TensorMetadata m;
    const auto layers = lora_layer_names();
    if (!lora_cfg_ || layers.empty())
        return m;
    m["lora.rank"] = std::to_string(lora_cfg_->rank);
    m["lora.alpha"] = number_string(lora_cfg_->alpha);
    m["lora.dropout"] = number_string(lora_cfg_->dropout);
    m["lora.layers"] = join(layers, ",", layers.size());
    return m;
}

void TransformerModelImpl::check_lora_metadata(const TensorMetadata& metadata, const std::string& path) const {
    const auto it = metadata.find("lora.alpha");
    if (it == metadata.end() || !lora_cfg_)
        return;
    char* end = nullptr;
    const double alpha = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0')
        throw ModelError(path + ": metadata lora.alpha = '" + it->second + "' is not a number");
    if (std::abs(alpha - lora_cfg_->alpha) > 1e-12 * std::abs(lora_cfg_->alpha))
        throw ModelError(path + ": adapter trained with lora.alpha = " + it->second +
                         " but the model's adapters use lora.alpha = " + number_string(lora_cfg_->alpha));
}

void TransformerModelImpl::save_lora(const std::string& path) const {
    if (!has_lora())
        throw ModelError(path + ": the model has no LoRA adapters to save");
    save_safetensors(path, lora_state_dict(), checkpoint_metadata(true));
}

void TransformerModelImpl::save_base(const std::string& path) const {
    save_safetensors(path, base_state_dict(), checkpoint_metadata(false));
}

void TransformerModelImpl::save_full(const std::string& path) const {
    save_safetensors(path, full_state_dict(), checkpoint_metadata(true));
}

void TransformerModelImpl::load_lora(const std::string& path) {
    auto c = load_safetensors(path);
    check_lora_metadata(c.metadata, path);
    load_scoped(c.tensors, Scope::Lora, true, path);
}

void TransformerModelImpl::load_base(const std::string& path) {
    auto c = load_safetensors(path);
    load_scoped(c.tensors, Scope::Base, true, path);
}

void TransformerModelImpl::load_full(const std::string& path, bool require_lora) {
    auto c = load_safetensors(path);
    check_lora_metadata(c.metadata, path);
    load_scoped(c.tensors, Scope::Full, require_lora, path);
}

// ---- ViT ----------------------------------------------------------------------------------------------------------

int64_t ViTConfig::mlp_dim() const { return static_cast<int64_t>(static_cast<double>(dim) * mlp_ratio); }

void ViTConfig::validate() const {
    require(image_size >= 1, "vit.image_size", "= " + std::to_string(image_size) + " must be >= 1");
    require(patch_size >= 1 && image_size % patch_size == 0, "vit.patch_size",
            "= " + std::to_string(patch_size) + " must divide vit.image_size = " + std::to_string(image_size));
    require(in_channels >= 1, "vit.in_channels", "= " + std::to_string(in_channels) + " must be >= 1");
    require(dim >= 1, "vit.dim", "= " + std::to_string(dim) + " must be >= 1");
    require(depth >= 1, "vit.depth", "= " + std::to_string(depth) + " must be >= 1");
    require(heads >= 1 && dim % heads == 0, "vit.heads",
            "= " + std::to_string(heads) + " must divide vit.dim = " + std::to_string(dim));
    require(std::isfinite(mlp_ratio) && mlp_ratio > 0.0 && mlp_dim() >= 1, "vit.mlp_ratio",
            "= " + number_string(mlp_ratio) + " must give an MLP width >= 1");
    require(num_classes >= 1, "vit.num_classes", "= " + std::to_string(num_classes) + " must be >= 1");
    require(dropout >= 0.0 && dropout < 1.0, "vit.dropout", "= " + number_string(dropout) + " must be in [0, 1)");
    require(std::isfinite(layer_norm_eps) && layer_norm_eps > 0.0, "vit.layer_norm_eps",
            "= " + number_string(layer_norm_eps) + " must be > 0");
}

class ViTPatchEmbedImpl : public torch::nn::Module {
public:
    explicit ViTPatchEmbedImpl(const ViTConfig& c) {
        proj = register_module(
            "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, c.dim, c.patch_size).stride(c.patch_size)));
    }
    // [B, C, S, S] -> [B, num_patches, dim], patches in row-major order
    torch::Tensor forward(const torch::Tensor& x) { return proj->forward(x).flatten(2).transpose(1, 2); }

    torch::nn::Conv2d proj{nullptr};
};

class ViTAttentionImpl : public torch::nn::Module {
public:
    ViTAttentionImpl(int64_t dim, int64_t heads, double dropout) : heads_(heads) {
        qkv = register_module("qkv", std::make_shared<DenseImpl>(dim, 3 * dim));
        attn_drop = register_module("attn_drop", torch::nn::Dropout(dropout));
        proj = register_module("proj", std::make_shared<DenseImpl>(dim, dim));
        proj_drop = register_module("proj_drop", torch::nn::Dropout(dropout));
    }
    torch::Tensor forward(const torch::Tensor& x) {
        const int64_t b = x.size(0), n = x.size(1), c = x.size(2), hd = c / heads_;
        // [B, N, 3C] -> [3, B, heads, N, hd]
        auto qkv_heads = qkv->forward(x).reshape({b, n, 3, heads_, hd}).permute({2, 0, 3, 1, 4});
        auto q = qkv_heads[0] * (1.0 / std::sqrt(static_cast<double>(hd)));
        auto attn = torch::matmul(q, qkv_heads[1].transpose(-2, -1)).softmax(-1);
        auto out = torch::matmul(attn_drop->forward(attn), qkv_heads[2]).transpose(1, 2).reshape({b, n, c});
        return proj_drop->forward(proj->forward(out));
    }

    std::shared_ptr<DenseImpl> qkv, proj;
    torch::nn::Dropout attn_drop{nullptr}, proj_drop{nullptr};

private:
    int64_t heads_;
};

class ViTMlpImpl : public torch::nn::Module {
public:
    ViTMlpImpl(int64_t dim, int64_t hidden, double dropout) {
        fc1 = register_module("fc1", std::make_shared<DenseImpl>(dim, hidden));
        fc2 = register_module("fc2", std::make_shared<DenseImpl>(hidden, dim));
        drop = register_module("drop", torch::nn::Dropout(dropout));
    }
    torch::Tensor forward(const torch::Tensor& x) {
        return drop->forward(fc2->forward(drop->forward(torch::gelu(fc1->forward(x)))));
    }

    std::shared_ptr<DenseImpl> fc1, fc2;
    torch::nn::Dropout drop{nullptr};
};

class ViTBlockImpl : public torch::nn::Module {
public:
    explicit ViTBlockImpl(const ViTConfig& c) {
        norm1 = register_module("norm1", make_layer_norm(c.dim, c.layer_norm_eps));
        attn = register_module("attn", std::make_shared<ViTAttentionImpl>(c.dim, c.heads, c.dropout));
        norm2 = register_module("norm2", make_layer_norm(c.dim, c.layer_norm_eps));
        mlp = register_module("mlp", std::make_shared<ViTMlpImpl>(c.dim, c.mlp_dim(), c.dropout));
    }
    torch::Tensor forward(torch::Tensor x) {
        x = x + attn->forward(norm1->forward(x));
        return x + mlp->forward(norm2->forward(x));
    }

    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
    std::shared_ptr<ViTAttentionImpl> attn;
    std::shared_ptr<ViTMlpImpl> mlp;
};

ViTImpl::ViTImpl(const ViTConfig& cfg) : cfg_(cfg) {
    cfg_.validate();
    // timm's initialisation: class token N(0, 1e-6), position embedding and dense weights N(0, 0.02), zero biases.
    cls_token = register_parameter("cls_token", torch::empty({1, 1, cfg_.dim}).normal_(0.0, 1e-6));
    pos_embed = register_parameter("pos_embed", torch::empty({1, 1 + cfg_.num_patches(), cfg_.dim}).normal_(0.0, 0.02));
    patch_embed_ = register_module("patch_embed", std::make_shared<ViTPatchEmbedImpl>(cfg_));
    pos_drop_ = register_module("pos_drop", torch::nn::Dropout(cfg_.dropout));
    torch::nn::ModuleList blocks;
    for (int64_t i = 0; i < cfg_.depth; ++i) {
        blocks_.push_back(std::make_shared<ViTBlockImpl>(cfg_));
        blocks->push_back(blocks_.back());
    }
    register_module("blocks", blocks);
    norm_ = register_module("norm", make_layer_norm(cfg_.dim, cfg_.layer_norm_eps));
    head_ = register_module("head", std::make_shared<DenseImpl>(cfg_.dim, cfg_.num_classes));
    torch::NoGradGuard ng;
    for (const auto& s : dense_slots()) {
        (*s.layer)->weight.normal_(0.0, 0.02);
        (*s.layer)->bias.zero_();
    }
}

std::vector<TransformerModelImpl::DenseSlot> ViTImpl::dense_slots() const {
    auto* self = const_cast<ViTImpl*>(this);  // the slots point at members that injection replaces
    std::vector<DenseSlot> slots;
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
        auto& b = *self->blocks_[i];
        const std::string p = "blocks." + std::to_string(i) + ".";
        slots.push_back({p + "attn.qkv", b.attn.get(), "qkv", &b.attn->qkv});
        slots.push_back({p + "attn.proj", b.attn.get(), "proj", &b.attn->proj});
        slots.push_back({p + "mlp.fc1", b.mlp.get(), "fc1", &b.mlp->fc1});
        slots.push_back({p + "mlp.fc2", b.mlp.get(), "fc2", &b.mlp->fc2});
    }
    slots.push_back({"head", self, "head", &self->head_});
    return slots;
}

torch::Tensor ViTImpl::features(const torch::Tensor& images) {
    if (images.dim() != 4 || images.size(1) != cfg_.in_channels || images.size(2) != cfg_.image_size ||
        images.size(3) != cfg_.image_size)
        throw std::invalid_argument("ViT: images of shape " + shape_string(images.sizes()) + ", expected [B, " +
                                    std::to_string(cfg_.in_channels) + ", " + std::to_string(cfg_.image_size) +
                                    ", " + std::to_string(cfg_.image_size) + "]");
    auto x = patch_embed_->forward(images);
    x = torch::cat({cls_token.expand({x.size(0), -1, -1}), x}, 1) + pos_embed;
    x = pos_drop_->forward(x);
    for (auto& b : blocks_)
        x = b->forward(x);
    return norm_->forward(x).select(1, 0);
}

torch::Tensor ViTImpl::forward(const torch::Tensor& images) { return head_->forward(features(images)); }

TensorMetadata ViTImpl::metadata() const {
    TensorMetadata m = lora_metadata();
    m["fedlora.model"] = "vit";
    m["vit.image_size"] = std::to_string(cfg_.image_size);
    m["vit.patch_size"] = std::to_string(cfg_.patch_size);
    m["vit.in_channels"] = std::to_string(cfg_.in_channels);
    m["vit.dim"] = std::to_string(cfg_.dim);
    m["vit.depth"] = std::to_string(cfg_.depth);
    m["vit.heads"] = std::to_string(cfg_.heads);
    m["vit.mlp_ratio"] = number_string(cfg_.mlp_ratio);
    m["vit.num_classes"] = std::to_string(cfg_.num_classes);
    m["vit.dropout"] = number_string(cfg_.dropout);
    m["vit.layer_norm_eps"] = number_string(cfg_.layer_norm_eps);
    return m;
}

// ---- GPT ------------------------------------------------------------------------------------------------------------

int64_t GptConfig::mlp_dim() const { return static_cast<int64_t>(static_cast<double>(dim) * mlp_ratio); }

void GptConfig::validate() const {
    require(vocab_size >= 1, "gpt.vocab_size", "= " + std::to_string(vocab_size) + " must be >= 1");
    require(context >= 1, "gpt.context", "= " + std::to_string(context) + " must be >= 1");
    require(dim >= 1, "gpt.dim", "= " + std::to_string(dim) + " must be >= 1");
    require(depth >= 1, "gpt.depth", "= " + std::to_string(depth) + " must be >= 1");
    require(heads >= 1 && dim % heads == 0, "gpt.heads",
            "= " + std::to_string(heads) + " must divide gpt.dim = " + std::to_string(dim));
    require(std::isfinite(mlp_ratio) && mlp_ratio > 0.0 && mlp_dim() >= 1, "gpt.mlp_ratio",
            "= " + number_string(mlp_ratio) + " must give an MLP width >= 1");
    require(dropout >= 0.0 && dropout < 1.0, "gpt.dropout", "= " + number_string(dropout) + " must be in [0, 1)");
    require(std::isfinite(layer_norm_eps) && layer_norm_eps > 0.0, "gpt.layer_norm_eps",
            "= " + number_string(layer_norm_eps) + " must be > 0");
}

class GptAttentionImpl : public torch::nn::Module {
public:
    GptAttentionImpl(int64_t dim, int64_t heads, double dropout) : heads_(heads) {
        c_attn = register_module("c_attn", std::make_shared<DenseImpl>(dim, 3 * dim, true, WeightLayout::InOut));
        c_proj = register_module("c_proj", std::make_shared<DenseImpl>(dim, dim, true, WeightLayout::InOut));
        attn_dropout = register_module("attn_dropout", torch::nn::Dropout(dropout));
        resid_dropout = register_module("resid_dropout", torch::nn::Dropout(dropout));
    }
    torch::Tensor forward(const torch::Tensor& x) {
        const int64_t b = x.size(0), t = x.size(1), c = x.size(2), hd = c / heads_;
        auto parts = c_attn->forward(x).split(c, 2);  // q, k, v: [B, T, C] each
        auto split_heads = [&](const torch::Tensor& u) { return u.reshape({b, t, heads_, hd}).transpose(1, 2); };
        auto q = split_heads(parts[0]), k = split_heads(parts[1]), v = split_heads(parts[2]);
        // scores = q kᵀ / sqrt(hd) + causal mask (0 on and below the diagonal, -inf above) as ONE batched GEMM:
        // baddbmm(mask, q, kᵀ, beta = 1, alpha = 1/sqrt(hd)) spares the separate scaling and masking passes.
        auto scores = torch::baddbmm(causal_mask(t, x.options()), q.reshape({b * heads_, t, hd}),
                                     k.reshape({b * heads_, t, hd}).transpose(1, 2), 1.0,
                                     1.0 / std::sqrt(static_cast<double>(hd)))
                          .view({b, heads_, t, t});
        auto out = torch::matmul(attn_dropout->forward(scores.softmax(-1)), v).transpose(1, 2).reshape({b, t, c});
        return resid_dropout->forward(c_proj->forward(out));
    }

    std::shared_ptr<DenseImpl> c_attn, c_proj;
    torch::nn::Dropout attn_dropout{nullptr}, resid_dropout{nullptr};

private:
    // The additive causal mask [t, t], built once per length, dtype and device (not a parameter or buffer).
    const torch::Tensor& causal_mask(int64_t t, const torch::TensorOptions& like) {
        const auto opts = torch::TensorOptions().dtype(like.dtype()).device(like.device());
        if (!mask_.defined() || mask_.size(0) != t || mask_.dtype() != opts.dtype() || mask_.device() != opts.device())
            mask_ = torch::full({t, t}, -std::numeric_limits<double>::infinity(), opts).triu(1);
        return mask_;
    }

    int64_t heads_;
    torch::Tensor mask_;
};

class GptMlpImpl : public torch::nn::Module {
public:
    GptMlpImpl(int64_t dim, int64_t hidden, double dropout) {
        c_fc = register_module("c_fc", std::make_shared<DenseImpl>(dim, hidden, true, WeightLayout::InOut));
        c_proj = register_module("c_proj", std::make_shared<DenseImpl>(hidden, dim, true, WeightLayout::InOut));
        dropout_ = register_module("dropout", torch::nn::Dropout(dropout));
    }
    torch::Tensor forward(const torch::Tensor& x) {
        return dropout_->forward(c_proj->forward(gelu_tanh(c_fc->forward(x))));  // = torch::gelu(·, "tanh"), fused
    }

    std::shared_ptr<DenseImpl> c_fc, c_proj;

private:
    torch::nn::Dropout dropout_{nullptr};
};

class GptBlockImpl : public torch::nn::Module {
public:
    explicit GptBlockImpl(const GptConfig& c) {
        ln_1 = register_module("ln_1", make_layer_norm(c.dim, c.layer_norm_eps));
        attn = register_module("attn", std::make_shared<GptAttentionImpl>(c.dim, c.heads, c.dropout));
        ln_2 = register_module("ln_2", make_layer_norm(c.dim, c.layer_norm_eps));
        mlp = register_module("mlp", std::make_shared<GptMlpImpl>(c.dim, c.mlp_dim(), c.dropout));
    }
    torch::Tensor forward(torch::Tensor x) {
        x = x + attn->forward(ln_1->forward(x));
        return x + mlp->forward(ln_2->forward(x));
    }

    torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
    std::shared_ptr<GptAttentionImpl> attn;
    std::shared_ptr<GptMlpImpl> mlp;
};

GptImpl::GptImpl(const GptConfig& cfg) : cfg_(cfg) {
    cfg_.validate();
    wte = register_module("wte", torch::nn::Embedding(cfg_.vocab_size, cfg_.dim));
    wpe = register_module("wpe", torch::nn::Embedding(cfg_.context, cfg_.dim));
    drop_ = register_module("drop", torch::nn::Dropout(cfg_.dropout));
    torch::nn::ModuleList h;
    for (int64_t i = 0; i < cfg_.depth; ++i) {
        blocks_.push_back(std::make_shared<GptBlockImpl>(cfg_));
        h->push_back(blocks_.back());
    }
    register_module("h", h);
    ln_f_ = register_module("ln_f", make_layer_norm(cfg_.dim, cfg_.layer_norm_eps));
    // GPT-2's initialisation: N(0, 0.02) everywhere (the Conv1D layers already are), the residual projections
    // scaled by 1/sqrt(2·depth).
    torch::NoGradGuard ng;
    wte->weight.normal_(0.0, 0.02);
    wpe->weight.normal_(0.0, 0.02);
    const double resid_std = 0.02 / std::sqrt(2.0 * static_cast<double>(cfg_.depth));
    for (auto& b : blocks_) {
        b->attn->c_proj->weight.normal_(0.0, resid_std);
        b->mlp->c_proj->weight.normal_(0.0, resid_std);
    }
}

std::vector<TransformerModelImpl::DenseSlot> GptImpl::dense_slots() const {
    auto* self = const_cast<GptImpl*>(this);  // the slots point at members that injection replaces
    std::vector<DenseSlot> slots;
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
        auto& b = *self->blocks_[i];
        const std::string p = "h." + std::to_string(i) + ".";
        slots.push_back({p + "attn.c_attn", b.attn.get(), "c_attn", &b.attn->c_attn});
        slots.push_back({p + "attn.c_proj", b.attn.get(), "c_proj", &b.attn->c_proj});
        slots.push_back({p + "mlp.c_fc", b.mlp.get(), "c_fc", &b.mlp->c_fc});
        slots.push_back({p + "mlp.c_proj", b.mlp.get(), "c_proj", &b.mlp->c_proj});
    }
    return slots;
}

std::optional<std::string> GptImpl::checkpoint_name(const std::string& name) const {
    std::string n = name.rfind("transformer.", 0) == 0 ? name.substr(12) : name;
    if (n == "lm_head.weight")
        return std::nullopt;  // tied to wte
    // Causal-mask buffers of older GPT-2 files: h.{i}.attn.bias, h.{i}.attn.masked_bias.
    if (n.rfind("h.", 0) == 0 && (ends_with(n, ".attn.bias") || ends_with(n, ".attn.masked_bias"))) {
        const std::string index = n.substr(2, n.find('.', 2) - 2);
        if (!index.empty() && index.find_first_not_of("0123456789") == std::string::npos &&
            (n == "h." + index + ".attn.bias" || n == "h." + index + ".attn.masked_bias"))
            return std::nullopt;
    }
    return n;
}

torch::Tensor GptImpl::embed(const torch::Tensor& ids) {
    if (ids.dim() != 2 || ids.is_floating_point() || ids.is_complex() || ids.scalar_type() == torch::kBool)
        throw std::invalid_argument("GPT: ids must be an integer tensor [B, T], got " +
                                    std::string(c10::toString(ids.scalar_type())) + " " +
                                    shape_string(ids.sizes()));
    if (ids.size(1) > cfg_.context)
        throw std::invalid_argument("GPT: sequence length " + std::to_string(ids.size(1)) +
                                    " exceeds the context of " + std::to_string(cfg_.context));
    if (ids.numel() > 0) {
        const auto lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
        if (lo < 0 || hi >= cfg_.vocab_size)
            throw std::invalid_argument("GPT: token ids in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                        "] outside the vocabulary [0, " + std::to_string(cfg_.vocab_size) + ")");
    }
    return wte->forward(ids.to(torch::kLong));
}

torch::Tensor GptImpl::forward_embeds(const torch::Tensor& token_embeds) {
    if (token_embeds.dim() != 3 || token_embeds.size(2) != cfg_.dim || token_embeds.size(1) > cfg_.context)
        throw std::invalid_argument("GPT: token embeddings of shape " + shape_string(token_embeds.sizes()) +
                                    ", expected [B, T <= " + std::to_string(cfg_.context) + ", " +
                                    std::to_string(cfg_.dim) + "]");
    const int64_t t = token_embeds.size(1);
    auto positions = torch::arange(t, torch::TensorOptions().dtype(torch::kLong).device(token_embeds.device()));
    auto x = drop_->forward(token_embeds + wpe->forward(positions));
    for (auto& b : blocks_)
        x = b->forward(x);
    return F::linear(ln_f_->forward(x), wte->weight);
}

torch::Tensor GptImpl::forward(const torch::Tensor& ids) { return forward_embeds(embed(ids)); }

torch::Tensor GptImpl::lm_loss(const torch::Tensor& logits, const torch::Tensor& ids) {
    if (logits.dim() != 3 || ids.dim() != 2 || logits.size(0) != ids.size(0) || logits.size(1) != ids.size(1) ||
        ids.size(1) < 2)
        throw std::invalid_argument("GPT::lm_loss: logits " + shape_string(logits.sizes()) + " and ids " +
                                    shape_string(ids.sizes()) + " must be [B, T, V] and [B, T] with T >= 2");
    // Targets: ids shifted left by one, the last position of every sequence ignored. Reading the logits whole
    // (a view) instead of slicing off the last position spares copying them and the slice's backward pass; the
    // mean is over the same b·(t−1) predictions.
    const int64_t b = ids.size(0), t = ids.size(1), v = logits.size(2);
    constexpr int64_t kIgnore = -100;
    auto targets = torch::full({b, t}, kIgnore, ids.options().dtype(torch::kLong));
    targets.slice(1, 0, t - 1).copy_(ids.slice(1, 1, t));
    return F::cross_entropy(logits.reshape({-1, v}), targets.view({-1}),
                            F::CrossEntropyFuncOptions().ignore_index(kIgnore));
}

TensorMetadata GptImpl::metadata() const {
    TensorMetadata m = lora_metadata();
    m["fedlora.model"] = "gpt2";
    m["gpt.vocab_size"] = std::to_string(cfg_.vocab_size);
    m["gpt.context"] = std::to_string(cfg_.context);
    m["gpt.dim"] = std::to_string(cfg_.dim);
    m["gpt.depth"] = std::to_string(cfg_.depth);
    m["gpt.heads"] = std::to_string(cfg_.heads);
    m["gpt.mlp_ratio"] = number_string(cfg_.mlp_ratio);
    m["gpt.dropout"] = number_string(cfg_.dropout);
    m["gpt.layer_norm_eps"] = number_string(cfg_.layer_norm_eps);
    return m;
}

}  // namespace fedlora::learn
