// Pretraining (pretrain.h): the fixed splits, determinism and the cache, on a tiny synthetic fortunes directory;
// the fused tanh-GELU (activations.h) against LibTorch's; the analytic training-step FLOP count (flops.h) against
// the matrix products LibTorch actually executes in a LoRA step, observed through RecordFunction callbacks.
#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "support/scratch_dir.h"
#include "fedlora/learn/activations.h"
#include "fedlora/learn/flops.h"
#include "fedlora/learn/models.h"
#include "fedlora/learn/pretrain.h"
#include "fedlora/learn/train.h"

namespace fs = std::filesystem;
using namespace fedlora::learn;

namespace {

using fedlora::test::ScratchDir;

std::string read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A fortunes directory with two pretext categories and one held-out category ("linux"), 40 entries each.
void write_fortunes(const std::string& dir) {
    fs::create_directories(dir);
    for (const std::string cat : {"alpha", "beta", "linux"}) {
        std::ofstream f(dir + "/" + cat);
        for (int j = 0; j < 40; ++j)
            f << cat << " entry number " << j << ": the quick brown fox jumps over the lazy dog.\n%\n";
    }
}

}  // namespace

// ---- splits ---------------------------------------------------------------------------------------------------------

TEST(PretrainSplit, VisionPretextAndFineTuningPoolsAreDisjoint) {
    std::vector<std::int64_t> labels(60000);
    for (std::size_t i = 0; i < labels.size(); ++i)
        labels[i] = static_cast<std::int64_t>((i * 7 + i / 13) % 10);
    const auto pre = vision_pretrain_indices(labels);
    const auto ft = vision_finetune_indices(static_cast<std::int64_t>(labels.size()));
    EXPECT_EQ(ft.size(), 30000u);
    std::set<std::int64_t> seen(pre.begin(), pre.end());
    for (const auto i : ft)
        EXPECT_EQ(seen.count(i), 0u) << "index " << i << " in both pools";
    for (const auto i : pre) {
        EXPECT_EQ(i % 2, 0);
        EXPECT_TRUE(is_vision_pretext_class(labels[static_cast<std::size_t>(i)]));
    }
    // Every even index of a pretext class is used.
    std::size_t expected = 0;
    for (std::size_t i = 0; i < labels.size(); i += 2)
        expected += is_vision_pretext_class(labels[i]) ? 1 : 0;
    EXPECT_EQ(pre.size(), expected);
    // The two class groups partition the ten classes.
    auto all = vision_pretext_classes();
    const auto held = vision_heldout_classes();
    all.insert(all.end(), held.begin(), held.end());
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, (std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST(PretrainSplit, FortunesHeldOutCategoriesNeverPretrain) {
    std::map<std::string, std::vector<std::string>> corpus;
    for (const std::string cat : {"alpha", "linux", "perl", "zeta"})
        for (int j = 0; j < 45; ++j)
            corpus[cat].push_back(cat + "#" + std::to_string(j));
    const auto s = fortunes_pretrain_split(corpus);
    EXPECT_EQ(s.finetune_train.names, (std::vector<std::string>{"linux", "perl"}));
    EXPECT_EQ(s.finetune_test.names, s.finetune_train.names);
    EXPECT_EQ(s.pretrain_val.size(), 2u * 2u);     // j = 19, 39 of alpha and zeta
    EXPECT_EQ(s.pretrain_train.size(), 2u * 43u);
    EXPECT_EQ(s.finetune_test.texts.size(), 2u * 4u);  // j = 9, 19, 29, 39
    EXPECT_EQ(s.finetune_train.texts.size(), 2u * 41u);
    for (const auto& t : s.pretrain_train)
        EXPECT_TRUE(t.rfind("alpha#", 0) == 0 || t.rfind("zeta#", 0) == 0) << t;
    for (const auto& t : s.pretrain_val)
        EXPECT_TRUE(t == "alpha#19" || t == "alpha#39" || t == "zeta#19" || t == "zeta#39") << t;
    for (std::size_t i = 0; i < s.finetune_test.texts.size(); ++i) {
        const auto& t = s.finetune_test.texts[i];
        EXPECT_EQ(t.substr(0, t.find('#')), s.finetune_test.names[static_cast<std::size_t>(s.finetune_test.labels[i])]);
        EXPECT_EQ(std::stoi(t.substr(t.find('#') + 1)) % 10, 9);
    }
    const auto& held = text_heldout_categories();
    EXPECT_TRUE(std::is_sorted(held.begin(), held.end()));  // binary_search relies on it
}

// ---- pretraining ------------------------------------------------------------------------------------------------------

TEST(Pretrain, TextRunIsDeterministicCachedAndLoadable) {
    ScratchDir tmp;
    write_fortunes(tmp.str() + "/fortunes");
    PretrainOptions o;
    o.task = PretrainTask::Text;
    o.out_dir = tmp.str() + "/out";
    o.data_dir = tmp.str() + "/fortunes";
    o.steps = 4;
    o.batch_size = 4;
    o.threads = 1;
    o.seed = 3;
    const auto first = pretrain(o);
    EXPECT_FALSE(first.reused);
    EXPECT_EQ(first.path, o.out_dir + "/gpt-fortunes.safetensors");
    const std::string bytes = read_bytes(first.path);
    ASSERT_FALSE(bytes.empty());
    EXPECT_EQ(first.metadata.at("pretrain.seed"), "3");
    EXPECT_EQ(first.metadata.at("pretrain.steps"), "4");
    EXPECT_GT(std::stod(first.metadata.at("eval.val_perplexity")), 1.0);
    EXPECT_GT(std::stod(first.metadata.at("eval.heldout_perplexity")), 1.0);

    const auto again = pretrain(o);  // same config and seed: reused, untouched
    EXPECT_TRUE(again.reused);
    EXPECT_EQ(read_bytes(first.path), bytes);
    EXPECT_EQ(again.metadata.at("eval.val_perplexity"), first.metadata.at("eval.val_perplexity"));

    o.force = true;  // retrained: bit-identical
    const auto forced = pretrain(o);
    EXPECT_FALSE(forced.reused);
    EXPECT_EQ(read_bytes(first.path), bytes);

    o.force = false;
    o.seed = 4;  // another seed: retrained, different weights
    EXPECT_FALSE(pretrain(o).reused);
    EXPECT_NE(read_bytes(first.path), bytes);

    // The file is a base checkpoint of the default GPT, with GPT-2 names.
    Gpt gpt(pretrain_gpt_config());
    gpt->load_base(first.path);
    const auto header = read_safetensors_header(first.path);
    EXPECT_NE(header.find("h.0.attn.c_attn.weight"), nullptr);
    EXPECT_EQ(header.metadata.at("fedlora.model"), "gpt2");
}

TEST(Pretrain, UnwritableOutputAndMissingDataAreClearErrors) {
    ScratchDir tmp;
    const std::string file = tmp.str() + "/plain-file";
    std::ofstream(file) << "x";
    PretrainOptions o;
    o.task = PretrainTask::Text;
    o.out_dir = file + "/sub";
    o.data_dir = tmp.str();
    o.steps = 1;
    try {
        pretrain(o);
        FAIL() << "no error for an output directory under a regular file";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("output directory"), std::string::npos) << e.what();
    }
    o.out_dir = tmp.str() + "/out";
    o.data_dir = tmp.str() + "/no-such-dir";
    try {
        pretrain(o);
        FAIL() << "no error for a missing fortunes directory";
    } catch (const DataError& e) {
        EXPECT_NE(std::string(e.what()).find("apt-get install fortunes"), std::string::npos) << e.what();
    }
    o.steps = -1;
    EXPECT_THROW(pretrain(o), std::invalid_argument);
    EXPECT_THROW(parse_pretrain_task("nonsense"), std::invalid_argument);
}

// ---- tanh-GELU ----------------------------------------------------------------------------------------------------------

TEST(Activations, GeluTanhMatchesLibTorch) {
    torch::manual_seed(0);
    auto x = torch::cat({torch::randn({4096}) * 3.0, torch::linspace(-30.0, 30.0, 2001)}).to(torch::kFloat);
    const auto ref64 = torch::gelu(x.to(torch::kDouble), "tanh");
    const auto ours = gelu_tanh(x);
    ASSERT_EQ(ours.scalar_type(), torch::kFloat);
    // Within a few float ulps of the double-precision value (absolute near zero).
    const auto err = (ours.to(torch::kDouble) - ref64).abs() / ref64.abs().clamp_min(1e-3);
    EXPECT_LT(err.max().item<double>(), 2e-6);

    // Gradient against autograd through LibTorch's GELU in double precision.
    auto xa = x.clone().requires_grad_(true);
    auto g = torch::randn(x.sizes());
    gelu_tanh(xa).backward(g);
    auto xd = x.to(torch::kDouble).requires_grad_(true);
    torch::gelu(xd, "tanh").backward(g.to(torch::kDouble));
    // The derivative is O(1) and crosses zero near x = -0.75, so the bound is absolute; LibTorch's own float kernel
    // is the yardstick.
    auto xf = x.clone().requires_grad_(true);
    torch::gelu(xf, "tanh").backward(g);
    const double ours_err = (xa.grad().to(torch::kDouble) - xd.grad()).abs().max().item<double>();
    const double torch_err = (xf.grad().to(torch::kDouble) - xd.grad()).abs().max().item<double>();
    std::printf("tanh-GELU gradient, max |error| vs double: fused %.2e, LibTorch float %.2e\n", ours_err, torch_err);
    EXPECT_LT(ours_err, std::max(4.0 * torch_err, 1e-6));

    // Other dtypes take LibTorch's own kernel, exactly.
    const auto d = x.to(torch::kDouble);
    EXPECT_TRUE(torch::equal(gelu_tanh(d), torch::gelu(d, "tanh")));
    // Non-contiguous input.
    auto m = torch::randn({64, 48}).t();
    EXPECT_TRUE(torch::allclose(gelu_tanh(m), torch::gelu(m, "tanh"), 1e-5, 1e-6));
}

// ---- FLOP count -------------------------------------------------------------------------------------------------------

namespace {

// Sums 2·m·n·k over the BLAS-level products LibTorch runs (mm, addmm, bmm, baddbmm) and the convolutions,
// skipping anything nested inside a counted op.
struct ProductCounter {
    static double flops;
    static int depth;
    static bool counted(const char* name) {
        const std::string n = name;
        return n == "aten::mm" || n == "aten::addmm" || n == "aten::bmm" || n == "aten::baddbmm" ||
               n == "aten::convolution";
    }
    static std::unique_ptr<at::ObserverContext> start(const at::RecordFunction& fn) {
        if (!counted(fn.name()))
            return nullptr;
        if (depth++ > 0)
            return nullptr;
        const auto in = fn.inputs();
        const std::string n = fn.name();
        auto size = [&](std::size_t i) { return in[i].toTensor().sizes(); };
        if (n == "aten::mm") {
            flops += 2.0 * size(0)[0] * size(0)[1] * size(1)[1];
        } else if (n == "aten::addmm") {
            flops += 2.0 * size(1)[0] * size(1)[1] * size(2)[1];
        } else if (n == "aten::bmm") {
            flops += 2.0 * size(0)[0] * size(0)[1] * size(0)[2] * size(1)[2];
        } else if (n == "aten::baddbmm") {
            flops += 2.0 * size(1)[0] * size(1)[1] * size(1)[2] * size(2)[2];
        } else {  // convolution with stride = kernel (the patch embedding)
            const auto x = size(0), w = size(1);
            flops += 2.0 * x[0] * (x[2] / w[2]) * (x[3] / w[3]) * w[0] * w[1] * w[2] * w[3];
        }
        return nullptr;
    }
    static void end(const at::RecordFunction& fn, at::ObserverContext*) {
        if (counted(fn.name()))
            --depth;
    }
};
double ProductCounter::flops = 0.0;
int ProductCounter::depth = 0;

template <typename Step>
double measured_flops(Step step) {
    ProductCounter::flops = 0.0;
    ProductCounter::depth = 0;
    const auto handle =
        at::addGlobalCallback(at::RecordFunctionCallback(&ProductCounter::start, &ProductCounter::end).needsInputs(true));
    step();
    at::removeCallback(handle);
    return ProductCounter::flops;
}

}  // namespace

TEST(Flops, LoraStepCountEqualsTheProductsLibTorchRuns) {
    torch::manual_seed(0);
    for (const auto& targets : std::vector<std::vector<std::string>>{
             {"qkv", "proj", "fc1", "fc2"}, {"fc2"}, {"qkv", "head"}, {"proj"}}) {
        ViTConfig c;
        c.image_size = 8;
        c.patch_size = 4;
        c.dim = 12;
        c.heads = 3;
        c.depth = 2;
        c.num_classes = 5;
        ViT vit(c);
        vit->inject_lora(targets, LoraConfig{3, 6.0, 0.0});
        auto x = torch::rand({6, 1, 8, 8});
        auto y = torch::randint(5, {6}, torch::kLong);
        const double seen = measured_flops([&] {
            torch::nn::functional::cross_entropy(vit->forward(x), y).backward();
        });
        const auto f = lora_step_flops(*vit, 6);
        EXPECT_DOUBLE_EQ(f.total(), seen) << "ViT, LoRA on " << targets.front() << " (" << targets.size() << " targets)";
        std::printf("ViT tiny, LoRA on %zu target(s): analytic %.0f FLOP (forward %.0f), observed %.0f\n",
                    targets.size(), f.total(), f.forward, seen);
    }
    for (const auto& targets : std::vector<std::vector<std::string>>{{"c_attn", "c_proj", "c_fc"}, {"mlp.c_proj"}}) {
        GptConfig c;
        c.vocab_size = 40;
        c.context = 9;
        c.dim = 12;
        c.heads = 2;
        c.depth = 2;
        Gpt gpt(c);
        gpt->inject_lora(targets, LoraConfig{2, 4.0, 0.0});
        auto ids = torch::randint(40, {3, 7}, torch::kLong);
        const double seen = measured_flops([&] { GptImpl::lm_loss(gpt->forward(ids), ids).backward(); });
        const auto f = lora_step_flops(*gpt, 3, 7);
        EXPECT_DOUBLE_EQ(f.total(), seen) << "GPT, LoRA on " << targets.front();
        std::printf("GPT tiny, LoRA on %zu target(s): analytic %.0f FLOP (forward %.0f), observed %.0f\n",
                    targets.size(), f.total(), f.forward, seen);
    }
}
