// Predictive round models of the TSFA controller (docs/math.md, "TSFA controller").
#include "fedlora/control/round_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "checks.h"

namespace fedlora::control {

namespace {

using detail::at;
using detail::fail;
using detail::fmt;
using detail::require_finite_nonneg;
using detail::require_finite_pos;

// ⌈n / m⌉ for m ≥ 1.
std::size_t ceil_div(std::size_t n, std::size_t m) { return (n + m - 1) / m; }

}  // namespace

LinkMode link_mode_from_name(const std::string& name) {
    if (name == "aircomp")
        return LinkMode::AirComp;
    if (name == "digital")
        return LinkMode::Digital;
    throw std::invalid_argument("control: link mode '" + name + "' is unknown (choose aircomp or digital)");
}

const char* to_string(LinkMode mode) { return mode == LinkMode::AirComp ? "aircomp" : "digital"; }

CarrierOrder carrier_order_from_name(const std::string& name) {
    if (name == "leading")
        return CarrierOrder::Leading;
    if (name == "best")
        return CarrierOrder::Best;
    throw std::invalid_argument("control: carrier order '" + name + "' is unknown (choose leading or best)");
}

const char* to_string(CarrierOrder order) { return order == CarrierOrder::Leading ? "leading" : "best"; }

SupportRule support_rule_from_name(const std::string& name) {
    if (name == "top")
        return SupportRule::Top;
    if (name == "seeded")
        return SupportRule::Seeded;
    throw std::invalid_argument("control: support rule '" + name + "' is unknown (choose top or seeded)");
}

const char* to_string(SupportRule rule) { return rule == SupportRule::Top ? "top" : "seeded"; }

double gain_from_snr(double snr_linear, double noise_var, double pilot_power) {
    require_finite_nonneg(snr_linear, "snr");
    require_finite_pos(noise_var, "noise_var");
    require_finite_pos(pilot_power, "pilot_power");
    return snr_linear * noise_var / pilot_power;
}

void RoundInput::validate() const {
    if (devices.empty())
        fail("devices is empty: a round needs at least one device");
    require_finite_pos(noise_var, "noise_var");
    const std::size_t n_cand = devices[0].gain.size();
    for (std::size_t k = 0; k < devices.size(); ++k) {
        const auto& d = devices[k];
        const std::string dev = at("devices", k);
        if (d.gain.empty())
            fail(dev + ".gain is empty (no CSI for this device)");
        if (d.gain.size() != n_cand)
            fail(dev + ".gain has " + std::to_string(d.gain.size()) + " carriers, devices[0].gain has " +
                 std::to_string(n_cand));
        for (std::size_t m = 0; m < d.gain.size(); ++m)
            require_finite_nonneg(d.gain[m], at(dev + ".gain", m));
        require_finite_pos(d.budget, dev + ".budget");
        require_finite_nonneg(d.compute_time, dev + ".compute_time");
        require_finite_pos(d.signal_var, dev + ".signal_var");
    }
    if (layers.empty())
        fail("layers is empty: the round must send at least one layer");
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto& g = layers[l];
        const std::string lay = at("layers", l);
        if (g.rank < 1)
            fail(lay + ".rank = 0 must be >= 1");
        if (g.values_per_rank < 1)
            fail(lay + ".values_per_rank = 0 must be >= 1");
        if (!g.importance.empty() && g.importance.size() != g.rank)
            fail(lay + ".importance has " + std::to_string(g.importance.size()) + " values for rank " +
                 std::to_string(g.rank));
        for (std::size_t i = 0; i < g.importance.size(); ++i)
            require_finite_nonneg(g.importance[i], at(lay + ".importance", i));
    }
    const auto& c = timing.carrier_counts;
    if (c.empty())
        fail("timing.carrier_counts is empty");
    for (std::size_t i = 0; i < c.size(); ++i) {
        if (c[i] < 1 || (i > 0 && c[i] <= c[i - 1]))
            fail(at("timing.carrier_counts", i) + " = " + std::to_string(c[i]) +
                 ": counts must be >= 1 and strictly increasing");
        if (c[i] > n_cand)
            fail(at("timing.carrier_counts", i) + " = " + std::to_string(c[i]) + " exceeds the " +
                 std::to_string(n_cand) + " candidate carriers of devices[].gain");
    }
    require_finite_pos(timing.symbol_duration, "timing.symbol_duration");
    require_finite_nonneg(timing.overhead_symbols, "timing.overhead_symbols");
    require_finite_nonneg(timing.overhead_time, "timing.overhead_time");
}

