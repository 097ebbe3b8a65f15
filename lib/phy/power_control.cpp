#include "fedlora/phy/power_control.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace fedlora::phy {

PowerPolicy power_policy_from_name(const std::string& name) {
    if (name == "truncated")
        return PowerPolicy::Truncated;
    if (name == "mmse")
        return PowerPolicy::Mmse;
    if (name == "full")
        return PowerPolicy::Full;
    throw std::invalid_argument("power control policy '" + name + "' is unknown (choose truncated, mmse or full)");
}

const char* to_string(PowerPolicy p) {
    switch (p) {
        case PowerPolicy::Truncated: return "truncated";
        case PowerPolicy::Mmse: return "mmse";
        case PowerPolicy::Full: return "full";
    }
    return "unknown";
}

void PowerControlConfig::validate(std::size_t n_devices) const {
    if (!(noise_var > 0.0) || !std::isfinite(noise_var))
        throw std::invalid_argument("power control: noise_var = " + std::to_string(noise_var) + " must be > 0");
    if (!(g_th >= 0.0) || !std::isfinite(g_th))
        throw std::invalid_argument("power control: g_th = " + std::to_string(g_th) + " must be >= 0");
    if (budget.size() != n_devices)
        throw std::invalid_argument("power control: " + std::to_string(budget.size()) + " power budgets for " +
                                    std::to_string(n_devices) + " devices");
    for (std::size_t k = 0; k < budget.size(); ++k)
        if (!(budget[k] > 0.0) || !std::isfinite(budget[k]))
            throw std::invalid_argument("power control: budget[" + std::to_string(k) +
                                        "] = " + std::to_string(budget[k]) + " must be > 0");
    if (!signal_var.empty() && signal_var.size() != n_devices)
        throw std::invalid_argument("power control: " + std::to_string(signal_var.size()) +
                                    " signal variances for " + std::to_string(n_devices) + " devices");
    if (!csi_error_var.empty() && csi_error_var.size() != n_devices)
        throw std::invalid_argument("power control: " + std::to_string(csi_error_var.size()) +
                                    " CSI error variances for " + std::to_string(n_devices) + " devices");
    for (std::size_t k = 0; k < csi_error_var.size(); ++k)
        if (!(csi_error_var[k] >= 0.0) || !std::isfinite(csi_error_var[k]))
            throw std::invalid_argument("power control: csi_error_var[" + std::to_string(k) +
                                        "] = " + std::to_string(csi_error_var[k]) + " must be >= 0");
    for (std::size_t k = 0; k < signal_var.size(); ++k)
        if (!(signal_var[k] > 0.0) || !std::isfinite(signal_var[k]))
            throw std::invalid_argument("power control: signal_var[" + std::to_string(k) +
                                        "] = " + std::to_string(signal_var[k]) + " must be > 0");
}

namespace {

double var_of(const PowerControlConfig& cfg, std::size_t k) { return cfg.signal_var.empty() ? 1.0 : cfg.signal_var[k]; }

// r = ε_k² / |ĥ|²: the estimate's relative uncertainty on a carrier of gain |ĥ|² (0 with perfect CSI).
double csi_ratio(const PowerControlConfig& cfg, std::size_t k, double gain) {
    return cfg.csi_error_var.empty() ? 0.0 : cfg.csi_error_var[k] / std::max(gain, 1e-300);
}

// Threshold policy on one carrier, in u = 1/√η. q_k = √(P_k/v_k)|ĥ_k| is device k's full-power receive amplitude,
// r_k = ε_k²/|ĥ_k|² its relative CSI error (0 with perfect CSI). With receive amplitude a_k the expected error is
// v_k[(a_k u − 1)² + r_k a_k² u²] (the second term: the unknown part h − ĥ of the channel times the transmitted
// amplitude), minimised by a_k = 1/(u(1 + r_k)) (inversion, shrunk when the estimate is poor) unless that exceeds
// the budget, when a_k = q_k (full power). Device k is at full power iff u ≤ t_k = 1/(q_k(1 + r_k)). Between
// consecutive breakpoints the MSE is a quadratic in u with minimiser u* = Σ_C v q / (σ² + Σ_C v q²(1 + r)) over the
// full-power set C; the optimum is one of these, clipped to its interval, or a breakpoint: all are evaluated.
// `full_only` forces every device to full power (the "full" policy).
double best_u(const std::vector<double>& q, const std::vector<double>& r, const std::vector<double>& v, double noise_var,
              bool full_only) {
    const std::size_t K = q.size();
    if (full_only) {
        double num = 0.0, den = noise_var;
        for (std::size_t k = 0; k < K; ++k) {
            num += v[k] * q[k];
            den += v[k] * q[k] * q[k] * (1.0 + r[k]);
        }
        return num / den;
    }
    auto mse_at = [&](double u) {
        double mse = noise_var * u * u;
        for (std::size_t k = 0; k < K; ++k) {
            const double a = std::min(q[k], 1.0 / (u * (1.0 + r[k])));
            mse += v[k] * ((a * u - 1.0) * (a * u - 1.0) + r[k] * a * a * u * u);
        }
        return mse;
    };
    std::vector<double> t(K);
    for (std::size_t k = 0; k < K; ++k)
        t[k] = 1.0 / (q[k] * (1.0 + r[k]));
    std::vector<std::size_t> order(K);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return t[a] < t[b]; });
    // Full-power set for u in (t_{j-1}, t_j]: the devices from sorted position j on. Suffix sums give u*.
    std::vector<double> num(K + 1, 0.0), den(K + 1, noise_var);
    for (std::size_t j = K; j-- > 0;) {
        const auto k = order[j];
        num[j] = num[j + 1] + v[k] * q[k];
        den[j] = den[j + 1] + v[k] * q[k] * q[k] * (1.0 + r[k]);
    }
    double best = std::numeric_limits<double>::infinity(), best_u_v = t[order[0]];
    auto consider = [&](double u) {
        if (!(u > 0.0) || !std::isfinite(u))
            return;
        const double m = mse_at(u);
        if (m < best) {
            best = m;
            best_u_v = u;
        }
    };
    for (std::size_t j = 0; j < K; ++j) {
        const double lo = j == 0 ? 0.0 : t[order[j - 1]];
        const double hi = t[order[j]];
        consider(hi);
        if (num[j] > 0.0)
            consider(std::clamp(num[j] / den[j], lo, hi));
    }
    return best_u_v;
}

