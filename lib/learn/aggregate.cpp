#include "fedlora/learn/aggregate.h"

#include <cmath>
#include <random>

namespace fedlora::learn {
namespace {

std::string value_text(float v) { return std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"); }

// The kept components of layer l (all of them without a support).
std::vector<std::int64_t> kept_of(const Adapter& shape, const RankSupport* support, std::size_t l) {
    if (support)
        return support->kept[l];
    std::vector<std::int64_t> all(static_cast<std::size_t>(shape.layers[l].rank));
    for (std::size_t i = 0; i < all.size(); ++i)
        all[i] = static_cast<std::int64_t>(i);
    return all;
}

// Visits the payload coordinates of one entry in order: fn(index into the factor's vector).
template <typename Fn>
void for_each_coordinate(const LoraLayerFactors& layer, LoraFactor f, const std::vector<std::int64_t>& kept, Fn fn) {
    if (f == LoraFactor::A) {
        for (const auto i : kept)
            for (std::int64_t j = 0; j < layer.in; ++j)
                fn(static_cast<std::size_t>(i * layer.in + j));
    } else {
        for (std::int64_t o = 0; o < layer.out; ++o)
            for (const auto i : kept)
                fn(static_cast<std::size_t>(o * layer.rank + i));
    }
}

class FedIt final : public AggregationRule {
public:
    std::string name() const override { return "fedit"; }
    bool trains(LoraFactor) const override { return true; }
    bool shares(LoraFactor) const override { return true; }
    bool exact() const override { return false; }
};

class Ffa final : public AggregationRule {
public:
    std::string name() const override { return "ffa"; }
    bool trains(LoraFactor f) const override { return f == LoraFactor::B; }
    bool shares(LoraFactor f) const override { return f == LoraFactor::B; }
    bool exact() const override { return true; }
    void initialize(Adapter& global, std::uint64_t seed) const override {
        for (std::size_t l = 0; l < global.layers.size(); ++l) {
            auto& layer = global.layers[l];
            layer.check();
            // LoRA's own init of A: kaiming_uniform(a = √5) = U(−1/√in, 1/√in), from a per-layer stream.
            std::mt19937_64 eng(mix_seed(seed, 0xffa, l));
            const double bound = 1.0 / std::sqrt(static_cast<double>(layer.in));
            layer.A.resize(static_cast<std::size_t>(layer.rank * layer.in));
            for (auto& a : layer.A) {
                const double u = static_cast<double>(eng() >> 11) * 0x1.0p-53;  // [0, 1)
                a = static_cast<float>(bound * (2.0 * u - 1.0));
            }
        }
    }
};

class FedSa final : public AggregationRule {
public:
    std::string name() const override { return "fedsa"; }
    bool trains(LoraFactor) const override { return true; }
    bool shares(LoraFactor f) const override { return f == LoraFactor::A; }
    bool exact() const override { return true; }
};

}  // namespace

void check_update_finite(const Adapter& update, std::int64_t client) {
    for (const auto& layer : update.layers)
        for (auto f : {LoraFactor::A, LoraFactor::B}) {
            const auto& x = layer.factor(f);
            for (std::size_t i = 0; i < x.size(); ++i)
                if (!std::isfinite(x[i]))
                    throw AggregationError("client " + std::to_string(client) + ": update tensor '" +
                                           layer.tensor_name(f) + "' element " + std::to_string(i) + " is " +
                                           value_text(x[i]) + "; the update is rejected");
        }
}

void AggregationRule::initialize(Adapter&, std::uint64_t) const {}

PayloadLayout AggregationRule::payload_layout(const Adapter& shape, const RankSupport* support) const {
    if (support)
        support->check(shape);
    PayloadLayout layout;
    for (std::size_t l = 0; l < shape.layers.size(); ++l) {
        const auto& layer = shape.layers[l];
        layer.check();
        const auto kept = static_cast<std::int64_t>(kept_of(shape, support, l).size());
        for (auto f : {LoraFactor::A, LoraFactor::B}) {
            if (!shares(f))
                continue;
            PayloadEntry e;
            e.tensor = layer.tensor_name(f);
            e.layer = static_cast<std::int64_t>(l);
            e.factor = f;
            e.offset = layout.size;
            e.count = f == LoraFactor::A ? kept * layer.in : layer.out * kept;
            layout.size += e.count;
            layout.entries.push_back(std::move(e));
        }
    }
    return layout;
}

std::vector<float> AggregationRule::client_payload(const Adapter& update, double weight, std::int64_t client,
                                                   const RankSupport* support) const {
    if (!std::isfinite(weight) || weight < 0.0)
        throw std::invalid_argument("client " + std::to_string(client) + ": aggregation weight " +
                                    std::to_string(weight) + " must be finite and >= 0");
    check_update_finite(update, client);
    const auto layout = payload_layout(update, support);
    std::vector<float> x;
    x.reserve(static_cast<std::size_t>(layout.size));
    for (const auto& e : layout.entries) {
        const auto& layer = update.layers[static_cast<std::size_t>(e.layer)];
        const auto& v = layer.factor(e.factor);
        for_each_coordinate(layer, e.factor, kept_of(update, support, static_cast<std::size_t>(e.layer)),
                            [&](std::size_t i) { x.push_back(static_cast<float>(weight * static_cast<double>(v[i]))); });
    }
    return x;
}

void AggregationRule::apply(Adapter& global, const std::vector<float>& weighted_sum,
                            const RankSupport* support) const {
    const auto layout = payload_layout(global, support);
    if (static_cast<std::int64_t>(weighted_sum.size()) != layout.size)
        throw AggregationError("rule '" + name() + "': the received sum has " + std::to_string(weighted_sum.size()) +
                               " coordinates, the payload layout " + std::to_string(layout.size) +
                               "; nothing is applied");
    for (const auto& e : layout.entries)
        for (std::int64_t j = 0; j < e.count; ++j) {
            const float v = weighted_sum[static_cast<std::size_t>(e.offset + j)];
            if (!std::isfinite(v))
                throw AggregationError("rule '" + name() + "': the received sum of tensor '" + e.tensor +
                                       "' holds " + value_text(v) + " at payload coordinate " +
                                       std::to_string(e.offset + j) + "; nothing is applied");
        }
    for (const auto& e : layout.entries) {
        auto& layer = global.layers[static_cast<std::size_t>(e.layer)];
        auto& v = layer.factor(e.factor);
        std::size_t k = static_cast<std::size_t>(e.offset);
        for_each_coordinate(layer, e.factor, kept_of(global, support, static_cast<std::size_t>(e.layer)),
                            [&](std::size_t i) { v[i] += weighted_sum[k++]; });
    }
}

void AggregationRule::receive(Adapter& client, const Adapter& global) const {
    if (client.empty() || !client.same_shape(global)) {
        client = global;
        return;
    }
    for (std::size_t l = 0; l < global.layers.size(); ++l)
        for (auto f : {LoraFactor::A, LoraFactor::B})
            if (!keeps_local(f))
                client.layers[l].factor(f) = global.layers[l].factor(f);
}

std::unique_ptr<AggregationRule> make_aggregation_rule(const std::string& name) {
    if (name == "fedit")
        return std::make_unique<FedIt>();
    if (name == "ffa")
        return std::make_unique<Ffa>();
    if (name == "fedsa")
        return std::make_unique<FedSa>();
    throw std::invalid_argument("unknown aggregation rule '" + name + "' (known: fedit, ffa, fedsa)");
}

std::vector<std::string> aggregation_rule_names() { return {"fedit", "ffa", "fedsa"}; }

std::vector<double> aggregation_weights(const std::vector<std::int64_t>& sizes) {
    if (sizes.empty())
        throw std::invalid_argument("aggregation_weights: no clients");
    double total = 0.0;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
        if (sizes[k] < 0)
            throw std::invalid_argument("aggregation_weights: client " + std::to_string(k) + " has size " +
                                        std::to_string(sizes[k]));
        total += static_cast<double>(sizes[k]);
    }
    if (total <= 0.0)
        throw std::invalid_argument("aggregation_weights: the clients hold no examples");
    std::vector<double> p;
    for (const auto n : sizes)
        p.push_back(static_cast<double>(n) / total);
    return p;
}

std::vector<float> sum_payloads(const std::vector<std::vector<float>>& payloads) {
    if (payloads.empty())
        return {};
    const std::size_t n = payloads.front().size();
    std::vector<double> acc(n, 0.0);
    for (std::size_t k = 0; k < payloads.size(); ++k) {
        if (payloads[k].size() != n)
            throw std::invalid_argument("sum_payloads: payload " + std::to_string(k) + " has " +
                                        std::to_string(payloads[k].size()) + " coordinates, payload 0 has " +
                                        std::to_string(n));
        for (std::size_t i = 0; i < n; ++i)
            acc[i] += static_cast<double>(payloads[k][i]);
    }
    return std::vector<float>(acc.begin(), acc.end());
}

void aggregate_ideal(const AggregationRule& rule, Adapter& global, const std::vector<Adapter>& updates,
                     const std::vector<double>& weights, const RankSupport* support) {
    if (updates.size() != weights.size())
        throw std::invalid_argument("aggregate_ideal: " + std::to_string(updates.size()) + " updates but " +
                                    std::to_string(weights.size()) + " weights");
    if (support)
        support->check(global);
    // Validate every update before anything is computed or applied.
    for (std::size_t k = 0; k < updates.size(); ++k) {
        global.check_same_shape(updates[k], "client " + std::to_string(k) + " update");
        check_update_finite(updates[k], static_cast<std::int64_t>(k));
    }
    std::vector<std::vector<float>> payloads;
    payloads.reserve(updates.size());
    for (std::size_t k = 0; k < updates.size(); ++k)
        payloads.push_back(rule.client_payload(updates[k], weights[k], static_cast<std::int64_t>(k), support));
    if (payloads.empty())
        return;
    rule.apply(global, sum_payloads(payloads), support);
}

namespace {

// ‖Σ_k w_k X_k Y_k‖²_F for X_k (out × r) and Y_k (r × in), row-major doubles, choosing between forming the
// out × in sum and the Gram form Σ_{k,l} w_k w_l tr((X_kᵀX_l)(Y_l Y_kᵀ)).
double weighted_product_norm2(const std::vector<std::vector<double>>& X, const std::vector<std::vector<double>>& Y,
                              const std::vector<double>& w, std::int64_t out, std::int64_t r, std::int64_t in) {
    const auto K = static_cast<std::int64_t>(X.size());
    const double dense_cost = static_cast<double>(K) * r * out * in;
    const double gram_cost = static_cast<double>(K * r) * (K * r) * (out + in);
    if (dense_cost <= gram_cost) {
        std::vector<double> C(static_cast<std::size_t>(out * in), 0.0);
        for (std::int64_t k = 0; k < K; ++k)
            for (std::int64_t o = 0; o < out; ++o)
                for (std::int64_t i = 0; i < r; ++i) {
                    const double x = w[k] * X[k][o * r + i];
                    if (x == 0.0)
                        continue;
                    const double* y = &Y[k][i * in];
                    double* c = &C[o * in];
                    for (std::int64_t j = 0; j < in; ++j)
                        c[j] += x * y[j];
                }
        double s = 0.0;
        for (const double c : C)
            s += c * c;
        return s;
    }
    double s = 0.0;
    std::vector<double> gx(static_cast<std::size_t>(r * r)), gy(static_cast<std::size_t>(r * r));
    for (std::int64_t k = 0; k < K; ++k)
        for (std::int64_t l = k; l < K; ++l) {
            // gx = X_kᵀ X_l, gy = Y_l Y_kᵀ (both r × r)
            for (std::int64_t i = 0; i < r; ++i)
                for (std::int64_t j = 0; j < r; ++j) {
                    double a = 0.0, b = 0.0;
                    for (std::int64_t o = 0; o < out; ++o)
                        a += X[k][o * r + i] * X[l][o * r + j];
                    for (std::int64_t c = 0; c < in; ++c)
                        b += Y[l][j * in + c] * Y[k][i * in + c];
                    gx[i * r + j] = a;
                    gy[j * r + i] = b;
                }
            double t = 0.0;
            for (std::int64_t i = 0; i < r; ++i)
                for (std::int64_t j = 0; j < r; ++j)
                    t += gx[i * r + j] * gy[j * r + i];
            s += (k == l ? 1.0 : 2.0) * w[k] * w[l] * t;
        }
    return s > 0.0 ? s : 0.0;  // rounding can leave a tiny negative value for an exact 0
}

}  // namespace

CovarianceReport factor_covariance(const std::vector<Adapter>& clients, const std::vector<double>& weights) {
    if (clients.empty())
        throw std::invalid_argument("factor_covariance: no clients");
    if (clients.size() != weights.size())
        throw std::invalid_argument("factor_covariance: " + std::to_string(clients.size()) + " clients but " +
                                    std::to_string(weights.size()) + " weights");
    double total_w = 0.0;
    for (std::size_t k = 0; k < weights.size(); ++k) {
        if (!std::isfinite(weights[k]) || weights[k] < 0.0)
            throw std::invalid_argument("factor_covariance: weight " + std::to_string(k) + " = " +
                                        std::to_string(weights[k]) + " must be finite and >= 0");
        total_w += weights[k];
    }
    if (!(total_w > 0.0))
        throw std::invalid_argument("factor_covariance: the weights sum to 0");
    std::vector<double> p;
    for (const double w : weights)
        p.push_back(w / total_w);
    for (std::size_t k = 1; k < clients.size(); ++k)
        clients.front().check_same_shape(clients[k], "factor_covariance: client " + std::to_string(k));

    CovarianceReport rep;
    double tot = 0.0, tot_m = 0.0;
    const std::size_t K = clients.size();
    for (std::size_t l = 0; l < clients.front().layers.size(); ++l) {
        const auto& shape = clients.front().layers[l];
        shape.check();
        const std::int64_t r = shape.rank, in = shape.in, out = shape.out;
        std::vector<double> abar(static_cast<std::size_t>(r * in), 0.0), bbar(static_cast<std::size_t>(out * r), 0.0);
        for (std::size_t k = 0; k < K; ++k) {
            const auto& c = clients[k].layers[l];
            for (std::size_t i = 0; i < abar.size(); ++i)
                abar[i] += p[k] * c.A[i];
            for (std::size_t i = 0; i < bbar.size(); ++i)
                bbar[i] += p[k] * c.B[i];
        }
        std::vector<std::vector<double>> U(K), V(K), Bk(K), Ak(K);
        for (std::size_t k = 0; k < K; ++k) {
            const auto& c = clients[k].layers[l];
            Ak[k].assign(c.A.begin(), c.A.end());
            Bk[k].assign(c.B.begin(), c.B.end());
            U[k].resize(bbar.size());
            V[k].resize(abar.size());
            for (std::size_t i = 0; i < bbar.size(); ++i)
                U[k][i] = Bk[k][i] - bbar[i];
            for (std::size_t i = 0; i < abar.size(); ++i)
                V[k][i] = Ak[k][i] - abar[i];
        }
        const double c2 = weighted_product_norm2(U, V, p, out, r, in);
        const double m2 = weighted_product_norm2(Bk, Ak, p, out, r, in);
        rep.layers.push_back(shape.layer);
        rep.per_layer.push_back(std::sqrt(c2));
        rep.mean_product_norm.push_back(std::sqrt(m2));
        tot += c2;
        tot_m += m2;
    }
    rep.total = std::sqrt(tot);
    rep.total_mean_product = std::sqrt(tot_m);
    return rep;
}

}  // namespace fedlora::learn
