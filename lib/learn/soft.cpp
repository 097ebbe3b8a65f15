#include "fedlora/learn/soft.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

namespace fedlora::learn {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ‖offdiag(G)‖²_F of a square Gram matrix.
at::Tensor offdiag_sq(const at::Tensor& g) { return (g - at::diag_embed(g.diagonal())).pow(2).sum(); }

// ⟨b_i, b_j⟩ (columns of B) and ⟨a_i, a_j⟩ (rows of A), r × r row-major, in double.
std::vector<double> gram_B(const LoraLayerFactors& l) {
    const auto r = l.rank;
    std::vector<double> g(static_cast<std::size_t>(r * r), 0.0);
    for (std::int64_t o = 0; o < l.out; ++o) {
        const float* row = &l.B[static_cast<std::size_t>(o * r)];
        for (std::int64_t i = 0; i < r; ++i)
            for (std::int64_t j = i; j < r; ++j)
                g[i * r + j] += static_cast<double>(row[i]) * row[j];
    }
    for (std::int64_t i = 0; i < r; ++i)
        for (std::int64_t j = 0; j < i; ++j)
            g[i * r + j] = g[j * r + i];
    return g;
}

std::vector<double> gram_A(const LoraLayerFactors& l) {
    const auto r = l.rank;
    std::vector<double> g(static_cast<std::size_t>(r * r), 0.0);
    for (std::int64_t i = 0; i < r; ++i)
        for (std::int64_t j = i; j < r; ++j) {
            double s = 0.0;
            const float* ai = &l.A[static_cast<std::size_t>(i * l.in)];
            const float* aj = &l.A[static_cast<std::size_t>(j * l.in)];
            for (std::int64_t c = 0; c < l.in; ++c)
                s += static_cast<double>(ai[c]) * aj[c];
            g[i * r + j] = g[j * r + i] = s;
        }
    return g;
}

void check_layer(const LoraLayerFactors& l) {
    l.check();
    if (l.A.empty() || l.B.empty())
        throw std::invalid_argument("adapter layer '" + l.layer + "' has no factor data");
}

// Σ_{i,j ∈ set} ⟨b_i,b_j⟩⟨a_i,a_j⟩ = ‖Σ_{i∈set} b_i a_iᵀ‖²_F.
double product_energy(const LoraLayerFactors& l, const std::vector<std::int64_t>& set) {
    const auto gb = gram_B(l), ga = gram_A(l);
    double s = 0.0;
    for (const auto i : set)
        for (const auto j : set)
            s += gb[i * l.rank + j] * ga[i * l.rank + j];
    return s > 0.0 ? s : 0.0;
}

std::vector<std::int64_t> complement(std::int64_t rank, const std::vector<std::int64_t>& kept) {
    std::vector<bool> in(static_cast<std::size_t>(rank), false);
    for (const auto i : kept) {
        if (i < 0 || i >= rank)
            throw std::invalid_argument("kept component " + std::to_string(i) + " outside [0, " +
                                        std::to_string(rank) + ")");
        in[static_cast<std::size_t>(i)] = true;
    }
    std::vector<std::int64_t> out;
    for (std::int64_t i = 0; i < rank; ++i)
        if (!in[static_cast<std::size_t>(i)])
            out.push_back(i);
    return out;
}

}  // namespace

at::Tensor soft_orthogonality_penalty(const at::Tensor& A, const at::Tensor& B) {
    if (!A.defined() || !B.defined() || A.dim() != 2 || B.dim() != 2 || A.size(0) != B.size(1))
        throw std::invalid_argument("soft_orthogonality_penalty: expected A [r, in] and B [out, r]");
    return offdiag_sq(B.t().mm(B)) + offdiag_sq(A.mm(A.t()));
}

