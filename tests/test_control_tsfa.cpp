// TSFA controller: round models against independent references (phy power control and OFDMA airtime, closed forms,
// brute force over the grid), drift-plus-penalty behaviour, offline rank choice, state round trip, input checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedlora/control/round_model.h"
#include "fedlora/control/tsfa.h"
#include "fedlora/phy/digital.h"
#include "fedlora/phy/power_control.h"

using namespace fedlora::control;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// A narrowband testbed where airtime matters: FFT 64 + CP 16 at 1 MS/s (80 µs symbols), up to 48 data carriers,
// 8 adapted layers of rank 8 with in + out = 1536 (d(1) = 98 304 reals: 1024 OFDM symbols on 48 carriers).
RoundTiming narrowband_timing() {
    RoundTiming t;
    t.carrier_counts = {8, 16, 24, 32, 40, 48};
    t.symbol_duration = 80e-6;
    t.overhead_symbols = 30.0;
    t.overhead_time = 2e-3;
    return t;
}

std::vector<LayerGeometry> decaying_layers(std::size_t n_layers = 8, std::size_t rank = 8) {
    std::vector<LayerGeometry> layers;
    for (std::size_t l = 0; l < n_layers; ++l) {
        LayerGeometry g;
        g.rank = rank;
        g.values_per_rank = 1536;
        for (std::size_t i = 0; i < rank; ++i)
            g.importance.push_back(1.0 / static_cast<double>(i + 1 + (l + i) % 3));  // decaying, out of order
        layers.push_back(g);
    }
    return layers;
}

// K devices, Rayleigh block fading per carrier (i.i.d. Exp(1) fading on top of a per-device path gain), total
// power P = 48 (power 1 per carrier on the full band), noise σ² = 10^(−snr_db/10): the mean per-carrier SNR on the
// full band is snr_db plus the path gain.
RoundInput rayleigh_round(std::mt19937_64& rng, std::size_t K, double snr_db, double path_spread_db = 6.0) {
    RoundInput in;
    in.timing = narrowband_timing();
    in.layers = decaying_layers();
    in.noise_var = std::pow(10.0, -snr_db / 10.0);
    std::exponential_distribution<double> fade(1.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (std::size_t k = 0; k < K; ++k) {
        DeviceReport d;
        const double path = std::pow(10.0, -path_spread_db * u(rng) / 10.0);
        for (std::size_t m = 0; m < 48; ++m)
            d.gain.push_back(path * fade(rng));
        d.budget = 48.0;
        d.compute_time = 0.10 + 0.10 * u(rng);
        in.devices.push_back(d);
    }
    return in;
}

RoundInput flat_round(std::size_t K, double gain, double noise_var) {
    RoundInput in;
    in.timing = narrowband_timing();
    in.layers = decaying_layers();
    in.noise_var = noise_var;
    for (std::size_t k = 0; k < K; ++k) {
        DeviceReport d;
        d.gain.assign(48, gain);
        d.budget = 48.0 * (1.0 + 0.5 * static_cast<double>(k));
        d.compute_time = 0.1 + 0.02 * static_cast<double>(k);
        d.signal_var = 1.0 - 0.1 * static_cast<double>(k);
        in.devices.push_back(d);
    }
    return in;
}

ControllerConfig aircomp_config(double v = 0.1, double budget = 0.3) {
    ControllerConfig c;
    c.mode = LinkMode::AirComp;
    c.v_weight = v;
    c.latency_budget = budget;
    return c;
}

// Brings a fresh controller's backlog to z by one observed round of latency T̄ + z.
void set_backlog(Controller& c, double z) {
    c.observe_latency(c.config().latency_budget + z);
    ASSERT_NEAR(c.backlog(), z, 1e-12);
}

template <class F>
void expect_invalid(F f, const std::string& needle) {
    try {
        f();
        ADD_FAILURE() << "no exception; expected std::invalid_argument naming '" << needle << "'";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
            << "message '" << e.what() << "' does not name '" << needle << "'";
    }
}

// Independent sparsification error of one set of layers (top support): dropped energy of the smallest r − m.
double reference_sparsification(const std::vector<LayerGeometry>& layers, double rho) {
    double dropped = 0.0, total = 0.0;
    for (const auto& l : layers) {
        auto s = l.importance;
        std::sort(s.begin(), s.end(), std::greater<double>());
        const auto m = static_cast<std::size_t>(std::ceil(rho * l.rank - 1e-9));
        for (std::size_t i = 0; i < s.size(); ++i) {
            total += s[i] * s[i];
            if (i >= m)
                dropped += s[i] * s[i];
        }
    }
    return dropped / total;
}

}  // namespace

// ---- building blocks ---------------------------------------------------------------------------------------------

TEST(TsfaModel, KeptRankCountMatchesCeilWithTolerance) {
    EXPECT_EQ(kept_rank_count(10, 0.3), 3u);  // 0.3·10 = 3.0000000000000004
    EXPECT_EQ(kept_rank_count(8, 1.0 / 8.0), 1u);
    EXPECT_EQ(kept_rank_count(8, 0.01), 1u);
    EXPECT_EQ(kept_rank_count(7, 0.5), 4u);
    EXPECT_EQ(kept_rank_count(8, 1.0), 8u);
    for (std::size_t i = 1; i <= 16; ++i)
        EXPECT_EQ(kept_rank_count(16, static_cast<double>(i) / 16.0), i);
    expect_invalid([] { kept_rank_count(8, 0.0); }, "rho");
    expect_invalid([] { kept_rank_count(8, 1.0000001); }, "rho");
    expect_invalid([] { kept_rank_count(8, kNaN); }, "rho");
}

