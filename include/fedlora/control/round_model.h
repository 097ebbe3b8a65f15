// What one federated round will cost, predicted from what the server's receiver measured: the TSFA controller's
// models (docs/math.md, "TSFA controller"; the two-stage structure follows Kim & Choi, arXiv 2505.00333, the
// formulas are this project's reconstruction and are derived there).
//
// For a sparsity ratio ρ (SOFT keeps ⌈ρ r_l⌉ rank components of layer l) and a bandwidth, a round has
//
//   latency   T = max_k T_cmp,k + airtime                        (AirComp: every device transmits at once)
//             T = max_k (T_cmp,k + bits_k / rate_k(β_k))         (digital OFDMA: per-device shares β_k)
//   penalty   Φ = w_sp · e_sp(ρ) + w_agg · e_agg(ρ, bandwidth)
//
// Both penalty terms are fractions of the energy of the clients' (weighted) update:
//   e_sp   = Σ_{i∉S} s_i² / Σ_i s_i² over all layers, s_i = SOFT importance of the previous global adapter
//            ("top" support; "seeded" support: the expected fraction for a uniformly drawn kept set);
//   e_agg  = (1 − e_sp) · NMSE: the aggregation error relative to what is sent. NMSE is the error per entry of
//            the received sum relative to Σ_k v_k (the sum's power if the devices' updates were uncorrelated):
//            AirComp: truncated channel inversion on the M occupied carriers, exactly as
//            fedlora::phy::plan_power computes it ("truncated" policy, perfect CSI) with per-carrier budgets
//            P_k / M; digital: stochastic q-bit quantisation, plus the updates of devices that cannot send.
//            With ModelConfig::noise_scales_with_payload the factor is d(ρ)/d(1) instead of 1 − e_sp.
//
// Units and conventions (the same as include/fedlora/phy/power_control.h):
//   gain g_k[m] = |ĥ_k[m]|², the measured channel of device k on candidate carrier m; the receiver's noise has
//   variance σ² per carrier, so device k sending power p on carrier m arrives with SNR p·g_k[m]/σ².
//   P_k is device k's TOTAL transmit power over the carriers it occupies: with M occupied carriers the phy's
//   per-carrier budget (PowerControlConfig::budget) is P_k / M, so spreading a round over more carriers lowers the
//   power, hence the SNR, per carrier (noise power N₀B grows with the bandwidth B).
//   Digital devices transmit at the power spectral density P_k / M_band on their share of the band (M_band the
//   largest candidate carrier count), the density an AirComp device has when it occupies the whole band.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace fedlora::control {

enum class LinkMode { AirComp, Digital };
LinkMode link_mode_from_name(const std::string& name);  // "aircomp" | "digital"; throws listing the names
const char* to_string(LinkMode mode);

// Which candidate carriers an AirComp round with M carriers occupies.
//   Leading: the first M, in the order the gains are given (the runner lists them in the order the phy's
//            numerology occupies them, so M carriers means n_occupied = M).
//   Best:    the M whose weakest device fades least: carriers sorted by min_k g_k[m] / ḡ_k (ḡ_k the device's mean
//            gain over all candidates), ties to the lower position. Needs a phy that takes a carrier mask.
enum class CarrierOrder { Leading, Best };
CarrierOrder carrier_order_from_name(const std::string& name);  // "leading" | "best"
const char* to_string(CarrierOrder order);

// How fedlora_learn picks the common kept set (include/fedlora/learn/soft.h).
//   Top:    the ⌈ρr⌉ largest s_i of the previous global adapter (select_support_top).
//   Seeded: ⌈ρr⌉ components drawn uniformly from a shared seed (select_support_seeded).
enum class SupportRule { Top, Seeded };
SupportRule support_rule_from_name(const std::string& name);  // "top" | "seeded"
const char* to_string(SupportRule rule);

// One device's report for the round (what the receiver measured; never the simulator's ground truth).
struct DeviceReport {
    std::vector<double> gain;   // g_k[m] = |ĥ_k[m]|² on every candidate carrier (same length for all devices)
    double budget = 0.0;        // P_k > 0: total transmit power over the occupied carriers
    double compute_time = 0.0;  // T_cmp,k ≥ 0 (s): local training, from the device's report or a running average
    double signal_var = 1.0;    // v_k > 0: per-symbol power E|s_k|² of the encoded update (≤ 1 under the common
                                // scale of phy/aircomp.h; 1 is the conservative choice when it is not known yet)
};