void ModelConfig::validate() const {
    require_finite_nonneg(g_th, "model.g_th");
    require_finite_nonneg(weight_sparsification, "model.weight_sparsification");
    require_finite_nonneg(weight_aggregation, "model.weight_aggregation");
    if (quant_bits < 1 || quant_bits > 24)
        fail("model.quant_bits = " + std::to_string(quant_bits) + " must be in [1, 24]");
    require_finite_nonneg(header_bits, "model.header_bits");
    require_finite_nonneg(peak_to_rms, "model.peak_to_rms");
}

std::size_t kept_rank_count(std::size_t rank, double rho) {
    if (!(rho > 0.0 && rho <= 1.0))
        fail("rho = " + fmt(rho) + " must be in (0, 1]");
    if (rank < 1)
        fail("rank = 0 must be >= 1");
    // ⌈ρr⌉ with a tolerance, so that ρ = 0.3, r = 10 keeps 3 and not 4 (0.3·10 = 3.0000000000000004).
    const double m = std::ceil(rho * static_cast<double>(rank) - 1e-9);
    return std::clamp<std::size_t>(static_cast<std::size_t>(std::max(m, 1.0)), 1, rank);
}

// ---- exponential integral --------------------------------------------------------------------------------------

namespace {

// E1(x) for 0 < x ≤ 1 by its power series: −γ − ln x + Σ_{n≥1} (−1)^{n+1} x^n / (n · n!).
double e1_series(double x) {
    double sum = 0.0, term = -1.0;  // term = −(−x)^n / n!
    for (int n = 1; n <= 40; ++n) {
        term *= -x / n;
        sum += term / n;
    }
    return -0.57721566490153286061 - std::log(x) + sum;
}

}  // namespace

double expint_e1_scaled(double x) {
    if (!(x > 0.0) || !std::isfinite(x))
        fail("expint_e1_scaled: x = " + fmt(x) + " must be finite and > 0");
    if (x <= 1.0)
        return std::exp(x) * e1_series(x);
    // e^x E1(x) = 1 / (x + 1 − 1² / (x + 3 − 2² / (x + 5 − …))), evaluated from a fixed depth upwards
    // (for x ≥ 1 the tail beyond 300 levels changes nothing in double precision).
    double t = 0.0;
    for (int n = 300; n >= 1; --n)
        t = static_cast<double>(n) * n / (x + 2.0 * n + 1.0 - t);
    return 1.0 / (x + 1.0 - t);
}

double expint_e1(double x) {
    if (!(x > 0.0) || !std::isfinite(x))
        fail("expint_e1: x = " + fmt(x) + " must be finite and > 0");
    return x <= 1.0 ? e1_series(x) : std::exp(-x) * expint_e1_scaled(x);
}

double rayleigh_ergodic_capacity(double mean_snr) {
    require_finite_pos(mean_snr, "mean_snr");
    // E[ln(1 + γX)] = ∫_0^∞ e^{−x} ln(1 + γx) dx = ∫_0^∞ e^{−x} γ/(1 + γx) dx (by parts) = e^{1/γ} E1(1/γ).
    return expint_e1_scaled(1.0 / mean_snr) / std::log(2.0);
}

// ---- digital bandwidth shares ------------------------------------------------------------------------------------