TEST(TsfaModel, SparsificationErrorByHandAndByRule) {
    RoundInput in = flat_round(1, 1.0, 0.01);
    in.layers.clear();
    LayerGeometry a;
    a.rank = 3;
    a.values_per_rank = 10;
    a.importance = {3.0, 1.0, 2.0};  // energies 9, 1, 4
    LayerGeometry b;
    b.rank = 2;
    b.values_per_rank = 5;
    b.importance = {0.0, 2.0};  // energies 0, 4
    in.layers = {a, b};
    ModelConfig mc;
    const RoundModel top(in, mc, LinkMode::AirComp);
    // ρ = 1/3: layer a keeps 1 (the 3: drops 1 + 4), layer b keeps 1 (the 2: drops 0). Total energy 18.
    EXPECT_NEAR(top.sparsification_error(1.0 / 3.0), 5.0 / 18.0, 1e-15);
    EXPECT_EQ(top.payload_values(1.0 / 3.0), 1u * 10u + 1u * 5u);
    // ρ = 0.5: a keeps 2 (drops 1), b keeps 1.
    EXPECT_NEAR(top.sparsification_error(0.5), 1.0 / 18.0, 1e-15);
    EXPECT_EQ(top.payload_values(1.0), 40u);
    EXPECT_EQ(top.sparsification_error(1.0), 0.0);
    // Seeded support: expected fraction (r − m)/r of each layer's energy: (2/3)·14 + (1/2)·4 = 34/3 of 18.
    mc.support = SupportRule::Seeded;
    const RoundModel seeded(in, mc, LinkMode::AirComp);
    EXPECT_NEAR(seeded.sparsification_error(1.0 / 3.0), (34.0 / 3.0) / 18.0, 1e-15);
    // A fresh adapter (all importances zero) or unknown importances: every component counts the same.
    for (auto& l : in.layers)
        std::fill(l.importance.begin(), l.importance.end(), 0.0);
    const RoundModel fresh(in, ModelConfig{}, LinkMode::AirComp);
    EXPECT_NEAR(fresh.sparsification_error(1.0 / 3.0), 3.0 / 5.0, 1e-15);  // drops 2 of 3 and 1 of 2
    in.layers[0].importance.clear();
    in.layers[1].importance = {1.0, 5.0};
    const RoundModel partial(in, ModelConfig{}, LinkMode::AirComp);
    EXPECT_NEAR(partial.sparsification_error(1.0 / 3.0), 3.0 / 5.0, 1e-15);
}

TEST(TsfaModel, ExponentialIntegralAgreesWithPhyAndQuadrature) {
    for (double x : {1e-8, 1e-3, 0.1, 0.5, 0.999, 1.0, 1.001, 2.0, 5.0, 20.0, 50.0, 300.0}) {
        const double ref = fedlora::phy::expint_e1(x);
        EXPECT_NEAR(expint_e1(x), ref, 1e-12 * ref) << "x = " << x;
        EXPECT_NEAR(expint_e1_scaled(x), std::exp(x) * ref, 1e-12 * std::exp(x) * ref) << "x = " << x;
    }
    // Scaled form stays finite where e^x overflows: e^x E1(x) ~ (1/x)(1 − 1/x + 2/x² − 6/x³).
    for (double x : {1e3, 1e5}) {
        const double asym = (1.0 - 1.0 / x + 2.0 / (x * x) - 6.0 / (x * x * x)) / x;
        EXPECT_NEAR(expint_e1_scaled(x), asym, 1e-9 * asym);
    }
    // Ergodic capacity E[log2(1 + γX)] against a midpoint-rule quadrature of ∫ e^{−x} log2(1 + γx) dx.
    for (double gamma : {0.01, 1.0, 10.0, 1000.0}) {
        double q = 0.0;
        const double h = 1e-4;
        for (double x = h / 2; x < 60.0; x += h)
            q += std::exp(-x) * std::log2(1.0 + gamma * x) * h;
        EXPECT_NEAR(rayleigh_ergodic_capacity(gamma), q, 1e-6 * std::max(q, 1.0)) << "gamma = " << gamma;
    }
    expect_invalid([] { expint_e1(0.0); }, "x");
}

TEST(TsfaModel, AircompPredictionEqualsPhyTruncatedInversionPlan) {
    // The controller predicts exactly what fedlora::phy::plan_power computes for the "truncated" policy with the
    // per-carrier budgets P_k / M on the M occupied carriers (perfect CSI).
    std::mt19937_64 rng(11);
    std::normal_distribution<double> n01(0.0, std::sqrt(0.5));
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int trial = 0; trial < 12; ++trial) {
        const std::size_t K = 1 + trial % 5, L = 64;
        RoundInput in;
        in.timing.carrier_counts = {8, 20, 33, 64};
        in.timing.symbol_duration = 1e-4;
        in.layers = decaying_layers(2, 4);
        in.noise_var = 0.05 + u(rng);
        std::vector<std::complex<double>> h(K * L);
        for (std::size_t k = 0; k < K; ++k) {
            DeviceReport d;
            const double path = 0.2 + u(rng);
            for (std::size_t m = 0; m < L; ++m) {
                h[k * L + m] = std::sqrt(path) * std::complex<double>(n01(rng), n01(rng));
                d.gain.push_back(std::norm(h[k * L + m]));
            }
            d.budget = 5.0 + 50.0 * u(rng);
            d.signal_var = 0.3 + 0.7 * u(rng);
            in.devices.push_back(d);
        }
        ModelConfig mc;
        mc.g_th = trial % 3 == 0 ? 0.0 : 0.05 * trial;
        const RoundModel model(in, mc, LinkMode::AirComp);
        for (std::size_t M : in.timing.carrier_counts) {
            const Prediction p = model.aircomp(1.0, M);
            std::vector<std::complex<double>> hm(K * M);
            fedlora::phy::PowerControlConfig pc;
            pc.policy = fedlora::phy::PowerPolicy::Truncated;
            pc.g_th = mc.g_th;
            pc.noise_var = in.noise_var;
            double total_v = 0.0;
            for (std::size_t k = 0; k < K; ++k) {
                for (std::size_t m = 0; m < M; ++m)
                    hm[k * M + m] = h[k * L + m];
                pc.budget.push_back(p.carrier_budget[k]);
                pc.signal_var.push_back(in.devices[k].signal_var);
                total_v += in.devices[k].signal_var;
            }
            const auto plan = fedlora::phy::plan_power(hm, K, M, pc);
            EXPECT_NEAR(p.aggregation_nmse * total_v, plan.mse, 1e-10 * plan.mse) << "trial " << trial << " M " << M;
            EXPECT_NEAR(p.eta, plan.eta[0], 1e-10 * plan.eta[0]);
            EXPECT_NEAR(p.truncated_fraction, plan.truncated_fraction, 1e-12);
            EXPECT_EQ(p.carrier_positions.size(), M);
            EXPECT_EQ(p.carrier_positions.back(), M - 1);  // leading order
        }
    }
}

