// The OFDM modulator and one AirComp round reproduced by an independent numpy implementation
// (tests/phy_reference.py, run with /usr/bin/python3).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/ofdm.h"

using namespace fedlora::phy;

namespace {

std::vector<double> run_reference(const std::string& kind, const std::string& input) {
    const std::string out = input + ".out";
    const std::string cmd = std::string("/usr/bin/python3 ") + FEDLORA_TESTS_DIR + "/phy_reference.py " + kind + " " +
                            input + " " + out;
    if (std::system(cmd.c_str()) != 0)
        return {};
    std::ifstream f(out);
    std::vector<double> v;
    double x;
    while (f >> x)
        v.push_back(x);
    return v;
}

}  // namespace

TEST(NumpyReference, OfdmModulatorOutput) {
    Numerology num;
    num.fft_size = 128;
    num.cp_len = 9;
    num.n_occupied = 100;
    OfdmModulator mod(num);
    const std::size_t n_sym = 5;
    std::mt19937_64 rng(1);
    std::normal_distribution<float> g;
    std::vector<cf32> x(n_sym * 100), y(n_sym * static_cast<std::size_t>(num.symbol_len()));
    for (auto& v : x)
        v = {g(rng), g(rng)};
    mod.modulate(x.data(), y.data(), n_sym);
    const std::string path = ::testing::TempDir() + "ofdm_in.txt";
    {
        std::ofstream f(path);
        f.precision(9);
        f << num.fft_size << ' ' << num.cp_len << ' ' << num.n_occupied << '\n';
        for (auto v : x)
            f << v.real() << ' ' << v.imag() << '\n';
    }
    const auto ref = run_reference("ofdm", path);
    ASSERT_EQ(ref.size(), 2 * y.size()) << "reference did not run";
    for (std::size_t i = 0; i < y.size(); ++i) {
        ASSERT_NEAR(y[i].real(), ref[2 * i], 1e-5) << i;
        ASSERT_NEAR(y[i].imag(), ref[2 * i + 1], 1e-5) << i;
    }
}

TEST(NumpyReference, OneAircompRound) {
    const std::size_t K = 4, d = 1001, M = 16;
    std::mt19937_64 rng(2);
    std::normal_distribution<double> g;
    std::vector<std::vector<float>> u(K, std::vector<float>(d));
    for (std::size_t k = 0; k < K; ++k)
        for (auto& v : u[k])
            v = static_cast<float>((1.0 + k) * g(rng));
    const std::vector<double> w = {0.1, 0.2, 0.3, 0.4};
    AircompCodec codec;
    codec.dim = d;
    for (std::uint32_t j = 0; j < d; j += 3)
        codec.support.push_back(j);  // 334 entries: an even count
    codec.support.push_back(1000 - 1);  // and one more: odd, exercising the half-filled last symbol
    std::sort(codec.support.begin(), codec.support.end());
    codec.support.erase(std::unique(codec.support.begin(), codec.support.end()), codec.support.end());
    std::vector<double> rms;
    for (std::size_t k = 0; k < K; ++k)
        rms.push_back(update_rms(u[k].data(), d, codec.support));
    codec.scale = common_scale(rms, w);
    std::vector<std::complex<double>> h(K * M);
    for (auto& v : h)
        v = {g(rng) * std::sqrt(0.5), g(rng) * std::sqrt(0.5)};
    PowerControlConfig pc;
    pc.policy = PowerPolicy::Truncated;
    pc.g_th = 0.2;
    pc.noise_var = 0.05;
    pc.budget.assign(K, 3.0);

    auto noise_rng = rng;  // the round draws its noise from this state
    std::vector<float> est;
    aircomp_round_symbols(u, w, codec, h, M, pc, rng, est);
    std::vector<std::complex<double>> noise(codec.n_symbols());
    add_awgn(noise.data(), noise.size(), pc.noise_var, noise_rng);

    const std::string path = ::testing::TempDir() + "aircomp_in.txt";
    {
        std::ofstream f(path);
        f.precision(17);
        f << K << ' ' << d << ' ' << M << ' ' << codec.support.size() << '\n';
        f << pc.budget[0] << ' ' << pc.noise_var << ' ' << pc.g_th << '\n';
        for (auto j : codec.support)
            f << j << ' ';
        f << '\n';
        for (double v : w)
            f << v << ' ';
        f << '\n';
        for (const auto& uk : u)
            for (float v : uk)
                f << static_cast<double>(v) << '\n';
        for (auto v : h)
            f << v.real() << ' ' << v.imag() << '\n';
        for (auto v : noise)
            f << v.real() << ' ' << v.imag() << '\n';
    }
    const auto ref = run_reference("aircomp", path);
    ASSERT_EQ(ref.size(), d) << "reference did not run";
    double scale = 0.0;
    for (double v : ref)
        scale = std::max(scale, std::abs(v));
    for (std::size_t j = 0; j < d; ++j)
        ASSERT_NEAR(est[j], ref[j], 1e-5 * std::max(1.0, scale)) << "entry " << j;
}
