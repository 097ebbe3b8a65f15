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
    for (std::size_t k = 0; k < signal_var.size(); ++k)
        if (!(signal_var[k] > 0.0) || !std::isfinite(signal_var[k]))
            throw std::invalid_argument("power control: signal_var[" + std::to_string(k) +
                                        "] = " + std::to_string(signal_var[k]) + " must be > 0");
}

namespace {

double var_of(const PowerControlConfig& cfg, std::size_t k) { return cfg.signal_var.empty() ? 1.0 : cfg.signal_var[k]; }

// MSE on one carrier when device k sends amplitude a_k = |h_k b_k| (phase-aligned) and the receiver scales by
// 1/√η: Σ_k v_k (a_k/√η − 1)² + σ²/η.
double carrier_mse(const std::vector<double>& a, const std::vector<double>& v, double noise_var, double eta) {
    const double u = 1.0 / std::sqrt(eta);
    double mse = noise_var * u * u;
    for (std::size_t k = 0; k < a.size(); ++k)
        mse += v[k] * (a[k] * u - 1.0) * (a[k] * u - 1.0);
    return mse;
}

// Threshold policy on one carrier. q_k = √P_k |h_k| is device k's full-power receive amplitude. For a given η,
// devices with q_k² ≥ η invert (receive amplitude √η, no error) and the others send at full power. With the
// devices sorted by q ascending and the first j at full power, MSE(u = 1/√η) = Σ_{i<j} v_i (q_i u − 1)² + σ² u²
// is a convex quadratic with minimiser u* = Σ v_i q_i / (σ² + Σ v_i q_i²). The optimum over η is therefore at one
// of these stationary points clipped to its interval [q_{j-1}², q_j²], or at an interval end: all are evaluated.
// `full_only` forces every device to full power (the "full" policy: j = K, η free in (0, ∞)).
double best_eta(const std::vector<double>& q, const std::vector<double>& v, double noise_var, bool full_only) {
    const std::size_t K = q.size();
    std::vector<std::size_t> order(K);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return q[a] < q[b]; });

    auto mse_at = [&](double eta) {
        std::vector<double> a(K);
        for (std::size_t k = 0; k < K; ++k)
            a[k] = full_only ? q[k] : std::min(q[k], std::sqrt(eta));
        return carrier_mse(a, v, noise_var, eta);
    };
    if (full_only) {
        double num = 0.0, den = noise_var;
        for (std::size_t k = 0; k < K; ++k) {
            num += v[k] * q[k];
            den += v[k] * q[k] * q[k];
        }
        const double u = num / den;
        return 1.0 / (u * u);
    }
    double best = std::numeric_limits<double>::infinity(), best_eta_v = q[order[0]] * q[order[0]];
    double num = 0.0, den = noise_var;
    for (std::size_t j = 0; j <= K; ++j) {
        // Interval where exactly the first j sorted devices are at full power.
        const double lo = j == 0 ? 0.0 : q[order[j - 1]] * q[order[j - 1]];
        const double hi = j == K ? std::numeric_limits<double>::infinity() : q[order[j]] * q[order[j]];
        std::vector<double> candidates;
        if (lo > 0.0)
            candidates.push_back(lo);
        if (std::isfinite(hi))
            candidates.push_back(hi);
        if (j > 0 && num > 0.0) {
            const double u = num / den;
            candidates.push_back(std::clamp(1.0 / (u * u), lo, hi));
        }
        for (double eta : candidates) {
            if (!(eta > 0.0) || !std::isfinite(eta))
                continue;
            const double m = mse_at(eta);
            if (m < best) {
                best = m;
                best_eta_v = eta;
            }
        }
        if (j < K) {
            num += v[order[j]] * q[order[j]];
            den += v[order[j]] * q[order[j]] * q[order[j]];
        }
    }
    return best_eta_v;
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
        double eta = std::numeric_limits<double>::infinity();
        for (std::size_t k = 0; k < K; ++k) {
            double inv_sum = 0.0;
            for (std::size_t m = 0; m < M; ++m) {
                const double g = std::norm(h[k * M + m]);
                if (g >= cfg.g_th && g > 0.0)
                    inv_sum += 1.0 / g;
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
                if (!plan.truncated[k * M + m])
                    plan.precoder[k * M + m] = std::sqrt(eta) / h[k * M + m];
    } else {
        std::vector<double> q(K), v(K);
        for (std::size_t k = 0; k < K; ++k)
            v[k] = var_of(cfg, k);
        for (std::size_t m = 0; m < M; ++m) {
            for (std::size_t k = 0; k < K; ++k)
                q[k] = std::sqrt(cfg.budget[k] / v[k]) * std::abs(h[k * M + m]);
            const double eta = best_eta(q, v, cfg.noise_var, cfg.policy == PowerPolicy::Full);
            plan.eta[m] = eta;
            for (std::size_t k = 0; k < K; ++k) {
                const auto hk = h[k * M + m];
                const double ghk = std::abs(hk);
                if (ghk == 0.0) {
                    plan.truncated[k * M + m] = 1;  // nothing gets through: a silent device wastes no power
                    continue;
                }
                const double full_amp = std::sqrt(cfg.budget[k] / v[k]);  // |b| at full power
                const double inv_amp = std::sqrt(eta) / ghk;             // |b| that inverts the channel
                const double amp = cfg.policy == PowerPolicy::Full ? full_amp : std::min(full_amp, inv_amp);
                plan.precoder[k * M + m] = amp * std::conj(hk) / ghk;
            }
        }
    }
    plan.mse = plan_mse(plan, h, cfg);
    plan.truncated_fraction =
        static_cast<double>(std::count(plan.truncated.begin(), plan.truncated.end(), 1)) / static_cast<double>(K * M);
    return plan;
}

double plan_mse(const PowerPlan& plan, const std::vector<std::complex<double>>& h, const PowerControlConfig& cfg) {
    const std::size_t K = plan.n_devices, M = plan.n_carriers;
    check_channels(h, K, M);
    double total = 0.0;
    for (std::size_t m = 0; m < M; ++m) {
        const double u = 1.0 / std::sqrt(plan.eta[m]);
        double mse = cfg.noise_var * u * u;
        for (std::size_t k = 0; k < K; ++k)
            mse += var_of(cfg, k) * std::norm(h[k * M + m] * plan.b(k, m) * u - 1.0);
        total += mse;
    }
    return total / static_cast<double>(M);
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