at::Tensor soft_regularizer(const NamedTensors& lora_params, double lambda) {
    if (!(lambda >= 0.0) || !std::isfinite(lambda))
        throw std::invalid_argument("soft.lambda = " + std::to_string(lambda) + " must be finite and >= 0");
    std::map<std::string, std::pair<at::Tensor, at::Tensor>> layers;  // layer -> (A, B)
    std::vector<std::string> order;
    at::Tensor any;
    for (const auto& [name, t] : lora_params) {
        const bool is_a = ends_with(name, ".lora_A"), is_b = ends_with(name, ".lora_B");
        if (!is_a && !is_b)
            throw std::invalid_argument("soft_regularizer: '" + name + "' is not a LoRA factor");
        const std::string layer = name.substr(0, name.size() - 7);
        auto [it, fresh] = layers.try_emplace(layer);
        if (fresh)
            order.push_back(layer);
        (is_a ? it->second.first : it->second.second) = t;
        any = t;
    }
    if (lambda == 0.0 || order.empty())
        return any.defined() ? at::zeros({}, any.options().requires_grad(false)) : at::zeros({});
    at::Tensor total;
    for (const auto& layer : order) {
        const auto& [a, b] = layers[layer];
        if (!a.defined() || !b.defined())
            throw std::invalid_argument("soft_regularizer: layer '" + layer + "' lacks its " +
                                        (a.defined() ? "lora_B" : "lora_A"));
        auto p = soft_orthogonality_penalty(a, b);
        total = total.defined() ? total + p : p;
    }
    return total * lambda;
}

std::vector<double> rank_importance(const LoraLayerFactors& l) {
    check_layer(l);
    std::vector<double> nb(static_cast<std::size_t>(l.rank), 0.0), na(static_cast<std::size_t>(l.rank), 0.0);
    for (std::int64_t o = 0; o < l.out; ++o)
        for (std::int64_t i = 0; i < l.rank; ++i) {
            const double v = l.B[static_cast<std::size_t>(o * l.rank + i)];
            nb[static_cast<std::size_t>(i)] += v * v;
        }
    for (std::int64_t i = 0; i < l.rank; ++i)
        for (std::int64_t c = 0; c < l.in; ++c) {
            const double v = l.A[static_cast<std::size_t>(i * l.in + c)];
            na[static_cast<std::size_t>(i)] += v * v;
        }
    std::vector<double> s(static_cast<std::size_t>(l.rank));
    for (std::size_t i = 0; i < s.size(); ++i)
        s[i] = std::sqrt(nb[i]) * std::sqrt(na[i]);
    return s;
}

std::int64_t kept_rank_count(std::int64_t rank, double rho) {
    if (!(rho > 0.0 && rho <= 1.0))
        throw std::invalid_argument("soft.rho = " + std::to_string(rho) + " must be in (0, 1]");
    if (rank < 1)
        throw std::invalid_argument("kept_rank_count: rank " + std::to_string(rank) + " must be >= 1");
    // ⌈ρr⌉, with a tolerance so that e.g. ρ = 0.3, r = 10 gives 3 and not 4 (0.3·10 = 3.0000000000000004).
    auto m = static_cast<std::int64_t>(std::ceil(rho * static_cast<double>(rank) - 1e-9));
    return std::clamp<std::int64_t>(m, 1, rank);
}

RankSupport select_support_top(const Adapter& reference, double rho) {
    RankSupport s;
    for (const auto& l : reference.layers) {
        const auto imp = rank_importance(l);
        const auto m = kept_rank_count(l.rank, rho);
        std::vector<std::int64_t> idx(static_cast<std::size_t>(l.rank));
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) {
            return imp[static_cast<std::size_t>(a)] > imp[static_cast<std::size_t>(b)];
        });
        idx.resize(static_cast<std::size_t>(m));
        std::sort(idx.begin(), idx.end());
        s.kept.push_back(std::move(idx));
    }
    return s;
}

RankSupport select_support_seeded(const Adapter& shape, double rho, std::uint64_t seed, std::int64_t round) {
    RankSupport s;
    for (std::size_t l = 0; l < shape.layers.size(); ++l) {
        const auto& layer = shape.layers[l];
        layer.check();
        const auto m = kept_rank_count(layer.rank, rho);
        std::mt19937_64 eng(mix_seed(seed, 0x50f7, static_cast<std::uint64_t>(round), l));
        std::vector<std::int64_t> idx(static_cast<std::size_t>(layer.rank));
        std::iota(idx.begin(), idx.end(), 0);
        // Partial Fisher-Yates with unbiased bounded integers (the std distributions differ between libraries).
        for (std::int64_t i = 0; i < m; ++i) {
            const auto n = static_cast<std::uint64_t>(layer.rank - i);
            const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
            std::uint64_t x, r;
            do {
                x = eng();
                r = x % n;
            } while (x - r > max - (n - 1));
            std::swap(idx[static_cast<std::size_t>(i)], idx[static_cast<std::size_t>(i + static_cast<std::int64_t>(r))]);
        }
        idx.resize(static_cast<std::size_t>(m));
        std::sort(idx.begin(), idx.end());
        s.kept.push_back(std::move(idx));
    }
    return s;
}

