// Aggregation rules over a summing channel (aggregate.h): the covariance identity of separate averaging, checked
// against explicit products in double; fedit = separate averages (inexact, error = covariance term); ffa and fedsa
// exact; payload layouts with a SOFT support; NaN / Inf updates and sums rejected with nothing applied.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fedlora/learn/aggregate.h"
#include "fedlora/learn/checkpoint.h"  // adapter_to_tensors

using namespace fedlora::learn;

namespace {

struct Shape {
    std::string name;
    std::int64_t rank, in, out;
};

Adapter random_adapter(const std::vector<Shape>& shapes, std::uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 eng(seed);
    std::normal_distribution<float> n(0.0f, scale);
    Adapter a;
    for (const auto& s : shapes) {
        auto l = LoraLayerFactors::zeros(s.name, s.rank, s.in, s.out);
        for (auto& v : l.A)
            v = n(eng);
        for (auto& v : l.B)
            v = n(eng);
        a.layers.push_back(std::move(l));
    }
    return a;
}

torch::Tensor mat(const std::vector<float>& v, std::int64_t rows, std::int64_t cols) {
    return torch::from_blob(const_cast<float*>(v.data()), {rows, cols}, torch::kFloat).to(torch::kDouble);
}
torch::Tensor A_of(const LoraLayerFactors& l) { return mat(l.A, l.rank, l.in); }
torch::Tensor B_of(const LoraLayerFactors& l) { return mat(l.B, l.out, l.rank); }

double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

// Shapes that exercise both code paths of factor_covariance (dense for the small layer, Gram for the wide one).
const std::vector<Shape> kShapes = {{"blocks.0.attn.qkv", 4, 8, 8}, {"blocks.0.mlp.fc1", 3, 40, 48}};

}  // namespace

TEST(Aggregate, CovarianceIdentityHoldsNumerically) {
    const int K = 5;
    std::vector<Adapter> clients;
    for (int k = 0; k < K; ++k)
        clients.push_back(random_adapter(kShapes, 100 + k));
    const std::vector<double> raw = {3, 1, 4, 1, 5};  // unnormalised: factor_covariance normalises
    double tot = 0;
    for (double w : raw)
        tot += w;
    std::vector<double> p;
    for (double w : raw)
        p.push_back(w / tot);

    const auto rep = factor_covariance(clients, raw);
    ASSERT_EQ(rep.per_layer.size(), kShapes.size());
    double total2 = 0.0;
    for (std::size_t l = 0; l < kShapes.size(); ++l) {
        torch::Tensor abar, bbar, mean_prod, cov;
        for (int k = 0; k < K; ++k) {
            const auto& c = clients[k].layers[l];
            abar = k ? abar + p[k] * A_of(c) : p[k] * A_of(c);
            bbar = k ? bbar + p[k] * B_of(c) : p[k] * B_of(c);
            mean_prod = k ? mean_prod + p[k] * B_of(c).mm(A_of(c)) : p[k] * B_of(c).mm(A_of(c));
        }
        for (int k = 0; k < K; ++k) {
            const auto& c = clients[k].layers[l];
            auto t = p[k] * (B_of(c) - bbar).mm(A_of(c) - abar);
            cov = k ? cov + t : t;
        }
        const auto lhs = mean_prod - bbar.mm(abar);  // Σ p B A − B̄Ā
        const double scale = max_abs(mean_prod);
        EXPECT_LE(max_abs(lhs - cov), 1e-12 * scale) << kShapes[l].name;
        EXPECT_GT(lhs.norm().item<double>(), 0.1 * mean_prod.norm().item<double>());  // far from exact
        EXPECT_NEAR(rep.per_layer[l], lhs.norm().item<double>(), 1e-10 * lhs.norm().item<double>());
        EXPECT_NEAR(rep.mean_product_norm[l], mean_prod.norm().item<double>(), 1e-10 * scale);
        EXPECT_EQ(rep.layers[l], kShapes[l].name);
        total2 += std::pow(lhs.norm().item<double>(), 2);
    }
    EXPECT_NEAR(rep.total, std::sqrt(total2), 1e-10 * std::sqrt(total2));
}

