// Transformer models with LoRA (models.h): parity with an independent Python torch implementation
// (tests/models_reference.py) for the outputs and for the gradients of a loss with respect to every LoRA factor and
// the input, for the ViT and the GPT-2-layout decoder; frozen base; merge; adapter checkpoints; load errors.
//
// Parity tolerance: for every compared tensor, max |C++ − Python| <= 1e-5 · max |Python| (relative to the tensor's
// scale). The float64 run is the acceptance run (both sides in double); the float32 run (both sides in float)
// is held to the same bound.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "support/scratch_dir.h"
#include "fedlora/learn/models.h"
#include "fedlora/learn/safetensors.h"

using namespace fedlora::learn;
namespace fs = std::filesystem;

namespace {

using fedlora::test::ScratchDir;

ViTConfig small_vit() {
    ViTConfig c;
    c.image_size = 28;
    c.patch_size = 7;
    c.in_channels = 1;
    c.dim = 64;
    c.depth = 2;
    c.heads = 4;
    c.num_classes = 10;
    return c;
}

GptConfig small_gpt() {
    GptConfig c;
    c.vocab_size = 256;
    c.context = 32;
    c.dim = 64;
    c.depth = 2;
    c.heads = 4;
    return c;
}

LoraConfig lora_cfg(int64_t rank = 4, double alpha = 8.0) {
    LoraConfig l;
    l.rank = rank;
    l.alpha = alpha;
    return l;
}

const std::vector<std::string> kVitTargets = {"qkv", "proj", "fc2"};
const std::vector<std::string> kGptTargets = {"c_attn", "c_proj"};

// Moves every parameter away from its initialisation (LayerNorm gains, biases, and a non-zero LoRA B), so that
// each tensor's name, layout and role shows up in the outputs.
void perturb(torch::nn::Module& m, uint64_t seed) {
    torch::manual_seed(seed);
    torch::NoGradGuard ng;
    for (auto& p : m.named_parameters(true))
        p.value().add_(torch::randn_like(p.value()) * 0.1);
}

ViT make_vit(uint64_t seed, bool lora = true) {
    torch::manual_seed(seed);
    ViT m(small_vit());
    if (lora)
        m->inject_lora(kVitTargets, lora_cfg());
    perturb(*m, seed + 1);
    m->eval();
    return m;
}

Gpt make_gpt(uint64_t seed, bool lora = true) {
    torch::manual_seed(seed);
    Gpt m(small_gpt());
    if (lora)
        m->inject_lora(kGptTargets, lora_cfg());
    perturb(*m, seed + 1);
    m->eval();
    return m;
}

torch::Tensor vit_pixels(torch::Dtype dtype = torch::kFloat32) {
    torch::manual_seed(7);
    return torch::rand({3, 1, 28, 28}).to(dtype);
}

torch::Tensor gpt_ids() {
    torch::manual_seed(8);
    return torch::randint(0, 256, {2, 32}, torch::kLong);
}

struct Diff {
    double max_abs = 0.0;
    double scale = 0.0;  // max |reference|
    double rel() const { return scale > 0.0 ? max_abs / scale : max_abs; }
};

Diff compare(const torch::Tensor& ours, const torch::Tensor& ref) {
    EXPECT_EQ(ours.sizes(), ref.sizes());
    Diff d;
    auto a = ours.detach().to(torch::kFloat64), b = ref.detach().to(torch::kFloat64);
    d.max_abs = (a - b).abs().max().item<double>();
    d.scale = b.abs().max().item<double>();
    return d;
}

struct ParityFigures {
    Diff logits, loss, input_grad, lora_grad;  // lora_grad: the worst (largest rel) over all LoRA factors
    int lora_tensors = 0;
};

constexpr double kParityTol = 1e-5;

// Writes the model (all tensors) and the inputs, runs the Python reference, compares. kind: "vit" or "gpt2".
ParityFigures run_parity(TransformerModelImpl& model, const std::string& kind, torch::Dtype dtype) {
    ScratchDir dir;
    model.to(dtype);
    for (auto& p : model.lora_parameters())
        p.mutable_grad() = torch::Tensor();
    const auto weights = dir.file("weights.safetensors"), inputs = dir.file("inputs.safetensors"),
               out = dir.file("out.safetensors");
    model.save_full(weights);

    torch::Tensor x, logits, loss;
    if (kind == "vit") {
        auto& vit = dynamic_cast<ViTImpl&>(model);
        auto pixels = vit_pixels(dtype);
        torch::manual_seed(9);
        auto labels = torch::randint(0, 10, {3}, torch::kLong);
        save_safetensors(inputs, NamedTensors{{"pixels", pixels}, {"labels", labels}});
        x = pixels.clone().requires_grad_(true);
        logits = vit.forward(x);
        loss = torch::nn::functional::cross_entropy(logits, labels);
    } else {
        auto& gpt = dynamic_cast<GptImpl&>(model);
        auto ids = gpt_ids();
        save_safetensors(inputs, NamedTensors{{"ids", ids}});
        x = gpt.embed(ids).detach().requires_grad_(true);
        logits = gpt.forward_embeds(x);
        loss = GptImpl::lm_loss(logits, ids);
    }
    loss.backward();

    const std::string cmd = std::string(FEDLORA_PYTHON) + " -B " + FEDLORA_TESTS_DIR + "/models_reference.py " +
                            kind + " " + weights + " " + inputs + " " + out;
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const auto ref = load_safetensors(out).tensors;

    ParityFigures f;
    f.logits = compare(logits, ref.at("logits"));
    f.loss = compare(loss, ref.at("loss"));
    f.input_grad = compare(x.grad(), ref.at("grad.input"));
    std::set<std::string> ref_grads;
    for (const auto& [name, t] : ref)
        if (name.rfind("grad.", 0) == 0 && name != "grad.input")
            ref_grads.insert(name.substr(5));
    std::set<std::string> ours;
    for (const auto& [name, p] : model.named_lora_parameters()) {
        ours.insert(name);
        if (!ref.count("grad." + name)) {
            ADD_FAILURE() << "no reference gradient for " << name;
            continue;
        }
        EXPECT_TRUE(p.grad().defined()) << name;
        const auto d = compare(p.grad(), ref.at("grad." + name));
        EXPECT_LE(d.max_abs, kParityTol * d.scale) << name << " (" << c10::toString(dtype) << ")";
        EXPECT_GT(d.scale, 0.0) << name << ": zero gradient, the comparison would be vacuous";
        if (d.rel() > f.lora_grad.rel())
            f.lora_grad = d;
        ++f.lora_tensors;
    }
    EXPECT_EQ(ours, ref_grads);
    for (const auto* d : {&f.logits, &f.loss, &f.input_grad})
        EXPECT_LE(d->max_abs, kParityTol * d->scale) << kind << " (" << c10::toString(dtype) << ")";
    std::printf("[parity] %-4s %-6s logits abs %.3g rel %.3g | loss abs %.3g | d/dinput abs %.3g rel %.3g | "
                "d/dLoRA (%d tensors, worst) abs %.3g rel %.3g\n",
                kind.c_str(), c10::toString(dtype), f.logits.max_abs, f.logits.rel(), f.loss.max_abs,
                f.input_grad.max_abs, f.input_grad.rel(), f.lora_tensors, f.lora_grad.max_abs, f.lora_grad.rel());
    return f;
}

void expect_base_has_no_gradient(const TransformerModelImpl& model) {
    int lora = 0;
    for (const auto& p : model.named_parameters(true)) {
        const auto& name = p.key();
        const bool is_lora = name.size() > 7 && (name.compare(name.size() - 7, 7, ".lora_A") == 0 ||
                                                 name.compare(name.size() - 7, 7, ".lora_B") == 0);
        if (is_lora) {
            ++lora;
            EXPECT_TRUE(p.value().requires_grad()) << name;
            ASSERT_TRUE(p.value().grad().defined()) << name;
            EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << name;
        } else {
            EXPECT_FALSE(p.value().requires_grad()) << name;
            EXPECT_FALSE(p.value().grad().defined()) << name;
        }
    }
    EXPECT_EQ(lora, static_cast<int>(model.lora_parameters().size()));
    EXPECT_GT(lora, 0);
}

}  // namespace

