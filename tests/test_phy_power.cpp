// Power control policies and the symbol-level AirComp round, against analytic results and brute force.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <random>
#include <stdexcept>
#include <vector>

#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/power_control.h"

using namespace fedlora::phy;
using cd = std::complex<double>;

namespace {

std::vector<cd> rayleigh(std::size_t n, std::mt19937_64& rng, double mean_gain = 1.0) {
    std::normal_distribution<double> g(0.0, std::sqrt(mean_gain / 2.0));
    std::vector<cd> h(n);
    for (auto& x : h)
        x = {g(rng), g(rng)};
    return h;
}

PowerControlConfig config(PowerPolicy p, std::size_t K, double snr_db, double g_th = 0.1) {
    PowerControlConfig c;
    c.policy = p;
    c.g_th = g_th;
    c.noise_var = 1.0;
    c.budget.assign(K, std::pow(10.0, snr_db / 10.0));
    return c;
}

// E1 by Simpson's rule on t = x + u/(1−u) mapping [x, ∞) to [0, 1): an independent reference.
double e1_numeric(double x) {
    const int n = 200000;
    auto f = [x](double u) {
        if (u >= 1.0)
            return 0.0;
        const double t = x + u / (1.0 - u);
        return std::exp(-t) / t / ((1.0 - u) * (1.0 - u));
    };
    double s = f(0.0) + f(1.0);
    for (int i = 1; i < n; ++i)
        s += f(static_cast<double>(i) / n) * (i % 2 ? 4.0 : 2.0);
    return s / (3.0 * n);
}

}  // namespace

TEST(PowerControl, ExponentialIntegralMatchesQuadrature) {
    for (double x : {1e-3, 0.05, 0.3, 0.999, 1.0, 2.5, 10.0, 30.0})
        EXPECT_NEAR(expint_e1(x) / e1_numeric(x), 1.0, 1e-7) << "x = " << x;
    EXPECT_THROW(expint_e1(0.0), std::invalid_argument);
}

TEST(PowerControl, TruncatedInversionMeetsBudgetsAndInverts) {
    std::mt19937_64 rng(1);
    const std::size_t K = 6, M = 128;
    auto h = rayleigh(K * M, rng);
    auto cfg = config(PowerPolicy::Truncated, K, 10.0, 0.2);
    cfg.budget[2] = 3.0;  // one weaker budget
    const auto plan = plan_power(h, K, M, cfg);
    double max_ratio = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
        double p = 0.0, mean_gain = 0.0;
        for (std::size_t m = 0; m < M; ++m)
            mean_gain += std::norm(h[k * M + m]) / M;
        for (std::size_t m = 0; m < M; ++m) {
            p += std::norm(plan.b(k, m));
            const bool kept = std::norm(h[k * M + m]) >= cfg.g_th * mean_gain;
            EXPECT_EQ(plan.truncated[k * M + m], kept ? 0 : 1);
            if (kept) {  // h b = √η: the channel is inverted
                EXPECT_NEAR(std::abs(h[k * M + m] * plan.b(k, m) - std::sqrt(plan.eta[m])), 0.0, 1e-9);
            }
        }
        p /= static_cast<double>(M);
        EXPECT_LE(p, cfg.budget[k] * (1 + 1e-9)) << "device " << k;
        max_ratio = std::max(max_ratio, p / cfg.budget[k]);
    }
    EXPECT_NEAR(max_ratio, 1.0, 1e-9);  // η is the largest feasible: one device's budget binds
}

