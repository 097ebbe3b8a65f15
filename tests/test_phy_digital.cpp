// Digital OFDMA baseline: quantiser statistics against their closed forms, rates, airtime.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>

#include "fedlora/phy/digital.h"

using namespace fedlora::phy;

TEST(Digital, StochasticQuantizerIsUnbiasedWithBoundedVariance) {
    // E[Q(x)] = x and Var[Q(x)] = Δ² f (1 − f) for fractional position f: checked per entry over many draws.
    const std::vector<float> x = {-1.0f, -0.37f, 0.0f, 0.123f, 0.5f, 0.99f, 1.0f};
    const int bits = 3;
    const double step = 2.0 / 7.0;
    std::mt19937_64 rng(1);
    const int n = 40000;
    std::vector<double> mean(x.size(), 0.0), sq(x.size(), 0.0);
    for (int t = 0; t < n; ++t) {
        const auto y = dequantize(quantize_stochastic(x, bits, rng));
        for (std::size_t i = 0; i < x.size(); ++i) {
            mean[i] += y[i] / n;
            sq[i] += (y[i] - x[i]) * static_cast<double>(y[i] - x[i]) / n;
        }
    }
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double pos = (x[i] + 1.0) / step, f = pos - std::floor(pos);
        const double var = step * step * f * (1.0 - f);
        EXPECT_NEAR(mean[i], x[i], 4.0 * std::sqrt(var / n) + 1e-6) << "x = " << x[i];
        EXPECT_NEAR(sq[i], var, 0.05 * var + 1e-6) << "x = " << x[i];
        EXPECT_LE(sq[i], step * step / 4.0 * 1.01);
    }
}

TEST(Digital, QuantizerEdgeCases) {
    std::mt19937_64 rng(2);
    const auto z = dequantize(quantize_stochastic(std::vector<float>(5, 0.0f), 4, rng));
    for (float v : z)
        EXPECT_EQ(v, 0.0f);
    EXPECT_THROW(quantize_stochastic({1.0f, std::nanf("")}, 4, rng), std::invalid_argument);
    EXPECT_THROW(quantize_stochastic({1.0f}, 0, rng), std::invalid_argument);
    const auto q = quantize_stochastic(std::vector<float>(100, 1.0f), 8, rng);
    EXPECT_EQ(q.payload_bits(), 100u * 8u + 32u);
}

TEST(Digital, SpectralEfficiency) {
    EXPECT_NEAR(spectral_efficiency(RateModel::Shannon, 1.0), 1.0, 1e-12);
    EXPECT_NEAR(spectral_efficiency(RateModel::Shannon, 15.0), 4.0, 1e-12);
    EXPECT_EQ(spectral_efficiency(RateModel::Mcs, std::pow(10.0, -1.0)), 0.0);  // -10 dB: below the table
    // The MCS rate never exceeds capacity and grows with SNR.
    double prev = 0.0;
    for (double db = -6.0; db <= 35.0; db += 0.5) {
        const double s = std::pow(10.0, db / 10.0);
        const double r = spectral_efficiency(RateModel::Mcs, s);
        EXPECT_LE(r, spectral_efficiency(RateModel::Shannon, s)) << db;
        EXPECT_GE(r, prev);
        prev = r;
    }
    EXPECT_THROW(rate_model_from_name("turbo"), std::invalid_argument);
}

TEST(Digital, OfdmaAirtimeIsSetByTheSlowestDevice) {
    OfdmaConfig cfg;
    cfg.n_carriers = 100;
    cfg.symbol_rate = 1000.0;
    const std::vector<double> bits = {1000.0, 3000.0};
    const std::vector<double> snr = {1.0, 15.0};  // 1 and 4 bit/s/Hz
    const auto a = ofdma_airtime(bits, snr, {0.5, 0.5}, cfg);
    EXPECT_EQ(a.carriers[0], 50u);
    EXPECT_EQ(a.ofdm_symbols[0], 20u);  // 1000 / (1 × 50)
    EXPECT_EQ(a.ofdm_symbols[1], 15u);  // 3000 / (4 × 50) = 15
    EXPECT_EQ(a.round_ofdm_symbols, 20u);
    EXPECT_EQ(a.channel_uses, 2000u);
    EXPECT_NEAR(a.airtime_s, 0.02, 1e-12);
    EXPECT_THROW(ofdma_airtime(bits, snr, {0.7, 0.5}, cfg), std::invalid_argument);
    EXPECT_THROW(ofdma_airtime(bits, snr, {1.0, 0.0}, cfg), std::invalid_argument);
    cfg.rate = RateModel::Mcs;
    EXPECT_THROW(ofdma_airtime(bits, {0.01, 15.0}, {0.5, 0.5}, cfg), std::invalid_argument);
}