// ---- parity with the Python reference ---------------------------------------------------------------------------

TEST(ModelsParity, ViTFloat64MatchesPythonReference) {
    auto vit = make_vit(100);
    const auto f = run_parity(*vit, "vit", torch::kFloat64);
    EXPECT_EQ(f.lora_tensors, 2 * 3 * 2);  // 2 blocks × {qkv, proj, fc2} × {A, B}
    expect_base_has_no_gradient(*vit);
}

TEST(ModelsParity, GptFloat64MatchesPythonReference) {
    auto gpt = make_gpt(200);
    const auto f = run_parity(*gpt, "gpt2", torch::kFloat64);
    EXPECT_EQ(f.lora_tensors, 2 * 3 * 2);  // 2 blocks × {attn.c_attn, attn.c_proj, mlp.c_proj} × {A, B}
    expect_base_has_no_gradient(*gpt);
}

TEST(ModelsParity, Float32MatchesPythonReference) {
    auto vit = make_vit(300);
    run_parity(*vit, "vit", torch::kFloat32);
    auto gpt = make_gpt(400);
    run_parity(*gpt, "gpt2", torch::kFloat32);
}

// ---- names and layouts ----------------------------------------------------------------------------------------------

TEST(Models, ViTUsesTimmNames) {
    ViT vit(small_vit());
    std::vector<std::string> names;
    for (const auto& [name, t] : vit->base_state_dict())
        names.push_back(name);
    std::vector<std::string> expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"};
    for (int i = 0; i < 2; ++i)
        for (const char* s : {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                              "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                              "mlp.fc2.weight", "mlp.fc2.bias"})
            expected.push_back("blocks." + std::to_string(i) + "." + s);
    for (const char* s : {"norm.weight", "norm.bias", "head.weight", "head.bias"})
        expected.push_back(s);
    EXPECT_EQ(names, expected);
    const auto sd = vit->base_state_dict();
    auto shape = [&](const std::string& n) {
        for (const auto& [name, t] : sd)
            if (name == n)
                return t.sizes().vec();
        return std::vector<int64_t>{};
    };
    EXPECT_EQ(shape("patch_embed.proj.weight"), (std::vector<int64_t>{64, 1, 7, 7}));
    EXPECT_EQ(shape("pos_embed"), (std::vector<int64_t>{1, 17, 64}));
    EXPECT_EQ(shape("blocks.0.attn.qkv.weight"), (std::vector<int64_t>{192, 64}));  // nn.Linear: [out, in]
    EXPECT_EQ(shape("blocks.1.mlp.fc1.weight"), (std::vector<int64_t>{256, 64}));
    EXPECT_EQ(shape("head.weight"), (std::vector<int64_t>{10, 64}));
    EXPECT_EQ(vit->forward(vit_pixels()).sizes(), (std::vector<int64_t>{3, 10}));
}

TEST(Models, GptUsesGpt2NamesAndConv1DLayout) {
    Gpt gpt(small_gpt());
    std::vector<std::string> names;
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& [name, t] : gpt->base_state_dict()) {
        names.push_back(name);
        shapes[name] = t.sizes().vec();
    }
    std::vector<std::string> expected = {"wte.weight", "wpe.weight"};
    for (int i = 0; i < 2; ++i)
        for (const char* s : {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                              "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                              "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"})
            expected.push_back("h." + std::to_string(i) + "." + s);
    expected.push_back("ln_f.weight");
    expected.push_back("ln_f.bias");
    EXPECT_EQ(names, expected);  // no lm_head: tied to wte
    EXPECT_EQ(shapes["wte.weight"], (std::vector<int64_t>{256, 64}));
    EXPECT_EQ(shapes["wpe.weight"], (std::vector<int64_t>{32, 64}));
    EXPECT_EQ(shapes["h.0.attn.c_attn.weight"], (std::vector<int64_t>{64, 192}));  // Conv1D: [in, out]
    EXPECT_EQ(shapes["h.0.mlp.c_fc.weight"], (std::vector<int64_t>{64, 256}));
    EXPECT_EQ(shapes["h.1.mlp.c_proj.weight"], (std::vector<int64_t>{256, 64}));
    auto logits = gpt->forward(gpt_ids());
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 32, 256}));

    // Causality: changing the last token changes no earlier position's logits.
    auto ids = gpt_ids();
    auto changed = ids.clone();
    changed.index_put_({0, 31}, (ids.index({0, 31}) + 1) % 256);
    torch::NoGradGuard ng;
    auto a = gpt->forward(ids), b = gpt->forward(changed);
    EXPECT_TRUE(torch::equal(a.slice(1, 0, 31), b.slice(1, 0, 31)));
    EXPECT_FALSE(torch::equal(a.slice(1, 31, 32), b.slice(1, 31, 32)));
}