BandwidthAllocation equalise_finish_times(const std::vector<double>& bits, const std::vector<double>& spectral_eff,
                                          const std::vector<double>& compute_time, std::size_t band_carriers,
                                          double symbol_duration) {
    const std::size_t K = bits.size();
    if (K == 0)
        fail("bandwidth allocation: no devices");
    if (spectral_eff.size() != K || compute_time.size() != K)
        fail("bandwidth allocation: " + std::to_string(K) + " payloads, " + std::to_string(spectral_eff.size()) +
             " spectral efficiencies, " + std::to_string(compute_time.size()) + " compute times");
    if (band_carriers < 1)
        fail("bandwidth allocation: band_carriers = 0 must be >= 1");
    require_finite_pos(symbol_duration, "symbol_duration");
    BandwidthAllocation out;
    out.shares.assign(K, 0.0);
    out.finish_time.assign(K, 0.0);
    out.excluded.assign(K, 0);
    // a_k: seconds device k would need with the whole band.
    std::vector<double> a(K, 0.0);
    double lo = -std::numeric_limits<double>::infinity(), total_a = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
        require_finite_nonneg(bits[k], at("bits", k));
        require_finite_nonneg(spectral_eff[k], at("spectral_efficiency", k));
        require_finite_nonneg(compute_time[k], at("compute_time", k));
        if (!(spectral_eff[k] > 0.0) || !(bits[k] > 0.0)) {
            out.excluded[k] = 1;
            continue;
        }
        a[k] = bits[k] * symbol_duration / (static_cast<double>(band_carriers) * spectral_eff[k]);
        lo = std::max(lo, compute_time[k]);
        total_a += a[k];
    }
    if (total_a == 0.0)
        fail("bandwidth allocation: no device can send (every device has zero rate or nothing to send)");
    // Σ_k a_k / (τ − T_k) is decreasing in τ > lo, infinite at lo⁺ and ≤ 1 at lo + Σ a_k (each τ − T_k ≥ Σ a).
    auto demand = [&](double tau) {
        double s = 0.0;
        for (std::size_t k = 0; k < K; ++k)
            if (!out.excluded[k])
                s += a[k] / (tau - compute_time[k]);
        return s;
    };
    double hi = lo + total_a;
    for (int it = 0; it < 400; ++it) {
        const double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi)
            break;
        (demand(mid) > 1.0 ? lo : hi) = mid;
    }
    // τ = hi keeps Σβ ≤ 1; rescale the last ulp of rounding if the sum still exceeds 1.
    double sum = 0.0;
    for (std::size_t k = 0; k < K; ++k)
        if (!out.excluded[k]) {
            out.shares[k] = a[k] / (hi - compute_time[k]);
            sum += out.shares[k];
        }
    if (sum > 1.0)
        for (auto& b : out.shares)
            b /= sum;
    out.finish = 0.0;
    for (std::size_t k = 0; k < K; ++k)
        if (!out.excluded[k]) {
            out.finish_time[k] = compute_time[k] + a[k] / out.shares[k];
            out.finish = std::max(out.finish, out.finish_time[k]);
        }
    return out;
}

// ---- round model --------------------------------------------------------------------------------------------------

