// TSFA: two-stage control of wireless federated LoRA (Kim & Choi, arXiv 2505.00333, reconstructed; derivation in
// docs/math.md, "TSFA controller").
//
// Offline stage (once per run, `choose_rank`): the structural LoRA rank r from channel statistics and the latency
// budget, by minimising a bound proxy over candidate ranks.
// Online stage (once per round, `Controller::decide`): the sparsity ratio ρ_t and the bandwidth (AirComp: number
// of occupied carriers M_t; digital: per-device shares β_k) by Lyapunov drift-plus-penalty (Neely) on the virtual
// latency queue Z(t+1) = max(Z(t) + T(t) − T̄, 0):
//
//   (ρ_t, bandwidth_t) = argmin over the candidate grid of  V·Φ(ρ, bandwidth) + Z(t)·T(ρ, bandwidth),
//
// Φ and T predicted by round_model.h from what the receiver measured. So the time average of the latency meets T̄
// while the penalty stays within O(1/V) of the best achievable.
//
// Use, per round:
//   auto ctrl = fedlora::control::make_controller("tsfa", cfg);   // or "fixed": same interface
//   Decision d = ctrl->decide(input);     // const: does not change the controller
//   ... run the round with d.rho (SOFT support of d.kept_ranks components per layer) and
//       AirComp: d.carriers payload data carriers (positions d.carrier_positions of the candidates),
//                phy::PowerControlConfig::budget = d.carrier_budget;
//       digital: phy::ofdma_airtime(d.payload_bits, d.device_snr, d.shares, {n_carriers = d.carriers, ...}),
//                devices with d.excluded[k] send nothing ...
//   ctrl->observe_latency(realised_s);    // Z(t+1) from the latency the round actually took
//   checkpoint.control = ctrl->serialize();  // opaque one-line text; ctrl->deserialize(blob) on resume
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "fedlora/control/lyapunov.h"
#include "fedlora/control/round_model.h"

namespace fedlora::control {

struct ControllerConfig {
    LinkMode mode = LinkMode::AirComp;
    // V > 0: weight of the penalty against Z·T. Z and T are in seconds, Φ is a fraction, so V is in s²; the
    // decision changes when Z·ΔT ≈ V·ΔΦ, and the backlog settles around V·ΔΦ/ΔT, so V of order T̄² × (1 … 100)
    // keeps the backlog within a few rounds' budget.
    double v_weight = 1.0;
    double latency_budget = 1.0;   // T̄ > 0: long-term average latency per round (s)
    // false: minimise V·Φ + Z·T (Neely's rule: the linear bound of the drift). true: minimise
    // V·Φ + ½·max(Z + T − T̄, 0)², the exact one-round drift of L(Z) = Z²/2 (docs/math.md): it weighs latency
    // even when the queue is empty, so a fresh controller does not overshoot the budget in its first rounds.
    bool exact_drift = false;
    // Candidate ratios, each in (0, 1]. Empty: {1/r, 2/r, …, 1} with r the largest rank of the round's layers.
    std::vector<double> rho_grid;
    ModelConfig model;
    // "fixed" controller: constant ρ and bandwidth (AirComp: fixed_carriers, 0 = the largest candidate;
    // digital: equal shares among the devices that can send).
    double fixed_rho = 1.0;
    std::size_t fixed_carriers = 0;
    void validate() const;  // throws std::invalid_argument naming the field
};

// A round's decision: the chosen candidate's prediction and the drift-plus-penalty bookkeeping.
struct Decision : Prediction {
    std::string controller;     // "tsfa" | "fixed"
    double v_weight = 0.0;      // V
    double queue_before = 0.0;  // Z(t)
    double queue_after = 0.0;   // predicted Z(t+1) = max(Z(t) + T − T̄, 0)
    double objective = 0.0;     // V·Φ + Z(t)·T of the chosen candidate
    std::size_t candidates = 0; // candidates evaluated
};

class Controller {
public:
    virtual ~Controller() = default;
    Controller(const Controller&) = delete;
    Controller& operator=(const Controller&) = delete;

    virtual const char* name() const = 0;
    // The decision for a round. Throws std::invalid_argument naming the field of a bad input, or if no
    // candidate lets anything through (every device silent).
    virtual Decision decide(const RoundInput& input) const = 0;

    // Accounts the latency the round actually took (s, finite, ≥ 0); returns the new backlog Z(t+1).
    double observe_latency(double latency_s) { return queue_.push(latency_s); }

    double backlog() const { return queue_.backlog(); }
    std::size_t rounds() const { return queue_.updates(); }
    double average_latency() const { return queue_.average(); }
    const ControllerConfig& config() const { return config_; }

