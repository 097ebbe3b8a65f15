// Channel estimators against their analytic error variances, and through the OFDM waveform.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <random>
#include <stdexcept>
#include <vector>

#include <Eigen/Dense>

#include "fedlora/phy/chanest.h"
#include "fedlora/phy/ofdm.h"

using namespace fedlora::phy;
using cd = std::complex<double>;

namespace {

Numerology num256() {
    Numerology n;
    n.fft_size = 256;
    n.cp_len = 32;
    n.n_occupied = 200;
    return n;
}

cd cn(std::mt19937_64& rng, double var) {
    std::normal_distribution<double> g(0.0, std::sqrt(var / 2.0));
    return {g(rng), g(rng)};
}

// H[m] = Σ_t h_t exp(−j2π k_m τ_t / N), evaluated directly.
std::vector<cd> freq_response(const Numerology& num, const std::vector<cd>& taps, const std::vector<double>& delays) {
    const auto carriers = num.occupied_carriers();
    std::vector<cd> H(carriers.size());
    for (std::size_t i = 0; i < carriers.size(); ++i)
        for (std::size_t t = 0; t < taps.size(); ++t)
            H[i] += taps[t] * std::polar(1.0, -2.0 * M_PI * carriers[i] * delays[t] / num.fft_size);
    return H;
}

struct Stats {
    double mse = 0, noise_est = 0, snr_db_est = 0;
};

// Average estimator error over trials; channel taps i.i.d. CN(0, 1/L) on the delays [−pre, max).
Stats run(const std::string& name, double noise_var, int trials, unsigned seed) {
    const auto num = num256();
    ChannelEstimatorConfig cfg;
    cfg.name = name;
    auto est = make_channel_estimator(num, cfg);
    const int pre = num.cp_len / 8, max = num.cp_len, L = pre + max;
    std::vector<double> delays;
    for (int t = 0; t < L; ++t)
        delays.push_back(t - pre);
    const auto pilot = zadoff_chu(static_cast<std::size_t>(num.n_occupied));
    std::mt19937_64 rng(seed);
    Stats s;
    ChannelEstimate out;
    std::vector<std::complex<float>> y(pilot.size());
    for (int trial = 0; trial < trials; ++trial) {
        std::vector<cd> taps(static_cast<std::size_t>(L));
        for (auto& t : taps)
            t = cn(rng, 1.0 / L);
        const auto H = freq_response(num, taps, delays);
        for (std::size_t i = 0; i < y.size(); ++i)
            y[i] = std::complex<float>(H[i] * cd(pilot[i]) + cn(rng, noise_var));
        est->estimate(y.data(), pilot.data(), 0.0, out);
        double e = 0.0;
        for (std::size_t i = 0; i < H.size(); ++i)
            e += std::norm(cd(out.h[i]) - H[i]);
        s.mse += e / static_cast<double>(H.size()) / trials;
        s.noise_est += out.noise_var / trials;
        s.snr_db_est += out.snr_db / trials;
    }
    return s;
}

}  // namespace

TEST(ChannelEstimation, ZadoffChuHasUnitModulusAndIdealAutocorrelation) {
    const auto z = zadoff_chu(139);
    for (auto v : z)
        EXPECT_NEAR(std::abs(v), 1.0f, 1e-6);
    for (std::size_t lag = 1; lag < 139; lag += 17) {
        cd acc = 0.0;
        for (std::size_t m = 0; m < 139; ++m)
            acc += cd(z[m]) * std::conj(cd(z[(m + lag) % 139]));
        EXPECT_LT(std::abs(acc), 1e-3) << "lag " << lag;
    }
}

TEST(ChannelEstimation, LsErrorIsTheNoiseVariance) {
    const double nv = 0.1;
    const auto s = run("ls", nv, 400, 1);
    EXPECT_NEAR(s.mse / nv, 1.0, 0.03);
    EXPECT_NEAR(s.noise_est / nv, 1.0, 0.03);
}

TEST(ChannelEstimation, DftProjectionErrorIsNoiseTimesWindowOverCarriers) {
    const auto num = num256();
    const double L = num.cp_len / 8 + num.cp_len, M = num.n_occupied;
    for (double nv : {1.0, 0.1, 0.001}) {
        const auto s = run("dft", nv, 400, 2);
        EXPECT_NEAR(s.mse / (nv * L / M), 1.0, 0.05) << "noise " << nv;
        EXPECT_NEAR(s.noise_est / nv, 1.0, 0.03) << "noise " << nv;
    }
}

TEST(ChannelEstimation, LmmseBeatsProjectionAndMatchesItsAnalyticMse) {
    // Channel drawn from the uniform profile LMMSE assumes (unit gain): per-carrier MSE
    // (1/M) tr(R − R (R + σ²I)⁻¹ R) = (1/M) Σ_c λ_c σ² / (λ_c + σ²) over the eigenvalues of the M × M correlation
    // R[i, j] = (1/L) Σ_t exp(−j2π (k_i − k_j) τ_t / N), built here from its definition.
    const auto num = num256();
    const int pre = num.cp_len / 8, L = pre + num.cp_len, M = num.n_occupied;
    const auto k = num.occupied_carriers();
    Eigen::MatrixXcd R(M, M);
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < M; ++j) {
            cd acc = 0.0;
            for (int t = 0; t < L; ++t)
                acc += std::polar(1.0, -2.0 * M_PI * (k[i] - k[j]) * (t - pre) / num.fft_size);
            R(i, j) = acc / static_cast<double>(L);
        }
    const Eigen::VectorXd lambda = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXcd>(R).eigenvalues();
    for (double nv : {1.0, 0.1}) {
        const auto dft = run("dft", nv, 400, 3);
        const auto lmmse = run("lmmse", nv, 400, 3);
        EXPECT_LT(lmmse.mse, dft.mse) << "noise " << nv;
        double analytic = 0.0;
        for (int c = 0; c < M; ++c)
            analytic += std::max(lambda(c), 0.0) * nv / (std::max(lambda(c), 0.0) + nv) / M;
        EXPECT_NEAR(lmmse.mse / analytic, 1.0, 0.05) << "noise " << nv;
    }
}