RoundModel::RoundModel(const RoundInput& input, const ModelConfig& config, LinkMode mode)
    : input_(input), config_(config), mode_(mode) {
    input_.validate();
    config_.validate();
    const std::size_t K = input_.devices.size();
    const std::size_t n_cand = input_.devices[0].gain.size();
    for (const auto& d : input_.devices)
        total_signal_var_ += d.signal_var;

    order_.resize(n_cand);
    std::iota(order_.begin(), order_.end(), std::size_t{0});
    if (config_.carrier_order == CarrierOrder::Best) {
        std::vector<double> mean(K, 0.0);
        for (std::size_t k = 0; k < K; ++k)
            for (double g : input_.devices[k].gain)
                mean[k] += g / static_cast<double>(n_cand);
        std::vector<double> score(n_cand, std::numeric_limits<double>::infinity());
        for (std::size_t m = 0; m < n_cand; ++m) {
            for (std::size_t k = 0; k < K; ++k)
                if (mean[k] > 0.0)  // a device with no signal anywhere does not rank carriers
                    score[m] = std::min(score[m], input_.devices[k].gain[m] / mean[k]);
            if (!std::isfinite(score[m]))
                score[m] = 0.0;
        }
        std::stable_sort(order_.begin(), order_.end(),
                         [&](std::size_t x, std::size_t y) { return score[x] > score[y]; });
    }

    if (mode_ == LinkMode::AirComp) {
        for (std::size_t m : input_.timing.carrier_counts)
            per_count_.push_back(aircomp_figures(m));
    } else {
        // Power spectral density P_k / M_band on the device's share; effective SNR of the band:
        // log2(1 + snr_eff) = mean over the band of log2(1 + P_k g_k[m] / (M_band σ²)).
        band_ = input_.timing.carrier_counts.back();
        snr_.assign(K, 0.0);
        se_.assign(K, 0.0);
        for (std::size_t k = 0; k < K; ++k) {
            const auto& d = input_.devices[k];
            double mean_log2 = 0.0;
            for (std::size_t i = 0; i < band_; ++i)
                mean_log2 += std::log2(1.0 + d.budget * d.gain[order_[i]] /
                                                 (static_cast<double>(band_) * input_.noise_var));
            mean_log2 /= static_cast<double>(band_);
            snr_[k] = std::exp2(mean_log2) - 1.0;
            if (config_.spectral_efficiency) {
                se_[k] = config_.spectral_efficiency(snr_[k]);
                if (!std::isfinite(se_[k]) || se_[k] < 0.0)
                    fail("model.spectral_efficiency(" + fmt(snr_[k]) + ") returned " + fmt(se_[k]) +
                         ": must be finite and >= 0");
            } else {
                se_[k] = mean_log2;
            }
        }
    }
}

RoundModel::AircompFigures RoundModel::aircomp_figures(std::size_t M) const {
    // Truncated channel inversion on the carriers order_[0 .. M), per-carrier budgets P_k / M (phy/power_control.h):
    // device k silences carrier m when g_k[m] < g_th ḡ_k (ḡ_k its mean over the M carriers) or g_k[m] = 0;
    // η = min_k P_k / (v_k Σ_{m kept} 1/g_k[m]); MSE = (1/M) Σ_m Σ_{k silent on m} v_k + σ²/η.
    AircompFigures f;
    f.carriers = M;
    const std::size_t K = input_.devices.size();
    double eta = std::numeric_limits<double>::infinity(), lost = 0.0;
    std::size_t silent = 0;
    for (std::size_t k = 0; k < K; ++k) {
        const auto& d = input_.devices[k];
        double mean = 0.0;
        for (std::size_t i = 0; i < M; ++i)
            mean += d.gain[order_[i]] / static_cast<double>(M);
        double inv_sum = 0.0;
        std::size_t silent_k = 0;
        for (std::size_t i = 0; i < M; ++i) {
            const double g = d.gain[order_[i]];
            if (g >= config_.g_th * mean && g > 0.0)
                inv_sum += 1.0 / g;
            else
                ++silent_k;
        }
        if (inv_sum > 0.0)
            eta = std::min(eta, d.budget / (d.signal_var * inv_sum));
        lost += d.signal_var * static_cast<double>(silent_k);
        silent += silent_k;
    }
    f.truncated_fraction = static_cast<double>(silent) / static_cast<double>(K * M);
    if (!std::isfinite(eta)) {  // every device silent on every carrier: nothing gets through
        f.eta = 0.0;
        f.mse = std::numeric_limits<double>::infinity();
        return f;
    }
    f.eta = eta;
    f.mse = lost / static_cast<double>(M) + input_.noise_var / eta;
    return f;
}

std::size_t RoundModel::payload_values(double rho) const {
    std::size_t d = 0;
    for (const auto& l : input_.layers)
        d += kept_rank_count(l.rank, rho) * l.values_per_rank;
    return d;
}