    // Controller state as an opaque one-line text blob (name, mode, V, T̄ and the queue, doubles bit-exact as hex),
    // so that a resumed run makes bit-identical decisions. `deserialize` throws std::invalid_argument if the blob is
    // malformed or was written by another controller, link mode, V or T̄ (naming the field).
    std::string serialize() const;
    void deserialize(const std::string& blob);

protected:
    explicit Controller(const ControllerConfig& config);
    // The grid of ratios for a round (config or default).
    std::vector<double> rho_grid(const RoundInput& input) const;
    Decision finish(const Prediction& p, double objective, std::size_t candidates) const;
    // V·Φ + Z·T, or V·Φ + ½·max(Z + T − T̄, 0)² with exact_drift.
    double objective(double v, double z, const Prediction& p) const;

    ControllerConfig config_;
    VirtualQueue queue_;
};

// Drift-plus-penalty over the whole grid (ρ × carrier counts, or ρ with equalised shares). Ties: lower latency,
// then lower penalty, then the earlier candidate.
class TsfaController final : public Controller {
public:
    explicit TsfaController(const ControllerConfig& config) : Controller(config) {}
    const char* name() const override { return "tsfa"; }
    Decision decide(const RoundInput& input) const override;
};

// Constant ρ and bandwidth; keeps the queue only to report it.
class FixedController final : public Controller {
public:
    explicit FixedController(const ControllerConfig& config);
    const char* name() const override { return "fixed"; }
    Decision decide(const RoundInput& input) const override;
};

// "tsfa" | "fixed". Throws std::invalid_argument listing the names, or naming a bad config field.
std::unique_ptr<Controller> make_controller(const std::string& name, const ControllerConfig& config);

// ---- offline stage: structural rank ------------------------------------------------------------------------------

struct OfflineLayer {
    std::size_t in = 0, out = 0;      // layer dimensions (≥ 1)
    std::size_t values_per_rank = 0;  // reals sent per rank component; 0: in + out
};

struct OfflineInput {
    // Per device: mean receive SNR per carrier γ̄_k = P_k ḡ_k / (M_ref σ²) when the device spreads its budget over
    // M_ref = reference_carriers carriers (linear; from the channel statistics, or `mean_carrier_snr` of a pilot
    // round). The number of devices K is its size.
    std::vector<double> mean_snr;
    std::size_t reference_carriers = 0;
    std::vector<double> compute_time;  // per device T_cmp,k (s) at rank 0 (see RankModel::compute_time_per_rank)
    std::vector<OfflineLayer> layers;
    RoundTiming timing;
    std::vector<std::size_t> rank_candidates;  // ≥ 1 each, no duplicates
    void validate() const;  // throws std::invalid_argument naming the field
};

// γ̄_k of a measured round: P_k · mean_m g_k[m] / (M σ²) over the first M candidate carriers.
std::vector<double> mean_carrier_snr(const RoundInput& round, std::size_t carriers);

struct RankModel {
    // Energy spectrum of the update the adapter approximates: σ_j² ∝ j^(−2α), j = 1 … min(in, out), unless a
    // measured spectrum (singular values, any order) is given, which then applies to every layer.
    double spectrum_exponent = 1.0;  // α > 0
    std::vector<double> spectrum;
    double latency_weight = 10.0;         // w_lat ≥ 0: weight of the relative excess latency (T − T̄)⁺ / T̄
    double compute_time_per_rank = 0.0;   // extra local training time per rank component (s, ≥ 0)
    void validate() const;
};

struct RankCandidate {
    std::size_t rank = 0;
    double truncation_error = 0.0;   // ε(r): energy fraction beyond rank r
    std::size_t carriers = 0;        // AirComp: fewest candidate carriers meeting T̄ at ρ = 1 (else the most);
                                     // digital: the band
    double aggregation_nmse = 0.0;   // expected NMSE at that bandwidth (ergodic, Rayleigh)
    double aggregation_error = 0.0;  // the term entering the proxy
    double latency = 0.0;            // expected round latency at ρ = 1 (s)
    double latency_excess = 0.0;     // (T − T̄)⁺ / T̄
    double proxy = 0.0;              // w_sp ε + w_agg e_agg + w_lat (T − T̄)⁺/T̄
};

struct RankChoice {
    std::size_t rank = 0;
    double proxy = 0.0;
    std::vector<RankCandidate> candidates;  // in the order of rank_candidates
};

// The rank with the smallest proxy (ties: the smaller rank). Uses config.mode, config.latency_budget and
// config.model (g_th > 0 is required in AirComp mode: the ergodic cost of inverting Rayleigh fades is finite only
// with truncation).
RankChoice choose_rank(const OfflineInput& input, const ControllerConfig& config, const RankModel& model = {});

}  // namespace fedlora::control