TEST(Models, GptLoadsHuggingFaceStyleCheckpoints) {
    // GPT2LMHeadModel files: "transformer." prefix, a tied lm_head.weight, causal-mask buffers h.{i}.attn.bias.
    auto src = make_gpt(11, /*lora=*/false);
    std::map<std::string, at::Tensor> hf;
    for (const auto& [name, t] : src->base_state_dict())
        hf["transformer." + name] = t.clone();
    hf["lm_head.weight"] = src->wte->weight.detach().clone();
    for (int i = 0; i < 2; ++i) {
        hf["transformer.h." + std::to_string(i) + ".attn.bias"] = torch::ones({1, 1, 32, 32}).tril();
        hf["transformer.h." + std::to_string(i) + ".attn.masked_bias"] = torch::tensor(-1e4);
    }
    auto dst = make_gpt(12, /*lora=*/false);
    dst->load_base_state_dict(hf, "hf");
    torch::NoGradGuard ng;
    EXPECT_TRUE(torch::equal(dst->forward(gpt_ids()), src->forward(gpt_ids())));
}

// ---- LoRA injection ---------------------------------------------------------------------------------------------------

TEST(ModelsLora, InjectionByTargetName) {
    Gpt gpt(small_gpt());
    EXPECT_FALSE(gpt->has_lora());
    EXPECT_EQ(gpt->inject_lora({"c_proj"}, lora_cfg()),
              (std::vector<std::string>{"h.0.attn.c_proj", "h.0.mlp.c_proj", "h.1.attn.c_proj", "h.1.mlp.c_proj"}));
    Gpt gpt2(small_gpt());
    EXPECT_EQ(gpt2->inject_lora({"attn.c_proj", "h.1.mlp.c_fc"}, lora_cfg()),
              (std::vector<std::string>{"h.0.attn.c_proj", "h.1.attn.c_proj", "h.1.mlp.c_fc"}));
    EXPECT_THROW(gpt2->inject_lora({"c_fc"}, lora_cfg()), std::invalid_argument);  // h.1.mlp.c_fc already adapted

    ViT vit(small_vit());
    const auto adapted = vit->inject_lora({"qkv", "proj"}, lora_cfg(4, 8.0));
    EXPECT_EQ(adapted, (std::vector<std::string>{"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv",
                                                 "blocks.1.attn.proj"}));  // not patch_embed.proj (a Conv2d)
    EXPECT_EQ(vit->lora_layer_names(), adapted);
    std::vector<std::string> names;
    for (const auto& [name, t] : vit->lora_state_dict()) {
        names.push_back(name);
        EXPECT_FALSE(t.requires_grad());
    }
    EXPECT_EQ(names.front(), "blocks.0.attn.qkv.lora_A");
    EXPECT_EQ(names.size(), 8u);
    const auto params = vit->named_lora_parameters();
    ASSERT_EQ(params.size(), 8u);
    EXPECT_EQ(params[0].second.sizes(), (std::vector<int64_t>{4, 64}));   // A: [r, in]
    EXPECT_EQ(params[1].second.sizes(), (std::vector<int64_t>{192, 4}));  // B: [out, r]
    EXPECT_EQ(vit->lora_parameters().size(), 8u);
    for (const auto& t : vit->lora_parameters())
        EXPECT_TRUE(t.requires_grad());
    for (const auto& [name, t] : vit->base_state_dict())
        EXPECT_EQ(name.find("lora"), std::string::npos) << name;
    int frozen = 0;
    for (const auto& p : vit->named_parameters(true))
        frozen += p.value().requires_grad() ? 0 : 1;
    EXPECT_EQ(frozen, static_cast<int>(vit->base_state_dict().size()));

    // GPT-2 Conv1D layers: the factors keep the [r, in] / [out, r] shapes.
    Gpt g(small_gpt());
    g->inject_lora({"c_attn"}, lora_cfg());
    EXPECT_EQ(g->named_lora_parameters()[1].second.sizes(), (std::vector<int64_t>{192, 4}));

    // A fresh adapter (B = 0) leaves the outputs unchanged.
    torch::manual_seed(3);
    Gpt base(small_gpt());
    torch::NoGradGuard ng;
    auto before = base->forward(gpt_ids());
    base->inject_lora(kGptTargets, lora_cfg());
    EXPECT_TRUE(torch::equal(base->forward(gpt_ids()), before));
}

