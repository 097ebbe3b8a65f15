// TSFA controllers (online drift-plus-penalty, fixed baseline) and the offline rank choice
// (docs/math.md, "TSFA controller").
#include "fedlora/control/tsfa.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "checks.h"

namespace fedlora::control {

namespace {

using detail::at;
using detail::fail;
using detail::fmt;
using detail::require_finite_nonneg;
using detail::require_finite_pos;

ControllerConfig validated(const ControllerConfig& c) {
    c.validate();
    return c;
}

// Strict order of candidates: objective, then latency, then penalty; an exact tie keeps the earlier one.
bool better(double j, const Prediction& p, double best_j, const Prediction& best) {
    if (j != best_j)
        return j < best_j;
    if (p.latency != best.latency)
        return p.latency < best.latency;
    return p.penalty < best.penalty;
}

[[noreturn]] void nothing_gets_through() {
    fail("no candidate lets anything through: every device is silent on every candidate carrier or has zero rate "
         "(devices[].gain)");
}

// Doubles travel as the 16 hex digits of their bit pattern: exact, locale-free.
std::string bits_of(double x) {
    std::uint64_t u;
    std::memcpy(&u, &x, sizeof u);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016" PRIx64, u);
    return buf;
}

double double_of(const std::string& hex, const std::string& field) {
    if (hex.size() != 16 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
        fail("state blob: " + field + " = '" + hex + "' is not 16 lowercase hex digits");
    const std::uint64_t u = std::stoull(hex, nullptr, 16);
    double x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

constexpr const char* kStateMagic = "fedlora-control-state";
constexpr int kStateVersion = 1;

}  // namespace

void ControllerConfig::validate() const {
    require_finite_pos(v_weight, "v_weight");
    require_finite_pos(latency_budget, "latency_budget");
    for (std::size_t i = 0; i < rho_grid.size(); ++i)
        if (!(rho_grid[i] > 0.0 && rho_grid[i] <= 1.0))
            fail(at("rho_grid", i) + " = " + fmt(rho_grid[i]) + " must be in (0, 1]");
    model.validate();
    if (!(fixed_rho > 0.0 && fixed_rho <= 1.0))
        fail("fixed_rho = " + fmt(fixed_rho) + " must be in (0, 1]");
}

// ---- controllers ----------------------------------------------------------------------------------------------------

Controller::Controller(const ControllerConfig& config)
    : config_(validated(config)), queue_(config_.latency_budget) {}

std::vector<double> Controller::rho_grid(const RoundInput& input) const {
    if (!config_.rho_grid.empty())
        return config_.rho_grid;
    std::size_t r = 1;
    for (const auto& l : input.layers)
        r = std::max(r, l.rank);
    std::vector<double> grid;
    for (std::size_t i = 1; i <= r; ++i)
        grid.push_back(static_cast<double>(i) / static_cast<double>(r));
    return grid;
}

double Controller::objective(double v, double z, const Prediction& p) const {
    if (!config_.exact_drift)
        return v * p.penalty + z * p.latency;
    const double next = std::max(z + p.latency - config_.latency_budget, 0.0);
    return v * p.penalty + 0.5 * next * next;
}

Decision Controller::finish(const Prediction& p, double objective, std::size_t candidates) const {
    Decision d;
    static_cast<Prediction&>(d) = p;
    d.controller = name();
    d.v_weight = config_.v_weight;
    d.queue_before = queue_.backlog();
    d.queue_after = queue_.after(p.latency);
    d.objective = objective;
    d.candidates = candidates;
    return d;
}

Decision TsfaController::decide(const RoundInput& input) const {
    const RoundModel model(input, config_.model, config_.mode);
    const double V = config_.v_weight, Z = queue_.backlog();
    Prediction best;
    double best_j = std::numeric_limits<double>::infinity();
    bool found = false;
    std::size_t n = 0;
    auto consider = [&](const Prediction& p) {
        ++n;
        if (!p.feasible)
            return;
        const double j = objective(V, Z, p);
        if (!found || better(j, p, best_j, best)) {
            best = p;
            best_j = j;
            found = true;
        }
    };
    for (double rho : rho_grid(input)) {
        if (config_.mode == LinkMode::AirComp) {
            for (std::size_t M : input.timing.carrier_counts)
                consider(model.aircomp(rho, M));
        } else {
            consider(model.digital(rho));
        }
    }
    if (!found)
        nothing_gets_through();
    return finish(best, best_j, n);
}

FixedController::FixedController(const ControllerConfig& config) : Controller(config) {}

Decision FixedController::decide(const RoundInput& input) const {
    const RoundModel model(input, config_.model, config_.mode);
    Prediction p;
    if (config_.mode == LinkMode::AirComp) {
        const std::size_t M = config_.fixed_carriers ? config_.fixed_carriers : input.timing.carrier_counts.back();
        const std::size_t n_cand = input.devices[0].gain.size();
        if (M > n_cand)
            fail("fixed_carriers = " + std::to_string(M) + " exceeds the " + std::to_string(n_cand) +
                 " candidate carriers of devices[].gain");
        p = model.aircomp(config_.fixed_rho, M);
    } else {
        p = model.digital(config_.fixed_rho, model.equal_shares());
    }
    if (!p.feasible)
        nothing_gets_through();
    return finish(p, objective(config_.v_weight, queue_.backlog(), p), 1);
}

std::unique_ptr<Controller> make_controller(const std::string& name, const ControllerConfig& config) {
    if (name == "tsfa")
        return std::make_unique<TsfaController>(config);
    if (name == "fixed")
        return std::make_unique<FixedController>(config);
    throw std::invalid_argument("control: controller '" + name + "' is unknown (choose tsfa or fixed)");
}

std::string Controller::serialize() const {
    // One line of space-separated key/value pairs, so that any text field of a checkpoint can hold it.
    std::ostringstream os;
    os << kStateMagic << ' ' << kStateVersion << " controller " << name() << " mode " << to_string(config_.mode)
       << " v_weight " << bits_of(config_.v_weight) << " latency_budget " << bits_of(config_.latency_budget)
       << " backlog " << bits_of(queue_.backlog()) << " updates " << queue_.updates() << " sum "
       << bits_of(queue_.sum()) << " end";
    return os.str();
}

void Controller::deserialize(const std::string& blob) {
    std::istringstream is(blob);
    std::string magic;
    int version = 0;
    if (!(is >> magic >> version) || magic != kStateMagic)
        fail("state blob does not start with '" + std::string(kStateMagic) + "'");
    if (version != kStateVersion)
        fail("state blob version " + std::to_string(version) + " is not supported (expected " +
             std::to_string(kStateVersion) + ")");
    auto field = [&](const char* key) {
        std::string k, v;
        if (!(is >> k >> v) || k != key)
            fail(std::string("state blob: expected field '") + key + "', found '" + k + "'");
        return v;
    };
    const std::string ctrl = field("controller");
    if (ctrl != name())
        fail("state blob: controller = '" + ctrl + "' but this controller is '" + name() + "'");
    const std::string mode = field("mode");
    if (mode != to_string(config_.mode))
        fail("state blob: mode = '" + mode + "' but the config says '" + to_string(config_.mode) + "'");
    const double v = double_of(field("v_weight"), "v_weight");
    if (v != config_.v_weight)
        fail("state blob: v_weight = " + fmt(v) + " but the config says " + fmt(config_.v_weight));
    const double budget = double_of(field("latency_budget"), "latency_budget");
    if (budget != config_.latency_budget)
        fail("state blob: latency_budget = " + fmt(budget) + " but the config says " + fmt(config_.latency_budget));
    const double backlog = double_of(field("backlog"), "backlog");
    const std::string updates = field("updates");
    if (updates.empty() || updates.find_first_not_of("0123456789") != std::string::npos)
        fail("state blob: updates = '" + updates + "' is not a count");
    const double sum = double_of(field("sum"), "sum");
    std::string end;
    if (!(is >> end) || end != "end")
        fail("state blob is truncated (no 'end')");
    queue_.restore(backlog, static_cast<std::size_t>(std::stoull(updates)), sum);
}

// ---- offline stage ----------------------------------------------------------------------------------------------------

void OfflineInput::validate() const {
    if (mean_snr.empty())
        fail("offline: mean_snr is empty (no devices)");
    for (std::size_t k = 0; k < mean_snr.size(); ++k)
        require_finite_pos(mean_snr[k], at("offline: mean_snr", k));
    if (reference_carriers < 1)
        fail("offline: reference_carriers = 0 must be >= 1");
    if (compute_time.size() != mean_snr.size())
        fail("offline: compute_time has " + std::to_string(compute_time.size()) + " values for " +
             std::to_string(mean_snr.size()) + " devices");
    for (std::size_t k = 0; k < compute_time.size(); ++k)
        require_finite_nonneg(compute_time[k], at("offline: compute_time", k));
    if (layers.empty())
        fail("offline: layers is empty");
    for (std::size_t l = 0; l < layers.size(); ++l)
        if (layers[l].in < 1 || layers[l].out < 1)
            fail("offline: " + at("layers", l) + " has in = " + std::to_string(layers[l].in) +
                 ", out = " + std::to_string(layers[l].out) + " (both must be >= 1)");
    const auto& c = timing.carrier_counts;
    if (c.empty())
        fail("offline: timing.carrier_counts is empty");
    for (std::size_t i = 0; i < c.size(); ++i)
        if (c[i] < 1 || (i > 0 && c[i] <= c[i - 1]))
            fail("offline: " + at("timing.carrier_counts", i) + " = " + std::to_string(c[i]) +
                 ": counts must be >= 1 and strictly increasing");
    require_finite_pos(timing.symbol_duration, "offline: timing.symbol_duration");
    require_finite_nonneg(timing.overhead_symbols, "offline: timing.overhead_symbols");
    require_finite_nonneg(timing.overhead_time, "offline: timing.overhead_time");
    if (rank_candidates.empty())
        fail("offline: rank_candidates is empty");
    std::set<std::size_t> seen;
    for (std::size_t i = 0; i < rank_candidates.size(); ++i) {
        if (rank_candidates[i] < 1)
            fail("offline: " + at("rank_candidates", i) + " = 0 must be >= 1");
        if (!seen.insert(rank_candidates[i]).second)
            fail("offline: " + at("rank_candidates", i) + " = " + std::to_string(rank_candidates[i]) +
                 " is listed twice");
    }
}

void RankModel::validate() const {
    require_finite_pos(spectrum_exponent, "rank_model.spectrum_exponent");
    double total = 0.0;
    for (std::size_t j = 0; j < spectrum.size(); ++j) {
        require_finite_nonneg(spectrum[j], at("rank_model.spectrum", j));
        total += spectrum[j] * spectrum[j];
    }
    if (!spectrum.empty() && !(total > 0.0))
        fail("rank_model.spectrum is all zero");
    require_finite_nonneg(latency_weight, "rank_model.latency_weight");
    require_finite_nonneg(compute_time_per_rank, "rank_model.compute_time_per_rank");
}

std::vector<double> mean_carrier_snr(const RoundInput& round, std::size_t carriers) {
    round.validate();
    const std::size_t n_cand = round.devices[0].gain.size();
    if (carriers < 1 || carriers > n_cand)
        fail("carriers = " + std::to_string(carriers) + " must be in [1, " + std::to_string(n_cand) + "]");
    std::vector<double> snr;
    for (const auto& d : round.devices) {
        double mean = 0.0;
        for (std::size_t m = 0; m < carriers; ++m)
            mean += d.gain[m] / static_cast<double>(carriers);
        snr.push_back(d.budget * mean / (static_cast<double>(carriers) * round.noise_var));
    }
    return snr;
}

namespace {

// ε(r): the energy fraction beyond rank r of one layer's spectrum (squared singular values, any order).
double tail_fraction(std::vector<double> energy, std::size_t r) {
    std::sort(energy.begin(), energy.end(), [](double a, double b) { return a > b; });
    double total = 0.0, tail = 0.0;
    for (std::size_t j = 0; j < energy.size(); ++j) {
        total += energy[j];
        if (j >= r)
            tail += energy[j];
    }
    return total > 0.0 ? tail / total : 0.0;
}

std::size_t ceil_div(std::size_t n, std::size_t m) { return (n + m - 1) / m; }

}  // namespace

RankChoice choose_rank(const OfflineInput& input, const ControllerConfig& config, const RankModel& model) {
    input.validate();
    config.validate();
    model.validate();
    const auto& mc = config.model;
    if (config.mode == LinkMode::AirComp && !(mc.g_th > 0.0))
        fail("model.g_th = " + fmt(mc.g_th) +
             " must be > 0 for the offline rank choice in aircomp mode (inverting every Rayleigh fade costs "
             "unbounded power)");
    const std::size_t K = input.mean_snr.size();
    const auto& t = input.timing;
    const double T_bar = config.latency_budget;
    const double gamma_min = *std::min_element(input.mean_snr.begin(), input.mean_snr.end());
    const std::size_t r_max = *std::max_element(input.rank_candidates.begin(), input.rank_candidates.end());

    // Per-layer energy spectra.
    std::vector<std::vector<double>> spectra;
    for (const auto& l : input.layers) {
        std::vector<double> e;
        if (!model.spectrum.empty()) {
            for (double s : model.spectrum)
                e.push_back(s * s);
        } else {
            for (std::size_t j = 1; j <= std::min(l.in, l.out); ++j)
                e.push_back(std::pow(static_cast<double>(j), -2.0 * model.spectrum_exponent));
        }
        spectra.push_back(std::move(e));
    }
    auto payload = [&](std::size_t r) {
        std::size_t d = 0;
        for (const auto& l : input.layers)
            d += r * (l.values_per_rank ? l.values_per_rank : l.in + l.out);
        return d;
    };

    RankChoice choice;
    for (std::size_t r : input.rank_candidates) {
        RankCandidate c;
        c.rank = r;
        for (const auto& e : spectra)
            c.truncation_error += tail_fraction(e, r) / static_cast<double>(spectra.size());
        const std::size_t d = payload(r);
        if (config.mode == LinkMode::AirComp) {
            // All devices transmit at once after the slowest has trained; the fewest carriers that meet T̄ give the
            // most power per carrier.
            const double cmp = *std::max_element(input.compute_time.begin(), input.compute_time.end()) +
                               static_cast<double>(r) * model.compute_time_per_rank;
            auto latency = [&](std::size_t M) {
                const double symbols = static_cast<double>(ceil_div(ceil_div(d, 2), M)) + t.overhead_symbols;
                return cmp + symbols * t.symbol_duration + t.overhead_time;
            };
            c.carriers = t.carrier_counts.back();
            for (std::size_t M : t.carrier_counts)
                if (latency(M) <= T_bar) {
                    c.carriers = M;
                    break;
                }
            c.latency = latency(c.carriers);
            // Ergodic truncated inversion in Rayleigh fading (docs/math.md): relative to K v,
            // NMSE = (1 − e^{−g_th}) + E1(g_th) / (K γ̄_min(M)), γ̄_k(M) = γ̄_k M_ref / M.
            const double gamma = gamma_min * static_cast<double>(input.reference_carriers) /
                                 static_cast<double>(c.carriers);
            c.aggregation_nmse =
                -std::expm1(-mc.g_th) + expint_e1(mc.g_th) / (static_cast<double>(K) * gamma);
        } else {
            const std::size_t band = t.carrier_counts.back();
            std::vector<double> bits(K), se(K), cmp(K);
            for (std::size_t k = 0; k < K; ++k) {
                const double gamma = input.mean_snr[k] * static_cast<double>(input.reference_carriers) /
                                     static_cast<double>(band);
                se[k] = mc.spectral_efficiency ? mc.spectral_efficiency(gamma) : rayleigh_ergodic_capacity(gamma);
                if (!std::isfinite(se[k]) || se[k] < 0.0)
                    fail("model.spectral_efficiency(" + fmt(gamma) + ") returned " + fmt(se[k]) +
                         ": must be finite and >= 0");
                bits[k] = mc.quant_bits * static_cast<double>(d) + mc.header_bits;
                cmp[k] = input.compute_time[k] + static_cast<double>(r) * model.compute_time_per_rank;
            }
            const auto alloc = equalise_finish_times(bits, se, cmp, band, t.symbol_duration);
            c.carriers = band;
            c.latency = alloc.finish + t.overhead_symbols * t.symbol_duration + t.overhead_time;
            const double q_levels = std::exp2(mc.quant_bits) - 1.0;
            const double kappa_sq = mc.peak_to_rms > 0.0
                                        ? mc.peak_to_rms * mc.peak_to_rms
                                        : 2.0 * std::log(std::max(static_cast<double>(d), 2.0));
            double lost = 0.0;
            for (auto x : alloc.excluded)
                lost += x ? 1.0 : 0.0;
            c.aggregation_nmse = ((static_cast<double>(K) - lost) * kappa_sq / (q_levels * q_levels) + lost) /
                                 static_cast<double>(K);
        }
        const double factor = mc.noise_scales_with_payload
                                  ? static_cast<double>(d) / static_cast<double>(payload(r_max))
                                  : 1.0 - c.truncation_error;
        c.aggregation_error = factor * c.aggregation_nmse;
        c.latency_excess = std::max(c.latency - T_bar, 0.0) / T_bar;
        c.proxy = mc.weight_sparsification * c.truncation_error + mc.weight_aggregation * c.aggregation_error +
                  model.latency_weight * c.latency_excess;
        if (choice.candidates.empty() || c.proxy < choice.proxy ||
            (c.proxy == choice.proxy && c.rank < choice.rank)) {
            choice.rank = c.rank;
            choice.proxy = c.proxy;
        }
        choice.candidates.push_back(c);
    }
    return choice;
}

}  // namespace fedlora::control