TEST(TsfaModel, AircompFlatChannelClosedForms) {
    // Flat gains g: nothing is truncated (g = mean ≥ g_th·mean), Σ 1/g = M/g, η = min_k P_k g/(v_k M), so
    // MSE = σ² M max_k v_k/(P_k g): linear in M (total noise N₀B over a fixed total power).
    const double g = 0.8, s2 = 0.02;
    const RoundInput in = flat_round(3, g, s2);
    const RoundModel model(in, ModelConfig{}, LinkMode::AirComp);
    double total_v = 0.0, worst = 0.0;
    for (const auto& d : in.devices) {
        total_v += d.signal_var;
        worst = std::max(worst, d.signal_var / d.budget);
    }
    for (std::size_t M : in.timing.carrier_counts) {
        for (double rho : {0.125, 0.5, 1.0}) {
            const Prediction p = model.aircomp(rho, M);
            const double mse = s2 * static_cast<double>(M) * worst / g;
            EXPECT_NEAR(p.aggregation_nmse, mse / total_v, 1e-14);
            EXPECT_EQ(p.truncated_fraction, 0.0);
            const std::size_t d = 8 * static_cast<std::size_t>(std::ceil(rho * 8 - 1e-9)) * 1536;
            EXPECT_EQ(p.payload_values, d);
            const std::size_t symbols = (d / 2 + M - 1) / M;
            EXPECT_EQ(p.payload_symbols, symbols);
            EXPECT_NEAR(p.latency, 0.14 + (symbols + 30.0) * 80e-6 + 2e-3, 1e-14);
            const double e = reference_sparsification(in.layers, rho);
            EXPECT_NEAR(p.sparsification_error, e, 1e-14);
            EXPECT_NEAR(p.aggregation_error, (1.0 - e) * p.aggregation_nmse, 1e-15);
            EXPECT_NEAR(p.penalty, e + (1.0 - e) * p.aggregation_nmse, 1e-14);
            EXPECT_NEAR(p.carrier_budget[1], in.devices[1].budget / M, 1e-15);
        }
    }
    // Payload-scaled variant: e_agg = NMSE · d(ρ)/d(1).
    ModelConfig mc;
    mc.noise_scales_with_payload = true;
    const Prediction p = RoundModel(in, mc, LinkMode::AirComp).aircomp(0.25, 16);
    EXPECT_NEAR(p.aggregation_error, 0.25 * p.aggregation_nmse, 1e-15);
}

TEST(TsfaModel, BestCarriersAvoidAFadedSubband) {
    // Device 1 is deeply faded on the first 24 carriers: "best" occupies the other 24 and predicts less error.
    RoundInput in = flat_round(2, 1.0, 0.01);
    for (std::size_t m = 0; m < 24; ++m)
        in.devices[1].gain[m] = 1e-3;
    for (std::size_t m = 24; m < 48; ++m)
        in.devices[0].gain[m] = 0.9;  // slightly weaker for device 0, still far better than device 1's fade
    ModelConfig best;
    best.carrier_order = CarrierOrder::Best;
    const Prediction pb = RoundModel(in, best, LinkMode::AirComp).aircomp(1.0, 24);
    const Prediction pl = RoundModel(in, ModelConfig{}, LinkMode::AirComp).aircomp(1.0, 24);
    ASSERT_EQ(pb.carrier_positions.size(), 24u);
    EXPECT_EQ(pb.carrier_positions.front(), 24u);
    EXPECT_EQ(pb.carrier_positions.back(), 47u);
    EXPECT_LT(pb.aggregation_nmse, pl.aggregation_nmse);
    EXPECT_EQ(carrier_order_from_name("best"), CarrierOrder::Best);
    expect_invalid([] { carrier_order_from_name("random"); }, "random");
}

// ---- digital bandwidth allocation -------------------------------------------------------------------------------

TEST(TsfaDigital, SharesEqualiseFinishTimesAndFillTheBand) {
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int trial = 0; trial < 50; ++trial) {
        const std::size_t K = 1 + trial % 9;
        std::vector<double> bits(K), se(K), cmp(K);
        for (std::size_t k = 0; k < K; ++k) {
            bits[k] = 1e4 + 1e6 * u(rng);
            se[k] = 0.2 + 7.0 * u(rng);
            cmp[k] = 2.0 * u(rng);
        }
        if (trial % 4 == 0)
            cmp[0] = 10.0;  // one device whose training alone takes longer than everybody's whole round
        const auto a = equalise_finish_times(bits, se, cmp, 600, 1e-4);
        double sum = 0.0;
        for (std::size_t k = 0; k < K; ++k) {
            // Finish time recomputed from the shares, independently of the allocator's own figure.
            const double finish = cmp[k] + bits[k] * 1e-4 / (a.shares[k] * 600.0 * se[k]);
            EXPECT_NEAR(finish, a.finish, 1e-6) << "trial " << trial << " device " << k;
            EXPECT_GT(a.shares[k], 0.0);
            EXPECT_EQ(a.excluded[k], 0);
            sum += a.shares[k];
        }
        EXPECT_LE(sum, 1.0);
        EXPECT_GT(sum, 1.0 - 1e-9);
        EXPECT_GT(a.finish, *std::max_element(cmp.begin(), cmp.end()));
        if (trial % 4 == 0) {  // the slow device gets the largest share
            EXPECT_EQ(std::max_element(a.shares.begin(), a.shares.end()) - a.shares.begin(), 0);
        }
    }
}

TEST(TsfaDigital, EqualComputeTimesClosedForm) {
    // With T_cmp,k = T for all k: Σ a_k/(τ − T) = 1 gives τ = T + Σ a_k and β_k = a_k / Σ a_j.
    const std::vector<double> bits = {1e5, 3e5, 2e5}, se = {1.0, 2.0, 4.0}, cmp(3, 0.5);
    const double Ts = 2e-4;
    const auto a = equalise_finish_times(bits, se, cmp, 100, Ts);
    std::vector<double> need(3);
    for (int k = 0; k < 3; ++k)
        need[k] = bits[k] * Ts / (100.0 * se[k]);
    const double total = need[0] + need[1] + need[2];
    EXPECT_NEAR(a.finish, 0.5 + total, 1e-12);
    for (int k = 0; k < 3; ++k)
        EXPECT_NEAR(a.shares[k], need[k] / total, 1e-12);
}

TEST(TsfaDigital, ZeroRateDeviceIsExcludedAndAllZeroIsAnError) {
    const std::vector<double> bits = {1e5, 1e5, 1e5}, se = {2.0, 0.0, 3.0}, cmp = {0.1, 0.1, 0.3};
    const auto a = equalise_finish_times(bits, se, cmp, 100, 1e-4);
    EXPECT_EQ(a.excluded[1], 1);
    EXPECT_EQ(a.shares[1], 0.0);
    EXPECT_EQ(a.finish_time[1], 0.0);
    EXPECT_NEAR(a.finish_time[0], a.finish_time[2], 1e-9);
    EXPECT_NEAR(a.shares[0] + a.shares[2], 1.0, 1e-9);
    expect_invalid([&] { equalise_finish_times(bits, {0.0, 0.0, 0.0}, cmp, 100, 1e-4); }, "no device can send");
    expect_invalid([&] { equalise_finish_times(bits, {1.0, kNaN, 1.0}, cmp, 100, 1e-4); }, "spectral_efficiency[1]");
    expect_invalid([&] { equalise_finish_times(bits, se, {0.1, -1.0, 0.1}, 100, 1e-4); }, "compute_time[1]");

    // Through the round model: a device with zero gain everywhere is excluded, its update counted as lost.
    RoundInput in = flat_round(3, 1.0, 0.01);
    std::fill(in.devices[1].gain.begin(), in.devices[1].gain.end(), 0.0);
    const RoundModel model(in, ModelConfig{}, LinkMode::Digital);
    const Prediction p = model.digital(1.0);
    ASSERT_TRUE(p.feasible);
    EXPECT_EQ(p.excluded, (std::vector<unsigned char>{0, 1, 0}));
    EXPECT_EQ(p.shares[1], 0.0);
    EXPECT_EQ(p.payload_bits[1], 0.0);
    EXPECT_NEAR(p.finish_time[0], p.finish_time[2], 1e-9);
    const double q = 255.0, kappa2 = 2.0 * std::log(static_cast<double>(p.payload_values));
    const double v0 = in.devices[0].signal_var, v1 = in.devices[1].signal_var, v2 = in.devices[2].signal_var;
    EXPECT_NEAR(p.aggregation_nmse, ((v0 + v2) * kappa2 / (q * q) + v1) / (v0 + v1 + v2), 1e-14);
}

