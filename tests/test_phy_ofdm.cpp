// OFDM modulator/demodulator against a direct DFT evaluated in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <algorithm>
#include <random>
#include <stdexcept>
#include <vector>

#include "fedlora/phy/codec.h"
#include "fedlora/phy/ofdm.h"

using fedlora::phy::cf32;
using fedlora::phy::Numerology;

namespace {

Numerology make(int fft, int cp, int occ) {
    Numerology n;
    n.fft_size = fft;
    n.cp_len = cp;
    n.n_occupied = occ;
    return n;
}

std::vector<cf32> random_symbols(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<cf32> v(n);
    for (auto& x : v)
        x = {g(rng), g(rng)};
    return v;
}

// x[t] = 1/sqrt(N) sum_k X[k] exp(+j 2 pi k t / N), over the signed carrier offsets k, CP prepended.
std::vector<std::complex<double>> direct_idft_symbol(const cf32* X, const Numerology& num) {
    const int N = num.fft_size;
    const auto carriers = num.occupied_carriers();
    std::vector<std::complex<double>> t(static_cast<std::size_t>(N));
    for (int n = 0; n < N; ++n) {
        std::complex<double> acc = 0.0;
        for (std::size_t i = 0; i < carriers.size(); ++i) {
            const double ph = 2.0 * M_PI * carriers[i] * n / N;
            acc += std::complex<double>(X[i]) * std::polar(1.0, ph);
        }
        t[static_cast<std::size_t>(n)] = acc / std::sqrt(static_cast<double>(N));
    }
    std::vector<std::complex<double>> out(t.end() - num.cp_len, t.end());
    out.insert(out.end(), t.begin(), t.end());
    return out;
}

class OfdmSizes : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

}  // namespace

TEST_P(OfdmSizes, ModulatorMatchesDirectDft) {
    const auto [fft, cp, occ] = GetParam();
    const auto num = make(fft, cp, occ);
    fedlora::phy::OfdmModulator mod(num);
    const std::size_t n_sym = 3;
    auto X = random_symbols(n_sym * static_cast<std::size_t>(occ), 7);
    std::vector<cf32> y(n_sym * static_cast<std::size_t>(num.symbol_len()));
    mod.modulate(X.data(), y.data(), n_sym);
    for (std::size_t s = 0; s < n_sym; ++s) {
        const auto ref = direct_idft_symbol(X.data() + s * static_cast<std::size_t>(occ), num);
        for (std::size_t i = 0; i < ref.size(); ++i) {
            const auto got = y[s * static_cast<std::size_t>(num.symbol_len()) + i];
            ASSERT_NEAR(got.real(), ref[i].real(), 1e-5) << "symbol " << s << " sample " << i;
            ASSERT_NEAR(got.imag(), ref[i].imag(), 1e-5) << "symbol " << s << " sample " << i;
        }
    }
}

TEST_P(OfdmSizes, DemodulateInvertsModulate) {
    const auto [fft, cp, occ] = GetParam();
    const auto num = make(fft, cp, occ);
    fedlora::phy::OfdmModulator mod(num);
    fedlora::phy::OfdmDemodulator demod(num);
    const std::size_t n_sym = 20;
    auto X = random_symbols(n_sym * static_cast<std::size_t>(occ), 11);
    std::vector<cf32> t(n_sym * static_cast<std::size_t>(num.symbol_len()));
    std::vector<cf32> back(X.size());
    mod.modulate(X.data(), t.data(), n_sym);
    demod.demodulate(t.data(), back.data(), n_sym);
    for (std::size_t i = 0; i < X.size(); ++i) {
        ASSERT_NEAR(back[i].real(), X[i].real(), 1e-5) << i;
        ASSERT_NEAR(back[i].imag(), X[i].imag(), 1e-5) << i;
    }
}

TEST_P(OfdmSizes, UnitaryEnergy) {
    // Parseval: the energy of the FFT window equals the energy on the occupied carriers.
    const auto [fft, cp, occ] = GetParam();
    const auto num = make(fft, cp, occ);
    fedlora::phy::OfdmModulator mod(num);
    auto X = random_symbols(static_cast<std::size_t>(occ), 3);
    std::vector<cf32> t(static_cast<std::size_t>(num.symbol_len()));
    mod.modulate(X.data(), t.data(), 1);
    double ef = 0.0, et = 0.0;
    for (auto x : X)
        ef += std::norm(std::complex<double>(x));
    for (int i = cp; i < num.symbol_len(); ++i)
        et += std::norm(std::complex<double>(t[static_cast<std::size_t>(i)]));
    EXPECT_NEAR(et / ef, 1.0, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Numerologies, OfdmSizes,
                         ::testing::Values(std::make_tuple(64, 16, 48), std::make_tuple(256, 32, 200),
                                           std::make_tuple(1024, 72, 600), std::make_tuple(8, 0, 6)));

TEST(Numerology, RejectsBadValuesNamingTheField) {
    auto expect_error = [](Numerology n, const std::string& needle) {
        try {
            n.validate();
            FAIL() << "accepted " << needle;
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect_error(make(100, 16, 48), "fft_size = 100");
    expect_error(make(64, 65, 48), "cp_len = 65");
    expect_error(make(64, 16, 47), "n_occupied = 47");
    expect_error(make(64, 16, 64), "n_occupied = 64");
    auto n = make(64, 16, 48);
    n.sample_rate = 0;
    expect_error(n, "sample_rate");
    EXPECT_THROW(fedlora::phy::OfdmModulator(make(64, 16, 63)), std::invalid_argument);
}

TEST(Numerology, CarrierLayoutIsSymmetricWithoutDc) {
    const auto c = make(64, 16, 6).occupied_carriers();
    EXPECT_EQ(c, (std::vector<int>{-3, -2, -1, 1, 2, 3}));
    EXPECT_EQ(make(64, 16, 6).bin_of(-1), 63);
}

TEST(Numerology, PilotAndDataPositionsPartitionTheOccupiedCarriers) {
    auto n = make(64, 16, 48);
    EXPECT_TRUE(n.pilot_positions().empty());
    EXPECT_EQ(n.n_data(), 48);
    n.pilot_spacing = 12;
    EXPECT_EQ(n.pilot_positions(), (std::vector<int>{6, 18, 30, 42}));
    const auto d = n.data_positions();
    EXPECT_EQ(d.size(), 44u);
    std::vector<int> all(d);
    for (int p : n.pilot_positions())
        all.push_back(p);
    std::sort(all.begin(), all.end());
    for (int i = 0; i < 48; ++i)
        EXPECT_EQ(all[static_cast<std::size_t>(i)], i);
    n.pilot_spacing = 1;
    EXPECT_THROW(n.validate(), std::invalid_argument);
}

TEST(Codec, PackUnpackRoundTripOddAndEven) {
    for (std::size_t n : {1u, 2u, 7u, 1000u}) {
        std::vector<float> x(n);
        for (std::size_t i = 0; i < n; ++i)
            x[i] = static_cast<float>(i) * 0.5f - 3.0f;
        std::vector<cf32> s(fedlora::phy::symbols_for(n));
        fedlora::phy::pack_reals(x.data(), n, s.data());
        EXPECT_EQ(s[0].real(), x[0]);
        if (n > 1) {
            EXPECT_EQ(s[0].imag(), x[1]);
        }
        std::vector<float> y(n);
        fedlora::phy::unpack_reals(s.data(), n, y.data());
        EXPECT_EQ(x, y);
    }
}
