// LoRA linear layer: frozen base gets no gradient; forward and gradients equal their closed forms.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "fedlora/learn/lora.h"

using fedlora::learn::LoraConfig;
using fedlora::learn::LoraLinear;

namespace {
LoraLinear make_layer(int64_t in, int64_t out, int64_t r, double alpha) {
    torch::manual_seed(42);
    LoraConfig cfg;
    cfg.rank = r;
    cfg.alpha = alpha;
    LoraLinear layer(in, out, cfg);
    torch::NoGradGuard ng;
    layer->lora_B.normal_();  // a trained adapter: B != 0
    return layer;
}
}  // namespace

TEST(LoraLinear, FrozenBaseGetsNoGradient) {
    auto layer = make_layer(16, 8, 4, 8.0);
    auto x = torch::randn({5, 16});
    layer->forward(x).pow(2).sum().backward();
    EXPECT_FALSE(layer->weight.requires_grad());
    EXPECT_FALSE(layer->bias.requires_grad());
    EXPECT_FALSE(layer->weight.grad().defined());
    EXPECT_FALSE(layer->bias.grad().defined());
    ASSERT_TRUE(layer->lora_A.grad().defined());
    ASSERT_TRUE(layer->lora_B.grad().defined());
    EXPECT_GT(layer->lora_A.grad().abs().sum().item<double>(), 0.0);
    EXPECT_GT(layer->lora_B.grad().abs().sum().item<double>(), 0.0);
    // Only the adapter is trainable: what an optimiser would be given.
    int trainable = 0;
    for (const auto& p : layer->named_parameters())
        if (p.value().requires_grad()) {
            ++trainable;
            EXPECT_TRUE(p.key() == "lora_A" || p.key() == "lora_B") << p.key();
        }
    EXPECT_EQ(trainable, 2);
}