TEST(ModelsLora, TargetMatchingNothingIsAnError) {
    ViT vit(small_vit());
    try {
        vit->inject_lora({"qkv", "q_proj"}, lora_cfg());
        FAIL() << "expected std::invalid_argument";
    } catch (const std::invalid_argument& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("'q_proj'"), std::string::npos) << msg;
        EXPECT_NE(msg.find("fc1"), std::string::npos) << msg;  // lists the candidates
    }
    EXPECT_FALSE(vit->has_lora());  // nothing changed
    for (const auto& p : vit->named_parameters(true))
        EXPECT_TRUE(p.value().requires_grad()) << p.key();
    EXPECT_THROW(vit->inject_lora({}, lora_cfg()), std::invalid_argument);
    EXPECT_THROW(vit->inject_lora({"qkv"}, lora_cfg(0)), std::invalid_argument);
    Gpt gpt(small_gpt());
    EXPECT_THROW(gpt->inject_lora({"qkv"}, lora_cfg()), std::invalid_argument);
}

TEST(ModelsLora, AdaptersFollowTheModelDtype) {
    Gpt gpt(small_gpt());
    gpt->to(torch::kFloat64);
    gpt->inject_lora({"c_fc"}, lora_cfg());
    for (const auto& t : gpt->lora_parameters())
        EXPECT_EQ(t.scalar_type(), torch::kFloat64);
    auto logits = gpt->forward(gpt_ids());
    EXPECT_EQ(logits.scalar_type(), torch::kFloat64);
}