TEST(TsfaDigital, RatesFromMeasuredGainsAndPhyAirtime) {
    // Flat gain g: per-carrier SNR P g / (M_band σ²), spectral efficiency log2(1 + SNR).
    const double g = 0.5, s2 = 0.01;
    const RoundInput in = flat_round(3, g, s2);
    const RoundModel model(in, ModelConfig{}, LinkMode::Digital);
    const Prediction p = model.digital(0.5);
    for (std::size_t k = 0; k < 3; ++k) {
        const double snr = in.devices[k].budget * g / (48.0 * s2);
        EXPECT_NEAR(p.device_snr[k], snr, 1e-9 * snr);
        EXPECT_NEAR(p.spectral_efficiency[k], std::log2(1.0 + snr), 1e-12);
        EXPECT_EQ(p.payload_bits[k], 8.0 * static_cast<double>(p.payload_values) + 32.0);
    }
    EXPECT_EQ(p.carriers, 48u);
    // The phy's OFDMA airtime with the same bits, SNRs and shares (whole carriers, whole symbols) is the
    // continuous prediction rounded up: never shorter, and close.
    fedlora::phy::OfdmaConfig oc;
    oc.n_carriers = 48;
    oc.symbol_rate = 1.0 / 80e-6;
    const auto air = fedlora::phy::ofdma_airtime(p.payload_bits, p.device_snr, p.shares, oc);
    const double phy_finish_max = [&] {
        double f = 0.0;
        for (std::size_t k = 0; k < 3; ++k)
            f = std::max(f, in.devices[k].compute_time + air.ofdm_symbols[k] * 80e-6);
        return f;
    }();
    const double predicted = p.latency - 30.0 * 80e-6 - 2e-3;
    EXPECT_GE(phy_finish_max, predicted - 1e-12);
    EXPECT_LT(phy_finish_max, predicted * 1.10);
    // A custom rate function (here the phy's MCS table) is used for the rate.
    ModelConfig mcs;
    mcs.spectral_efficiency = [](double snr) {
        return fedlora::phy::spectral_efficiency(fedlora::phy::RateModel::Mcs, snr);
    };
    const Prediction pm = RoundModel(in, mcs, LinkMode::Digital).digital(0.5);
    for (std::size_t k = 0; k < 3; ++k)
        EXPECT_EQ(pm.spectral_efficiency[k],
                  fedlora::phy::spectral_efficiency(fedlora::phy::RateModel::Mcs, pm.device_snr[k]));
    EXPECT_GT(pm.latency, p.latency);
}

// ---- queue and decisions -------------------------------------------------------------------------------------

TEST(TsfaController, QueueFollowsHandComputedSequence) {
    ControllerConfig c = aircomp_config(0.1, 1.0);
    auto ctrl = make_controller("tsfa", c);
    const std::vector<double> realised = {1.5, 1.25, 0.5, 3.0, 0.1, 0.0, 0.2, 1.0};
    const std::vector<double> expected = {0.5, 0.75, 0.25, 2.25, 1.35, 0.35, 0.0, 0.0};
    for (std::size_t t = 0; t < realised.size(); ++t)
        EXPECT_NEAR(ctrl->observe_latency(realised[t]), expected[t], 1e-12) << "round " << t;
    EXPECT_EQ(ctrl->rounds(), realised.size());
    EXPECT_NEAR(ctrl->average_latency(), 7.55 / 8.0, 1e-12);
    // The decision reports Z(t) and the predicted Z(t+1) = max(Z(t) + T − T̄, 0).
    std::mt19937_64 rng(1);
    const RoundInput in = rayleigh_round(rng, 4, 10.0);
    ctrl->observe_latency(1.7);  // Z = 0.7
    const Decision d = ctrl->decide(in);
    EXPECT_NEAR(d.queue_before, 0.7, 1e-12);
    EXPECT_NEAR(d.queue_after, std::max(0.7 + d.latency - 1.0, 0.0), 1e-12);
    EXPECT_NEAR(d.objective, 0.1 * d.penalty + 0.7 * d.latency, 1e-12);
    EXPECT_EQ(d.controller, "tsfa");
    EXPECT_EQ(ctrl->backlog(), d.queue_before);  // decide() does not change the state
    expect_invalid([&] { ctrl->observe_latency(-0.1); }, "value");
    expect_invalid([&] { ctrl->observe_latency(kNaN); }, "value");
}

TEST(TsfaController, DecisionIsTheBruteForceArgminOfAClosedForm) {
    // Flat channels make every term a closed form; the test enumerates the grid with its own formulas.
    for (double z : {0.0, 0.01, 0.05, 0.2, 1.0}) {
        for (double v : {0.01, 0.1, 1.0}) {
            const double g = 0.3, s2 = 0.05;
            const RoundInput in = flat_round(3, g, s2);
            auto ctrl = make_controller("tsfa", aircomp_config(v, 0.3));
            if (z > 0.0)
                set_backlog(*ctrl, z);
            double total_v = 0.0, worst = 0.0, cmp = 0.0;
            for (const auto& d : in.devices) {
                total_v += d.signal_var;
                worst = std::max(worst, d.signal_var / d.budget);
                cmp = std::max(cmp, d.compute_time);
            }
            double best = std::numeric_limits<double>::infinity(), best_rho = 0.0;
            std::size_t best_m = 0;
            for (int i = 1; i <= 8; ++i) {
                const double rho = i / 8.0;
                const double e = reference_sparsification(in.layers, rho);
                const double d = 8.0 * i * 1536.0;
                for (std::size_t M : in.timing.carrier_counts) {
                    const double nmse = s2 * M * worst / g / total_v;
                    const double T = cmp + (std::ceil(d / 2.0 / M) + 30.0) * 80e-6 + 2e-3;
                    const double J = v * (e + (1.0 - e) * nmse) + z * T;
                    if (J < best - 1e-12) {
                        best = J;
                        best_rho = rho;
                        best_m = M;
                    }
                }
            }
            const Decision dec = ctrl->decide(in);
            EXPECT_EQ(dec.rho, best_rho) << "z " << z << " v " << v;
            EXPECT_EQ(dec.carriers, best_m) << "z " << z << " v " << v;
            EXPECT_NEAR(dec.objective, best, 1e-12 * std::max(1.0, best));
            EXPECT_EQ(dec.candidates, 8u * 6u);
        }
    }
}