void check_channels(const std::vector<std::complex<double>>& h, std::size_t K, std::size_t M) {
    if (K == 0 || M == 0)
        throw std::invalid_argument("power control: needs at least one device and one carrier (got K = " +
                                    std::to_string(K) + ", M = " + std::to_string(M) + ")");
    if (h.size() != K * M)
        throw std::invalid_argument("power control: " + std::to_string(h.size()) + " channel values for K*M = " +
                                    std::to_string(K * M));
    for (std::size_t i = 0; i < h.size(); ++i)
        if (!std::isfinite(h[i].real()) || !std::isfinite(h[i].imag()))
            throw std::invalid_argument("power control: channel of device " + std::to_string(i / M) +
                                        ", carrier " + std::to_string(i % M) + " is not finite");
}

}  // namespace

PowerPlan plan_power(const std::vector<std::complex<double>>& h, std::size_t K, std::size_t M,
                     const PowerControlConfig& cfg) {
    check_channels(h, K, M);
    cfg.validate(K);
    PowerPlan plan;
    plan.n_devices = K;
    plan.n_carriers = M;
    plan.precoder.assign(K * M, {0.0, 0.0});
    plan.eta.assign(M, 0.0);
    plan.truncated.assign(K * M, 0);

    if (cfg.policy == PowerPolicy::Truncated) {
        // η = min_k P_k / ((1/M) Σ_{m kept} v_k / |h_k[m]|²): the largest η every device can afford.
        // The threshold applies to the fading gain |h|² / ḡ_k relative to the device's mean gain over the carriers
        // (path loss is what the budget and η absorb; truncation cuts deep fades).
        double eta = std::numeric_limits<double>::infinity();
        for (std::size_t k = 0; k < K; ++k) {
            double mean_gain = 0.0;
            for (std::size_t m = 0; m < M; ++m)
                mean_gain += std::norm(h[k * M + m]) / static_cast<double>(M);
            double inv_sum = 0.0;
            for (std::size_t m = 0; m < M; ++m) {
                const double g = std::norm(h[k * M + m]);
                const double shrink = 1.0 + csi_ratio(cfg, k, g);
                if (g >= cfg.g_th * mean_gain && g > 0.0)
                    inv_sum += 1.0 / (g * shrink * shrink);
                else
                    plan.truncated[k * M + m] = 1;
            }
            if (inv_sum > 0.0)
                eta = std::min(eta, cfg.budget[k] * static_cast<double>(M) / (var_of(cfg, k) * inv_sum));
        }
        if (!std::isfinite(eta))
            throw std::invalid_argument("power control: every device is below the truncation threshold g_th = " +
                                        std::to_string(cfg.g_th) + " on every carrier");
        std::fill(plan.eta.begin(), plan.eta.end(), eta);
        for (std::size_t k = 0; k < K; ++k)
            for (std::size_t m = 0; m < M; ++m)
                if (!plan.truncated[k * M + m]) {
                    // Inversion of the estimate, shrunk by 1/(1 + r) when it is uncertain (r = 0: exact inversion).
                    const double shrink = 1.0 + csi_ratio(cfg, k, std::norm(h[k * M + m]));
                    plan.precoder[k * M + m] = std::sqrt(eta) / (h[k * M + m] * shrink);
                }
    } else {
        std::vector<double> q(K), v(K), r(K);
        for (std::size_t k = 0; k < K; ++k)
            v[k] = var_of(cfg, k);
        for (std::size_t m = 0; m < M; ++m) {
            for (std::size_t k = 0; k < K; ++k) {
                const double g = std::abs(h[k * M + m]);
                q[k] = std::sqrt(cfg.budget[k] / v[k]) * g;
                r[k] = csi_ratio(cfg, k, g * g);
            }
            const double u = best_u(q, r, v, cfg.noise_var, cfg.policy == PowerPolicy::Full);
            plan.eta[m] = 1.0 / (u * u);
            for (std::size_t k = 0; k < K; ++k) {
                const auto hk = h[k * M + m];
                const double ghk = std::abs(hk);
                if (ghk == 0.0) {
                    plan.truncated[k * M + m] = 1;  // nothing gets through: a silent device wastes no power
                    continue;
                }
                const double a = cfg.policy == PowerPolicy::Full ? q[k] : std::min(q[k], 1.0 / (u * (1.0 + r[k])));
                plan.precoder[k * M + m] = (a / ghk) * std::conj(hk) / ghk;
            }
        }
    }
    plan.mse = plan_mse(plan, h, cfg);
    plan.truncated_fraction =
        static_cast<double>(std::count(plan.truncated.begin(), plan.truncated.end(), 1)) / static_cast<double>(K * M);
    return plan;
}