TEST(Aggregate, FedItOverTheSumIsSeparateAveragingWithCovarianceError) {
    const auto rule = make_aggregation_rule("fedit");
    EXPECT_EQ(rule->name(), "fedit");
    EXPECT_FALSE(rule->exact());
    Adapter global = random_adapter(kShapes, 7);
    rule->initialize(global, 1);
    const Adapter global0 = global;
    const std::vector<double> p = aggregation_weights({100, 300, 200});
    std::vector<Adapter> local, updates;
    std::vector<std::vector<float>> payloads;
    for (int k = 0; k < 3; ++k) {
        Adapter c;
        rule->receive(c, global);
        EXPECT_TRUE(c.same_shape(global));
        const Adapter u = random_adapter(kShapes, 50 + k, 0.3f);
        adapter_add_scaled(c, u, 1.0);
        updates.push_back(adapter_difference(c, global));
        local.push_back(c);
        payloads.push_back(rule->client_payload(updates.back(), p[k], k));
    }
    const auto layout = rule->payload_layout(global);
    EXPECT_EQ(layout.size, global.numel());
    ASSERT_EQ(layout.entries.size(), 4u);
    EXPECT_EQ(layout.entries[0].tensor, "blocks.0.attn.qkv.lora_A");
    EXPECT_EQ(layout.entries[1].tensor, "blocks.0.attn.qkv.lora_B");
    rule->apply(global, sum_payloads(payloads));

    const auto rep = factor_covariance(local, p);
    for (std::size_t l = 0; l < kShapes.size(); ++l) {
        torch::Tensor abar, bbar, mean_prod;
        for (int k = 0; k < 3; ++k) {
            const auto& c = local[k].layers[l];
            abar = k ? abar + p[k] * A_of(c) : p[k] * A_of(c);
            bbar = k ? bbar + p[k] * B_of(c) : p[k] * B_of(c);
            mean_prod = k ? mean_prod + p[k] * B_of(c).mm(A_of(c)) : p[k] * B_of(c).mm(A_of(c));
        }
        // The server holds the separate averages (float rounding only) ...
        EXPECT_LE(max_abs(A_of(global.layers[l]) - abar), 1e-5 * max_abs(abar));
        EXPECT_LE(max_abs(B_of(global.layers[l]) - bbar), 1e-5 * max_abs(bbar));
        // ... and their product misses the average of products by exactly the covariance term.
        const double err = (mean_prod - B_of(global.layers[l]).mm(A_of(global.layers[l]))).norm().item<double>();
        EXPECT_NEAR(err, rep.per_layer[l], 1e-4 * rep.mean_product_norm[l]);
        EXPECT_GT(rep.per_layer[l], 1e-3 * rep.mean_product_norm[l]);
    }
    // Same result through the ideal helper.
    Adapter g2 = global0;
    aggregate_ideal(*rule, g2, updates, p);
    for (std::size_t l = 0; l < kShapes.size(); ++l) {
        EXPECT_EQ(g2.layers[l].A, global.layers[l].A);
        EXPECT_EQ(g2.layers[l].B, global.layers[l].B);
    }
}

TEST(Aggregate, FfaIsExactWithSharedFrozenA) {
    const auto rule = make_aggregation_rule("ffa");
    EXPECT_TRUE(rule->exact());
    EXPECT_FALSE(rule->trains(LoraFactor::A));
    EXPECT_TRUE(rule->trains(LoraFactor::B));
    EXPECT_TRUE(rule->shares(LoraFactor::B));
    EXPECT_FALSE(rule->shares(LoraFactor::A));

    Adapter shape = random_adapter(kShapes, 1);
    Adapter g1 = shape, g2 = shape.zeros_like(), g3 = shape;
    rule->initialize(g1, 42);
    rule->initialize(g2, 42);  // another "client" computing the same init from the shared seed
    rule->initialize(g3, 43);
    for (std::size_t l = 0; l < kShapes.size(); ++l) {
        EXPECT_EQ(g1.layers[l].A, g2.layers[l].A);
        EXPECT_NE(g1.layers[l].A, g3.layers[l].A);
        const float bound = 1.0f / std::sqrt(static_cast<float>(kShapes[l].in));
        for (float a : g1.layers[l].A)
            EXPECT_LE(std::abs(a), bound);
    }
    Adapter global = g1;
    for (auto& l : global.layers)
        std::fill(l.B.begin(), l.B.end(), 0.0f);  // LoRA's B init

    const auto layout = rule->payload_layout(global);
    ASSERT_EQ(layout.entries.size(), kShapes.size());
    for (const auto& e : layout.entries)
        EXPECT_EQ(e.factor, LoraFactor::B);

    const std::vector<double> p = {0.2, 0.5, 0.3};
    std::vector<Adapter> local;
    std::vector<std::vector<float>> payloads;
    for (int k = 0; k < 3; ++k) {
        Adapter c;
        rule->receive(c, global);
        Adapter u = random_adapter(kShapes, 70 + k, 0.5f);
        for (auto& l : u.layers)
            std::fill(l.A.begin(), l.A.end(), 0.0f);  // A is not trained
        adapter_add_scaled(c, u, 1.0);
        payloads.push_back(rule->client_payload(adapter_difference(c, global), p[k], k));
        local.push_back(c);
    }
    rule->apply(global, sum_payloads(payloads));
    const auto rep = factor_covariance(local, p);
    for (std::size_t l = 0; l < kShapes.size(); ++l) {
        EXPECT_EQ(rep.per_layer[l], 0.0);  // A_k − Ā = 0 exactly
        torch::Tensor mean_prod;
        for (int k = 0; k < 3; ++k) {
            const auto& c = local[k].layers[l];
            EXPECT_EQ(c.A, global.layers[l].A);  // identical frozen A on every client
            const auto t = p[k] * B_of(c).mm(A_of(c));
            mean_prod = k ? mean_prod + t : t;
        }
        const auto agg = B_of(global.layers[l]).mm(A_of(global.layers[l]));
        EXPECT_LE(max_abs(agg - mean_prod), 1e-6 * max_abs(mean_prod)) << "aggregated product = average of products";
    }
}

