// Multi-stream (MIMO) AirComp on one subcarrier: K devices with N_t antennas send L streams each, the server with
// N_r antennas applies a receive beamformer A (N_r × L) and recovers the sum of the devices' stream vectors.
//
//   y = Σ_k H_k B_k s_k + n,   ŝ = Aᴴ y / √η,   E[s_k s_kᴴ] = v_k I_L,   n ~ CN(0, σ² I)
//   zero-forcing precoders  B_k = √η (AᴴH_k)ᴴ [(AᴴH_k)(AᴴH_k)ᴴ]⁻¹   (so AᴴH_k B_k = √η I_L)
//   η = min_k P_k / (v_k tr{[(AᴴH_k)(AᴴH_k)ᴴ]⁻¹}),   MSE = E‖ŝ − Σ s_k‖² = σ² ‖A‖²_F / η
//   (+ ‖A‖² Σ_k v_k ε_k² tr(G_k⁻¹) when the channels are estimates with error variance ε_k²)
// (Sun et al., AirFL-LoRA, IEEE TWC 2025; Zhu-Huang, MIMO over-the-air computation; derivation in docs/math.md.)
// The MSE is invariant to the scale of A, so A is optimised on the unit sphere ‖A‖_F = 1 by Riemannian gradient
// descent with Armijo backtracking, minimising a smooth maximum (log-sum-exp) of the per-device terms.
#pragma once

#include <Eigen/Dense>

#include <cstddef>
#include <vector>

namespace fedlora::phy {

struct MimoConfig {
    std::size_t n_streams = 1;       // L
    double noise_var = 1.0;          // σ²
    std::vector<double> budget;      // P_k
    std::vector<double> signal_var;  // v_k per stream (empty: 1)
    // ε_k² per entry of device k's estimated channel (empty: perfect CSI). The unknown part E_k adds
    // E‖AᴴE_kB_k s_k‖²/η = v_k ε_k² ‖A‖² tr(G_k⁻¹) to the MSE of zero forcing; the beamformer is optimised with that
    // term, and the precoders are regularised, B_k ∝ (Ĥ_kᴴAAᴴĤ_k + ε_k²‖A‖² I)⁻¹Ĥ_kᴴA (docs/math.md).
    std::vector<double> csi_error_var;
    int max_iterations = 300;
    int restarts = 3;           // random starts in addition to the eigenvector start
    unsigned seed = 1;
    void validate(const std::vector<Eigen::MatrixXcd>& h) const;  // throws std::invalid_argument naming the problem
};

struct MimoDesign {
    Eigen::MatrixXcd A;                // N_r × L, ‖A‖_F = 1
    std::vector<Eigen::MatrixXcd> B;   // N_t × L per device
    double eta = 0.0;
    double mse = 0.0;                  // σ² ‖A‖²_F / η (+ the CSI-error term), summed over the L streams
    int iterations = 0;
    double riemannian_grad_norm = 0.0; // of the smooth objective at the solution
};

// ZF precoders and η for a given beamformer.
MimoDesign mimo_zero_forcing(const std::vector<Eigen::MatrixXcd>& h, const Eigen::MatrixXcd& a, const MimoConfig& cfg);

// MSE σ²‖A‖²/η(A) (+ the CSI-error term) of a beamformer: the objective.
double mimo_mse(const std::vector<Eigen::MatrixXcd>& h, const Eigen::MatrixXcd& a, const MimoConfig& cfg);

// Optimises A, then returns its ZF design. With a warm start (e.g. the neighbouring subcarrier's beamformer) only
// that start is refined.
MimoDesign mimo_design(const std::vector<Eigen::MatrixXcd>& h, const MimoConfig& cfg,
                       const Eigen::MatrixXcd* warm_start = nullptr);

// Smooth objective and its Euclidean (Wirtinger, ∂/∂A*) gradient, exposed for tests:
// f(A) = σ² ‖A‖² · τ log Σ_k exp(t_k(A)/τ), t_k = v_k tr(G_k⁻¹)/P_k, G_k = Aᴴ H_k H_kᴴ A, for a fixed τ > 0.
double mimo_smooth_objective(const std::vector<Eigen::MatrixXcd>& h, const Eigen::MatrixXcd& a, const MimoConfig& cfg,
                             double tau, Eigen::MatrixXcd* grad);

}  // namespace fedlora::phy