TEST(LoraLinear, ForwardAndGradientsMatchClosedForm) {
    const int64_t in = 12, out = 7, r = 3;
    const double alpha = 6.0, s = alpha / r;
    auto layer = make_layer(in, out, r, alpha);
    auto x = torch::randn({9, in}, torch::kFloat64).to(torch::kFloat32);
    auto y = layer->forward(x);
    // y = x W^T + b + s x A^T B^T, evaluated in double.
    auto xd = x.to(torch::kFloat64);
    auto W = layer->weight.detach().to(torch::kFloat64), b = layer->bias.detach().to(torch::kFloat64);
    auto A = layer->lora_A.detach().to(torch::kFloat64), B = layer->lora_B.detach().to(torch::kFloat64);
    auto ref = xd.mm(W.t()) + b + s * xd.mm(A.t()).mm(B.t());
    EXPECT_LT((y.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-5);

    // L = sum(y): dL/dB = s * 1ᵀ (x Aᵀ) broadcast over rows; dL/dA = s * (Bᵀ 1) (1ᵀ x).
    y.sum().backward();
    auto ones_n = torch::ones({9, 1}, torch::kFloat64);
    auto ones_o = torch::ones({out, 1}, torch::kFloat64);
    auto gB = s * ones_o.mm(ones_n.t().mm(xd.mm(A.t())));
    auto gA = s * B.t().mm(ones_o).mm(ones_n.t().mm(xd));
    EXPECT_LT((layer->lora_B.grad().to(torch::kFloat64) - gB).abs().max().item<double>(), 1e-4);
    EXPECT_LT((layer->lora_A.grad().to(torch::kFloat64) - gA).abs().max().item<double>(), 1e-4);
}

TEST(LoraLinear, FreshAdapterLeavesBaseUnchanged) {
    torch::manual_seed(1);
    LoraLinear layer(10, 4, LoraConfig{});
    auto x = torch::randn({3, 10});
    auto base = torch::nn::functional::linear(x, layer->weight, layer->bias);
    EXPECT_TRUE(torch::allclose(layer->forward(x), base));
}

TEST(LoraLinear, MergeUnmergeIsExact) {
    auto layer = make_layer(16, 8, 4, 8.0);
    auto x = torch::randn({4, 16});
    torch::NoGradGuard ng;
    auto before = layer->forward(x);
    auto w0 = layer->weight.clone();
    layer->merge();
    layer->merge();  // idempotent
    EXPECT_TRUE(layer->merged());
    EXPECT_LT((layer->forward(x) - before).abs().max().item<double>(), 1e-5);
    layer->unmerge();
    EXPECT_LT((layer->weight - w0).abs().max().item<double>(), 1e-6);
    EXPECT_LT((layer->forward(x) - before).abs().max().item<double>(), 1e-5);
}

TEST(LoraLinear, RejectsBadConfig) {
    LoraConfig c;
    c.rank = 0;
    EXPECT_THROW(LoraLinear(4, 4, c), std::invalid_argument);
    c = LoraConfig{};
    c.dropout = 1.0;
    EXPECT_THROW(LoraLinear(4, 4, c), std::invalid_argument);
    EXPECT_THROW(LoraLinear(0, 4, LoraConfig{}), std::invalid_argument);
}

TEST(LoraLinear, Conv1DLayoutStoresWeightInOut) {
    using fedlora::learn::WeightLayout;
    torch::manual_seed(5);
    LoraConfig cfg;
    cfg.rank = 3;
    cfg.alpha = 6.0;
    LoraLinear layer(12, 7, cfg, true, WeightLayout::InOut);
    EXPECT_EQ(layer->weight.sizes(), (std::vector<int64_t>{12, 7}));  // GPT-2 Conv1D: [in, out]
    EXPECT_EQ(layer->lora_A.sizes(), (std::vector<int64_t>{3, 12}));  // the factors as in the [out, in] layout
    EXPECT_EQ(layer->lora_B.sizes(), (std::vector<int64_t>{7, 3}));
    {
        torch::NoGradGuard ng;
        layer->lora_B.normal_();
        layer->bias.normal_();
    }
    auto x = torch::randn({2, 5, 12});
    auto xd = x.to(torch::kFloat64);
    auto W = layer->weight.detach().to(torch::kFloat64), b = layer->bias.detach().to(torch::kFloat64);
    auto A = layer->lora_A.detach().to(torch::kFloat64), B = layer->lora_B.detach().to(torch::kFloat64);
    auto ref = torch::matmul(xd, W) + b + 2.0 * torch::matmul(torch::matmul(xd, A.t()), B.t());
    torch::NoGradGuard ng;
    EXPECT_LT((layer->forward(x).to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-5);
    auto w0 = layer->weight.clone();
    layer->merge();
    EXPECT_LT((layer->weight.to(torch::kFloat64) - (W + 2.0 * B.mm(A).t())).abs().max().item<double>(), 1e-5);
    EXPECT_LT((layer->forward(x).to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-5);
    layer->unmerge();
    EXPECT_LT((layer->weight - w0).abs().max().item<double>(), 1e-6);
}

TEST(LoraLinear, WrapsADenseLayerSharingItsWeight) {
    using fedlora::learn::Dense;
    using fedlora::learn::WeightLayout;
    torch::manual_seed(6);
    Dense base(10, 4, true, WeightLayout::InOut);
    EXPECT_TRUE(base->weight.requires_grad());  // a plain Dense trains its weight (pretraining)
    LoraLinear lora(*base, LoraConfig{});
    EXPECT_EQ(lora->layout(), WeightLayout::InOut);
    EXPECT_EQ(lora->in_features(), 10);
    EXPECT_EQ(lora->out_features(), 4);
    EXPECT_FALSE(lora->weight.requires_grad());
    EXPECT_FALSE(lora->bias.requires_grad());
    EXPECT_EQ(lora->weight.data_ptr(), base->weight.data_ptr());  // no copy of the base weight
    auto x = torch::randn({3, 10});
    EXPECT_TRUE(torch::allclose(lora->forward(x), base->forward(x)));  // B = 0
    // A Dense pointer dispatches to the adapted forward.
    std::shared_ptr<fedlora::learn::DenseImpl> as_dense = lora.ptr();
    {
        torch::NoGradGuard ng;
        lora->lora_B.fill_(1.0);
    }
    EXPECT_TRUE(torch::allclose(as_dense->forward(x), lora->forward(x)));
    EXPECT_FALSE(torch::allclose(as_dense->forward(x), base->forward(x)));
}