TEST(TsfaController, DecisionIsMinimalOverTheGridOnRandomChannels) {
    std::mt19937_64 rng(21);
    for (LinkMode mode : {LinkMode::AirComp, LinkMode::Digital}) {
        for (int trial = 0; trial < 20; ++trial) {
            const RoundInput in = rayleigh_round(rng, 2 + trial % 5, -5.0 + 2.0 * trial);
            ControllerConfig c = aircomp_config(0.05 * (1 + trial % 4), 0.3);
            c.mode = mode;
            c.rho_grid = {0.125, 0.25, 0.375, 0.5, 0.75, 1.0};
            TsfaController ctrl(c);
            set_backlog(ctrl, 0.02 * (trial % 7));
            const Decision d = ctrl.decide(in);
            const RoundModel model(in, c.model, mode);
            for (double rho : c.rho_grid) {
                if (mode == LinkMode::AirComp) {
                    for (std::size_t M : in.timing.carrier_counts) {
                        const Prediction p = model.aircomp(rho, M);
                        EXPECT_LE(d.objective, c.v_weight * p.penalty + ctrl.backlog() * p.latency);
                    }
                } else {
                    const Prediction p = model.digital(rho);
                    EXPECT_LE(d.objective, c.v_weight * p.penalty + ctrl.backlog() * p.latency);
                }
            }
        }
    }
}

TEST(TsfaController, HigherSnrNeverMeansFewerCarriersOrSmallerRatio) {
    std::mt19937_64 rng(5);
    const RoundInput base = rayleigh_round(rng, 5, 0.0);
    for (double z : {0.02, 0.1, 0.3}) {
        // Joint choice over (ρ, M), and each dimension with the other fixed.
        for (int variant = 0; variant < 3; ++variant) {
            ControllerConfig c = aircomp_config(0.1, 0.3);
            if (variant == 1)
                c.rho_grid = {0.5};
            RoundInput in = base;
            if (variant == 2)
                in.timing.carrier_counts = {24};
            TsfaController ctrl(c);
            set_backlog(ctrl, z);
            std::vector<double> rhos;
            std::vector<std::size_t> ms;
            for (double db = -20.0; db <= 40.0; db += 2.0) {
                RoundInput scaled = in;
                for (auto& d : scaled.devices)
                    for (auto& g : d.gain)
                        g *= std::pow(10.0, db / 10.0);
                const Decision d = ctrl.decide(scaled);
                if (!rhos.empty()) {
                    EXPECT_GE(d.rho, rhos.back()) << "z " << z << " variant " << variant << " at " << db << " dB";
                    EXPECT_GE(d.carriers, ms.back()) << "z " << z << " variant " << variant << " at " << db << " dB";
                }
                rhos.push_back(d.rho);
                ms.push_back(d.carriers);
            }
            // The sweep does move the free dimension(s).
            if (variant != 2) {
                EXPECT_GT(ms.back(), ms.front()) << "z " << z << " variant " << variant;
            }
            if (variant != 1) {
                EXPECT_GT(rhos.back(), rhos.front()) << "z " << z << " variant " << variant;
            }
        }
    }
}

TEST(TsfaController, LargerBacklogLowersLatencyLargerVLowersPenalty) {
    std::mt19937_64 rng(8);
    for (LinkMode mode : {LinkMode::AirComp, LinkMode::Digital}) {
        for (int trial = 0; trial < 5; ++trial) {
            const RoundInput in = rayleigh_round(rng, 4, 5.0 * trial);
            ControllerConfig c = aircomp_config(0.1, 0.3);
            c.mode = mode;
            double prev_latency = std::numeric_limits<double>::infinity(), prev_penalty = -1.0;
            for (double z = 0.0; z <= 2.0; z += 0.01) {
                TsfaController ctrl(c);
                if (z > 0.0)
                    set_backlog(ctrl, z);
                const Decision d = ctrl.decide(in);
                EXPECT_LE(d.latency, prev_latency + 1e-15) << "Z = " << z;
                EXPECT_GE(d.penalty, prev_penalty - 1e-15) << "Z = " << z;
                prev_latency = d.latency;
                prev_penalty = d.penalty;
            }
            prev_latency = 0.0;
            prev_penalty = std::numeric_limits<double>::infinity();
            for (double v = 1e-3; v <= 10.0; v *= 1.2) {
                c.v_weight = v;
                TsfaController ctrl(c);
                set_backlog(ctrl, 0.1);
                const Decision d = ctrl.decide(in);
                EXPECT_LE(d.penalty, prev_penalty + 1e-15) << "V = " << v;
                EXPECT_GE(d.latency, prev_latency - 1e-15) << "V = " << v;
                prev_latency = d.latency;
                prev_penalty = d.penalty;
            }
        }
    }
}

namespace {

// Runs `rounds` rounds over seeded random channels; the realised latency is the prediction with the devices'
// actual compute times jittered ±10% around what they reported. Returns the average realised latency.
double run_rounds(Controller& ctrl, std::uint64_t seed, int rounds) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> jitter(0.9, 1.1);
    double sum = 0.0;
    for (int t = 0; t < rounds; ++t) {
        const RoundInput in = rayleigh_round(rng, 5, 10.0);
        const Decision d = ctrl.decide(in);
        double realised = d.latency - d.compute_time;
        double cmp = 0.0;
        for (std::size_t k = 0; k < in.devices.size(); ++k)
            cmp = std::max(cmp, in.devices[k].compute_time * jitter(rng));
        realised += cmp;
        ctrl.observe_latency(realised);
        sum += realised;
    }
    return sum / rounds;
}

}  // namespace

TEST(TsfaController, LongRunAverageLatencyMeetsTheBudget) {
    // Digital rounds take longer (five devices share the band, 8 bits per value): their budgets are larger, and
    // every budget here is above the fastest choice of every round (feasible).
    for (LinkMode mode : {LinkMode::AirComp, LinkMode::Digital}) {
        const auto budgets = mode == LinkMode::AirComp ? std::vector<double>{0.25, 0.3, 0.4}
                                                       : std::vector<double>{0.8, 1.0, 1.5};
        for (double budget : budgets) {
            ControllerConfig c = aircomp_config(0.05, budget);
            c.mode = mode;
            TsfaController ctrl(c);
            const double avg = run_rounds(ctrl, 77, 2000);
            EXPECT_LE(avg, 1.05 * budget) << to_string(mode) << " T̄ = " << budget;
            EXPECT_NEAR(avg, ctrl.average_latency(), 1e-12);
            // The budget is used, not wasted: the unconstrained choice (Z = 0) takes longer than T̄, so the
            // queue must be what holds the average down, to within a few percent.
            EXPECT_GE(avg, 0.9 * budget) << to_string(mode) << " T̄ = " << budget;
        }
    }
}