// The gain to report when the receiver measured an SNR instead: a pilot of power `pilot_power` per carrier
// received at SNR γ gives g = γ σ² / pilot_power. Throws std::invalid_argument on a negative or non-finite value.
double gain_from_snr(double snr_linear, double noise_var, double pilot_power);

// One adapted layer as the controller sees it.
struct LayerGeometry {
    std::size_t rank = 0;             // r_l ≥ 1
    std::size_t values_per_rank = 0;  // reals sent per kept component: in + out (fedit), out (ffa), in (fedsa)
    std::vector<double> importance;   // SOFT importance s_i ≥ 0 of the previous global adapter, r_l values;
                                      // empty: all components equally important
};

// Airtime arithmetic of the waveform.
struct RoundTiming {
    std::vector<std::size_t> carrier_counts;  // candidate M (payload data carriers), strictly increasing, ≥ 1,
                                              // at most the number of candidate carriers; the largest is the
                                              // digital band M_band
    double symbol_duration = 0.0;   // s per OFDM symbol, cyclic prefix included (> 0)
    double overhead_symbols = 0.0;  // OFDM symbols per round besides the payload: preamble, pilots, training
                                    // symbols, gap (≥ 0; phy::FrameLayout::payload_offset(0) / symbol_len())
    double overhead_time = 0.0;     // fixed time per round besides the air interface (s, ≥ 0)
};

struct RoundInput {
    std::vector<DeviceReport> devices;  // the devices taking part in the round (≥ 1)
    double noise_var = 0.0;             // σ² per carrier at the receiver (> 0)
    std::vector<LayerGeometry> layers;  // ≥ 1
    RoundTiming timing;
    // Throws std::invalid_argument naming the offending field and value (e.g. "devices[2].gain[17] = nan").
    void validate() const;
};

// Parameters of the models (from the run config).
struct ModelConfig {
    double g_th = 0.1;  // truncation threshold on g/ḡ_k, as phy::PowerControlConfig::g_th (≥ 0)
    CarrierOrder carrier_order = CarrierOrder::Leading;
    SupportRule support = SupportRule::Top;
    double weight_sparsification = 1.0;  // w_sp ≥ 0
    double weight_aggregation = 1.0;     // w_agg ≥ 0
    bool noise_scales_with_payload = false;  // e_agg = NMSE·d(ρ)/d(1) instead of NMSE·(1 − e_sp) (docs/math.md)
    // Digital baseline (phy/digital.h): q bits per value plus a header per device.
    int quant_bits = 8;         // q in [1, 24]
    double header_bits = 32.0;  // ≥ 0 (the quantiser's range)
    double peak_to_rms = 0.0;   // κ = max|x| / rms of an update; 0: √(2 ln d), the Gaussian value (≥ 0)
    // Bits per carrier per OFDM symbol at a given SNR (e.g. phy::spectral_efficiency with the MCS table).
    // Empty: Shannon, log2(1 + SNR). Must return a finite value ≥ 0; 0 means the device cannot send.
    std::function<double(double snr_linear)> spectral_efficiency;
    void validate() const;  // throws std::invalid_argument naming the field
};

// Components of each layer kept at ratio ρ: ⌈ρ r⌉ (with a 1e-9 tolerance, as fedlora::learn::kept_rank_count),
// at least 1. Throws std::invalid_argument unless 0 < ρ ≤ 1 and rank ≥ 1.
std::size_t kept_rank_count(std::size_t rank, double rho);

// One round's prediction for one candidate (ρ, bandwidth). Fields of the other link mode are empty / zero.
struct Prediction {
    LinkMode mode = LinkMode::AirComp;
    double rho = 0.0;
    std::vector<std::size_t> kept_ranks;  // ⌈ρ r_l⌉ per layer
    std::size_t payload_values = 0;       // d(ρ) = Σ_l kept_l · values_per_rank_l reals per device

    // AirComp
    std::size_t carriers = 0;                   // M (digital: M_band)
    std::vector<std::size_t> carrier_positions; // occupied candidate positions, ascending (AirComp only)
    std::vector<double> carrier_budget;         // P_k / M: phy::PowerControlConfig::budget for this round
    std::size_t payload_symbols = 0;            // OFDM symbols of payload, ⌈⌈d/2⌉ / M⌉
    double eta = 0.0;                           // predicted η of truncated channel inversion
    double truncated_fraction = 0.0;            // predicted fraction of (device, carrier) pairs silenced