TEST(ModelsLora, MergeLeavesOutputsUnchanged) {
    auto snapshot = [](const NamedTensors& sd) {
        std::map<std::string, torch::Tensor> m;
        for (const auto& [name, t] : sd)
            m[name] = t.clone();  // state dicts share the parameters' storage
        return m;
    };
    auto check = [&](TransformerModelImpl& m, const std::string& adapted_weight,
                     const std::function<torch::Tensor()>& run) {
        torch::NoGradGuard ng;
        const auto before = run();
        const auto scale = std::max(1.0, before.abs().max().item<double>());
        const auto base_before = snapshot(m.base_state_dict());
        m.merge_lora();
        m.merge_lora();  // idempotent
        EXPECT_TRUE(m.lora_merged());
        EXPECT_LE((run() - before).abs().max().item<double>(), 1e-5 * scale);
        // With the adapters merged, the base state dict holds W + scaling·BA.
        EXPECT_GT((snapshot(m.base_state_dict()).at(adapted_weight) - base_before.at(adapted_weight))
                      .abs().max().item<double>(),
                  1e-3);
        m.unmerge_lora();
        EXPECT_FALSE(m.lora_merged());
        EXPECT_LE((run() - before).abs().max().item<double>(), 1e-5 * scale);
        for (const auto& [name, t] : snapshot(m.base_state_dict()))
            EXPECT_LE((t - base_before.at(name)).abs().max().item<double>(), 1e-6) << name;
    };
    auto vit = make_vit(20);
    check(*vit, "blocks.0.attn.qkv.weight", [&] { return vit->forward(vit_pixels()); });
    auto gpt = make_gpt(21);
    check(*gpt, "h.0.attn.c_attn.weight", [&] { return gpt->forward(gpt_ids()); });
}

