// Multi-user channel simulator against independent references: closed-form fading distributions (Rayleigh CDF, the
// Rice CDF integrated numerically here), the 3GPP TS 36.104 tables typed in again below, Clarke's J0
// autocorrelation (std::cyl_bessel_j), analytic tones for CFO and fractional delay, sample statistics for AWGN,
// DC and phase noise, and the OFDM demodulator for the frequency response. Fixed seeds throughout.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <complex>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedlora/phy/channel.h"
#include "support/alloc_counter.h"
#include "fedlora/phy/ofdm.h"

using fedlora::phy::ChannelSimConfig;
using fedlora::phy::DeviceChannelConfig;
using fedlora::phy::MultiUserChannel;
using fedlora::phy::Numerology;
using cf32 = std::complex<float>;
using cd = std::complex<double>;

namespace {

constexpr double kPi = 3.14159265358979323846;

// One device, the given settings; N_t = N_r = 1; no impairments unless set.
ChannelSimConfig one_device(const DeviceChannelConfig& d, double fs = 1e6) {
    ChannelSimConfig c;
    c.devices = {d};
    c.sample_rate = fs;
    return c;
}

DeviceChannelConfig ideal_device() {
    DeviceChannelConfig d;
    d.fading = "none";
    d.random_phase = false;
    return d;
}

// Runs the channel over whole input streams (in[k*nt + t]), chunk by chunk; returns out[r].
std::vector<std::vector<cf32>> run(MultiUserChannel& ch, const std::vector<std::vector<cf32>>& in, std::size_t n,
                                   std::size_t chunk) {
    std::vector<std::vector<cf32>> out(static_cast<std::size_t>(ch.n_rx()), std::vector<cf32>(n));
    std::vector<const cf32*> ip(in.size());
    std::vector<cf32*> op(out.size());
    for (std::size_t done = 0; done < n; done += chunk) {
        const std::size_t m = std::min(chunk, n - done);
        for (std::size_t i = 0; i < in.size(); ++i)
            ip[i] = in[i].empty() ? nullptr : in[i].data() + done;
        for (std::size_t r = 0; r < out.size(); ++r)
            op[r] = out[r].data() + done;
        ch.process(ip.data(), op.data(), m);
    }
    return out;
}

std::vector<cf32> gaussian(std::size_t n, unsigned seed, float sigma = 1.0f) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.0f, sigma * static_cast<float>(M_SQRT1_2));
    std::vector<cf32> v(n);
    for (auto& x : v)
        x = {d(g), d(g)};
    return v;
}

// Two-sided one-sample Kolmogorov-Smirnov statistic of `x` against the CDF F.
template <class F>
double ks_statistic(std::vector<double> x, F cdf) {
    std::sort(x.begin(), x.end());
    const double n = static_cast<double>(x.size());
    double d = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double f = cdf(x[i]);
        d = std::max({d, (static_cast<double>(i) + 1.0) / n - f, f - static_cast<double>(i) / n});
    }
    return d;
}

// Asymptotic KS critical value at significance alpha: sqrt(-ln(alpha/2)/2) / sqrt(n).
double ks_critical(double alpha, std::size_t n) {
    return std::sqrt(-std::log(alpha / 2.0) / 2.0) / std::sqrt(static_cast<double>(n));
}

// Rice CDF with mean power omega and K-factor k, from the pdf
//   f(x) = (x/σ²) exp(-(x² + ν²)/(2σ²)) I0(x ν / σ²),  ν² = K Ω/(K+1), 2σ² = Ω/(K+1),
// integrated with the composite trapezoid rule on a fine grid (the CDF is then interpolated linearly).
class RiceCdf {
public:
    RiceCdf(double k, double omega) {
        const double nu = std::sqrt(k * omega / (k + 1.0));
        const double s2 = omega / (2.0 * (k + 1.0));
        xmax_ = nu + 12.0 * std::sqrt(s2);
        const std::size_t n = 200000;
        h_ = xmax_ / static_cast<double>(n);
        cdf_.resize(n + 1);
        auto pdf = [&](double x) {
            // exp(-(x-ν)²/(2σ²)) · [I0(z) e^{-z}] with z = xν/σ² keeps the product finite.
            const double z = x * nu / s2;
            const double i0e = std::cyl_bessel_i(0.0, z) * std::exp(-z);
            return x / s2 * std::exp(-(x - nu) * (x - nu) / (2.0 * s2)) * i0e;
        };
        double prev = pdf(0.0), acc = 0.0;
        cdf_[0] = 0.0;
        for (std::size_t i = 1; i <= n; ++i) {
            const double cur = pdf(static_cast<double>(i) * h_);
            acc += 0.5 * h_ * (prev + cur);
            cdf_[i] = acc;
            prev = cur;
        }
    }
    double operator()(double x) const {
        if (x <= 0.0)
            return 0.0;
        if (x >= xmax_)
            return 1.0;
        const double t = x / h_;
        const auto i = static_cast<std::size_t>(t);
        const double w = t - static_cast<double>(i);
        return (1.0 - w) * cdf_[i] + w * cdf_[i + 1];
    }
    double total() const { return cdf_.back(); }

private:
    double xmax_ = 0.0, h_ = 0.0;
    std::vector<double> cdf_;
};

// |h| of every (rx, tx) link's first tap over `n_real` realisations.
std::vector<double> envelopes(const ChannelSimConfig& cfg, int n_real) {
    MultiUserChannel ch(cfg);
    std::vector<double> e;
    for (int i = 0; i < n_real; ++i) {
        for (int r = 0; r < cfg.n_rx; ++r)
            for (int t = 0; t < cfg.n_tx; ++t)
                e.push_back(std::abs(ch.taps(0, r, t)[0]));
        ch.new_realisation();
    }
    return e;
}