double RoundModel::sparsification_error(double rho) const {
    // Energy fraction of the components not kept. Without importances for every layer (or with all of them zero,
    // e.g. a fresh adapter), every component counts the same.
    double dropped = 0.0, total = 0.0;
    bool known = true;
    for (const auto& l : input_.layers)
        known = known && !l.importance.empty();
    if (known) {
        for (const auto& l : input_.layers) {
            const std::size_t m = kept_rank_count(l.rank, rho);
            std::vector<double> sq(l.rank);
            for (std::size_t i = 0; i < l.rank; ++i)
                sq[i] = l.importance[i] * l.importance[i];
            const double energy = std::accumulate(sq.begin(), sq.end(), 0.0);
            total += energy;
            if (config_.support == SupportRule::Top) {
                std::sort(sq.begin(), sq.end());  // ascending: the r − m smallest are dropped
                dropped += std::accumulate(sq.begin(), sq.begin() + static_cast<std::ptrdiff_t>(l.rank - m), 0.0);
            } else {
                dropped += energy * static_cast<double>(l.rank - m) / static_cast<double>(l.rank);
            }
        }
    }
    if (!known || !(total > 0.0)) {
        dropped = 0.0;
        total = 0.0;
        for (const auto& l : input_.layers) {
            dropped += static_cast<double>(l.rank - kept_rank_count(l.rank, rho));
            total += static_cast<double>(l.rank);
        }
    }
    return std::clamp(dropped / total, 0.0, 1.0);
}

Prediction RoundModel::base(double rho) const {
    Prediction p;
    p.mode = mode_;
    p.rho = rho;
    for (const auto& l : input_.layers)
        p.kept_ranks.push_back(kept_rank_count(l.rank, rho));
    p.payload_values = payload_values(rho);
    p.sparsification_error = sparsification_error(rho);
    return p;
}

void RoundModel::finish_penalty(Prediction& p) const {
    if (!p.feasible) {
        p.aggregation_error = std::numeric_limits<double>::infinity();
        p.penalty = std::numeric_limits<double>::infinity();
        return;
    }
    const double factor = config_.noise_scales_with_payload
                              ? static_cast<double>(p.payload_values) / static_cast<double>(payload_values(1.0))
                              : 1.0 - p.sparsification_error;
    p.aggregation_error = factor * p.aggregation_nmse;
    p.penalty = config_.weight_sparsification * p.sparsification_error +
                config_.weight_aggregation * p.aggregation_error;
}

Prediction RoundModel::aircomp(double rho, std::size_t M) const {
    if (mode_ != LinkMode::AirComp)
        fail("RoundModel::aircomp called on a digital-mode model");
    const std::size_t n_cand = order_.size();
    if (M < 1 || M > n_cand)
        fail("carriers = " + std::to_string(M) + " must be in [1, " + std::to_string(n_cand) + "]");
    Prediction p = base(rho);
    const auto& counts = input_.timing.carrier_counts;
    const auto it = std::find(counts.begin(), counts.end(), M);
    const AircompFigures f = it != counts.end() ? per_count_[static_cast<std::size_t>(it - counts.begin())]
                                                : aircomp_figures(M);
    const auto& t = input_.timing;
    p.carriers = M;
    p.carrier_positions.assign(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(M));
    std::sort(p.carrier_positions.begin(), p.carrier_positions.end());
    for (const auto& d : input_.devices) {
        p.carrier_budget.push_back(d.budget / static_cast<double>(M));
        p.compute_time = std::max(p.compute_time, d.compute_time);
    }
    p.payload_symbols = ceil_div(ceil_div(p.payload_values, 2), M);
    p.eta = f.eta;
    p.truncated_fraction = f.truncated_fraction;
    p.airtime = (static_cast<double>(p.payload_symbols) + t.overhead_symbols) * t.symbol_duration + t.overhead_time;
    p.latency = p.compute_time + p.airtime;
    p.feasible = f.eta > 0.0;
    p.aggregation_nmse = f.mse / total_signal_var_;
    finish_penalty(p);
    return p;
}

namespace {

// κ² = (max|x| / rms)² of a d-value update: given, or 2 ln d (Gaussian entries).
double crest_sq(double peak_to_rms, std::size_t d) {
    if (peak_to_rms > 0.0)
        return peak_to_rms * peak_to_rms;
    return 2.0 * std::log(std::max<double>(static_cast<double>(d), 2.0));
}

}  // namespace

