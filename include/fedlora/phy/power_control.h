// AirComp power control for single-antenna devices, per subcarrier, with each policy's analytic MSE.
//
// Model (docs/math.md, "Power control"): on subcarrier m, device k with channel h_k[m] sends b_k[m] s_k[m], where
// s_k is its pre-scaled symbol with E|s_k|² = v_k; the receiver sees y = Σ_k h_k b_k s_k + w, w ~ CN(0, σ²), and
// estimates the target sum Σ_k s_k as y / √η_m. Policies choose b_k[m] and η_m from the channel:
//
//   "truncated"  truncated channel inversion: b = √η / h if |h|² ≥ g_th·ḡ_k else 0, ḡ_k the device's mean gain
//                over the carriers (the threshold cuts fades, not path loss); one η for all subcarriers, the
//                largest that meets every device's average power budget (Zhu-Wang-Huang).
//   "mmse"       MMSE-optimal threshold policy per subcarrier: devices whose P_k|h_k|² ≥ η invert their channel,
//                the others send at full power (phase-aligned); η minimises the MSE (Cao-Zhu-Xu-Huang). With a
//                CSI error variance given, inversion is shrunk by the estimate's reliability (robust variant).
//   "full"       every device sends at full power, phase-aligned; η minimises the MSE.
//
// Power budget P_k: for "truncated", the average of |b_k[m]|² v_k over the occupied subcarriers; for "mmse" and
// "full", a per-subcarrier peak |b_k[m]|² v_k ≤ P_k (which implies the average). Noise variance σ² is at the
// receiver, so P_k/σ² is device k's receive SNR with a unit channel.
#pragma once

#include <complex>
#include <cstddef>
#include <string>
#include <vector>

namespace fedlora::phy {

enum class PowerPolicy { Truncated, Mmse, Full };
PowerPolicy power_policy_from_name(const std::string& name);  // throws std::invalid_argument listing the names
const char* to_string(PowerPolicy p);

struct PowerControlConfig {
    PowerPolicy policy = PowerPolicy::Truncated;
    double g_th = 0.1;           // truncation threshold on |h|² / mean |h|² ("truncated" only)
    double noise_var = 1.0;      // σ² at the receiver
    std::vector<double> budget;  // P_k per device, > 0
    std::vector<double> signal_var;  // v_k = E|s_k|² per device (empty: all 1)
    // ε_k² = E|h − ĥ|² of each device's channel estimate (empty: perfect CSI). The unknown part of the channel
    // adds v_k ε_k² |b_k|² / η to the MSE, so "truncated" and "mmse" shrink inversion by 1/(1 + r), r = ε²/|ĥ|²,
    // which minimises that expected MSE (docs/math.md); "mmse" also weighs it in its choice of η.
    std::vector<double> csi_error_var;
    // ε_k² = E|h − ĥ|² of each device's channel estimate (empty: perfect CSI). The unknown part of the channel
    // adds v_k ε_k² |b_k|² / η to the MSE, so "truncated" and "mmse" shrink inversion by 1/(1 + r), r = ε²/|ĥ|²,
    // which minimises that expected MSE (docs/math.md); "mmse" also weighs it in its choice of η.
    void validate(std::size_t n_devices) const;
};

// A power plan for K devices on M subcarriers. Row-major [k * M + m].
struct PowerPlan {
    std::size_t n_devices = 0;
    std::size_t n_carriers = 0;
    std::vector<std::complex<double>> precoder;  // b_k[m]
    std::vector<double> eta;                     // η_m (receive scaling 1/√η_m)
    std::vector<unsigned char> truncated;        // 1 if device k is silent on carrier m
    double mse = 0.0;                            // analytic MSE per complex symbol of the sum, averaged over m
    double truncated_fraction = 0.0;             // fraction of (k, m) pairs silent

    std::complex<double> b(std::size_t k, std::size_t m) const { return precoder[k * n_carriers + m]; }
};

// Plans power for channels h[k * M + m] (K devices × M carriers). Throws std::invalid_argument on bad sizes,
// non-finite channels, or a "truncated" plan in which every device is truncated on every carrier.
PowerPlan plan_power(const std::vector<std::complex<double>>& h, std::size_t n_devices, std::size_t n_carriers,
                     const PowerControlConfig& cfg);

// Analytic MSE of a plan for the given true channels: per carrier Σ_k v_k |h_k b_k/√η − 1|² + σ²/η, averaged
// over carriers. With h equal to the channels the plan was made for, this is PowerPlan::mse; with other channels
// (estimated CSI) it is the MSE the mismatch causes.
double plan_mse(const PowerPlan& plan, const std::vector<std::complex<double>>& h, const PowerControlConfig& cfg);
// The same, per carrier (M values).
std::vector<double> plan_mse_per_carrier(const PowerPlan& plan, const std::vector<std::complex<double>>& h,
                                         const PowerControlConfig& cfg);

// Ergodic (M → ∞) MSE of truncated channel inversion in i.i.d. Rayleigh fading with unit mean gain, K devices of
// equal budget P and signal variance v: K v (1 − e^{−g}) + σ² E1(g) / P.
double truncated_inversion_ergodic_mse(std::size_t n_devices, double budget, double signal_var, double noise_var,
                                       double g_th);

// Exponential integral E1(x) = ∫_x^∞ e^{−t}/t dt, x > 0.
double expint_e1(double x);

}  // namespace fedlora::phy