Adapter sparsify(const Adapter& adapter, const RankSupport& support) {
    support.check(adapter);
    Adapter out = adapter;
    for (std::size_t l = 0; l < out.layers.size(); ++l) {
        auto& layer = out.layers[l];
        for (const auto i : complement(layer.rank, support.kept[l])) {
            for (std::int64_t c = 0; c < layer.in; ++c)
                layer.A[static_cast<std::size_t>(i * layer.in + c)] = 0.0f;
            for (std::int64_t o = 0; o < layer.out; ++o)
                layer.B[static_cast<std::size_t>(o * layer.rank + i)] = 0.0f;
        }
    }
    return out;
}

double soft_error(const LoraLayerFactors& layer, const std::vector<std::int64_t>& kept) {
    const auto s = rank_importance(layer);
    double e = 0.0;
    for (const auto i : complement(layer.rank, kept))
        e += s[static_cast<std::size_t>(i)] * s[static_cast<std::size_t>(i)];
    return e;
}

double dropped_error(const LoraLayerFactors& layer, const std::vector<std::int64_t>& kept) {
    check_layer(layer);
    return product_energy(layer, complement(layer.rank, kept));
}

std::vector<double> product_singular_values(const LoraLayerFactors& layer) {
    check_layer(layer);
    // σ(BA) = σ(R_B R_Aᵀ) with B = Q_B R_B and Aᵀ = Q_A R_A (reduced QR): an r × r SVD, no out × in product.
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    auto B = at::from_blob(const_cast<float*>(layer.B.data()), {layer.out, layer.rank}, opts).to(at::kDouble);
    auto A = at::from_blob(const_cast<float*>(layer.A.data()), {layer.rank, layer.in}, opts).to(at::kDouble);
    auto rb = std::get<1>(at::linalg_qr(B, "reduced"));
    auto ra = std::get<1>(at::linalg_qr(A.t(), "reduced"));
    auto sv = at::linalg_svdvals(rb.mm(ra.t())).contiguous();
    std::vector<double> out(sv.data_ptr<double>(), sv.data_ptr<double>() + sv.numel());
    std::sort(out.begin(), out.end(), std::greater<double>());
    return out;
}

double svd_truncation_error(const LoraLayerFactors& layer, std::int64_t m) {
    if (m < 0)
        throw std::invalid_argument("svd_truncation_error: m = " + std::to_string(m) + " must be >= 0");
    const auto sv = product_singular_values(layer);
    double e = 0.0;
    for (std::size_t j = static_cast<std::size_t>(m); j < sv.size(); ++j)
        e += sv[j] * sv[j];
    return e;
}

SparsificationReport sparsification_report(const Adapter& adapter, const RankSupport& support) {
    support.check(adapter);
    SparsificationReport rep;
    for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
        const auto& layer = adapter.layers[l];
        const auto& kept = support.kept[l];
        std::vector<std::int64_t> all(static_cast<std::size_t>(layer.rank));
        std::iota(all.begin(), all.end(), 0);
        rep.layers.push_back(layer.layer);
        rep.soft.push_back(soft_error(layer, kept));
        rep.dropped.push_back(dropped_error(layer, kept));
        rep.svd.push_back(svd_truncation_error(layer, static_cast<std::int64_t>(kept.size())));
        rep.energy.push_back(product_energy(layer, all));
        rep.soft_total += rep.soft.back();
        rep.dropped_total += rep.dropped.back();
        rep.svd_total += rep.svd.back();
        rep.energy_total += rep.energy.back();
    }
    return rep;
}

}  // namespace fedlora::learn