Prediction RoundModel::digital(double rho) const {
    if (mode_ != LinkMode::Digital)
        fail("RoundModel::digital called on an aircomp-mode model");
    Prediction p = base(rho);
    const std::size_t K = input_.devices.size();
    std::vector<double> bits(K, 0.0), cmp(K, 0.0);
    bool any = false;
    for (std::size_t k = 0; k < K; ++k) {
        cmp[k] = input_.devices[k].compute_time;
        if (se_[k] > 0.0) {
            bits[k] = config_.quant_bits * static_cast<double>(p.payload_values) + config_.header_bits;
            any = true;
        }
    }
    if (!any) {  // no device can send: report, let the controller refuse
        p.carriers = band_;
        p.device_snr = snr_;
        p.spectral_efficiency = se_;
        p.shares.assign(K, 0.0);
        p.payload_bits.assign(K, 0.0);
        p.finish_time.assign(K, 0.0);
        p.excluded.assign(K, 1);
        p.aggregation_nmse = 1.0;
        p.feasible = false;
        finish_penalty(p);
        return p;
    }
    const auto alloc = equalise_finish_times(bits, se_, cmp, band_, input_.timing.symbol_duration);
    return digital(rho, alloc.shares);
}

std::vector<double> RoundModel::equal_shares() const {
    std::vector<double> s(se_.size(), 0.0);
    const auto n = static_cast<double>(std::count_if(se_.begin(), se_.end(), [](double x) { return x > 0.0; }));
    for (std::size_t k = 0; k < s.size(); ++k)
        if (se_[k] > 0.0)
            s[k] = 1.0 / n;
    return s;
}

Prediction RoundModel::digital(double rho, const std::vector<double>& shares) const {
    if (mode_ != LinkMode::Digital)
        fail("RoundModel::digital called on an aircomp-mode model");
    const std::size_t K = input_.devices.size();
    if (shares.size() != K)
        fail("shares has " + std::to_string(shares.size()) + " values for " + std::to_string(K) + " devices");
    double sum = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
        require_finite_nonneg(shares[k], at("shares", k));
        sum += shares[k];
    }
    if (sum > 1.0 + 1e-9)
        fail("shares sum to " + fmt(sum) + " > 1");
    Prediction p = base(rho);
    const auto& t = input_.timing;
    p.carriers = band_;
    p.device_snr = snr_;
    p.spectral_efficiency = se_;
    p.shares.assign(K, 0.0);
    p.payload_bits.assign(K, 0.0);
    p.finish_time.assign(K, 0.0);
    p.excluded.assign(K, 0);
    const double bits = config_.quant_bits * static_cast<double>(p.payload_values) + config_.header_bits;
    const double q_levels = std::exp2(config_.quant_bits) - 1.0;
    // Per-entry NMSE relative to Σ v: each sending device adds v_k κ²/(2^q − 1)² (stochastic rounding, step
    // Δ = 2 max|x| / (2^q − 1), variance ≤ Δ²/4); a device that cannot send loses all of its v_k.
    double err = 0.0, finish = 0.0;
    bool any = false;
    for (std::size_t k = 0; k < K; ++k) {
        const auto& d = input_.devices[k];
        if (!(se_[k] > 0.0) || !(shares[k] > 0.0)) {
            p.excluded[k] = 1;
            err += d.signal_var;
            continue;
        }
        any = true;
        p.shares[k] = shares[k];
        p.payload_bits[k] = bits;
        p.finish_time[k] = d.compute_time + bits * t.symbol_duration /
                                                (shares[k] * static_cast<double>(band_) * se_[k]);
        finish = std::max(finish, p.finish_time[k]);
        p.compute_time = std::max(p.compute_time, d.compute_time);
        err += d.signal_var * crest_sq(config_.peak_to_rms, p.payload_values) / (q_levels * q_levels);
    }
    p.feasible = any;
    p.latency = finish + t.overhead_symbols * t.symbol_duration + t.overhead_time;
    p.airtime = p.latency - p.compute_time;
    p.aggregation_nmse = err / total_signal_var_;
    finish_penalty(p);
    return p;
}

}  // namespace fedlora::control
