#include "fedlora/phy/mimo.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

namespace fedlora::phy {

namespace {
using Mat = Eigen::MatrixXcd;

double var_of(const MimoConfig& cfg, std::size_t k) { return cfg.signal_var.empty() ? 1.0 : cfg.signal_var[k]; }

// t_k = v_k tr(G_k⁻¹) / P_k; +inf if G_k is singular (the beamformer cannot see device k's L streams).
std::vector<double> device_terms(const std::vector<Mat>& h, const Mat& a, const MimoConfig& cfg,
                                 std::vector<Mat>* ginv) {
    std::vector<double> t(h.size());
    if (ginv)
        ginv->resize(h.size());
    for (std::size_t k = 0; k < h.size(); ++k) {
        const Mat ah = a.adjoint() * h[k];
        const Mat g = ah * ah.adjoint();
        Eigen::LDLT<Mat> ldlt(g);
        const double min_d = ldlt.vectorD().real().minCoeff();
        if (!(min_d > 1e-14 * std::max(1.0, g.real().diagonal().maxCoeff()))) {
            t[k] = std::numeric_limits<double>::infinity();
            continue;
        }
        const Mat gi = ldlt.solve(Mat::Identity(g.rows(), g.cols()));
        t[k] = var_of(cfg, k) * gi.trace().real() / cfg.budget[k];
        if (ginv)
            (*ginv)[k] = gi;
    }
    return t;
}

}  // namespace

void MimoConfig::validate(const std::vector<Eigen::MatrixXcd>& h) const {
    if (h.empty())
        throw std::invalid_argument("MIMO AirComp: no devices");
    if (n_streams == 0)
        throw std::invalid_argument("MIMO AirComp: n_streams = 0");
    if (!(noise_var > 0.0))
        throw std::invalid_argument("MIMO AirComp: noise_var = " + std::to_string(noise_var) + " must be > 0");
    if (budget.size() != h.size())
        throw std::invalid_argument("MIMO AirComp: " + std::to_string(budget.size()) + " budgets for " +
                                    std::to_string(h.size()) + " devices");
    if (!csi_error_var.empty() && csi_error_var.size() != h.size())
        throw std::invalid_argument("MIMO AirComp: " + std::to_string(csi_error_var.size()) +
                                    " CSI error variances for " + std::to_string(h.size()) + " devices");
    if (!signal_var.empty() && signal_var.size() != h.size())
        throw std::invalid_argument("MIMO AirComp: " + std::to_string(signal_var.size()) + " signal variances for " +
                                    std::to_string(h.size()) + " devices");
    const auto nr = h[0].rows();
    if (static_cast<std::size_t>(nr) < n_streams)
        throw std::invalid_argument("MIMO AirComp: N_r = " + std::to_string(nr) + " receive antennas cannot separate " +
                                    std::to_string(n_streams) + " streams");
    for (std::size_t k = 0; k < h.size(); ++k) {
        if (h[k].rows() != nr)
            throw std::invalid_argument("MIMO AirComp: device " + std::to_string(k) + " channel has " +
                                        std::to_string(h[k].rows()) + " rows, expected N_r = " + std::to_string(nr));
        if (static_cast<std::size_t>(h[k].cols()) < n_streams)
            throw std::invalid_argument("MIMO AirComp: device " + std::to_string(k) + " has N_t = " +
                                        std::to_string(h[k].cols()) + " antennas for " + std::to_string(n_streams) +
                                        " streams (zero forcing needs N_t >= L)");
        if (!h[k].allFinite())
            throw std::invalid_argument("MIMO AirComp: device " + std::to_string(k) + " channel is not finite");
        if (!(budget[k] > 0.0))
            throw std::invalid_argument("MIMO AirComp: budget[" + std::to_string(k) + "] must be > 0");
    }
}

// Σ_k ε_k² P_k t_k = Σ_k v_k ε_k² tr(G_k⁻¹): the expected error the unknown part of the channels adds (times ‖A‖²).
double csi_term(const std::vector<double>& t, const MimoConfig& cfg) {
    double e = 0.0;
    for (std::size_t k = 0; k < t.size() && !cfg.csi_error_var.empty(); ++k)
        e += cfg.csi_error_var[k] * cfg.budget[k] * t[k];
    return e;
}

double mimo_mse(const std::vector<Mat>& h, const Mat& a, const MimoConfig& cfg) {
    const auto t = device_terms(h, a, cfg, nullptr);
    return a.squaredNorm() * (cfg.noise_var * *std::max_element(t.begin(), t.end()) + csi_term(t, cfg));
}

MimoDesign mimo_zero_forcing(const std::vector<Mat>& h, const Mat& a, const MimoConfig& cfg) {
    cfg.validate(h);
    if (a.rows() != h[0].rows() || static_cast<std::size_t>(a.cols()) != cfg.n_streams)
        throw std::invalid_argument("MIMO AirComp: beamformer is " + std::to_string(a.rows()) + "x" +
                                    std::to_string(a.cols()) + ", expected N_r x L");
    std::vector<Mat> ginv;
    const auto t = device_terms(h, a, cfg, &ginv);
    const double tmax = *std::max_element(t.begin(), t.end());
    if (!std::isfinite(tmax))
        throw std::invalid_argument("MIMO AirComp: the beamformer cannot see every device's streams (singular AᴴH)");
    MimoDesign d;
    d.A = a;
    d.B.resize(h.size());
    if (cfg.csi_error_var.empty()) {
        d.eta = 1.0 / tmax;  // min_k P_k / (v_k tr G_k⁻¹)
        d.mse = cfg.noise_var * a.squaredNorm() / d.eta;
        for (std::size_t k = 0; k < h.size(); ++k)
            d.B[k] = std::sqrt(d.eta) * (a.adjoint() * h[k]).adjoint() * ginv[k];
        return d;
    }
    // Estimated channels Ĥ = H − E, E i.i.d. with variance ε²: regularised zero forcing. The normalised precoder
    // B̃ = B/√η minimising E‖AᴴH B̃ − I‖² = ‖AᴴĤB̃ − I‖² + ε²‖A‖²‖B̃‖² is (ĤᴴAAᴴĤ + ε²‖A‖² I)⁻¹ĤᴴA; η is the
    // largest that meets every budget, v_k η ‖B̃_k‖² ≤ P_k. The expected MSE adds the residual misalignment.
    const double a2 = a.squaredNorm();
    std::vector<Mat> bt(h.size());
    double eta = std::numeric_limits<double>::infinity();
    for (std::size_t k = 0; k < h.size(); ++k) {
        const Mat ha = h[k].adjoint() * a;  // N_t × L
        Mat reg = ha * ha.adjoint();
        reg.diagonal().array() += cfg.csi_error_var[k] * a2;
        bt[k] = reg.ldlt().solve(ha);
        eta = std::min(eta, cfg.budget[k] / (var_of(cfg, k) * std::max(bt[k].squaredNorm(), 1e-300)));
    }
    d.eta = eta;
    const auto L = static_cast<Eigen::Index>(cfg.n_streams);
    double mse = cfg.noise_var * a2 / eta;
    for (std::size_t k = 0; k < h.size(); ++k) {
        mse += var_of(cfg, k) * ((a.adjoint() * h[k] * bt[k] - Mat::Identity(L, L)).squaredNorm() +
                                 cfg.csi_error_var[k] * a2 * bt[k].squaredNorm());
        d.B[k] = std::sqrt(eta) * bt[k];
    }
    d.mse = mse;
    return d;
}

double mimo_smooth_objective(const std::vector<Mat>& h, const Mat& a, const MimoConfig& cfg, double tau, Mat* grad) {
    if (!(tau > 0.0))
        throw std::invalid_argument("mimo_smooth_objective: tau = " + std::to_string(tau) + " must be > 0");
    std::vector<Mat> ginv;
    const auto t = device_terms(h, a, cfg, &ginv);
    const double tmax = *std::max_element(t.begin(), t.end());
    if (!std::isfinite(tmax))
        return std::numeric_limits<double>::infinity();
    double z = 0.0;
    for (double tk : t)
        z += std::exp((tk - tmax) / tau);
    const double smax = tmax + tau * std::log(z);  // τ log Σ exp(t_k/τ)
    const double norm2 = a.squaredNorm();
    const double inner = cfg.noise_var * smax + csi_term(t, cfg);
    const double f = norm2 * inner;
    if (grad) {
        // ∂(‖A‖²)/∂A* = A;  ∂t_k/∂A* = −(v_k/P_k) C_k A G_k⁻²,  C_k = H_k H_kᴴ;  softmax weights w_k; the CSI term
        // weighs each t_k by ε_k² P_k.
        Mat g = inner * a;
        for (std::size_t k = 0; k < h.size(); ++k) {
            const double w = std::exp((t[k] - tmax) / tau) / z;
            const double weight = cfg.noise_var * w + (cfg.csi_error_var.empty() ? 0.0 : cfg.csi_error_var[k] * cfg.budget[k]);
            g -= norm2 * weight * (var_of(cfg, k) / cfg.budget[k]) * (h[k] * (h[k].adjoint() * a)) *
                 (ginv[k] * ginv[k]);
        }
        *grad = g;
    }
    return f;
}

MimoDesign mimo_design(const std::vector<Mat>& h, const MimoConfig& cfg, const Mat* warm_start) {
    cfg.validate(h);
    const auto nr = h[0].rows();
    const auto L = static_cast<Eigen::Index>(cfg.n_streams);

    // Starts: a warm start alone if given (e.g. the neighbouring subcarrier's solution), otherwise the dominant
    // eigenvectors of Σ_k C_k / tr(C_k), then random points on the sphere.
    std::vector<Mat> starts;
    if (warm_start) {
        if (warm_start->rows() != nr || warm_start->cols() != L)
            throw std::invalid_argument("MIMO AirComp: warm start is " + std::to_string(warm_start->rows()) + "x" +
                                        std::to_string(warm_start->cols()) + ", expected N_r x L");
        starts.push_back(*warm_start);
    } else {
        Mat c = Mat::Zero(nr, nr);
        for (const auto& hk : h)
            c += hk * hk.adjoint() / std::max(hk.squaredNorm(), 1e-300);
        Eigen::SelfAdjointEigenSolver<Mat> eig(c);
        starts.push_back(eig.eigenvectors().rightCols(L));
    }
    std::mt19937_64 rng(cfg.seed);
    std::normal_distribution<double> g;
    for (int r = 0; r < (warm_start ? 0 : cfg.restarts); ++r) {
        Mat a(nr, L);
        for (Eigen::Index i = 0; i < a.size(); ++i)
            a(i) = {g(rng), g(rng)};
        starts.push_back(a);
    }

    MimoDesign best;
    double best_mse = std::numeric_limits<double>::infinity();
    for (auto a : starts) {
        a /= a.norm();
        const auto t0 = device_terms(h, a, cfg, nullptr);
        const double t0max = *std::max_element(t0.begin(), t0.end());
        if (!std::isfinite(t0max))
            continue;
        int it = 0;
        double rgrad_norm = 0.0;
        // Continuation: a wide smoothing first, then a narrow one (τ relative to the current worst device term).
        for (double rel_tau : {0.1, 0.01}) {
            const auto tc = device_terms(h, a, cfg, nullptr);
            const double tau = rel_tau * *std::max_element(tc.begin(), tc.end());
            Mat grad;
            double f = mimo_smooth_objective(h, a, cfg, tau, &grad);
            double step = 0.1 / std::max(grad.norm(), 1e-300);
            int stalled = 0;  // consecutive steps that improved f by less than 1e-9 relative
            for (int phase_it = 0; phase_it < cfg.max_iterations; ++phase_it, ++it) {
                // Riemannian gradient on the sphere: the steepest-ascent direction 2·∂f/∂A* with its radial
                // component Re⟨A, ·⟩ A removed.
                Mat rg = 2.0 * grad;
                rg -= a.cwiseProduct(rg.conjugate()).sum().real() * a;
                rgrad_norm = rg.norm();
                if (rgrad_norm <= 1e-6 * std::abs(f))
                    break;
                // Armijo backtracking along the retraction A ← (A − s·rg) / ‖A − s·rg‖.
                bool moved = false;
                for (int bt = 0; bt < 50; ++bt) {
                    Mat cand = a - step * rg;
                    cand /= cand.norm();
                    Mat cgrad;
                    const double fc = mimo_smooth_objective(h, cand, cfg, tau, &cgrad);
                    if (std::isfinite(fc) && fc <= f - 1e-4 * step * rgrad_norm * rgrad_norm) {
                        stalled = (f - fc) <= 1e-9 * f ? stalled + 1 : 0;
                        a = cand;
                        f = fc;
                        grad = cgrad;
                        step *= 2.0;
                        moved = true;
                        break;
                    }
                    step *= 0.5;
                }
                if (!moved || stalled >= 5)
                    break;
            }
        }
        const double mse = mimo_mse(h, a, cfg);
        if (mse < best_mse) {
            best_mse = mse;
            best = mimo_zero_forcing(h, a, cfg);
            best.iterations = it;
            best.riemannian_grad_norm = rgrad_norm;
        }
    }
    if (!std::isfinite(best_mse))
        throw std::invalid_argument("MIMO AirComp: no beamformer start sees every device (rank-deficient channels?)");
    return best;
}

}  // namespace fedlora::phy