// ---- checkpoints --------------------------------------------------------------------------------------------------------

TEST(ModelsCheckpoint, AdapterOnlyRoundTripRestoresOutputsExactly) {
    ScratchDir dir;
    auto src = make_gpt(30);
    src->save_base(dir.file("base.safetensors"));
    src->save_lora(dir.file("lora.safetensors"));

    const auto header = read_safetensors_header(dir.file("lora.safetensors"));
    ASSERT_EQ(header.tensors.size(), src->lora_parameters().size());
    EXPECT_NE(header.find("h.0.attn.c_attn.lora_A"), nullptr);
    EXPECT_EQ(header.metadata.at("lora.rank"), "4");
    EXPECT_EQ(header.metadata.at("fedlora.model"), "gpt2");
    const auto base_header = read_safetensors_header(dir.file("base.safetensors"));
    EXPECT_EQ(base_header.metadata.count("lora.rank"), 0u);
    for (const auto& t : base_header.tensors)
        EXPECT_EQ(t.name.find("lora"), std::string::npos) << t.name;

    // Another model (other random base and adapters), same architecture: base then adapters.
    auto dst = make_gpt(31);
    dst->load_base(dir.file("base.safetensors"));
    {
        torch::NoGradGuard ng;
        EXPECT_FALSE(torch::equal(dst->forward(gpt_ids()), src->forward(gpt_ids())));  // adapters still differ
    }
    dst->load_lora(dir.file("lora.safetensors"));
    torch::NoGradGuard ng;
    EXPECT_TRUE(torch::equal(dst->forward(gpt_ids()), src->forward(gpt_ids())));

    // Only the adapter travels (the federated case): same base, new adapters.
    auto vit_a = make_vit(32), vit_b = make_vit(32);
    {
        torch::NoGradGuard g;
        for (auto& p : vit_a->lora_parameters())
            p.add_(torch::randn_like(p));
    }
    const auto out_a = vit_a->forward(vit_pixels());
    EXPECT_FALSE(torch::equal(vit_b->forward(vit_pixels()), out_a));
    vit_a->save_lora(dir.file("vit_lora.safetensors"));
    vit_b->merge_lora();  // loading into a merged model keeps it merged, with the new adapter
    vit_b->load_lora(dir.file("vit_lora.safetensors"));
    EXPECT_TRUE(vit_b->lora_merged());
    vit_b->unmerge_lora();
    EXPECT_LE((vit_b->forward(vit_pixels()) - out_a).abs().max().item<double>(), 1e-5);
    auto vit_c = make_vit(32);
    vit_c->load_lora(dir.file("vit_lora.safetensors"));
    EXPECT_TRUE(torch::equal(vit_c->forward(vit_pixels()), out_a));
}

TEST(ModelsCheckpoint, ShapeMismatchIsAClearError) {
    ScratchDir dir;
    auto rank4 = make_vit(40);
    rank4->save_lora(dir.file("r4.safetensors"));
    torch::manual_seed(41);
    ViT rank8(small_vit());
    rank8->inject_lora(kVitTargets, lora_cfg(8, 8.0));
    const auto before = rank8->lora_state_dict()[0].second.clone();
    try {
        rank8->load_lora(dir.file("r4.safetensors"));
        FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("r4.safetensors"), std::string::npos) << msg;
        EXPECT_NE(msg.find("'blocks.0.attn.qkv.lora_A'"), std::string::npos) << msg;  // the first, in model order
        EXPECT_NE(msg.find("[4, 64]"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[8, 64]"), std::string::npos) << msg;
    }
    EXPECT_TRUE(torch::equal(rank8->lora_state_dict()[0].second, before));  // nothing was loaded

    // A base checkpoint of another width.
    GptConfig narrow = small_gpt();
    narrow.dim = 32;
    Gpt small(narrow);
    small->save_base(dir.file("narrow.safetensors"));
    Gpt gpt(small_gpt());
    try {
        gpt->load_base(dir.file("narrow.safetensors"));
        FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("'wte.weight'"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[256, 32]"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[256, 64]"), std::string::npos) << msg;
    }

    // An nn.Linear-layout weight where GPT-2 expects Conv1D's [in, out]: the message says so.
    auto sd = gpt->base_state_dict();
    std::map<std::string, at::Tensor> m(sd.begin(), sd.end());
    m["h.0.attn.c_attn.weight"] = m["h.0.attn.c_attn.weight"].t().contiguous();
    try {
        gpt->load_base_state_dict(m);
        FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("'h.0.attn.c_attn.weight'"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[192, 64]"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[64, 192]"), std::string::npos) << msg;
        EXPECT_NE(msg.find("Conv1D"), std::string::npos) << msg;
    }
}

