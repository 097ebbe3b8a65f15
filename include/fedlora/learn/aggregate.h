// Federated LoRA aggregation rules over a summing channel (DESIGN.md §3 "LoRA aggregation over a summing
// channel"; derivations in docs/math.md). No LibTorch here: adapters and payloads are plain float data.
//
// A channel can only sum, so a round works on flat payloads:
//   client k:  x_k = p_k · (its update of the factors the rule SHARES, on the round's rank support), flattened in
//              payload_layout() order                                    (client_payload)
//   channel:   y = Σ_k x_k (+ noise, over the air)                        (the phy layer; sum_payloads when ideal)
//   server:    global ← global + y on the shared factors                  (apply)
//   client k:  next round starts from the global shared factors and its own local ones   (receive)
// Because every client starts a round from the global shared factors, global + Σ p_k Δ_k = Σ p_k (global + Δ_k):
// the server obtains the weighted average of the clients' shared factors. The weights p_k are the aggregation
// weights (e.g. n_k / N, see aggregation_weights); they should sum to 1.
//
// Rules (by name):
//   "fedit": A and B both trained, sent and averaged separately. Inexact: the average of the products differs
//            from the product of the averages by the factor covariance Σ p_k (B_k − B̄)(A_k − Ā).
//   "ffa":   FFA-LoRA. A frozen at a shared random init drawn from a seed (identical on every client, U(±1/√in)
//            as LoRA's own init); only B trained, sent and averaged. Exact: Σ p_k B_k A = B̄ A.
//   "fedsa": FedSA-LoRA. A trained and shared (averaged), B trained and kept local per client. Exact: the server
//            needs only Σ p_k A_k, which the channel delivers; client k's model is B_k Ā.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedlora/learn/adapter.h"

namespace fedlora::learn {

class AggregationError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// One tensor's run of coordinates in a payload.
struct PayloadEntry {
    std::string tensor;        // "<layer>.lora_A" or "<layer>.lora_B"
    std::int64_t layer = 0;    // index into Adapter::layers
    LoraFactor factor = LoraFactor::A;
    std::int64_t offset = 0;   // first coordinate in the payload
    std::int64_t count = 0;    // kept ranks × in (A rows) or out × kept ranks (B columns)
};
struct PayloadLayout {
    std::vector<PayloadEntry> entries;
    std::int64_t size = 0;  // payload length in floats
};

// Rejects (AggregationError) an update holding a NaN or an infinity; the message names the client, the tensor
// and the element. Checks every tensor of the update, shared or not (a diverged client must not transmit).
void check_update_finite(const Adapter& update, std::int64_t client);

class AggregationRule {
public:
    virtual ~AggregationRule() = default;

    virtual std::string name() const = 0;
    // Trained by the clients' optimisers (ffa: B only).
    virtual bool trains(LoraFactor f) const = 0;
    // Sent by every client and summed by the channel; the server holds the global value.
    virtual bool shares(LoraFactor f) const = 0;
    // Trained but kept on the client (fedsa: B).
    bool keeps_local(LoraFactor f) const { return trains(f) && !shares(f); }
    // True when the server needs a single sum per shared tensor and forms no product of averages (ffa, fedsa).
    virtual bool exact() const = 0;

    // Prepares the round-0 global adapter (shapes from the model, e.g. adapter_from_model): ffa redraws every A
    // from `seed` (the same values for the same seed and shapes, whatever the client); the others keep it.
    virtual void initialize(Adapter& global, std::uint64_t seed) const;

    // Coordinates a client sends: for each layer in order, the shared factors A then B, restricted to the
    // support (rows a_i of A, columns b_i of B, i ∈ kept[l]; B row-major over (out, kept)); nullptr = all ranks.
    PayloadLayout payload_layout(const Adapter& shape, const RankSupport* support = nullptr) const;
    // weight · update on payload_layout(update, support). Throws AggregationError (check_update_finite) when the
    // update is not finite, std::invalid_argument for a bad weight or support.
    std::vector<float> client_payload(const Adapter& update, double weight, std::int64_t client,
                                      const RankSupport* support = nullptr) const;
    // Server: global += weighted_sum on the shared factors (on the support). The sum is validated first (length,
    // finiteness: an AggregationError names the tensor and element); on error nothing is applied.
    void apply(Adapter& global, const std::vector<float>& weighted_sum, const RankSupport* support = nullptr) const;
    // Client: the adapter it starts the next round from. Shared factors (and, for ffa, the frozen A) come from
    // the global; local factors (fedsa's B) are kept, or taken from the global when `client` is empty (first
    // round) or of another shape.
    void receive(Adapter& client, const Adapter& global) const;
};

// "fedit", "ffa", "fedsa"; anything else throws std::invalid_argument listing the names.
std::unique_ptr<AggregationRule> make_aggregation_rule(const std::string& name);
std::vector<std::string> aggregation_rule_names();

// p_k = n_k / Σ n (throws std::invalid_argument for an empty list, a negative size or a zero total).
std::vector<double> aggregation_weights(const std::vector<std::int64_t>& sizes);

// Element-wise Σ_k payloads[k] in double, rounded once (the ideal channel). All payloads must have one length.
std::vector<float> sum_payloads(const std::vector<std::vector<float>>& payloads);

// Ideal aggregation of a round: validates EVERY update first (finite, shapes, one weight each; an
// AggregationError names the client index and tensor), then global += Σ_k weights[k]·(shared part of updates[k])
// on the support. On any error the global adapter is untouched.
void aggregate_ideal(const AggregationRule& rule, Adapter& global, const std::vector<Adapter>& updates,
                     const std::vector<double>& weights, const RankSupport* support = nullptr);

// The factor covariance term of separate averaging, per layer: C = Σ_k p_k (B_k − B̄)(A_k − Ā)
// = Σ_k p_k B_k A_k − B̄ Ā with B̄ = Σ p_k B_k, Ā = Σ p_k A_k (weights normalised to sum 1 here). Reported as
// Frobenius norms; computed in double without forming out × in matrices when Gram matrices are cheaper
// (cost min(K·r·out·in, (K·r)²·(out + in))). For ffa (A_k identical) it is 0; fedsa never forms B̄Ā, so there
// it measures what FedIT's separate averaging would have lost.
struct CovarianceReport {
    std::vector<std::string> layers;
    std::vector<double> per_layer;          // ‖C_l‖_F
    std::vector<double> mean_product_norm;  // ‖Σ_k p_k B_k A_k‖_F per layer (the scale C_l compares with)
    double total = 0.0;                     // sqrt(Σ_l ‖C_l‖²_F)
    double total_mean_product = 0.0;        // sqrt(Σ_l ‖Σ p_k B_k A_k‖²_F)
};
CovarianceReport factor_covariance(const std::vector<Adapter>& clients, const std::vector<double>& weights);

}  // namespace fedlora::learn