    // Digital
    std::vector<double> shares;               // β_k, Σ β_k ≤ 1 (0 for excluded devices)
    std::vector<double> device_snr;           // effective per-carrier SNR used for the rate (linear)
    std::vector<double> spectral_efficiency;  // bits per carrier per OFDM symbol
    std::vector<double> payload_bits;         // q·d(ρ) + header (0 for excluded devices)
    std::vector<double> finish_time;          // T_cmp,k + bits_k / rate_k (s), 0 for excluded devices
    std::vector<unsigned char> excluded;      // 1: zero rate, the device sends nothing this round

    // Predictions
    double compute_time = 0.0;          // max_k T_cmp,k over the devices that send (s)
    double airtime = 0.0;               // everything after local training (s), overheads included
    double latency = 0.0;               // T (s)
    double sparsification_error = 0.0;  // e_sp
    double aggregation_nmse = 0.0;      // NMSE per entry of the received sum
    double aggregation_error = 0.0;     // e_agg
    double penalty = 0.0;               // Φ = w_sp e_sp + w_agg e_agg
    bool feasible = true;               // false: nothing would get through (every device silent)
};

// Digital OFDMA shares that make every device finish at the same time τ with the whole band used:
// device k needs β_k(τ) = a_k / (τ − T_cmp,k), a_k = bits_k · symbol_duration / (M_band · se_k), and
// Σ_k β_k(τ) = 1 has a unique root τ > max T_cmp,k, found by bisection. Devices with se_k = 0 (or no bits) are
// excluded: share 0, finish time 0, flagged; the others share the band. Throws std::invalid_argument if no device
// can send, or on sizes / non-finite or negative inputs.
struct BandwidthAllocation {
    std::vector<double> shares;
    std::vector<double> finish_time;
    std::vector<unsigned char> excluded;
    double finish = 0.0;  // τ: the common finish time (s)
};
BandwidthAllocation equalise_finish_times(const std::vector<double>& bits, const std::vector<double>& spectral_eff,
                                          const std::vector<double>& compute_time, std::size_t band_carriers,
                                          double symbol_duration);

// The models evaluated on one round's input. Construction validates the input and the config and does the work
// that does not depend on the candidate (carrier order, per-M AirComp figures, digital rates).
class RoundModel {
public:
    RoundModel(const RoundInput& input, const ModelConfig& config, LinkMode mode);

    LinkMode mode() const { return mode_; }
    const RoundInput& input() const { return input_; }

    // AirComp with M carriers (M must be one of timing.carrier_counts) at ratio ρ.
    Prediction aircomp(double rho, std::size_t carriers) const;
    // Digital at ratio ρ with the shares that equalise finish times.
    Prediction digital(double rho) const;
    // Digital at ratio ρ with given shares (one per device, ≥ 0, Σ ≤ 1; excluded devices are given 0 whatever
    // is asked). `equal_shares()` gives 1/K' to each of the K' devices that can send.
    Prediction digital(double rho, const std::vector<double>& shares) const;
    std::vector<double> equal_shares() const;

    // Building blocks (also used by the tests).
    double sparsification_error(double rho) const;
    std::size_t payload_values(double rho) const;
    // Candidate positions, most preferred first (CarrierOrder).
    const std::vector<std::size_t>& carrier_order() const { return order_; }

private:
    struct AircompFigures {
        std::size_t carriers = 0;
        double eta = 0.0;
        double mse = 0.0;
        double truncated_fraction = 0.0;
    };
    AircompFigures aircomp_figures(std::size_t carriers) const;
    Prediction base(double rho) const;
    void finish_penalty(Prediction& p) const;

    RoundInput input_;
    ModelConfig config_;
    LinkMode mode_;
    std::vector<std::size_t> order_;
    std::vector<AircompFigures> per_count_;  // AirComp: one per timing.carrier_counts entry
    double total_signal_var_ = 0.0;
    // Digital
    std::size_t band_ = 0;
    std::vector<double> snr_, se_;
};

// e^x E1(x) for x > 0, E1 the exponential integral ∫_x^∞ e^{−t}/t dt (finite for every x > 0, unlike E1 alone).
double expint_e1_scaled(double x);
// E1(x), x > 0.
double expint_e1(double x);
// Ergodic Shannon spectral efficiency E[log2(1 + γ X)], X ~ Exp(1) (Rayleigh fading, mean SNR γ > 0):
// e^{1/γ} E1(1/γ) / ln 2.
double rayleigh_ergodic_capacity(double mean_snr);

}  // namespace fedlora::control
