// Multi-stream AirComp: ZF precoders, power budgets, the analytic MSE against Monte Carlo transmission, the
// gradient against finite differences, and the Riemannian optimiser against random search.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>

#include "fedlora/phy/mimo.h"

using namespace fedlora::phy;
using Mat = Eigen::MatrixXcd;
using cd = std::complex<double>;

namespace {

Mat randn(Eigen::Index r, Eigen::Index c, std::mt19937_64& rng, double var = 1.0) {
    std::normal_distribution<double> g(0.0, std::sqrt(var / 2.0));
    Mat m(r, c);
    for (Eigen::Index i = 0; i < m.size(); ++i)
        m(i) = {g(rng), g(rng)};
    return m;
}

std::vector<Mat> channels(std::size_t K, Eigen::Index nr, Eigen::Index nt, std::mt19937_64& rng) {
    std::vector<Mat> h;
    for (std::size_t k = 0; k < K; ++k)
        h.push_back(randn(nr, nt, rng, 0.3 + 0.7 * static_cast<double>(k % 4) / 3.0));  // unequal path loss
    return h;
}

MimoConfig config(std::size_t K, std::size_t L, double snr_db) {
    MimoConfig c;
    c.n_streams = L;
    c.noise_var = 1.0;
    c.budget.assign(K, std::pow(10.0, snr_db / 10.0));
    return c;
}

}  // namespace

TEST(Mimo, SmoothObjectiveGradientMatchesFiniteDifferences) {
    std::mt19937_64 rng(1);
    const auto h = channels(4, 4, 2, rng);
    const auto cfg = config(4, 2, 10.0);
    const Mat a = randn(4, 2, rng);
    Mat grad;
    const double tau = 0.05;
    mimo_smooth_objective(h, a, cfg, tau, &grad);
    for (int trial = 0; trial < 5; ++trial) {
        const Mat d = randn(4, 2, rng);
        const double eps = 1e-6;
        const double fd = (mimo_smooth_objective(h, a + eps * d, cfg, tau, nullptr) -
                           mimo_smooth_objective(h, a - eps * d, cfg, tau, nullptr)) /
                          (2 * eps);
        const double analytic = 2.0 * grad.cwiseProduct(d.conjugate()).sum().real();  // 2 Re⟨∂f/∂A*, D⟩
        EXPECT_NEAR(analytic / fd, 1.0, 1e-5) << "trial " << trial;
    }
}

TEST(Mimo, ZeroForcingInvertsAndMeetsBudgets) {
    std::mt19937_64 rng(2);
    const std::size_t K = 5, L = 2;
    const auto h = channels(K, 4, 2, rng);
    auto cfg = config(K, L, 10.0);
    cfg.budget[3] = 2.0;
    const auto d = mimo_design(h, cfg);
    EXPECT_NEAR(d.A.norm(), 1.0, 1e-12);
    double max_ratio = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
        const Mat eff = d.A.adjoint() * h[k] * d.B[k];
        EXPECT_LT((eff - std::sqrt(d.eta) * Mat::Identity(2, 2)).norm(), 1e-9 * std::sqrt(d.eta));
        const double p = d.B[k].squaredNorm();  // v_k tr(B Bᴴ), v = 1
        EXPECT_LE(p, cfg.budget[k] * (1 + 1e-9));
        max_ratio = std::max(max_ratio, p / cfg.budget[k]);
    }
    EXPECT_NEAR(max_ratio, 1.0, 1e-9);
    EXPECT_NEAR(d.mse, cfg.noise_var * d.A.squaredNorm() / d.eta, 1e-12 * d.mse);
}

TEST(Mimo, AnalyticMseMatchesMonteCarloTransmission) {
    // 2x2 and N_r = 4 (N_t = 2, L = 2), K in {1, 5, 20}, SNR 0-30 dB: send independent unit-variance complex
    // streams through y = Σ H_k B_k s_k + n, estimate Aᴴy/√η, compare the measured MSE of the sum with σ²‖A‖²/η.
    std::mt19937_64 rng(3);
    std::normal_distribution<double> g(0.0, std::sqrt(0.5));
    for (Eigen::Index nr : {2, 4}) {
        for (std::size_t K : {1u, 5u, 20u}) {
            for (double snr_db : {0.0, 10.0, 20.0, 30.0}) {
                const auto h = channels(K, nr, 2, rng);
                const auto cfg = config(K, 2, snr_db);
                const auto d = mimo_design(h, cfg);
                const int n = 4000;
                double err = 0.0;
                for (int i = 0; i < n; ++i) {
                    Eigen::VectorXcd y = Eigen::VectorXcd::Zero(nr), sum = Eigen::VectorXcd::Zero(2);
                    for (std::size_t k = 0; k < K; ++k) {
                        Eigen::VectorXcd s(2);
                        s << cd(g(rng), g(rng)), cd(g(rng), g(rng));
                        sum += s;
                        y += h[k] * (d.B[k] * s);
                    }
                    for (Eigen::Index r = 0; r < nr; ++r)
                        y(r) += cd(g(rng), g(rng)) * std::sqrt(cfg.noise_var);
                    const Eigen::VectorXcd est = d.A.adjoint() * y / std::sqrt(d.eta);
                    err += (est - sum).squaredNorm() / n;
                }
                EXPECT_NEAR(10 * std::log10(err / d.mse), 0.0, 0.3)
                    << "N_r=" << nr << " K=" << K << " snr=" << snr_db << " measured " << err << " analytic " << d.mse;
            }
        }
    }
}

TEST(Mimo, RiemannianOptimiserBeatsItsStartAndRandomSearch) {
    std::mt19937_64 rng(4);
    for (std::size_t K : {3u, 10u}) {
        const auto h = channels(K, 4, 2, rng);
        auto cfg = config(K, 2, 10.0);
        cfg.restarts = 2;
        const auto d = mimo_design(h, cfg);
        // Random search on the sphere as the reference.
        double best_random = 1e300;
        for (int i = 0; i < 3000; ++i) {
            Mat a = randn(4, 2, rng);
            best_random = std::min(best_random, mimo_mse(h, a / a.norm(), cfg));
        }
        EXPECT_LE(d.mse, best_random * 1.001) << "K=" << K;
        cfg.max_iterations = 0;  // the starting points alone
        const auto start = mimo_design(h, cfg);
        EXPECT_LT(d.mse, start.mse) << "K=" << K;
    }
}

TEST(Mimo, BadShapesAreRejectedByName) {
    std::mt19937_64 rng(5);
    auto cfg = config(2, 2, 10.0);
    std::vector<Mat> h = {randn(4, 1, rng), randn(4, 2, rng)};
    try {
        mimo_design(h, cfg);
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("device 0 has N_t = 1"), std::string::npos) << e.what();
    }
    h = {randn(1, 2, rng), randn(1, 2, rng)};
    EXPECT_THROW(mimo_design(h, cfg), std::invalid_argument);
    h = {randn(4, 2, rng), randn(3, 2, rng)};
    EXPECT_THROW(mimo_design(h, cfg), std::invalid_argument);
}