// Average tap powers (per lag) over every link of device 0 and n_real realisations.
std::vector<double> average_tap_powers(const ChannelSimConfig& cfg, int n_real) {
    MultiUserChannel ch(cfg);
    std::vector<double> p;
    std::size_t count = 0;
    for (int i = 0; i < n_real; ++i) {
        for (int r = 0; r < cfg.n_rx; ++r) {
            const auto h = ch.taps(0, r, 0);
            p.resize(h.size(), 0.0);
            for (std::size_t l = 0; l < h.size(); ++l)
                p[l] += std::norm(h[l]);
            ++count;
        }
        ch.new_realisation();
    }
    for (auto& v : p)
        v /= static_cast<double>(count);
    return p;
}

void expect_invalid(const ChannelSimConfig& c, const std::string& needle) {
    try {
        c.validate();
        ADD_FAILURE() << "no exception, expected one naming " << needle;
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_THROW(MultiUserChannel{c}, std::invalid_argument);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
TEST(ChannelConfig, RejectsBadFieldsByName) {
    ChannelSimConfig ok;
    ok.devices.resize(3);
    EXPECT_NO_THROW(ok.validate());

    auto c = ok;
    c.devices[1].profile = "EPX";
    expect_invalid(c, "devices[1].profile = \"EPX\"");
    c = ok;
    c.devices[2].doppler_hz = -5.0;
    expect_invalid(c, "devices[2].doppler_hz = -5");
    c = ok;
    c.devices[0].fading = "rician";
    c.devices[0].rician_k = -1.0;
    expect_invalid(c, "devices[0].rician_k = -1");
    c = ok;
    c.devices[0].fading = "nakagami";
    expect_invalid(c, "devices[0].fading = \"nakagami\"");
    c = ok;
    c.devices[1].profile = "exponential";
    expect_invalid(c, "devices[1].rms_delay_spread_s = 0");
    c = ok;
    c.devices[0].snr_db = 10.0;  // noise_variance is 0
    expect_invalid(c, "devices[0].snr_db = 10");
    c = ok;
    c.devices[0].timing_offset_samples = -0.5;
    expect_invalid(c, "devices[0].timing_offset_samples = -0.5");
    c = ok;
    c.devices[2].cfo_hz = 6e5;
    expect_invalid(c, "devices[2].cfo_hz = 600000");
    c = ok;
    c.tap_interpolation = "cubic";
    expect_invalid(c, "tap_interpolation = \"cubic\"");
    c = ok;
    c.fir_kernel = "neon9";
    expect_invalid(c, "fir_kernel = \"neon9\"");
    c = ok;
    c.noise_variance = -1.0;
    expect_invalid(c, "noise_variance = -1");
    c = ok;
    c.n_rx = 0;
    expect_invalid(c, "n_rx = 0");
    c = ok;
    c.segment_size = 8;
    expect_invalid(c, "segment_size = 8");
    c = ok;
    c.phase_noise_linewidth_hz = -3.0;
    expect_invalid(c, "phase_noise_linewidth_hz = -3");

    // accessors check indices and the numerology's sample rate
    MultiUserChannel ch(ok);
    EXPECT_THROW(ch.taps(3, 0, 0), std::out_of_range);
    Numerology num;
    num.sample_rate = 2e6;
    EXPECT_THROW(ch.frequency_response(num, 0, 0, 0), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------------------------
// Fading distributions. KS at significance alpha = 0.01 with n = 20000 envelopes (critical value 0.0115).
// ---------------------------------------------------------------------------------------------------------------
TEST(ChannelFading, RayleighEnvelopeKs) {
    DeviceChannelConfig d;
    d.fading = "rayleigh";
    d.path_loss_db = 3.0;
    auto cfg = one_device(d);
    cfg.n_rx = 4;
    cfg.n_tx = 2;
    cfg.seed = 11;
    const auto e = envelopes(cfg, 2500);
    const double omega = std::pow(10.0, -0.3);
    const double D = ks_statistic(e, [&](double x) { return 1.0 - std::exp(-x * x / omega); });
    const double crit = ks_critical(0.01, e.size());
    RecordProperty("ks_D", std::to_string(D));
    EXPECT_LT(D, crit) << "n = " << e.size();
    // negative control: a mean power 10% off is rejected
    const double Dw = ks_statistic(e, [&](double x) { return 1.0 - std::exp(-x * x / (1.1 * omega)); });
    EXPECT_GT(Dw, crit);
    std::printf("[channel] Rayleigh KS: D = %.5f, critical(alpha=0.01, n=%zu) = %.5f; omega+10%%: D = %.5f\n", D,
                e.size(), crit, Dw);
}

TEST(ChannelFading, RicianEnvelopeKsAndWrongKRejected) {
    const double K = 3.0;
    DeviceChannelConfig d;
    d.fading = "rician";
    d.rician_k = K;
    auto cfg = one_device(d);
    cfg.n_rx = 4;
    cfg.n_tx = 2;
    cfg.seed = 12;
    const auto e = envelopes(cfg, 2500);
    const RiceCdf right(K, 1.0);
    ASSERT_NEAR(right.total(), 1.0, 1e-6);  // the numerical integral of the pdf is a CDF
    const double crit = ks_critical(0.01, e.size());
    const double D = ks_statistic(e, right);
    EXPECT_LT(D, crit);
    // negative controls: K = 2 and Rayleigh (K = 0) against the same samples
    const RiceCdf wrong(2.0, 1.0);
    const double Dw = ks_statistic(e, wrong);
    EXPECT_GT(Dw, crit);
    const double Dr = ks_statistic(e, [](double x) { return 1.0 - std::exp(-x * x); });
    EXPECT_GT(Dr, crit);
    std::printf("[channel] Rician K=3 KS: D = %.5f, critical = %.5f; vs K=2: D = %.5f; vs Rayleigh: D = %.5f\n", D,
                crit, Dw, Dr);
}

// ---------------------------------------------------------------------------------------------------------------
// Power-delay profiles (20000 draws per tap: the relative standard error of a mean tap power is 0.7%).
// ---------------------------------------------------------------------------------------------------------------
namespace {
// 3GPP TS 36.104 Annex B.2, typed again here: delays (ns), powers (dB).
const double kEpaNs[] = {0, 30, 70, 90, 110, 190, 410};
const double kEpaDb[] = {0.0, -1.0, -2.0, -3.0, -8.0, -17.2, -20.8};
const double kEvaNs[] = {0, 30, 150, 310, 370, 710, 1090, 1730, 2510};
const double kEvaDb[] = {0.0, -1.5, -1.4, -3.6, -0.6, -9.1, -7.0, -12.0, -16.9};

// Expected sample-grid powers under nearest-sample placement: every path adds its normalised power to the tap
// round(τ fs).
template <std::size_t N>
std::vector<double> nearest_grid(const double (&ns)[N], const double (&db)[N], double fs) {
    double total = 0.0;
    for (double v : db)
        total += std::pow(10.0, v / 10.0);
    std::vector<double> p(static_cast<std::size_t>(std::lround(ns[N - 1] * 1e-9 * fs)) + 1, 0.0);
    for (std::size_t i = 0; i < N; ++i)
        p[static_cast<std::size_t>(std::lround(ns[i] * 1e-9 * fs))] += std::pow(10.0, db[i] / 10.0) / total;
    return p;
}

void check_profile(const char* name, const std::vector<double>& expected, const std::vector<double>& got,
                   double rel_tol) {
    ASSERT_EQ(got.size(), expected.size()) << name;
    double worst = 0.0;
    for (std::size_t l = 0; l < expected.size(); ++l) {
        if (expected[l] == 0.0) {
            EXPECT_EQ(got[l], 0.0) << name << " tap " << l;
            continue;
        }
        const double rel = std::fabs(got[l] / expected[l] - 1.0);
        worst = std::max(worst, rel);
        EXPECT_LT(rel, rel_tol) << name << " tap " << l << ": " << got[l] << " vs " << expected[l];
    }
    std::printf("[channel] %s tap powers: worst relative error %.4f (tolerance %.2f)\n", name, worst, rel_tol);
}
}  // namespace

TEST(ChannelProfile, AverageTapPowersMatchEpaEvaExponential) {
    const double fs = 30.72e6;
    DeviceChannelConfig d;
    d.fading = "rayleigh";
    auto cfg = one_device(d, fs);
    cfg.n_rx = 4;
    cfg.seed = 21;

    cfg.devices[0].profile = "EPA";
    check_profile("EPA", nearest_grid(kEpaNs, kEpaDb, fs), average_tap_powers(cfg, 5000), 0.04);
    cfg.devices[0].profile = "eva";  // names are case-insensitive
    check_profile("EVA", nearest_grid(kEvaNs, kEvaDb, fs), average_tap_powers(cfg, 5000), 0.04);

    // Exponential: the measured profile decays geometrically and its rms delay spread is the configured one.
    const double tau = 100e-9;  // 3.07 samples
    cfg.devices[0].profile = "exponential";
    cfg.devices[0].rms_delay_spread_s = tau;
    cfg.devices[0].path_loss_db = -2.0;  // mean gain 1.585
    const auto p = average_tap_powers(cfg, 5000);
    double total = 0.0, m1 = 0.0, m2 = 0.0;
    for (std::size_t l = 0; l < p.size(); ++l) {
        total += p[l];
        m1 += p[l] * static_cast<double>(l);
        m2 += p[l] * static_cast<double>(l * l);
    }
    const double mean = m1 / total;
    const double rms = std::sqrt(m2 / total - mean * mean) / fs;
    EXPECT_NEAR(total, std::pow(10.0, 0.2), 0.02 * std::pow(10.0, 0.2));
    EXPECT_NEAR(rms / tau, 1.0, 0.03);
    // geometric decay: log-power is linear in the lag (fit over the taps above -20 dB)
    double sx = 0, sy = 0, sxx = 0, sxy = 0, n = 0;
    for (std::size_t l = 0; l < p.size() && p[l] > 0.01 * p[0]; ++l) {
        const double x = static_cast<double>(l), y = std::log(p[l]);
        sx += x, sy += y, sxx += x * x, sxy += x * y, n += 1;
    }
    const double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
    double worst = 0.0;
    for (std::size_t l = 0; l < static_cast<std::size_t>(n); ++l) {
        const double fit = (sy - slope * sx) / n + slope * static_cast<double>(l);
        worst = std::max(worst, std::fabs(std::log(p[l]) - fit));
    }
    EXPECT_LT(worst, 0.05);  // within 5% of the geometric fit
    std::printf("[channel] exponential: total %.4f (expected %.4f), rms %.2f ns (configured %.2f ns), "
                "worst deviation from geometric fit %.4f\n",
                total, std::pow(10.0, 0.2), rms * 1e9, tau * 1e9, worst);
}

TEST(ChannelProfile, SincPlacementKeepsPowerAndMeanDelay) {
    const double fs = 30.72e6;
    DeviceChannelConfig d;
    auto cfg = one_device(d, fs);
    cfg.tap_interpolation = "sinc";
    cfg.sinc_half_length = 6;
    // a path on the sample grid is one tap at the bulk delay
    {
        MultiUserChannel ch(cfg);
        const auto h = ch.taps(0, 0, 0);
        EXPECT_EQ(ch.bulk_delay(), 6);
        for (std::size_t l = 0; l < h.size(); ++l) {
            if (l != 6) {
                EXPECT_EQ(h[l], cf32{}) << l;
            }
        }
        EXPECT_GT(std::abs(h[6]), 0.0f);
    }
    // EPA: average power and mean excess delay of the 3GPP table (off-grid paths are interpolated)
    cfg.devices[0].profile = "EPA";
    cfg.n_rx = 4;
    cfg.seed = 22;
    const auto p = average_tap_powers(cfg, 5000);
    double total = 0.0, m1 = 0.0;
    for (std::size_t l = 0; l < p.size(); ++l) {
        total += p[l];
        m1 += p[l] * (static_cast<double>(l) - 6.0);
    }
    double tp = 0.0, tm = 0.0;
    for (std::size_t i = 0; i < 7; ++i) {
        tp += std::pow(10.0, kEpaDb[i] / 10.0);
        tm += std::pow(10.0, kEpaDb[i] / 10.0) * kEpaNs[i] * 1e-9 * fs;
    }
    EXPECT_NEAR(total, 1.0, 0.03);
    EXPECT_NEAR(m1 / total, tm / tp, 0.1);
}

// ---------------------------------------------------------------------------------------------------------------
// Doppler: autocorrelation of a flat Rayleigh tap, measured on the channel output for a constant input, against
// Clarke's J0(2π f_d τ). 500 realisations × 4 links × 2000 samples.
// ---------------------------------------------------------------------------------------------------------------
TEST(ChannelDoppler, AutocorrelationFollowsJ0) {
    const double fs = 10e3, fd = 100.0;
    DeviceChannelConfig d;
    d.fading = "rayleigh";
    d.doppler_hz = fd;
    auto cfg = one_device(d, fs);
    cfg.n_rx = 4;
    cfg.seed = 31;
    MultiUserChannel ch(cfg);
    ASSERT_EQ(ch.update_interval(0), 1u);  // f_d/fs = 0.01: the taps are updated every sample
    const std::size_t n = 2000;
    const int max_lag = 60, step = 4;
    std::vector<std::vector<cf32>> in{std::vector<cf32>(n, cf32{1.0f, 0.0f})};
    std::vector<cd> R(static_cast<std::size_t>(max_lag / step + 1));
    double power = 0.0;
    std::size_t count_p = 0;
    for (int real = 0; real < 500; ++real) {
        const auto y = run(ch, in, n, n);
        for (const auto& v : y) {
            for (std::size_t i = 0; i < R.size(); ++i) {
                const std::size_t tau = i * static_cast<std::size_t>(step);
                cd acc = 0.0;
                for (std::size_t t = 0; t + tau < n; ++t)
                    acc += cd(v[t + tau]) * std::conj(cd(v[t]));
                R[i] += acc / static_cast<double>(n - tau);
            }
            for (const auto& s : v)
                power += std::norm(s);
            count_p += n;
        }
        ch.new_realisation();
    }
    power /= static_cast<double>(count_p);
    const double links = 500.0 * 4.0;
    EXPECT_NEAR(power, 1.0, 0.03);
    double worst = 0.0;
    for (std::size_t i = 0; i < R.size(); ++i) {
        const double tau = static_cast<double>(i * static_cast<std::size_t>(step)) / fs;
        const cd r = R[i] / links / power;
        const double j0 = std::cyl_bessel_j(0.0, 2.0 * kPi * fd * tau);
        worst = std::max(worst, std::abs(r - j0));
        EXPECT_NEAR(r.real(), j0, 0.04) << "lag " << tau * fs;
        EXPECT_NEAR(r.imag(), 0.0, 0.04) << "lag " << tau * fs;
    }
    std::printf("[channel] Doppler autocorrelation: max |R(tau) - J0(2 pi fd tau)| = %.4f (tolerance 0.04)\n", worst);
}

// ---------------------------------------------------------------------------------------------------------------
// Streaming: determinism and chunk invariance, everything switched on.
// ---------------------------------------------------------------------------------------------------------------
namespace {
ChannelSimConfig everything(std::uint64_t seed) {
    ChannelSimConfig c;
    c.sample_rate = 7.68e6;
    c.n_tx = 2;
    c.n_rx = 2;
    c.seed = seed;
    c.devices.resize(3);
    c.devices[0].profile = "EPA";
    c.devices[0].doppler_hz = 50.0;
    c.devices[0].cfo_hz = 300.0;
    c.devices[0].timing_offset_samples = 1.7;
    c.devices[0].gain_error_db = 0.5;
    c.devices[1].profile = "EVA";
    c.devices[1].fading = "rician";
    c.devices[1].rician_k = 2.0;
    c.devices[1].block_length = 1000;
    c.devices[1].cfo_hz = -700.0;
    c.devices[1].timing_offset_samples = 0.25;
    c.devices[1].path_loss_db = 3.0;
    c.devices[2].profile = "exponential";
    c.devices[2].rms_delay_spread_s = 0.5e-6;
    c.devices[2].doppler_hz = 10.0;
    c.devices[2].timing_offset_samples = 3.0;
    c.noise_variance = 0.01;
    c.phase_noise_linewidth_hz = 100.0;
    c.dc_offset = {0.01, -0.02};
    c.segment_size = 512;
    return c;
}

std::vector<std::vector<cf32>> device_inputs(std::size_t n_streams, std::size_t n) {
    std::vector<std::vector<cf32>> in;
    for (std::size_t i = 0; i < n_streams; ++i)
        in.push_back(gaussian(n, 100 + static_cast<unsigned>(i)));
    return in;
}

double max_abs_diff(const std::vector<std::vector<cf32>>& a, const std::vector<std::vector<cf32>>& b) {
    double m = 0.0;
    for (std::size_t r = 0; r < a.size(); ++r)
        for (std::size_t i = 0; i < a[r].size(); ++i)
            m = std::max(m, static_cast<double>(std::abs(a[r][i] - b[r][i])));
    return m;
}
}  // namespace

TEST(ChannelStream, SameSeedBitIdenticalDifferentSeedDiffers) {
    const std::size_t n = 6000;
    const auto in = device_inputs(6, n);
    MultiUserChannel a(everything(5)), b(everything(5)), c(everything(6));
    const auto ya = run(a, in, n, 1000), yb = run(b, in, n, 1000), yc = run(c, in, n, 1000);
    for (std::size_t r = 0; r < ya.size(); ++r) {
        EXPECT_EQ(0, std::memcmp(ya[r].data(), yb[r].data(), n * sizeof(cf32))) << "rx " << r;
        std::size_t same = 0;
        for (std::size_t i = 0; i < n; ++i)
            same += ya[r][i] == yc[r][i];
        EXPECT_LT(same, n / 100) << "rx " << r;
    }
}

TEST(ChannelStream, ChunkingDoesNotChangeTheOutput) {
    const std::size_t n = 12000;  // crosses block-fading, Doppler-update and segment boundaries
    const auto in = device_inputs(6, n);
    MultiUserChannel ref(everything(9));
    const auto y = run(ref, in, n, n);
    double rms = 0.0;
    for (const auto& v : y[0])
        rms += std::norm(v);
    rms = std::sqrt(rms / static_cast<double>(n));
    for (std::size_t chunk : {std::size_t{1}, std::size_t{17}, std::size_t{4096}}) {
        MultiUserChannel ch(everything(9));
        const double d = max_abs_diff(y, run(ch, in, n, chunk));
        EXPECT_LE(d, 1e-6) << "chunk " << chunk << " (output rms " << rms << ")";
        std::printf("[channel] chunk %zu: max |difference| = %.3g (output rms %.3f)\n", chunk, d, rms);
    }
    // the other kernels compute the same sums (VOLK: a different rounding order; AVX2 when the CPU has it)
    for (const char* kernel : {"volk", "avx2"}) {
        auto cv = everything(9);
        cv.fir_kernel = kernel;
        try {
            cv.validate();
        } catch (const std::invalid_argument&) {
            continue;  // not on this CPU
        }
        MultiUserChannel chv(cv);
        EXPECT_STREQ(chv.kernel_name(), kernel);
        EXPECT_LE(max_abs_diff(y, run(chv, in, n, 333)), 1e-5) << kernel;
    }
}

// The processed output against an independent reference: y_r[n] = Σ_k Σ_t Σ_i c_{k,r,t}[i; n] s_{k,t}[n − lag_i]
// + dc in double precision, with c[·; n] the impulse_response() in force at sample n (recorded on a second
// instance stepped one sample at a time: the fading does not depend on how the stream is cut) and
// s = x e^{j2π Δf n/fs}. Time-varying (Doppler, block fading), sparse and dense (sinc) taps, fractional and integer
// timing offsets, CFO, N_t = N_r = 2, every kernel this CPU has.
namespace {
ChannelSimConfig ground_truth_config(bool fractional) {
    ChannelSimConfig c;
    c.sample_rate = 7.68e6;
    c.n_tx = 2;
    c.n_rx = 2;
    c.seed = 77;
    c.segment_size = 256;
    c.dc_offset = {0.05, -0.03};
    c.devices.resize(4);
    c.devices[0].profile = "EPA";
    c.devices[0].fading = "rician";
    c.devices[0].rician_k = 2.0;
    c.devices[0].doppler_hz = 300.0;  // U = 16
    c.devices[0].cfo_hz = 310.0;
    c.devices[0].timing_offset_samples = fractional ? 1.7 : 2.0;
    c.devices[1].profile = "EVA";
    c.devices[1].fading = "rician";
    c.devices[1].rician_k = 2.0;
    c.devices[1].block_length = 700;
    c.devices[1].cfo_hz = -6500.0;
    c.devices[1].timing_offset_samples = fractional ? 0.25 : 0.0;
    c.devices[1].gain_error_db = 1.5;
    c.devices[2].profile = "exponential";
    c.devices[2].rms_delay_spread_s = 0.4e-6;
    c.devices[2].doppler_hz = 40.0;
    c.devices[2].timing_offset_samples = 3.0;
    c.devices[3].profile = "flat";
    c.devices[3].fading = "none";
    c.devices[3].cfo_hz = 1234.5;
    if (!fractional)
        c.tap_interpolation = "sinc";  // dense multipath taps instead of the fractional-delay filter
    return c;
}
}  // namespace

TEST(ChannelStream, OutputMatchesImpulseResponseGroundTruth) {
    const std::size_t n = 2000;
    for (bool fractional : {true, false}) {
        const auto base = ground_truth_config(fractional);
        const int K = static_cast<int>(base.devices.size()), nt = base.n_tx, nr = base.n_rx;
        const auto in = device_inputs(static_cast<std::size_t>(K * nt), n);
        // impulse responses in force at every sample
        MultiUserChannel stepper(base);
        std::vector<std::vector<MultiUserChannel::ImpulseResponse>> ir(n);
        std::vector<std::vector<cf32>> one(static_cast<std::size_t>(K * nt), std::vector<cf32>(1));
        for (std::size_t i = 0; i < n; ++i) {
            for (int k = 0; k < K; ++k)
                for (int r = 0; r < nr; ++r)
                    for (int t = 0; t < nt; ++t)
                        ir[i].push_back(stepper.impulse_response(k, r, t));
            run(stepper, one, 1, 1);
        }
        // reference output
        std::vector<std::vector<cd>> s(in.size(), std::vector<cd>(n));
        for (int k = 0; k < K; ++k)
            for (int t = 0; t < nt; ++t)
                for (std::size_t i = 0; i < n; ++i) {
                    const double ph = 2.0 * kPi * std::fmod(base.devices[static_cast<std::size_t>(k)].cfo_hz *
                                                                static_cast<double>(i) / base.sample_rate,
                                                            1.0);
                    s[static_cast<std::size_t>(k * nt + t)][i] =
                        cd(in[static_cast<std::size_t>(k * nt + t)][i]) * std::polar(1.0, ph);
                }
        std::vector<std::vector<cd>> ref(static_cast<std::size_t>(nr), std::vector<cd>(n, base.dc_offset));
        for (std::size_t i = 0; i < n; ++i)
            for (int k = 0; k < K; ++k)
                for (int r = 0; r < nr; ++r)
                    for (int t = 0; t < nt; ++t) {
                        const auto& h = ir[i][static_cast<std::size_t>((k * nr + r) * nt + t)];
                        for (std::size_t j = 0; j < h.lags.size(); ++j)
                            if (static_cast<std::size_t>(h.lags[j]) <= i)
                                ref[static_cast<std::size_t>(r)][i] +=
                                    cd(h.taps[j]) * s[static_cast<std::size_t>(k * nt + t)][i - static_cast<std::size_t>(h.lags[j])];
                    }
        double rms = 0.0;
        for (const auto& v : ref[0])
            rms += std::norm(v);
        rms = std::sqrt(rms / static_cast<double>(n));
        for (const char* kernel : {"auto", "volk", "avx2", "avx512"}) {
            auto cfg = base;
            cfg.fir_kernel = kernel;
            try {
                cfg.validate();
            } catch (const std::invalid_argument&) {
                continue;  // not on this CPU
            }
            for (std::size_t chunk : {n, std::size_t{333}}) {
                MultiUserChannel ch(cfg);
                const auto y = run(ch, in, n, chunk);
                double worst = 0.0;
                for (int r = 0; r < nr; ++r)
                    for (std::size_t i = 0; i < n; ++i)
                        worst = std::max(worst, std::abs(cd(y[static_cast<std::size_t>(r)][i]) -
                                                         ref[static_cast<std::size_t>(r)][i]));
                EXPECT_LT(worst, 1e-5 * rms) << kernel << (fractional ? " fractional" : " integer") << " chunk " << chunk;
                if (chunk == n)
                    std::printf("[channel] %s offsets, kernel %s (%s): max |y - reference| = %.2e (output rms %.2f)\n",
                                fractional ? "fractional" : "integer", kernel, ch.kernel_name(), worst, rms);
            }
        }
    }
}

TEST(ChannelStream, BlockFadingChangesExactlyAtBlockBoundaries) {
    DeviceChannelConfig d;
    d.block_length = 100;
    auto cfg = one_device(d);
    MultiUserChannel ch(cfg);
    std::vector<std::vector<cf32>> in{std::vector<cf32>(1000, cf32{1.0f, 0.0f})};
    auto h_prev = ch.taps(0, 0, 0)[0];
    for (int i = 1; i <= 350; ++i) {
        run(ch, in, 1, 1);
        const auto h = ch.taps(0, 0, 0)[0];
        if (i % 100 == 0) {
            EXPECT_NE(h, h_prev) << "sample " << i;
        } else {
            EXPECT_EQ(h, h_prev) << "sample " << i;
        }
        h_prev = h;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Device impairments.
// ---------------------------------------------------------------------------------------------------------------
TEST(ChannelImpairments, CfoRotatesToneByTwoPiDfOverFs) {
    const double fs = 1e6, dfs[] = {1234.5, -20000.0};
    for (double df : dfs) {
        auto d = ideal_device();
        d.cfo_hz = df;
        MultiUserChannel ch(one_device(d, fs));
        const std::size_t n = 20000;
        const double f0 = 0.05;  // cycles per sample
        std::vector<std::vector<cf32>> in{std::vector<cf32>(n)};
        for (std::size_t i = 0; i < n; ++i)
            in[0][i] = std::polar(1.0f, static_cast<float>(2.0 * kPi * std::fmod(f0 * static_cast<double>(i), 1.0)));
        const auto y = run(ch, in, n, 1000)[0];
        // least-squares slope of the unwrapped phase of y·conj(x)
        double prev = 0.0, unwrapped = 0.0, sx = 0, sy = 0, sxx = 0, sxy = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const double ph = std::arg(cd(y[i]) * std::conj(cd(in[0][i])));
            if (i > 0)
                unwrapped += std::remainder(ph - prev, 2.0 * kPi);
            else
                unwrapped = ph;
            prev = ph;
            const double x = static_cast<double>(i);
            sx += x, sy += unwrapped, sxx += x * x, sxy += x * unwrapped;
        }
        const double N = static_cast<double>(n);
        const double slope = (N * sxy - sx * sy) / (N * sxx - sx * sx);
        const double expected = 2.0 * kPi * df / fs;
        EXPECT_NEAR(slope, expected, 1e-9) << "cfo " << df;
        EXPECT_NEAR(std::abs(y[n / 2]), 1.0, 1e-5);
        std::printf("[channel] CFO %.1f Hz: slope %.12f rad/sample, expected %.12f, error %.2e\n", df, slope,
                    expected, slope - expected);
    }
}

TEST(ChannelImpairments, FractionalTimingOffsetDelaysBandLimitedSignal) {
    // sum of tones within |f| <= 0.25 fs, compared with the same tones delayed analytically by ε + bulk_delay().
    const double freqs[] = {-0.25, -0.13, -0.02, 0.07, 0.19, 0.25};
    const std::size_t n = 4000;
    for (double eps : {0.25, 0.5, 2.37, 7.9}) {
        ChannelSimConfig cfg;
        cfg.devices = {ideal_device(), ideal_device()};
        cfg.devices[0].timing_offset_samples = eps;
        cfg.devices[1].timing_offset_samples = 0.0;
        MultiUserChannel ch(cfg);
        ASSERT_EQ(ch.bulk_delay(), cfg.fd_half_length - 1);
        auto tone_sum = [&](double t) {
            cd v = 0.0;
            for (std::size_t i = 0; i < 6; ++i)
                v += std::polar(1.0 / std::sqrt(6.0), 2.0 * kPi * freqs[i] * t + static_cast<double>(i));
            return v;
        };
        std::vector<std::vector<cf32>> in(2, std::vector<cf32>(n));
        for (std::size_t i = 0; i < n; ++i)
            in[0][i] = cf32(tone_sum(static_cast<double>(i)));
        const auto y = run(ch, in, n, 700)[0];  // device 1 silent (zeros)
        double err2 = 0.0, ref2 = 0.0, err_wrong = 0.0;
        for (std::size_t i = 100; i < n; ++i) {
            const double t = static_cast<double>(i) - eps - ch.bulk_delay();
            err2 += std::norm(cd(y[i]) - tone_sum(t));
            ref2 += std::norm(tone_sum(t));
            err_wrong += std::norm(cd(y[i]) - tone_sum(t + 0.05));  // 0.05 samples off
        }
        const double rel = std::sqrt(err2 / ref2), rel_wrong = std::sqrt(err_wrong / ref2);
        EXPECT_LT(rel, 1e-3) << "eps " << eps;
        EXPECT_GT(rel_wrong, 10.0 * rel) << "eps " << eps;
        std::printf("[channel] timing offset %.2f: relative rms error %.2e (0.05 samples off: %.2e)\n", eps, rel,
                    rel_wrong);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Server impairments.
// ---------------------------------------------------------------------------------------------------------------
TEST(ChannelImpairments, AwgnVarianceAndDcOffset) {
    ChannelSimConfig cfg;
    cfg.n_rx = 2;
    cfg.noise_variance = 0.37;
    cfg.dc_offset = {0.3, -0.2};
    cfg.seed = 41;
    MultiUserChannel ch(cfg);
    const std::size_t n = 500000;
    const auto y = run(ch, {std::vector<cf32>{}}, n, 4096);  // device silent
    cd cross = 0.0;
    for (int r = 0; r < 2; ++r) {
        cd mean = 0.0;
        for (const auto& v : y[static_cast<std::size_t>(r)])
            mean += cd(v);
        mean /= static_cast<double>(n);
        double vr = 0.0, vi = 0.0;
        for (const auto& v : y[static_cast<std::size_t>(r)]) {
            vr += (v.real() - mean.real()) * (v.real() - mean.real());
            vi += (v.imag() - mean.imag()) * (v.imag() - mean.imag());
        }
        vr /= static_cast<double>(n);
        vi /= static_cast<double>(n);
        // 5 standard errors of the mean: 5 sqrt(0.185 / n) = 3e-3
        EXPECT_NEAR(mean.real(), 0.3, 3e-3);
        EXPECT_NEAR(mean.imag(), -0.2, 3e-3);
        EXPECT_NEAR((vr + vi) / 0.37, 1.0, 0.02) << "rx " << r;
        EXPECT_NEAR(vr / vi, 1.0, 0.02) << "rx " << r;
        std::printf("[channel] rx %d: noise variance %.5f (configured 0.37), mean (%.5f, %.5f)\n", r, vr + vi,
                    mean.real(), mean.imag());
    }
    for (std::size_t i = 0; i < n; ++i)
        cross += (cd(y[0][i]) - cd(0.3, -0.2)) * std::conj(cd(y[1][i]) - cd(0.3, -0.2));
    EXPECT_LT(std::abs(cross) / static_cast<double>(n) / 0.37, 0.01);  // antennas' noise independent
}

TEST(ChannelImpairments, PhaseNoiseIncrementVariance) {
    const double fs = 1e6, lw = 500.0;
    auto cfg = one_device(ideal_device(), fs);
    cfg.phase_noise_linewidth_hz = lw;
    cfg.seed = 51;
    MultiUserChannel ch(cfg);
    const std::size_t n = 400000;
    const auto y = run(ch, {std::vector<cf32>(n, cf32{1.0f, 0.0f})}, n, 3000)[0];
    double s1 = 0.0, s2 = 0.0, s100 = 0.0;
    std::size_t n100 = 0;
    for (std::size_t i = 1; i < n; ++i) {
        const double d = std::arg(cd(y[i]) * std::conj(cd(y[i - 1])));
        s1 += d;
        s2 += d * d;
        if (i >= 100 && i % 10 == 0) {
            const double d100 = std::arg(cd(y[i]) * std::conj(cd(y[i - 100])));
            s100 += d100 * d100;
            ++n100;
        }
    }
    const double m = s1 / static_cast<double>(n - 1);
    const double var = s2 / static_cast<double>(n - 1) - m * m;
    const double expected = 2.0 * kPi * lw / fs;
    EXPECT_NEAR(var / expected, 1.0, 0.02);
    EXPECT_NEAR(m, 0.0, 5.0 * std::sqrt(expected / static_cast<double>(n)));
    // Wiener process: the variance grows linearly with the lag
    EXPECT_NEAR(s100 / static_cast<double>(n100) / (100.0 * expected), 1.0, 0.1);
    for (std::size_t i = 0; i < n; i += 997)
        ASSERT_NEAR(std::abs(y[i]), 1.0f, 1e-5f);  // phase noise does not change the amplitude
    std::printf("[channel] phase-noise increment variance %.4e, expected 2 pi lw/fs = %.4e\n", var, expected);
}

TEST(ChannelImpairments, AwgnAndPhaseNoiseIncrementsAreGaussian) {
    // KS at significance 0.01 against the normal CDF: the AWGN's real and imaginary parts (n = 100000 each, critical
    // value 0.0051) and the phase-noise increments (n = 99999); a standard deviation 5% off must be rejected.
    auto phi = [](double x, double sd) { return 0.5 * std::erfc(-x / (sd * std::sqrt(2.0))); };
    const std::size_t n = 100000;
    const double crit = ks_critical(0.01, n);
    {
        ChannelSimConfig cfg;
        cfg.noise_variance = 2.0;  // unit variance per component
        cfg.seed = 43;
        MultiUserChannel ch(cfg);
        const auto y = run(ch, {std::vector<cf32>{}}, n, 1000)[0];
        std::vector<double> re(n), im(n);
        for (std::size_t i = 0; i < n; ++i) {
            re[i] = y[i].real();
            im[i] = y[i].imag();
        }
        const double Dr = ks_statistic(re, [&](double x) { return phi(x, 1.0); });
        const double Di = ks_statistic(im, [&](double x) { return phi(x, 1.0); });
        EXPECT_LT(Dr, crit);
        EXPECT_LT(Di, crit);
        EXPECT_GT(ks_statistic(re, [&](double x) { return phi(x, 1.05); }), crit);
        std::printf("[channel] AWGN KS: D = %.5f (real), %.5f (imaginary), critical %.5f\n", Dr, Di, crit);
    }
    {
        const double fs = 1e6, lw = 397.9;  // sigma = sqrt(2 pi lw / fs) = 0.05 rad
        auto cfg = one_device(ideal_device(), fs);
        cfg.phase_noise_linewidth_hz = lw;
        cfg.seed = 53;
        MultiUserChannel ch(cfg);
        const auto y = run(ch, {std::vector<cf32>(n, cf32{1.0f, 0.0f})}, n, 777)[0];
        std::vector<double> d(n - 1);
        for (std::size_t i = 1; i < n; ++i)
            d[i - 1] = std::arg(cd(y[i]) * std::conj(cd(y[i - 1])));
        const double sd = std::sqrt(2.0 * kPi * lw / fs);
        const double D = ks_statistic(d, [&](double x) { return phi(x, sd); });
        EXPECT_LT(D, ks_critical(0.01, d.size()));
        EXPECT_GT(ks_statistic(d, [&](double x) { return phi(x, 1.05 * sd); }), ks_critical(0.01, d.size()));
        std::printf("[channel] phase-noise increments KS: D = %.5f, critical %.5f\n", D, ks_critical(0.01, d.size()));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The frequency-response accessor against what the channel does to OFDM symbols: Y_m = Σ_k H_k[m] X_k[m].
// ---------------------------------------------------------------------------------------------------------------
TEST(ChannelOfdm, FrequencyResponseMatchesDemodulatedSymbols) {
    Numerology num;
    num.fft_size = 256;
    num.cp_len = 64;
    num.n_occupied = 200;
    num.sample_rate = 15.36e6;
    ChannelSimConfig cfg;
    cfg.sample_rate = num.sample_rate;
    cfg.n_rx = 2;
    cfg.seed = 61;
    cfg.devices.resize(2);
    cfg.devices[0].profile = "EPA";
    cfg.devices[0].timing_offset_samples = 1.3;
    cfg.devices[0].gain_error_db = -1.0;
    cfg.devices[1].profile = "EVA";  // 2510 ns = 38.6 samples
    cfg.devices[1].timing_offset_samples = 0.6;
    cfg.devices[1].path_loss_db = 3.0;
    cfg.devices[1].fading = "rician";
    cfg.devices[1].rician_k = 1.0;
    MultiUserChannel ch(cfg);
    for (int k = 0; k < 2; ++k) {
        const auto ir = ch.impulse_response(k, 0, 0);
        ASSERT_GE(ir.lags.front(), 0);
        ASSERT_LE(ir.lags.back(), num.cp_len);  // the whole response fits in the cyclic prefix
    }

    fedlora::phy::OfdmModulator mod(num);
    fedlora::phy::OfdmDemodulator demod(num);
    const std::size_t n_sym = 6, occ = 200, L = static_cast<std::size_t>(num.symbol_len());
    std::vector<std::vector<cf32>> X(2), in(2, std::vector<cf32>(n_sym * L));
    std::mt19937 g(7);
    for (int k = 0; k < 2; ++k) {
        X[static_cast<std::size_t>(k)].resize(n_sym * occ);
        for (auto& v : X[static_cast<std::size_t>(k)])
            v = cf32(g() % 2 ? 0.7071f : -0.7071f, g() % 2 ? 0.7071f : -0.7071f);
        mod.modulate(X[static_cast<std::size_t>(k)].data(), in[static_cast<std::size_t>(k)].data(), n_sym);
    }
    std::vector<cf32> Y(occ);
    double worst = 0.0;
    for (int half = 0; half < 2; ++half) {  // a second realisation, switched at a symbol boundary
        std::vector<std::vector<cf32>> H(4);
        for (int k = 0; k < 2; ++k)
            for (int r = 0; r < 2; ++r)
                H[static_cast<std::size_t>(k * 2 + r)] = ch.frequency_response(num, k, r, 0);
        std::vector<std::vector<cf32>> chunk_in(2);
        const std::size_t s0 = static_cast<std::size_t>(half) * 3;
        for (int k = 0; k < 2; ++k)
            chunk_in[static_cast<std::size_t>(k)].assign(in[static_cast<std::size_t>(k)].begin() + static_cast<std::ptrdiff_t>(s0 * L),
                                                         in[static_cast<std::size_t>(k)].begin() + static_cast<std::ptrdiff_t>((s0 + 3) * L));
        const auto y = run(ch, chunk_in, 3 * L, 1000);
        for (int r = 0; r < 2; ++r)
            for (std::size_t s = 0; s < 3; ++s) {
                demod.demodulate(y[static_cast<std::size_t>(r)].data() + s * L, Y.data(), 1);
                for (std::size_t m = 0; m < occ; ++m) {
                    cd expect = 0.0;
                    for (int k = 0; k < 2; ++k)
                        expect += cd(H[static_cast<std::size_t>(k * 2 + r)][m]) *
                                  cd(X[static_cast<std::size_t>(k)][(s0 + s) * occ + m]);
                    worst = std::max(worst, std::abs(cd(Y[m]) - expect));
                }
            }
        ch.new_realisation();
    }
    EXPECT_LT(worst, 1e-4);
    std::printf("[channel] OFDM: max |Y - sum_k H_k X_k| = %.2e (tolerance 1e-4)\n", worst);
}

// ---------------------------------------------------------------------------------------------------------------
// Steady state allocates nothing.
// ---------------------------------------------------------------------------------------------------------------
TEST(ChannelAlloc, SteadyStateProcessDoesNotAllocate) {
    {
        // The counter is not vacuous: an allocation inside the window is seen.
        fedlora::test::CountAllocations probe;
        static void* volatile sink = nullptr;
        sink = ::operator new(64);
        ::operator delete(sink);
        ASSERT_GE(probe.count().total(), 1);
    }
    auto cfg = everything(3);
    MultiUserChannel ch(cfg);
    const std::size_t n = 3000;  // longer than segment_size: split internally
    const auto in = device_inputs(6, n);
    std::vector<std::vector<cf32>> out(2, std::vector<cf32>(n));
    const cf32* ip[6];
    for (int i = 0; i < 6; ++i)
        ip[i] = in[static_cast<std::size_t>(i)].data();
    cf32* op[2] = {out[0].data(), out[1].data()};
    ch.process(ip, op, n);  // warm-up (VOLK's dispatcher initialises on first use)
    fedlora::test::CountAllocations counter;
    for (int it = 0; it < 200; ++it) {
        ch.process(ip, op, static_cast<std::size_t>(1 + (it * 37) % 3000));
        if (it % 50 == 0)
            ch.new_realisation();
    }
    const auto c = counter.count();
    EXPECT_EQ(c.operator_new, 0) << "operator new calls";
    EXPECT_EQ(c.malloc, 0) << "malloc calls";
}