std::vector<double> plan_mse_per_carrier(const PowerPlan& plan, const std::vector<std::complex<double>>& h,
                                         const PowerControlConfig& cfg) {
    const std::size_t K = plan.n_devices, M = plan.n_carriers;
    check_channels(h, K, M);
    std::vector<double> out(M);
    for (std::size_t m = 0; m < M; ++m) {
        const double u = 1.0 / std::sqrt(plan.eta[m]);
        double mse = cfg.noise_var * u * u;
        for (std::size_t k = 0; k < K; ++k)
            mse += var_of(cfg, k) * std::norm(h[k * M + m] * plan.b(k, m) * u - 1.0);
        out[m] = mse;
    }
    return out;
}

double plan_mse(const PowerPlan& plan, const std::vector<std::complex<double>>& h, const PowerControlConfig& cfg) {
    const auto per = plan_mse_per_carrier(plan, h, cfg);
    double total = 0.0;
    for (double v : per)
        total += v;
    return total / static_cast<double>(per.size());
}

double expint_e1(double x) {
    if (!(x > 0.0))
        throw std::invalid_argument("expint_e1: x = " + std::to_string(x) + " must be > 0");
    if (x < 1.0) {
        // Series: E1(x) = −γ − ln x − Σ_{n≥1} (−x)^n / (n · n!)
        double sum = 0.0, term = 1.0;
        for (int n = 1; n < 60; ++n) {
            term *= -x / n;
            sum += term / n;
            if (std::abs(term / n) < 1e-17)
                break;
        }
        return -0.57721566490153286061 - std::log(x) - sum;
    }
    // Continued fraction (modified Lentz) for x ≥ 1: E1(x) = e^{−x} / (x + 1/(1 + 1/(x + 2/(1 + 2/(x + ...)))))
    const double tiny = 1e-300;
    double b = x + 1.0, c = 1.0 / tiny, d = 1.0 / b, f = d;
    for (int i = 1; i < 1000; ++i) {
        const double an = -static_cast<double>(i) * i;
        b += 2.0;
        d = 1.0 / (an * d + b);
        c = b + an / c;
        const double delta = c * d;
        f *= delta;
        if (std::abs(delta - 1.0) < 1e-16)
            break;
    }
    return f * std::exp(-x);
}

double truncated_inversion_ergodic_mse(std::size_t n_devices, double budget, double signal_var, double noise_var,
                                       double g_th) {
    // With |h|² ~ Exp(1): P(|h|² < g) = 1 − e^{−g}, E[1{|h|² ≥ g}/|h|²] = E1(g), so η = P / (v E1(g)).
    const double eta = budget / (signal_var * expint_e1(g_th));
    return static_cast<double>(n_devices) * signal_var * (1.0 - std::exp(-g_th)) + noise_var / eta;
}

}  // namespace fedlora::phy