TEST(TsfaController, TighterBudgetGivesLowerLatency) {
    for (LinkMode mode : {LinkMode::AirComp, LinkMode::Digital}) {
        double prev = std::numeric_limits<double>::infinity();
        const auto budgets = mode == LinkMode::AirComp ? std::vector<double>{0.5, 0.4, 0.3, 0.25, 0.2}
                                                       : std::vector<double>{2.0, 1.5, 1.0, 0.8, 0.7};
        for (double budget : budgets) {
            ControllerConfig c = aircomp_config(0.05, budget);
            c.mode = mode;
            TsfaController ctrl(c);
            const double avg = run_rounds(ctrl, 99, 600);
            EXPECT_LT(avg, prev) << to_string(mode) << " T̄ = " << budget;
            prev = avg;
        }
    }
}

TEST(TsfaController, FixedControllerKeepsItsChoice) {
    std::mt19937_64 rng(4);
    ControllerConfig c = aircomp_config(0.1, 0.2);
    c.fixed_rho = 0.5;
    c.fixed_carriers = 24;
    auto fixed = make_controller("fixed", c);
    EXPECT_STREQ(fixed->name(), "fixed");
    for (int t = 0; t < 20; ++t) {
        const RoundInput in = rayleigh_round(rng, 3, -10.0 + 3.0 * t);
        const Decision d = fixed->decide(in);
        EXPECT_EQ(d.rho, 0.5);
        EXPECT_EQ(d.carriers, 24u);
        EXPECT_EQ(d.kept_ranks, std::vector<std::size_t>(8, 4));
        EXPECT_EQ(d.controller, "fixed");
        EXPECT_NEAR(d.queue_after, std::max(fixed->backlog() + d.latency - 0.2, 0.0), 1e-12);
        fixed->observe_latency(d.latency);
    }
    EXPECT_GT(fixed->backlog(), 0.0);  // the queue is kept (for the record) even though it is not used
    // Default bandwidth: the largest candidate; digital: equal shares among those that can send.
    c.fixed_carriers = 0;
    const RoundInput in = rayleigh_round(rng, 3, 10.0);
    EXPECT_EQ(FixedController(c).decide(in).carriers, 48u);
    c.mode = LinkMode::Digital;
    const Decision dd = FixedController(c).decide(in);
    for (double b : dd.shares)
        EXPECT_NEAR(b, 1.0 / 3.0, 1e-15);
    c.mode = LinkMode::AirComp;
    c.fixed_carriers = 49;
    expect_invalid([&] { FixedController(c).decide(in); }, "fixed_carriers");
    expect_invalid([&] { make_controller("greedy", c); }, "tsfa or fixed");
}

TEST(TsfaController, StateRoundTripGivesIdenticalDecisions) {
    for (const char* name : {"tsfa", "fixed"}) {
        for (LinkMode mode : {LinkMode::AirComp, LinkMode::Digital}) {
            ControllerConfig c = aircomp_config(0.05, 0.3);
            c.mode = mode;
            auto a = make_controller(name, c);
            std::mt19937_64 rng(123);
            std::uniform_real_distribution<double> jitter(0.95, 1.15);
            for (int t = 0; t < 37; ++t)
                a->observe_latency(a->decide(rayleigh_round(rng, 4, 8.0)).latency * jitter(rng));
            const std::string blob = a->serialize();
            EXPECT_EQ(blob.find('\n'), std::string::npos);  // one line: fits any text field of a checkpoint
            auto b = make_controller(name, c);
            b->deserialize(blob);
            EXPECT_EQ(b->serialize(), blob);
            EXPECT_EQ(b->backlog(), a->backlog());
            EXPECT_EQ(b->rounds(), a->rounds());
            EXPECT_EQ(b->average_latency(), a->average_latency());
            for (int t = 0; t < 40; ++t) {
                const RoundInput in = rayleigh_round(rng, 4, 8.0);
                const Decision da = a->decide(in), db = b->decide(in);
                EXPECT_EQ(da.rho, db.rho);
                EXPECT_EQ(da.carriers, db.carriers);
                EXPECT_EQ(da.shares, db.shares);
                EXPECT_EQ(da.objective, db.objective);
                EXPECT_EQ(da.queue_before, db.queue_before);
                const double realised = da.latency * jitter(rng);
                EXPECT_EQ(a->observe_latency(realised), b->observe_latency(realised));
            }
            // A blob from another controller, mode, V or budget, or a damaged one, is refused by name.
            ControllerConfig other = c;
            other.v_weight = 0.06;
            expect_invalid([&] { make_controller(name, other)->deserialize(blob); }, "v_weight");
            other = c;
            other.latency_budget = 0.31;
            expect_invalid([&] { make_controller(name, other)->deserialize(blob); }, "latency_budget");
            other = c;
            other.mode = mode == LinkMode::AirComp ? LinkMode::Digital : LinkMode::AirComp;
            expect_invalid([&] { make_controller(name, other)->deserialize(blob); }, "mode");
            const std::string other_name = std::string(name) == "tsfa" ? "fixed" : "tsfa";
            expect_invalid([&] { make_controller(other_name, c)->deserialize(blob); }, "controller");
            expect_invalid([&] { b->deserialize("hello"); }, "fedlora-control-state");
            expect_invalid([&] { b->deserialize(blob.substr(0, blob.size() - 4)); }, "end");
            std::string bad = blob;
            bad.replace(bad.find("backlog ") + 8, 1, "g");
            expect_invalid([&] { b->deserialize(bad); }, "backlog");
        }
    }
}