TEST(Aggregate, FedSaSharesAOnlyAndKeepsBLocal) {
    const auto rule = make_aggregation_rule("fedsa");
    EXPECT_TRUE(rule->exact());
    EXPECT_TRUE(rule->keeps_local(LoraFactor::B));
    EXPECT_FALSE(rule->keeps_local(LoraFactor::A));
    Adapter global = random_adapter(kShapes, 3);
    const auto layout = rule->payload_layout(global);
    for (const auto& e : layout.entries)
        EXPECT_EQ(e.factor, LoraFactor::A);

    const std::vector<double> p = {0.5, 0.25, 0.25};
    std::vector<Adapter> local(3);
    std::vector<std::vector<float>> payloads;
    for (int k = 0; k < 3; ++k) {
        rule->receive(local[k], global);  // first round: B from the global init
        EXPECT_EQ(local[k].layers[0].B, global.layers[0].B);
        const Adapter before = local[k];
        adapter_add_scaled(local[k], random_adapter(kShapes, 90 + k, 0.5f), 1.0);
        payloads.push_back(rule->client_payload(adapter_difference(local[k], before), p[k], k));
    }
    rule->apply(global, sum_payloads(payloads));
    std::vector<Adapter> after = local;
    for (int k = 0; k < 3; ++k) {
        rule->receive(after[k], global);
        for (std::size_t l = 0; l < kShapes.size(); ++l) {
            EXPECT_EQ(after[k].layers[l].B, local[k].layers[l].B) << "B stays local";
            EXPECT_EQ(after[k].layers[l].A, global.layers[l].A) << "A comes from the server";
        }
    }
    for (std::size_t l = 0; l < kShapes.size(); ++l) {
        torch::Tensor abar;
        for (int k = 0; k < 3; ++k)
            abar = k ? abar + p[k] * A_of(local[k].layers[l]) : p[k] * A_of(local[k].layers[l]);
        // The shared factor is exactly the weighted average the channel delivers (float rounding only), so each
        // client's model B_k Ā is what the rule defines.
        EXPECT_LE(max_abs(A_of(global.layers[l]) - abar), 1e-6 * max_abs(abar));
    }
}

TEST(Aggregate, SupportRestrictsPayloadAndApply) {
    const auto rule = make_aggregation_rule("fedit");
    Adapter global = random_adapter(kShapes, 11);
    const Adapter global0 = global;
    RankSupport s;
    s.kept = {{1, 3}, {0}};
    const auto layout = rule->payload_layout(global, &s);
    EXPECT_EQ(layout.size, 2 * 8 + 8 * 2 + 1 * 40 + 48 * 1);
    Adapter u = random_adapter(kShapes, 12);
    const auto x = rule->client_payload(u, 0.5, 0, &s);
    ASSERT_EQ(static_cast<std::int64_t>(x.size()), layout.size);
    // A rows 1 and 3 of layer 0, then B (row-major over (out, kept)).
    EXPECT_EQ(x[0], 0.5f * u.layers[0].A[1 * 8 + 0]);
    EXPECT_EQ(x[8], 0.5f * u.layers[0].A[3 * 8 + 0]);
    EXPECT_EQ(x[16], 0.5f * u.layers[0].B[0 * 4 + 1]);
    EXPECT_EQ(x[17], 0.5f * u.layers[0].B[0 * 4 + 3]);
    EXPECT_EQ(x[18], 0.5f * u.layers[0].B[1 * 4 + 1]);
    rule->apply(global, x, &s);
    for (std::int64_t i = 0; i < 4; ++i) {
        const bool kept = i == 1 || i == 3;
        for (std::int64_t j = 0; j < 8; ++j) {
            const auto idx = static_cast<std::size_t>(i * 8 + j);
            if (kept)
                EXPECT_EQ(global.layers[0].A[idx], global0.layers[0].A[idx] + 0.5f * u.layers[0].A[idx]);
            else
                EXPECT_EQ(global.layers[0].A[idx], global0.layers[0].A[idx]);
        }
    }
    RankSupport bad;
    bad.kept = {{3, 1}, {0}};
    EXPECT_THROW(rule->payload_layout(global, &bad), std::invalid_argument);
    bad.kept = {{0, 4}, {0}};
    EXPECT_THROW(rule->payload_layout(global, &bad), std::invalid_argument);
}

