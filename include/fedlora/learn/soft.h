// SOFT: sparsified orthogonal fine-tuning (Kim & Choi, arXiv 2505.00333; DESIGN.md §3 "SOFT"; the formulas are
// reconstructions, derived in docs/math.md).
//
// A regulariser keeps each layer's LoRA factors near-orthogonal, λ(‖offdiag(BᵀB)‖²_F + ‖offdiag(AAᵀ)‖²_F); then
// BA = Σ_i b_i a_iᵀ (b_i column i of B, a_i row i of A) is close to an SVD and the importance of rank component i
// is s_i = ‖b_i‖‖a_i‖ (the singular values of BA when B has orthogonal columns and A orthogonal rows), computed
// in O(r(in + out)) with no SVD. The top ⌈ρr⌉ components of each layer are kept; for AirComp the kept set is
// COMMON to all clients (a RankSupport chosen by the server from the previous global adapter, or drawn from a
// shared seed).
//
// Error figures for a layer and a kept set S (m = |S|):
//   soft_error      Σ_{i∉S} s_i²                 (SOFT's figure; needs no product and no SVD)
//   dropped_error   ‖BA − B_S A_S‖²_F = Σ_{i,j∉S} ⟨b_i,b_j⟩⟨a_i,a_j⟩   (the actual error of dropping them)
//   svd_error       Σ_{j>m} σ_j²(BA)            (best rank-m approximation, Eckart–Young)
// dropped_error ≥ svd_error always. soft_error = dropped_error when either factor is orthogonal, and
// soft_error = svd_error when both are and S holds the largest s_i. Without orthogonality soft_error may be
// BELOW svd_error (it ignores the cross terms), so it is a proxy, not a bound.
//
// The regulariser works on tensors (differentiable); everything else on plain adapters (adapter.h).
// This header includes only <ATen/core/Tensor.h>.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fedlora/learn/adapter.h"
#include "fedlora/learn/safetensors.h"  // NamedTensors

namespace fedlora::learn {

// ‖offdiag(BᵀB)‖²_F + ‖offdiag(AAᵀ)‖²_F for one layer (A [r, in], B [out, r]); a differentiable 0-d tensor.
// Computed from the r × r Gram matrices with their diagonals removed, in O(r²(in + out)).
at::Tensor soft_orthogonality_penalty(const at::Tensor& A, const at::Tensor& B);
// λ · Σ over the layers of a named LoRA parameter list ("<layer>.lora_A" / "<layer>.lora_B" pairs, as
// TransformerModelImpl::named_lora_parameters gives them). Throws std::invalid_argument for an unpaired factor or
// a negative λ. λ = 0 gives a 0-d zero without building a graph.
at::Tensor soft_regularizer(const NamedTensors& lora_params, double lambda);

// s_i = ‖b_i‖ ‖a_i‖, i = 0..r−1, in double.
std::vector<double> rank_importance(const LoraLayerFactors& layer);

// ⌈ρ r⌉ (at least 1); ρ must be in (0, 1].
std::int64_t kept_rank_count(std::int64_t rank, double rho);

// The ⌈ρ r⌉ most important components of every layer of `reference` (the previous global adapter), ties broken
// by the lower index. Note: with a fresh adapter (B = 0) every s_i is 0 and the lowest indices win; since a
// component never sent keeps b_i = 0, that choice then repeats every round. Use the seeded support for the first
// rounds (or throughout) when that matters.
RankSupport select_support_top(const Adapter& reference, double rho);
// ⌈ρ r⌉ components per layer drawn uniformly without replacement from (seed, round, layer index): every client
// with the same seed computes the same support.
RankSupport select_support_seeded(const Adapter& shape, double rho, std::uint64_t seed, std::int64_t round);

// The factors with every component outside the support zeroed (columns of B, rows of A).
Adapter sparsify(const Adapter& adapter, const RankSupport& support);

double soft_error(const LoraLayerFactors& layer, const std::vector<std::int64_t>& kept);
double dropped_error(const LoraLayerFactors& layer, const std::vector<std::int64_t>& kept);
// Singular values of BA (descending, double precision, LAPACK through LibTorch).
std::vector<double> product_singular_values(const LoraLayerFactors& layer);
// Σ_{j>m} σ_j²(BA).
double svd_truncation_error(const LoraLayerFactors& layer, std::int64_t m);

struct SparsificationReport {
    std::vector<std::string> layers;
    std::vector<double> soft, dropped, svd, energy;  // per layer; energy = ‖BA‖²_F
    double soft_total = 0.0, dropped_total = 0.0, svd_total = 0.0, energy_total = 0.0;
};
// Every figure for every layer of `adapter` with the support's kept sets (svd with m = |kept[l]|).
SparsificationReport sparsification_report(const Adapter& adapter, const RankSupport& support);

}  // namespace fedlora::learn