TEST(ModelsCheckpoint, NameAndScopeErrors) {
    Gpt gpt(small_gpt());
    auto sd = gpt->base_state_dict();
    std::map<std::string, at::Tensor> m(sd.begin(), sd.end());
    auto missing = m;
    missing.erase("h.1.ln_2.bias");
    EXPECT_THROW(
        {
            try {
                gpt->load_base_state_dict(missing);
            } catch (const ModelError& e) {
                EXPECT_NE(std::string(e.what()).find("h.1.ln_2.bias"), std::string::npos) << e.what();
                throw;
            }
        },
        ModelError);
    auto extra = m;
    extra["h.2.ln_1.weight"] = torch::ones({64});
    EXPECT_THROW(gpt->load_base_state_dict(extra), ModelError);
    auto ints = m;
    ints["ln_f.bias"] = torch::zeros({64}, torch::kLong);
    EXPECT_THROW(gpt->load_base_state_dict(ints), ModelError);
    // Adapters into a model without adapters; adapter tensors in a base load; base tensors in an adapter load.
    auto adapted = make_gpt(50);
    auto lora_sd = adapted->lora_state_dict();
    std::map<std::string, at::Tensor> lm(lora_sd.begin(), lora_sd.end());
    EXPECT_THROW(gpt->load_lora_state_dict(lm), ModelError);
    auto mixed = m;
    mixed.insert(lm.begin(), lm.end());
    EXPECT_THROW(adapted->load_base_state_dict(mixed), ModelError);
    EXPECT_THROW(adapted->load_lora_state_dict(mixed), ModelError);
    adapted->load_full_state_dict(mixed);  // both at once is a full load
    adapted->load_full_state_dict(m, /*require_lora=*/false);
    EXPECT_THROW(adapted->load_full_state_dict(m), ModelError);
    // An adapter trained with another alpha.
    ScratchDir dir;
    adapted->save_lora(dir.file("a.safetensors"));
    Gpt other(small_gpt());
    other->inject_lora(kGptTargets, lora_cfg(4, 32.0));
    EXPECT_THROW(other->load_lora(dir.file("a.safetensors")), ModelError);
    EXPECT_THROW(Gpt(small_gpt())->save_lora(dir.file("none.safetensors")), ModelError);
}

TEST(Models, RejectBadConfigsAndInputs) {
    ViTConfig v = small_vit();
    v.patch_size = 5;
    EXPECT_THROW(ViT{v}, std::invalid_argument);
    v = small_vit();
    v.heads = 5;
    EXPECT_THROW(ViT{v}, std::invalid_argument);
    GptConfig g = small_gpt();
    g.dropout = 1.0;
    EXPECT_THROW(Gpt{g}, std::invalid_argument);
    Gpt gpt(small_gpt());
    EXPECT_THROW(gpt->forward(torch::zeros({1, 33}, torch::kLong)), std::invalid_argument);   // beyond the context
    EXPECT_THROW(gpt->forward(torch::full({1, 4}, 256, torch::kLong)), std::invalid_argument);  // outside the vocab
    EXPECT_THROW(gpt->forward(torch::zeros({1, 4})), std::invalid_argument);                     // not integer
    ViT vit(small_vit());
    EXPECT_THROW(vit->forward(torch::zeros({1, 3, 28, 28})), std::invalid_argument);
}