TEST(PowerControl, MmseThresholdPolicyIsOptimalOverEta) {
    // For every η the best amplitude per device is min(full, inverting); the policy must find the η that
    // minimises the resulting MSE. Brute force over a fine grid of η is the reference.
    std::mt19937_64 rng(2);
    for (std::size_t K : {1u, 3u, 8u}) {
        for (double snr_db : {0.0, 10.0, 25.0}) {
            const std::size_t M = 16;
            auto h = rayleigh(K * M, rng);
            auto cfg = config(PowerPolicy::Mmse, K, snr_db);
            for (std::size_t k = 0; k < K; ++k)
                cfg.budget[k] *= 0.5 + k;  // unequal budgets
            const auto plan = plan_power(h, K, M, cfg);
            const auto full = plan_power(h, K, M, [&] { auto c = cfg; c.policy = PowerPolicy::Full; return c; }());
            EXPECT_LE(plan.mse, full.mse * (1 + 1e-9));
            for (std::size_t m = 0; m < M; ++m) {
                double best = 1e300;
                for (int i = 0; i <= 20000; ++i) {
                    const double eta = std::pow(10.0, -4.0 + 8.0 * i / 20000.0) * cfg.budget[0];
                    double mse = cfg.noise_var / eta;
                    for (std::size_t k = 0; k < K; ++k) {
                        const double q = std::sqrt(cfg.budget[k]) * std::abs(h[k * M + m]);
                        const double a = std::min(q, std::sqrt(eta));
                        mse += (a / std::sqrt(eta) - 1.0) * (a / std::sqrt(eta) - 1.0);
                    }
                    best = std::min(best, mse);
                }
                double got = cfg.noise_var / plan.eta[m];
                for (std::size_t k = 0; k < K; ++k) {
                    EXPECT_LE(std::norm(plan.b(k, m)), cfg.budget[k] * (1 + 1e-9));  // peak budget
                    got += std::norm(h[k * M + m] * plan.b(k, m) / std::sqrt(plan.eta[m]) - 1.0);
                }
                EXPECT_LE(got, best * (1 + 1e-9)) << "K=" << K << " snr=" << snr_db << " m=" << m;
                EXPECT_GE(got, best * (1 - 1e-3)) << "K=" << K << " snr=" << snr_db << " m=" << m;
            }
        }
    }
}

TEST(PowerControl, TruncatedInversionApproachesErgodicMse) {
    std::mt19937_64 rng(3);
    const std::size_t K = 5, M = 40000;
    for (double g : {0.05, 0.3, 1.0}) {
        auto h = rayleigh(K * M, rng);
        auto cfg = config(PowerPolicy::Truncated, K, 10.0, g);
        const auto plan = plan_power(h, K, M, cfg);
        const double theory = truncated_inversion_ergodic_mse(K, cfg.budget[0], 1.0, 1.0, g);
        EXPECT_NEAR(10 * std::log10(plan.mse / theory), 0.0, 0.2) << "g_th = " << g;
        EXPECT_NEAR(plan.truncated_fraction, 1.0 - std::exp(-g), 0.01);
    }
}

TEST(PowerControl, BadInputIsRejectedByName) {
    EXPECT_THROW(power_policy_from_name("water-filling"), std::invalid_argument);
    auto cfg = config(PowerPolicy::Mmse, 2, 10.0);
    std::vector<cd> h(4, {1.0, 0.0});
    EXPECT_THROW(plan_power(h, 3, 2, cfg), std::invalid_argument);
    cfg.budget[1] = -1.0;
    try {
        plan_power(h, 2, 2, cfg);
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("budget[1]"), std::string::npos) << e.what();
    }
    cfg = config(PowerPolicy::Mmse, 2, 10.0);
    h[3] = {std::nan(""), 0.0};
    EXPECT_THROW(plan_power(h, 2, 2, cfg), std::invalid_argument);
    cfg = config(PowerPolicy::Truncated, 2, 10.0, 10.0);
    h.assign(4, {0.1, 0.0});
    EXPECT_THROW(plan_power(h, 2, 2, cfg), std::invalid_argument);  // everyone truncated
}

TEST(AircompCodec, EncodeDecodeWithSupportWeightAndScale) {
    AircompCodec c;
    c.dim = 11;
    c.support = {0, 3, 4, 9, 10};
    c.scale = 2.5;
    std::vector<float> x(11);
    for (std::size_t i = 0; i < x.size(); ++i)
        x[i] = static_cast<float>(i) - 4.0f;
    std::vector<std::complex<float>> s(c.n_symbols());
    ASSERT_EQ(s.size(), 3u);
    c.encode(x.data(), 0.5, s.data());
    EXPECT_FLOAT_EQ(s[0].real(), 0.5f * x[0] / 2.5f);
    EXPECT_FLOAT_EQ(s[0].imag(), 0.5f * x[3] / 2.5f);
    EXPECT_FLOAT_EQ(s[2].real(), 0.5f * x[10] / 2.5f);
    EXPECT_FLOAT_EQ(s[2].imag(), 0.0f);
    std::vector<float> back(11, 99.0f);
    c.decode(s.data(), back.data());
    for (std::size_t i = 0; i < 11; ++i) {
        const bool on = i == 0 || i == 3 || i == 4 || i == 9 || i == 10;
        EXPECT_NEAR(back[i], on ? 0.5f * x[i] : 0.0f, 1e-6) << i;
    }
    c.support = {3, 3};
    EXPECT_THROW(c.validate(), std::invalid_argument);
    c.support = {11};
    EXPECT_THROW(c.validate(), std::invalid_argument);
}