TEST(TsfaController, InvalidInputsNameTheField) {
    std::mt19937_64 rng(2);
    const RoundInput good = rayleigh_round(rng, 3, 10.0);
    TsfaController ctrl(aircomp_config());
    auto with = [&](auto edit) {
        RoundInput in = good;
        edit(in);
        return in;
    };
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.devices[1].budget = -1.0; })); },
                   "devices[1].budget");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.devices[0].gain.clear(); })); },
                   "devices[0].gain is empty");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.devices[2].gain[3] = kNaN; })); },
                   "devices[2].gain[3] = nan");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.devices[2].gain[5] = -0.1; })); },
                   "devices[2].gain[5]");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.devices[1].gain.pop_back(); })); },
                   "devices[1].gain has 47");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.devices[0].compute_time = kNaN; })); },
                   "devices[0].compute_time");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.devices.clear(); })); }, "devices is empty");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.noise_var = 0.0; })); }, "noise_var");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.layers.clear(); })); }, "layers is empty");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.layers[3].importance.pop_back(); })); },
                   "layers[3].importance");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.layers[1].rank = 0; })); }, "layers[1].rank");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.timing.carrier_counts = {8, 8}; })); },
                   "timing.carrier_counts[1]");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.timing.carrier_counts = {8, 64}; })); },
                   "timing.carrier_counts[1] = 64");
    expect_invalid([&] { ctrl.decide(with([](RoundInput& in) { in.timing.symbol_duration = -1.0; })); },
                   "timing.symbol_duration");
    // Every device silent everywhere: a clear refusal.
    expect_invalid([&] {
        ctrl.decide(with([](RoundInput& in) {
            for (auto& d : in.devices)
                std::fill(d.gain.begin(), d.gain.end(), 0.0);
        }));
    },
                   "every device is silent");

    auto config_with = [](auto edit) {
        ControllerConfig c = aircomp_config();
        edit(c);
        return c;
    };
    expect_invalid([&] { TsfaController(config_with([](ControllerConfig& c) { c.latency_budget = -0.3; })); },
                   "latency_budget");
    expect_invalid([&] { TsfaController(config_with([](ControllerConfig& c) { c.v_weight = kNaN; })); },
                   "v_weight");
    expect_invalid([&] { TsfaController(config_with([](ControllerConfig& c) { c.rho_grid = {0.5, 1.5}; })); },
                   "rho_grid[1] = 1.5");
    expect_invalid([&] { TsfaController(config_with([](ControllerConfig& c) { c.rho_grid = {0.0}; })); },
                   "rho_grid[0] = 0");
    expect_invalid([&] { FixedController(config_with([](ControllerConfig& c) { c.fixed_rho = 1.2; })); },
                   "fixed_rho");
    expect_invalid([&] { TsfaController(config_with([](ControllerConfig& c) { c.model.quant_bits = 0; })); },
                   "model.quant_bits");
    expect_invalid([&] { TsfaController(config_with([](ControllerConfig& c) { c.model.g_th = -1.0; })); },
                   "model.g_th");
    expect_invalid([] { link_mode_from_name("analog"); }, "aircomp or digital");
    expect_invalid([] { gain_from_snr(-1.0, 1.0, 1.0); }, "snr");
    EXPECT_NEAR(gain_from_snr(100.0, 0.01, 2.0), 0.5, 1e-15);
    EXPECT_EQ(link_mode_from_name("digital"), LinkMode::Digital);
}

// ---- offline stage -------------------------------------------------------------------------------------------------

namespace {

OfflineInput offline_input(double snr_db, std::size_t K = 5) {
    OfflineInput in;
    for (std::size_t k = 0; k < K; ++k) {
        in.mean_snr.push_back(std::pow(10.0, (snr_db - 1.0 * k) / 10.0));
        in.compute_time.push_back(0.1 + 0.02 * k);
    }
    in.reference_carriers = 48;
    in.layers.assign(8, OfflineLayer{768, 768, 0});
    in.timing = narrowband_timing();
    in.rank_candidates = {1, 2, 4, 8, 16, 32};
    return in;
}

}  // namespace

TEST(TsfaOffline, ProxyTermsAgainstClosedForms) {
    const OfflineInput in = offline_input(10.0);
    ControllerConfig c = aircomp_config(0.1, 0.3);
    const RankChoice choice = choose_rank(in, c);
    ASSERT_EQ(choice.candidates.size(), in.rank_candidates.size());
    // Truncation: power law σ_j² = j^{−2}, j = 1..768.
    double total = 0.0;
    for (int j = 1; j <= 768; ++j)
        total += 1.0 / (double(j) * j);
    const double gamma_min = *std::min_element(in.mean_snr.begin(), in.mean_snr.end());
    double best = std::numeric_limits<double>::infinity();
    for (const auto& cand : choice.candidates) {
        double tail = 0.0;
        for (std::size_t j = cand.rank + 1; j <= 768; ++j)
            tail += 1.0 / (double(j) * j);
        EXPECT_NEAR(cand.truncation_error, tail / total, 1e-12);
        // The latency at the chosen bandwidth, which is the fewest candidate carriers meeting T̄ (if any do).
        const double d = 8.0 * cand.rank * 1536.0;
        auto latency = [&](double M) { return 0.18 + (std::ceil(d / 2.0 / M) + 30.0) * 80e-6 + 2e-3; };
        EXPECT_NEAR(cand.latency, latency(cand.carriers), 1e-12);
        for (std::size_t M : in.timing.carrier_counts) {
            if (M < cand.carriers) {
                EXPECT_GT(latency(M), 0.3);
            }
        }
        // Ergodic NMSE equals the phy's ergodic truncated-inversion MSE / (K v) with the per-carrier budget that
        // makes the weakest device's mean SNR γ̄_min M_ref / M (unit mean gain, σ² = 1).
        const double pc = gamma_min * 48.0 / cand.carriers;
        const double ref = fedlora::phy::truncated_inversion_ergodic_mse(5, pc, 1.0, 1.0, 0.1) / 5.0;
        EXPECT_NEAR(cand.aggregation_nmse, ref, 1e-12);
        EXPECT_NEAR(cand.proxy,
                    cand.truncation_error + (1.0 - cand.truncation_error) * cand.aggregation_nmse +
                        10.0 * std::max(cand.latency - 0.3, 0.0) / 0.3,
                    1e-12);
        best = std::min(best, cand.proxy);
    }
    EXPECT_EQ(choice.proxy, best);
    expect_invalid([&] {
        ControllerConfig z = c;
        z.model.g_th = 0.0;
        choose_rank(in, z);
    },
                   "model.g_th");
    expect_invalid([&] {
        OfflineInput bad = in;
        bad.rank_candidates = {4, 8, 4};
        choose_rank(bad, c);
    },
                   "rank_candidates[2]");
    expect_invalid([&] {
        OfflineInput bad = in;
        bad.mean_snr[1] = kNaN;
        choose_rank(bad, c);
    },
                   "mean_snr[1]");
}