TEST(ChannelEstimation, SnrEstimateWithinHalfDecibel) {
    for (double snr_db : {0.0, 10.0, 20.0, 30.0}) {
        const double nv = std::pow(10.0, -snr_db / 10.0);
        const auto s = run("dft", nv, 200, 4);
        EXPECT_NEAR(s.snr_db_est, snr_db, 0.5) << snr_db;
    }
}

TEST(ChannelEstimation, ThroughTheWaveformWithEarlyFftWindow) {
    // Multipath within the CP, FFT window 2 samples early: the symbol starts 2 samples into the window, so the
    // estimate must match the true response of the effective delays l + 2, computed directly.
    const auto num = num256();
    OfdmModulator mod(num);
    OfdmDemodulator demod(num);
    const auto pilot = zadoff_chu(static_cast<std::size_t>(num.n_occupied));
    std::vector<std::complex<float>> tx(static_cast<std::size_t>(num.symbol_len()));
    mod.modulate(pilot.data(), tx.data(), 1);
    std::mt19937_64 rng(7);
    const std::vector<int> tap_delays = {0, 3, 7, 20};
    std::vector<cd> taps;
    for (std::size_t i = 0; i < tap_delays.size(); ++i)
        taps.push_back(cn(rng, std::exp(-0.3 * static_cast<double>(i))));
    const int early = 2;
    // Received samples, one symbol preceded by silence: r[n] = Σ h_l tx[n − l].
    std::vector<cd> rx(tx.size() + 32, 0.0);
    for (std::size_t n = 0; n < rx.size(); ++n)
        for (std::size_t t = 0; t < taps.size(); ++t) {
            const long j = static_cast<long>(n) - tap_delays[t];
            if (j >= 0 && j < static_cast<long>(tx.size()))
                rx[n] += taps[t] * cd(tx[static_cast<std::size_t>(j)]);
        }
    // Start the FFT window `early` samples before the nominal one: shift the buffer right by `early`.
    std::vector<std::complex<float>> shifted(static_cast<std::size_t>(num.symbol_len()));
    for (std::size_t i = 0; i < shifted.size(); ++i) {
        const long j = static_cast<long>(i) - early;
        shifted[i] = j >= 0 ? std::complex<float>(rx[static_cast<std::size_t>(j)]) : 0.0f;
    }
    std::vector<std::complex<float>> y(pilot.size());
    demod.demodulate(shifted.data(), y.data(), 1);
    std::vector<double> eff;
    for (int d : tap_delays)
        eff.push_back(d + early);
    const auto H = freq_response(num, taps, eff);
    for (const char* name : {"ls", "dft", "lmmse", "sparse"}) {
        ChannelEstimatorConfig cfg;
        cfg.name = name;
        auto est = make_channel_estimator(num, cfg);
        ChannelEstimate out;
        est->estimate(y.data(), pilot.data(), 1e-9, out);
        double worst = 0.0;
        for (std::size_t i = 0; i < H.size(); ++i)
            worst = std::max(worst, std::abs(cd(out.h[i]) - H[i]));
        EXPECT_LT(worst, 1e-3) << name;
    }
}

TEST(ChannelEstimation, SparseEstimatorErrorFollowsTheTapsItKeeps) {
    // A channel with 3 strong taps in the window: OMP should keep exactly those (false taps ~1%), so the error
    // variance is σ²·3/M, against σ²·L/M for the projection.
    const auto num = num256();
    ChannelEstimatorConfig cfg;
    cfg.name = "sparse";
    auto est = make_channel_estimator(num, cfg);
    const auto pilot = zadoff_chu(static_cast<std::size_t>(num.n_occupied));
    const std::vector<double> delays = {0.0, 3.0, 9.0};
    std::mt19937_64 rng(9);
    const double nv = 0.01, M = num.n_occupied;
    double mse = 0.0, reported = 0.0;
    const int trials = 400;
    ChannelEstimate out;
    std::vector<std::complex<float>> y(pilot.size());
    for (int t = 0; t < trials; ++t) {
        std::vector<cd> taps;
        for (int i = 0; i < 3; ++i)
            taps.push_back(std::polar(std::sqrt(1.0 / 3.0), 2 * M_PI * std::uniform_real_distribution<>(0, 1)(rng)));
        const auto H = freq_response(num, taps, delays);
        for (std::size_t i = 0; i < y.size(); ++i)
            y[i] = std::complex<float>(H[i] * cd(pilot[i]) + cn(rng, nv));
        est->estimate(y.data(), pilot.data(), 0.0, out);
        for (std::size_t i = 0; i < H.size(); ++i)
            mse += std::norm(cd(out.h[i]) - H[i]) / M / trials;
        reported += out.error_var / trials;
    }
    EXPECT_NEAR(mse / (nv * 3.0 / M), 1.0, 0.1);
    EXPECT_NEAR(reported / (nv * 3.0 / M), 1.0, 0.05);
}

TEST(ChannelEstimation, BadConfigIsRejectedByName) {
    ChannelEstimatorConfig cfg;
    cfg.name = "kalman";
    try {
        make_channel_estimator(num256(), cfg);
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("kalman"), std::string::npos);
    }
    cfg.name = "dft";
    cfg.max_delay = 1000;
    EXPECT_THROW(make_channel_estimator(num256(), cfg), std::invalid_argument);
}