TEST(AircompCodec, CommonScaleGivesUnitPowerToTheLargestDevice) {
    std::mt19937_64 rng(4);
    std::normal_distribution<float> g;
    const std::size_t d = 1000;
    std::vector<std::vector<float>> u(3, std::vector<float>(d));
    const std::vector<double> w = {0.2, 0.5, 0.3}, amp = {1.0, 0.3, 2.0};
    std::vector<double> rms;
    for (std::size_t k = 0; k < 3; ++k) {
        for (auto& v : u[k])
            v = static_cast<float>(amp[k]) * g(rng);
        rms.push_back(update_rms(u[k].data(), d, {}));
    }
    AircompCodec c;
    c.dim = d;
    c.scale = common_scale(rms, w);
    double max_power = 0.0;
    for (std::size_t k = 0; k < 3; ++k) {
        std::vector<std::complex<float>> s(c.n_symbols());
        c.encode(u[k].data(), w[k], s.data());
        double p = 0.0;
        for (auto v : s)
            p += std::norm(v);
        max_power = std::max(max_power, p / static_cast<double>(s.size()));
    }
    EXPECT_NEAR(max_power, 1.0, 1e-5);
    std::vector<float> bad(4, 1.0f);
    bad[2] = std::nanf("");
    try {
        update_rms(bad.data(), 4, {});
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("entry 2"), std::string::npos) << e.what();
    }
    EXPECT_THROW(common_scale({0.0, 0.0}, {1.0, 1.0}), std::invalid_argument);
}

TEST(AircompRound, SymbolLevelNmseMatchesAnalyticWithPerfectCsi) {
    // Measured NMSE of the weighted sum within 0.5 dB of the plan's analytic MSE, over SNR 0-30 dB, K in {1,5,20},
    // every policy.
    std::mt19937_64 rng(5);
    std::normal_distribution<float> g;
    const std::size_t d = 40000, M = 192;
    for (auto policy : {PowerPolicy::Truncated, PowerPolicy::Mmse, PowerPolicy::Full}) {
        for (std::size_t K : {1u, 5u, 20u}) {
            for (double snr_db : {0.0, 10.0, 20.0, 30.0}) {
                std::vector<std::vector<float>> u(K, std::vector<float>(d));
                std::vector<double> w(K, 1.0 / K), rms(K);
                for (std::size_t k = 0; k < K; ++k) {
                    for (auto& v : u[k])
                        v = g(rng);
                    rms[k] = update_rms(u[k].data(), d, {});
                }
                AircompCodec c;
                c.dim = d;
                c.scale = common_scale(rms, w);
                auto h = rayleigh(K * M, rng);
                auto cfg = config(policy, K, snr_db, 0.1);
                std::vector<float> est;
                const auto rep = aircomp_round_symbols(u, w, c, h, M, cfg, rng, est);
                const double gap_db = 10 * std::log10(rep.nmse_measured / rep.nmse_analytic);
                RecordProperty(std::string(to_string(policy)) + "_K" + std::to_string(K) + "_snr" + std::to_string(int(snr_db)), std::to_string(10 * std::log10(rep.nmse_measured)) + "/" + std::to_string(10 * std::log10(rep.nmse_analytic)));
                EXPECT_LT(std::abs(gap_db), 0.5) << to_string(policy) << " K=" << K << " snr=" << snr_db
                                                 << " measured " << 10 * std::log10(rep.nmse_measured)
                                                 << " dB, analytic " << 10 * std::log10(rep.nmse_analytic) << " dB";
                EXPECT_EQ(rep.channel_uses, rep.ofdm_symbols * M);
                EXPECT_EQ(rep.ofdm_symbols, (d / 2 + M - 1) / M);
            }
        }
    }
}