TEST(TsfaOffline, ErgodicModelMatchesTheOnlineModelOnManyCarriers) {
    // The offline stage's ergodic NMSE is the limit of the online prediction on a long Rayleigh band.
    std::mt19937_64 rng(17);
    std::exponential_distribution<double> fade(1.0);
    const std::size_t K = 4, L = 40000;
    RoundInput in;
    in.timing.carrier_counts = {L};
    in.timing.symbol_duration = 1e-4;
    in.layers = decaying_layers(1, 2);
    in.noise_var = 1.0;
    const double gamma = 3.0;  // mean per-carrier SNR at M = L
    for (std::size_t k = 0; k < K; ++k) {
        DeviceReport d;
        for (std::size_t m = 0; m < L; ++m)
            d.gain.push_back(fade(rng));
        d.budget = gamma * L;
        in.devices.push_back(d);
    }
    const double online = RoundModel(in, ModelConfig{}, LinkMode::AirComp).aircomp(1.0, L).aggregation_nmse;
    const double ergodic = -std::expm1(-0.1) + expint_e1(0.1) / (K * gamma);
    EXPECT_NEAR(online, ergodic, 0.03 * ergodic);
    const auto snr = mean_carrier_snr(in, L);
    for (double s : snr)
        EXPECT_NEAR(s, gamma, 0.03 * gamma);
}

TEST(TsfaOffline, RankGrowsWithSnrAndWithTheLatencyBudget) {
    for (LinkMode mode : {LinkMode::AirComp, LinkMode::Digital}) {
        ControllerConfig c = aircomp_config(0.1, 0.3);
        c.mode = mode;
        std::size_t prev = 0;
        std::vector<std::size_t> seen;
        for (double db = -25.0; db <= 40.0; db += 2.5) {
            const RankChoice r = choose_rank(offline_input(db), c);
            EXPECT_GE(r.rank, prev) << to_string(mode) << " at " << db << " dB";
            prev = r.rank;
            seen.push_back(r.rank);
        }
        EXPECT_LT(seen.front(), seen.back()) << to_string(mode) << ": SNR should move the rank";
        prev = 0;
        seen.clear();
        for (double budget : {0.15, 0.2, 0.25, 0.3, 0.4, 0.6, 1.0, 2.0}) {
            c.latency_budget = budget;
            const RankChoice r = choose_rank(offline_input(10.0), c);
            EXPECT_GE(r.rank, prev) << to_string(mode) << " T̄ = " << budget;
            prev = r.rank;
            seen.push_back(r.rank);
        }
        EXPECT_LT(seen.front(), seen.back()) << to_string(mode) << ": the budget should move the rank";
    }
}

TEST(TsfaOffline, MeasuredSpectrumReplacesThePowerLaw) {
    OfflineInput in = offline_input(20.0);
    RankModel m;
    m.spectrum = {1.0, 1.0, 1.0, 1.0, 0.0, 0.0};  // rank 4 captures everything
    ControllerConfig c = aircomp_config(0.1, 5.0);
    const RankChoice r = choose_rank(in, c, m);
    EXPECT_EQ(r.candidates[0].truncation_error, 0.75);
    EXPECT_EQ(r.candidates[2].truncation_error, 0.0);
    EXPECT_EQ(r.rank, 4u);  // more rank adds airtime and nothing else
    m.spectrum = {0.0, 0.0};
    expect_invalid([&] { choose_rank(in, c, m); }, "rank_model.spectrum");
}

// ---- exact drift -------------------------------------------------------------------------------------------------

TEST(TsfaExactDrift, DecisionIsTheArgminOfPenaltyPlusExactDrift) {
    std::mt19937_64 rng(31);
    for (int trial = 0; trial < 20; ++trial) {
        const RoundInput in = rayleigh_round(rng, 2 + trial % 5, -5.0 + 2.0 * trial);
        ControllerConfig c = aircomp_config(0.05 * (1 + trial % 4), 0.3);
        c.exact_drift = true;
        c.rho_grid = {0.125, 0.25, 0.375, 0.5, 0.75, 1.0};
        TsfaController ctrl(c);
        set_backlog(ctrl, 0.02 * (trial % 7));
        const Decision d = ctrl.decide(in);
        const RoundModel model(in, c.model, LinkMode::AirComp);
        const double z = ctrl.backlog();
        for (double rho : c.rho_grid)
            for (std::size_t M : in.timing.carrier_counts) {
                const Prediction p = model.aircomp(rho, M);
                const double next = std::max(z + p.latency - c.latency_budget, 0.0);
                EXPECT_LE(d.objective, c.v_weight * p.penalty + 0.5 * next * next + 1e-15);
            }
        const double next = std::max(z + d.latency - c.latency_budget, 0.0);
        EXPECT_DOUBLE_EQ(d.objective, c.v_weight * d.penalty + 0.5 * next * next);
    }
}

TEST(TsfaExactDrift, AnEmptyQueueStillWeighsLatency) {
    // With Z = 0 the linear rule ignores latency and takes the lowest penalty, however slow; the exact drift
    // charges the overshoot ½(T − T̄)² and stays within the budget when a choice allows it at a small penalty cost.
    std::mt19937_64 rng(5);
    const RoundInput in = rayleigh_round(rng, 5, 10.0);
    ControllerConfig c = aircomp_config(1e-4, 0.0);
    const RoundModel model(in, c.model, LinkMode::AirComp);
    double fastest = std::numeric_limits<double>::infinity(), slowest_best = 0.0;
    for (std::size_t M : in.timing.carrier_counts)
        fastest = std::min(fastest, model.aircomp(1.0 / 8.0, M).latency);
    c.latency_budget = fastest * 1.02;
    TsfaController linear(c);
    const Decision dl = linear.decide(in);
    slowest_best = dl.latency;
    ASSERT_GT(slowest_best, c.latency_budget) << "the test needs a penalty-optimal choice that breaks the budget";
    c.exact_drift = true;
    TsfaController exact(c);
    const Decision de = exact.decide(in);
    EXPECT_LT(de.latency, dl.latency);
    EXPECT_GE(de.penalty, dl.penalty);
    // Any overshoot must be paid for by penalty: against the best choice that meets the budget,
    // ½(T − T̄)² ≤ V (Φ_within − Φ).
    double within = std::numeric_limits<double>::infinity();
    for (double rho : {0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0})
        for (std::size_t M : in.timing.carrier_counts) {
            const Prediction p = model.aircomp(rho, M);
            if (p.latency <= c.latency_budget)
                within = std::min(within, p.penalty);
        }
    ASSERT_TRUE(std::isfinite(within));
    const double over = std::max(de.latency - c.latency_budget, 0.0);
    EXPECT_LE(0.5 * over * over, c.v_weight * (within - de.penalty) + 1e-15);
    EXPECT_LT(over, dl.latency - c.latency_budget);
}

TEST(TsfaExactDrift, LongRunAverageLatencyMeetsTheBudget) {
    for (double budget : {0.25, 0.3, 0.4}) {
        ControllerConfig c = aircomp_config(0.05, budget);
        c.exact_drift = true;
        TsfaController ctrl(c);
        const double avg = run_rounds(ctrl, 78, 2000);
        EXPECT_LE(avg, 1.05 * budget) << "T̄ = " << budget;
        EXPECT_GE(avg, 0.85 * budget) << "T̄ = " << budget;
    }
}