TEST(Aggregate, NonFiniteUpdateIsRejectedNamingClientAndTensor) {
    for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        const auto rule = make_aggregation_rule("fedit");
        Adapter global = random_adapter(kShapes, 21);
        const Adapter global0 = global;
        std::vector<Adapter> updates = {random_adapter(kShapes, 22), random_adapter(kShapes, 23),
                                        random_adapter(kShapes, 24)};
        updates[2].layers[1].B[17] = bad;
        try {
            aggregate_ideal(*rule, global, updates, {0.3, 0.3, 0.4});
            FAIL() << "expected AggregationError";
        } catch (const AggregationError& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find("client 2"), std::string::npos) << msg;
            EXPECT_NE(msg.find("'blocks.0.mlp.fc1.lora_B'"), std::string::npos) << msg;
            EXPECT_NE(msg.find("element 17"), std::string::npos) << msg;
        }
        for (std::size_t l = 0; l < kShapes.size(); ++l) {
            EXPECT_EQ(global.layers[l].A, global0.layers[l].A) << "nothing applied";
            EXPECT_EQ(global.layers[l].B, global0.layers[l].B) << "nothing applied";
        }
        // A client refuses to transmit it, too (even a factor the rule does not send).
        EXPECT_THROW(rule->client_payload(updates[2], 0.4, 2), AggregationError);
        updates[2].layers[1].B[17] = 0.0f;
        updates[2].layers[0].A[0] = bad;
        EXPECT_THROW(make_aggregation_rule("ffa")->client_payload(updates[2], 0.4, 2), AggregationError);

        // A non-finite received sum (e.g. a broken channel estimate) is rejected before anything changes.
        auto sum = rule->client_payload(updates[0], 1.0, 0);
        sum[sum.size() - 1] = bad;
        try {
            rule->apply(global, sum);
            FAIL() << "expected AggregationError";
        } catch (const AggregationError& e) {
            EXPECT_NE(std::string(e.what()).find("blocks.0.mlp.fc1.lora_B"), std::string::npos) << e.what();
        }
        EXPECT_EQ(global.layers[0].A, global0.layers[0].A);
        EXPECT_EQ(global.layers[1].B, global0.layers[1].B);
        sum.pop_back();
        EXPECT_THROW(rule->apply(global, sum), AggregationError);
        EXPECT_EQ(global.layers[0].A, global0.layers[0].A);
    }
}

TEST(Aggregate, NamesWeightsAndArguments) {
    EXPECT_EQ(aggregation_rule_names(), (std::vector<std::string>{"fedit", "ffa", "fedsa"}));
    for (const auto& n : aggregation_rule_names())
        EXPECT_EQ(make_aggregation_rule(n)->name(), n);
    try {
        make_aggregation_rule("fedavg");
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("fedit, ffa, fedsa"), std::string::npos);
    }
    const auto p = aggregation_weights({1, 3});
    EXPECT_DOUBLE_EQ(p[0], 0.25);
    EXPECT_DOUBLE_EQ(p[1], 0.75);
    EXPECT_THROW(aggregation_weights({}), std::invalid_argument);
    EXPECT_THROW(aggregation_weights({0, 0}), std::invalid_argument);
    EXPECT_THROW(aggregation_weights({1, -1}), std::invalid_argument);
    Adapter a = random_adapter(kShapes, 1);
    EXPECT_THROW(make_aggregation_rule("fedit")->client_payload(a, -1.0, 0), std::invalid_argument);
    EXPECT_THROW(factor_covariance({a, a}, {1.0}), std::invalid_argument);
    EXPECT_THROW(sum_payloads({{1.0f}, {1.0f, 2.0f}}), std::invalid_argument);
    // Adapter <-> tensors round trip (the checkpoint and model boundary).
    const auto t = adapter_to_tensors(a, "g/");
    ASSERT_EQ(t.size(), 4u);
    EXPECT_EQ(t[0].first, "g/blocks.0.attn.qkv.lora_A");
    EXPECT_EQ(t[0].second.sizes(), (std::vector<std::int64_t>{4, 8}));
    const auto back = adapter_from_tensors({t.begin(), t.end()}, {"blocks.0.attn.qkv", "blocks.0.mlp.fc1"}, "g/");
    EXPECT_TRUE(back.same_shape(a));
    EXPECT_EQ(back.layers[1].B, a.layers[1].B);
}
