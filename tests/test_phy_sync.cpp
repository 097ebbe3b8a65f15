// Schmidl & Cox preamble and streaming synchroniser, each checked against an independent reference: a direct DFT,
// a direct O(L) evaluation of the metric, the analytic noise statistics of the metric and analytic estimator
// variances, and the known ground truth of simulated bursts (AWGN, CFO, random start, random phase).
//
// Acceptance numerology: fft_size 256, cp_len 32, 200 occupied carriers (L = 128, preamble 576 samples).
// SNR is per sample: mean |preamble sample|^2 over the complex noise variance.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <complex>
#include <cstdlib>
#include <iostream>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedlora/phy/ofdm.h"
#include "fedlora/phy/preamble.h"
#include "fedlora/phy/sync.h"
#include "support/alloc_counter.h"

using fedlora::phy::cf32;
using fedlora::phy::CfoCorrector;
using fedlora::phy::Numerology;
using fedlora::phy::Preamble;
using fedlora::phy::SchmidlCoxMetric;
using fedlora::phy::SyncConfig;
using fedlora::phy::SyncDetection;
using fedlora::phy::Synchronizer;
using cd = std::complex<double>;

namespace {

constexpr double kPi = 3.14159265358979323846;

Numerology make(int fft, int cp, int occ) {
    Numerology n;
    n.fft_size = fft;
    n.cp_len = cp;
    n.n_occupied = occ;
    return n;
}

Numerology acceptance() {
    return make(256, 32, 200);
}

SyncConfig config_for(const Numerology& num) {
    SyncConfig c;
    c.numerology = num;
    return c;
}

// Complex white Gaussian noise of variance `var` per sample (var/2 per component) plus a constant `dc`.
void add_noise(std::vector<cf32>& x, double var, std::mt19937_64& rng, cd dc = {}) {
    std::normal_distribution<double> g(0.0, std::sqrt(var / 2.0));
    for (auto& v : x)
        v += cf32(static_cast<float>(g(rng) + dc.real()), static_cast<float>(g(rng) + dc.imag()));
}

// x[at + n] += preamble[n] * exp(j (2 pi cfo n / N + phase)).
void add_preamble(std::vector<cf32>& x, std::size_t at, const Preamble& pre, double cfo, double phase) {
    const double N = pre.numerology().fft_size;
    const auto& s = pre.samples();
    for (std::size_t n = 0; n < s.size(); ++n) {
        const cd rot = std::polar(1.0, 2.0 * kPi * cfo * static_cast<double>(n) / N + phase);
        x[at + n] += cf32(cd(s[n]) * rot);
    }
}

struct Trial {
    std::uint64_t start;
    double cfo;
    const SyncDetection* det = nullptr;
};

struct TrialSet {
    std::vector<Trial> trials;
    std::vector<SyncDetection> detections;
    std::size_t false_alarms = 0;
};

// One stream of n bursts separated by random noise gaps, fed in chunks of random size. Burst i has CFO cfo_of(i)
// and a uniformly random phase and start; a detection counts for a burst if its start is within cp + L of it.
template <class CfoOf>
TrialSet run_bursts(const Numerology& num, double snr_db, std::size_t n, CfoOf cfo_of, std::uint64_t seed,
                    cd dc_rel = {}) {
    Synchronizer sync(config_for(num));
    const Preamble& pre = sync.preamble();
    const double var = pre.power() / std::pow(10.0, snr_db / 10.0);
    const cd dc = dc_rel * std::sqrt(var);
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> gap(300, 1500);
    std::uniform_real_distribution<double> phase(-kPi, kPi);
    std::uniform_int_distribution<std::size_t> chunk(1, 4000);

    TrialSet out;
    out.detections.reserve(n + 16);
    std::vector<cf32> seg;
    std::uint64_t pos = 0;
    auto feed = [&](std::vector<cf32>& s) {
        std::size_t i = 0;
        while (i < s.size()) {
            const std::size_t m = std::min(chunk(rng), s.size() - i);
            sync.process(s.data() + i, m, out.detections);
            i += m;
        }
        pos += s.size();
    };
    for (std::size_t i = 0; i < n; ++i) {
        const auto g = static_cast<std::size_t>(gap(rng));
        seg.assign(g + static_cast<std::size_t>(pre.length()), cf32{});
        const double cfo = cfo_of(i);
        add_preamble(seg, g, pre, cfo, phase(rng));
        add_noise(seg, var, rng, dc);
        out.trials.push_back({pos + g, cfo});
        feed(seg);
    }
    seg.assign(sync.max_latency() + 1, cf32{});
    add_noise(seg, var, rng, dc);
    feed(seg);

    const auto tol = static_cast<std::int64_t>(num.cp_len + num.fft_size / 2);
    std::size_t t = 0;
    for (const auto& d : out.detections) {
        while (t < out.trials.size() &&
               static_cast<std::int64_t>(out.trials[t].start) + tol < static_cast<std::int64_t>(d.start))
            ++t;
        if (t < out.trials.size() &&
            std::llabs(static_cast<long long>(d.start) - static_cast<long long>(out.trials[t].start)) <= tol &&
            !out.trials[t].det)
            out.trials[t].det = &d;
        else
            ++out.false_alarms;
    }
    return out;
}

// Direct O(L) evaluation of the centred Schmidl & Cox quantities for the window starting at d (double precision).
struct Direct {
    double m;
    cd p;
    double r;
};
Direct direct_metric(const std::vector<cf32>& x, std::size_t d, int L, bool centred = true) {
    cd s1{}, s2{}, p{};
    double e1 = 0.0, e2 = 0.0;
    for (int m = 0; m < L; ++m) {
        const cd a(x[d + static_cast<std::size_t>(m)]);
        const cd b(x[d + static_cast<std::size_t>(m + L)]);
        s1 += a;
        s2 += b;
        e1 += std::norm(a);
        e2 += std::norm(b);
        p += std::conj(a) * b;
    }
    if (centred) {
        p -= std::conj(s1) * s2 / static_cast<double>(L);
        e1 -= std::norm(s1) / L;
        e2 -= std::norm(s2) / L;
    }
    const double r = 0.5 * (e1 + e2);
    return {std::norm(p) / (r * r), p, r};
}

std::vector<cd> direct_idft(const std::vector<cf32>& X, const Numerology& num) {
    const int N = num.fft_size;
    const auto carriers = num.occupied_carriers();
    std::vector<cd> t(static_cast<std::size_t>(N));
    for (int n = 0; n < N; ++n) {
        cd acc{};
        for (std::size_t i = 0; i < carriers.size(); ++i)
            acc += cd(X[i]) * std::polar(1.0, 2.0 * kPi * carriers[i] * n / N);
        t[static_cast<std::size_t>(n)] = acc / std::sqrt(static_cast<double>(N));
    }
    return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Preamble

TEST(SyncPreamble, FirstSymbolHasTwoIdenticalHalves) {
    for (const auto& num : {acceptance(), make(64, 16, 48), make(1024, 72, 600), make(16, 4, 8)}) {
        const Preamble pre(num);
        const int N = num.fft_size, cp = num.cp_len, L = N / 2;
        const auto& s = pre.samples();
        ASSERT_EQ(static_cast<int>(s.size()), 2 * (N + cp));
        ASSERT_EQ(pre.half_len(), L);

        // Reference: symbol 1 computed directly from its carrier values, halves taken from that.
        const auto ref = direct_idft(pre.symbol1(), num);
        for (int i = 0; i < L; ++i) {
            const auto a = ref[static_cast<std::size_t>(i)], b = ref[static_cast<std::size_t>(i + L)];
            ASSERT_NEAR(std::abs(a - b), 0.0, 1e-9) << "direct halves, N=" << N << " i=" << i;
            const cf32 h1 = s[static_cast<std::size_t>(cp + i)], h2 = s[static_cast<std::size_t>(cp + L + i)];
            ASSERT_NEAR(std::abs(cd(h1) - a), 0.0, 1e-6) << "first half vs direct, N=" << N << " i=" << i;
            ASSERT_NEAR(std::abs(cd(h2) - b), 0.0, 1e-6) << "second half vs direct, N=" << N << " i=" << i;
            ASSERT_NEAR(std::abs(h1 - h2), 0.0, 1e-6) << "halves, N=" << N << " i=" << i;
        }
        // The cyclic prefix continues the period: it equals the last cp samples of the window.
        for (int i = 0; i < cp; ++i)
            ASSERT_EQ(s[static_cast<std::size_t>(i)], s[static_cast<std::size_t>(N + i)]);
        // Symbol 2 is the direct IDFT of its carriers as well.
        const auto ref2 = direct_idft(pre.symbol2(), num);
        for (int i = 0; i < N; ++i)
            ASSERT_NEAR(std::abs(cd(s[static_cast<std::size_t>(N + 2 * cp + i)]) - ref2[static_cast<std::size_t>(i)]),
                        0.0, 1e-6);
    }
}

TEST(SyncPreamble, CarrierLayoutAndPowerMatchADataSymbol) {
    const auto num = acceptance();
    const Preamble pre(num);
    const auto carriers = num.occupied_carriers();
    int n_even = 0;
    for (int c : carriers)
        n_even += (c % 2 == 0);
    EXPECT_EQ(pre.even_carriers(), n_even);
    const double boost2 = static_cast<double>(num.n_occupied) / n_even;
    for (std::size_t i = 0; i < carriers.size(); ++i) {
        if (carriers[i] % 2 != 0)
            EXPECT_EQ(pre.symbol1()[i], cf32{}) << "odd carrier " << carriers[i];
        else
            EXPECT_NEAR(std::norm(cd(pre.symbol1()[i])), boost2, 1e-5) << carriers[i];
        EXPECT_NEAR(std::norm(cd(pre.symbol2()[i])), 1.0, 1e-6) << carriers[i];
    }
    // Power per sample over each FFT window: n_occ / N, as for a data symbol with unit-power carriers (Parseval).
    const int N = num.fft_size, cp = num.cp_len;
    for (int sym = 0; sym < 2; ++sym) {
        double e = 0.0;
        for (int i = 0; i < N; ++i)
            e += std::norm(cd(pre.samples()[static_cast<std::size_t>(sym * (N + cp) + cp + i)]));
        EXPECT_NEAR(e / N, static_cast<double>(num.n_occupied) / N, 1e-5) << "symbol " << sym + 1;
    }
    // Deterministic; another seed gives another sequence.
    EXPECT_EQ(Preamble(num).samples(), pre.samples());
    EXPECT_NE(Preamble(num, 12345u).symbol2(), pre.symbol2());
}

// ---------------------------------------------------------------------------------------------------------------
// Metric

TEST(SyncMetric, StreamingMetricEqualsDirectComputation) {
    const auto num = acceptance();
    const Preamble pre(num);
    const int L = num.fft_size / 2;
    std::mt19937_64 rng(11);
    std::vector<cf32> x(6000, cf32{});
    add_preamble(x, 1500, pre, 0.23, 0.7);
    add_preamble(x, 4000, pre, -0.31, -2.0);
    add_noise(x, pre.power() / 3.0, rng, cd(0.8, -0.5));
    // A silent stretch (exact zeros) followed by noise again.
    std::fill(x.begin() + 2600, x.begin() + 3000, cf32{});

    SchmidlCoxMetric sc(L);
    for (std::size_t n = 0; n < x.size(); ++n) {
        sc.push(x[n]);
        if (n + 1 < static_cast<std::size_t>(2 * L))
            continue;
        const std::size_t d = n + 1 - static_cast<std::size_t>(2 * L);
        const auto ref = direct_metric(x, d, L);
        if (ref.r <= 0.0) {
            ASSERT_EQ(sc.metric(), 0.0) << d;
            continue;
        }
        ASSERT_NEAR(sc.metric(), ref.m, 1e-9 + 1e-9 * ref.m) << "d=" << d;
        ASSERT_NEAR(std::abs(sc.correlation() - ref.p), 0.0, 1e-9 * (1.0 + ref.r)) << "d=" << d;
        ASSERT_NEAR(sc.energy(), ref.r, 1e-9 * (1.0 + ref.r)) << "d=" << d;
    }
}

TEST(SyncMetric, DcOffsetLeavesTheMetricUnchangedButWouldFoolThePlainMetric) {
    const int L = 128;
    std::mt19937_64 rng(5);
    std::vector<cf32> w(20000, cf32{});
    add_noise(w, 1.0, rng);
    const cd dc = std::polar(std::sqrt(10.0), 0.4);  // 10 dB above the noise
    std::vector<cf32> wdc(w);
    for (auto& v : wdc)
        v += cf32(dc);

    SchmidlCoxMetric a(L), b(L);
    double max_diff = 0.0, max_plain = 0.0, sum_plain = 0.0;
    std::size_t n_plain = 0;
    for (std::size_t n = 0; n < w.size(); ++n) {
        a.push(w[n]);
        b.push(wdc[n]);
        if (n + 1 < static_cast<std::size_t>(2 * L))
            continue;
        max_diff = std::max(max_diff, std::abs(a.metric() - b.metric()));
        if (n % 97 == 0) {
            const double plain = direct_metric(wdc, n + 1 - 2 * L, L, false).m;
            max_plain = std::max(max_plain, plain);
            sum_plain += plain;
            ++n_plain;
        }
    }
    // Exact invariance up to the float rounding of the shifted input.
    EXPECT_LT(max_diff, 1e-5);
    // Without centring, M -> (|dc|^2 / (|dc|^2 + var))^2 = (10/11)^2 = 0.826 on DC plus noise: far above threshold.
    const double thr = config_for(acceptance()).resolved_threshold();
    EXPECT_NEAR(sum_plain / static_cast<double>(n_plain), (10.0 / 11.0) * (10.0 / 11.0), 0.03);
    EXPECT_GT(sum_plain / static_cast<double>(n_plain), 5.0 * thr);
}

TEST(SyncMetric, NoiseTailMatchesBetaBound) {
    // On white noise (with or without DC), P(M >= g) <= (1 - g)^(L - 2). Check at levels the data can resolve.
    const int L = 32;
    std::mt19937_64 rng(17);
    std::vector<cf32> w(400000, cf32{});
    add_noise(w, 2.0, rng, cd(-4.0, 3.0));
    SchmidlCoxMetric sc(L);
    const double levels[] = {0.05, 0.1, 0.2};
    std::size_t over[3] = {0, 0, 0}, total = 0;
    for (std::size_t n = 0; n < w.size(); ++n) {
        sc.push(w[n]);
        if (n + 1 < static_cast<std::size_t>(2 * L))
            continue;
        ++total;
        for (int k = 0; k < 3; ++k)
            over[k] += sc.metric() >= levels[k];
    }
    for (int k = 0; k < 3; ++k) {
        const double p = static_cast<double>(over[k]) / static_cast<double>(total);
        const double bound = std::pow(1.0 - levels[k], L - 2);
        // Samples are correlated (sliding window), so allow for a few standard errors of ~L-sample clumps.
        const double slack = 5.0 * std::sqrt(bound * L / static_cast<double>(total));
        EXPECT_LE(p, bound + slack) << "level " << levels[k];
        EXPECT_GT(p, 0.2 * bound) << "level " << levels[k] << " (bound should be of the right order)";
    }
}

TEST(SyncMetric, ZerosAndPureDcNeverTrigger) {
    Synchronizer sync(config_for(acceptance()));
    std::vector<cf32> x(20000, cf32{});
    std::fill(x.begin() + 5000, x.begin() + 12000, cf32(3.0f, -1.5f));
    std::mt19937_64 rng(3);
    std::vector<cf32> burst(3000, cf32{});
    add_noise(burst, 100.0, rng);
    std::copy(burst.begin(), burst.end(), x.begin() + 14000);  // strong noise burst, then exact zeros
    std::vector<SyncDetection> det;
    sync.process(x.data(), x.size(), det);
    EXPECT_TRUE(det.empty());
    EXPECT_EQ(sync.stats().triggers, 0u);
}

// ---------------------------------------------------------------------------------------------------------------
// Acceptance: detection, false alarms, CFO, timing

TEST(SyncAcceptance, DetectionProbabilityAt5dB) {
    const auto num = acceptance();
    const std::size_t n = 3000;
    std::mt19937_64 cfo_rng(101);
    std::uniform_real_distribution<double> cfo(-0.4, 0.4);
    std::vector<double> cfos(n);
    for (auto& c : cfos)
        c = cfo(cfo_rng);
    const auto res = run_bursts(
        num, 5.0, n, [&](std::size_t i) { return cfos[i]; }, 202);
    std::size_t detected = 0, cp_safe = 0, exact = 0;
    double se = 0.0;
    for (const auto& t : res.trials) {
        if (!t.det)
            continue;
        ++detected;
        const auto e = static_cast<long long>(t.det->start) - static_cast<long long>(t.start);
        cp_safe += (e <= 0 && e >= -num.cp_len);
        exact += e == 0;
        se += (t.det->cfo - t.cfo) * (t.det->cfo - t.cfo);
    }
    const double pd = static_cast<double>(detected) / n;
    std::cout << "[sync] 5 dB: detected " << detected << "/" << n << " (Pd = " << pd << "), CP-safe timing " << cp_safe
              << " (exact " << exact << "), CFO RMS error " << std::sqrt(se / std::max<std::size_t>(detected, 1))
              << ", false alarms " << res.false_alarms << "\n";
    EXPECT_GE(pd, 0.999);
    EXPECT_EQ(res.false_alarms, 0u);
}

namespace {
void false_alarm_run(cd dc, std::uint64_t seed, const char* label) {
    const auto num = acceptance();
    Synchronizer sync(config_for(num));
    const std::size_t windows = 30000;
    const std::size_t total = windows * static_cast<std::size_t>(sync.preamble().length());
    std::mt19937_64 rng(seed);
    std::vector<cf32> chunk(8192);
    std::vector<SyncDetection> det;
    det.reserve(64);
    for (std::size_t done = 0; done < total;) {
        const std::size_t m = std::min(chunk.size(), total - done);
        std::fill(chunk.begin(), chunk.end(), cf32{});
        add_noise(chunk, 1.0, rng, dc);
        sync.process(chunk.data(), m, det);
        done += m;
    }
    const double rate = static_cast<double>(det.size()) / windows;
    // Expected metric crossings (upper bound): samples * (1 - g)^(L - 2) = samples * false_alarm_rate.
    const double bound = static_cast<double>(total) * sync.config().false_alarm_rate;
    std::cout << "[sync] " << label << ": " << det.size() << " false alarms in " << windows
              << " preamble-length windows (rate " << rate << "), metric triggers " << sync.stats().triggers
              << " (analytic bound on expected crossings " << bound << "), rejected " << sync.stats().rejected << "\n";
    EXPECT_LE(rate, 1e-4);
    EXPECT_LE(static_cast<double>(sync.stats().triggers), bound + 5.0 * std::sqrt(bound) + 1.0);
}
}  // namespace

TEST(SyncAcceptance, FalseAlarmsOnNoise) {
    false_alarm_run({}, 303, "noise");
}

TEST(SyncAcceptance, FalseAlarmsOnNoisePlusDcOffset) {
    // DC 10 dB above the noise power: |dc|^2 = 10 * var.
    false_alarm_run(std::polar(std::sqrt(10.0), 1.1), 404, "noise + DC (+10 dB)");
}

TEST(SyncAcceptance, CfoWithinOnePercentOfSpacingAt10dB) {
    // Criterion: at least 99% of trials within 0.01 subcarrier spacing, and RMS error below 0.01.
    const auto num = acceptance();
    const std::size_t n = 2000;
    const auto res = run_bursts(
        num, 10.0, n, [&](std::size_t i) { return -0.45 + 0.9 * i / (n - 1.0); }, 505);
    std::size_t within = 0, detected = 0;
    double se = 0.0, se_coarse = 0.0;
    for (const auto& t : res.trials) {
        if (!t.det)
            continue;
        ++detected;
        const double e = t.det->cfo - t.cfo;
        within += std::abs(e) <= 0.01;
        se += e * e;
        se_coarse += (t.det->cfo_coarse - t.cfo) * (t.det->cfo_coarse - t.cfo);
        EXPECT_NEAR(t.det->cfo_rad_per_sample, 2.0 * kPi * t.det->cfo / num.fft_size, 1e-12);
    }
    ASSERT_GE(detected, n - 1);
    const double rms = std::sqrt(se / detected), rms_coarse = std::sqrt(se_coarse / detected);
    const double frac = static_cast<double>(within) / detected;

    // Analytic references (docs/math.md). Schmidl & Cox: var(angle P) = (1/snr + 1/(2 snr^2)) / L.
    const double snr = 10.0, L = num.fft_size / 2, Ls = num.fft_size + num.cp_len;
    const double sd_coarse = std::sqrt((1.0 / snr + 0.5 / (snr * snr)) / L) / kPi;
    // Fine: phase difference of two correlations over Ls samples each, Ls apart: var = 1/(Ls snr) rad^2.
    const double sd_fine = num.fft_size / (2.0 * kPi * Ls) / std::sqrt(Ls * snr);
    std::cout << "[sync] 10 dB CFO: RMS error " << rms << " spacing (analytic " << sd_fine
              << "), within 1%: " << frac * 100.0 << "%, Schmidl & Cox alone RMS " << rms_coarse << " (analytic "
              << sd_coarse << ")\n";
    EXPECT_GE(frac, 0.99);
    EXPECT_LT(rms, 0.01);
    EXPECT_NEAR(rms / sd_fine, 1.0, 0.2);
    EXPECT_NEAR(rms_coarse / sd_coarse, 1.0, 0.2);
}

TEST(SyncAcceptance, TimingInsideCyclicPrefixAt10dB) {
    // Tolerance: the reported start may be early by at most cp_len samples and never late, so symbol 1's FFT window
    // (start + cp_len) lies inside [true start, true start + cp_len]: no inter-symbol interference in AWGN.
    const auto num = acceptance();
    const std::size_t n = 2000;
    std::mt19937_64 cfo_rng(606);
    std::uniform_real_distribution<double> cfo(-0.45, 0.45);
    std::vector<double> cfos(n);
    for (auto& c : cfos)
        c = cfo(cfo_rng);
    const auto res = run_bursts(
        num, 10.0, n, [&](std::size_t i) { return cfos[i]; }, 707);
    std::size_t exact = 0, safe = 0, detected = 0;
    for (const auto& t : res.trials) {
        if (!t.det)
            continue;
        ++detected;
        const auto e = static_cast<long long>(t.det->start) - static_cast<long long>(t.start);
        exact += e == 0;
        safe += (e <= 0 && e >= -num.cp_len);
    }
    std::cout << "[sync] 10 dB timing: " << safe << "/" << detected << " inside the CP-safe window, " << exact
              << " exact\n";
    EXPECT_EQ(detected, n);
    EXPECT_EQ(safe, detected);
}

TEST(SyncAcceptance, DetectsThroughDcOffsetAndSmallFft) {
    // The DC defence must not cost detections: 10 dB SNR with DC 10 dB above the noise, and FFT 64.
    {
        const auto res = run_bursts(
            acceptance(), 10.0, 500, [](std::size_t i) { return 0.4 * std::sin(0.1 * i); }, 808,
            std::polar(std::sqrt(10.0), -0.3));
        std::size_t detected = 0;
        double se = 0.0;
        for (const auto& t : res.trials)
            if (t.det) {
                ++detected;
                se += (t.det->cfo - t.cfo) * (t.det->cfo - t.cfo);
            }
        EXPECT_EQ(detected, 500u);
        EXPECT_EQ(res.false_alarms, 0u);
        EXPECT_LT(std::sqrt(se / std::max<std::size_t>(detected, 1)), 0.01);
    }
    {
        const auto res = run_bursts(
            make(64, 16, 48), 10.0, 1000, [](std::size_t i) { return 0.4 * std::cos(0.3 * i); }, 909);
        std::size_t detected = 0;
        for (const auto& t : res.trials)
            detected += t.det != nullptr;
        std::cout << "[sync] FFT 64, 10 dB: detected " << detected << "/1000, false alarms " << res.false_alarms
                  << "\n";
        EXPECT_GE(detected, 995u);
        EXPECT_LE(res.false_alarms, 1u);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Streaming behaviour

TEST(SyncStreaming, ChunkSizesGiveIdenticalDetections) {
    const auto num = acceptance();
    const Preamble pre(num);
    std::mt19937_64 rng(1234);
    std::vector<cf32> x(14000, cf32{});
    const std::size_t starts[] = {0, 1100, 3333, 5000, 8191, 11000};  // one at index 0, one across 8192
    const double cfos[] = {0.1, -0.44, 0.3, 0.0, 0.45, -0.2};
    for (int i = 0; i < 6; ++i)
        add_preamble(x, starts[i], pre, cfos[i], 0.5 * i);
    add_noise(x, pre.power() / 10.0, rng, cd(0.3, 0.2));

    auto run = [&](std::vector<std::size_t> sizes, std::vector<std::uint64_t>* reported_at) {
        Synchronizer sync(config_for(num));
        std::vector<SyncDetection> det;
        det.reserve(16);
        std::size_t i = 0, k = 0;
        while (i < x.size()) {
            const std::size_t m = std::min(sizes[k++ % sizes.size()], x.size() - i);
            const std::size_t got = sync.process(x.data() + i, m, det);
            EXPECT_LE(got, sync.max_detections(m));
            i += m;
            if (reported_at)
                for (std::size_t j = 0; j < got; ++j)
                    reported_at->push_back(sync.samples() - 1);
        }
        return det;
    };
    std::vector<std::uint64_t> reported_at;
    const auto ref = run({1}, &reported_at);
    ASSERT_EQ(ref.size(), 6u);
    for (int i = 0; i < 6; ++i) {
        EXPECT_EQ(ref[static_cast<std::size_t>(i)].start, starts[i]);
        EXPECT_NEAR(ref[static_cast<std::size_t>(i)].cfo, cfos[i], 0.01);
        // Reported no later than max_latency() samples after the preamble's first sample.
        EXPECT_LE(reported_at[static_cast<std::size_t>(i)], starts[i] + Synchronizer(config_for(num)).max_latency());
    }
    std::mt19937_64 crng(9);
    std::uniform_int_distribution<std::size_t> rs(1, 2500);
    std::vector<std::size_t> random_sizes(500);
    for (auto& s : random_sizes)
        s = rs(crng);
    for (const auto& sizes : std::vector<std::vector<std::size_t>>{{3}, {64}, {1000}, {x.size()}, random_sizes}) {
        const auto got = run(sizes, nullptr);
        ASSERT_EQ(got.size(), ref.size()) << "chunk " << sizes[0];
        for (std::size_t i = 0; i < ref.size(); ++i) {
            EXPECT_EQ(got[i].start, ref[i].start) << "chunk " << sizes[0];
            EXPECT_EQ(got[i].metric_peak, ref[i].metric_peak) << "chunk " << sizes[0];
            EXPECT_NEAR(got[i].cfo, ref[i].cfo, 1e-6) << "chunk " << sizes[0];
            EXPECT_NEAR(got[i].cfo_rad_per_sample, ref[i].cfo_rad_per_sample, 1e-6) << "chunk " << sizes[0];
            EXPECT_NEAR(got[i].metric, ref[i].metric, 1e-6) << "chunk " << sizes[0];
        }
    }
}

TEST(SyncStreaming, DataPayloadAfterThePreambleDoesNotTrigger) {
    // Realistic bursts: preamble + 30 random QPSK data symbols (same numerology), 20 dB. One trigger per burst.
    const auto num = acceptance();
    Synchronizer sync(config_for(num));
    const Preamble& pre = sync.preamble();
    fedlora::phy::OfdmModulator mod(num);
    std::mt19937_64 rng(4242);
    const std::size_t n_data = 30, bursts = 20;
    const std::size_t burst_len = static_cast<std::size_t>(pre.length()) + n_data * num.symbol_len();
    std::vector<cf32> x(bursts * (burst_len + 700) + 2000, cf32{});
    std::vector<cf32> X(n_data * static_cast<std::size_t>(num.n_occupied)), data(n_data * num.symbol_len());
    std::vector<std::size_t> starts;
    for (std::size_t b = 0; b < bursts; ++b) {
        for (auto& v : X)
            v = cf32((rng() & 1) ? 0.7071f : -0.7071f, (rng() & 1) ? 0.7071f : -0.7071f);
        mod.modulate(X.data(), data.data(), n_data);
        const std::size_t at = 500 + b * (burst_len + 700);
        add_preamble(x, at, pre, 0.05 * static_cast<double>(b) - 0.45, 0.0);
        for (std::size_t i = 0; i < data.size(); ++i)  // same CFO continues into the payload
            x[at + static_cast<std::size_t>(pre.length()) + i] +=
                data[i] * cf32(std::polar(1.0, 2.0 * kPi * (0.05 * static_cast<double>(b) - 0.45) *
                                                   static_cast<double>(static_cast<std::size_t>(pre.length()) + i) /
                                                   num.fft_size));
        starts.push_back(at);
    }
    add_noise(x, pre.power() / 100.0, rng);
    std::vector<SyncDetection> det;
    sync.process(x.data(), x.size(), det);
    ASSERT_EQ(det.size(), bursts);
    for (std::size_t b = 0; b < bursts; ++b)
        EXPECT_EQ(det[b].start, starts[b]);
    EXPECT_EQ(sync.stats().triggers, bursts);
    EXPECT_EQ(sync.stats().rejected, 0u);
}

TEST(SyncStreaming, ResetAndCallbackFormAgree) {
    const auto num = make(64, 16, 48);
    Synchronizer sync(config_for(num));
    std::mt19937_64 rng(77);
    std::vector<cf32> x(3000, cf32{});
    add_preamble(x, 700, sync.preamble(), 0.2, 0.0);
    add_preamble(x, 2000, sync.preamble(), -0.2, 1.0);
    add_noise(x, sync.preamble().power() / 100.0, rng);
    std::vector<SyncDetection> a;
    sync.process(x.data(), x.size(), a);
    ASSERT_EQ(a.size(), 2u);
    sync.reset();
    EXPECT_EQ(sync.samples(), 0u);
    std::vector<SyncDetection> b;
    const auto n = sync.process(x.data(), x.size(), [&](const SyncDetection& d) { b.push_back(d); });
    EXPECT_EQ(n, 2u);
    ASSERT_EQ(b.size(), 2u);
    for (std::size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(a[i].start, b[i].start);
        EXPECT_EQ(a[i].cfo, b[i].cfo);
    }
    EXPECT_EQ(a[0].start, 700u);
    EXPECT_EQ(a[1].start, 2000u);
}

TEST(SyncStreaming, ProcessDoesNotAllocate) {
    const auto num = acceptance();
    Synchronizer sync(config_for(num));
    std::mt19937_64 rng(31);
    std::vector<cf32> x(40000, cf32{});
    for (std::size_t at = 1000; at + 1000 < x.size(); at += 5000)
        add_preamble(x, at, sync.preamble(), 0.1, 0.0);
    add_noise(x, sync.preamble().power() / 10.0, rng);
    std::vector<SyncDetection> det;
    det.reserve(sync.max_detections(x.size()) * 2);
    sync.process(x.data(), 4000, det);  // warm-up (VOLK dispatch, first detection)
    std::size_t count = 0;
    {
        fedlora::test::CountAllocations counter;
        sync.process(x.data() + 4000, x.size() - 4000, det);
        for (std::size_t i = 0; i < 10; ++i)
            sync.process(x.data() + i * 700, 700, [&count](const SyncDetection&) { ++count; });
        EXPECT_EQ(counter.count().total(), 0);
    }
    {
        // The counter does see allocations (the check above is not vacuous).
        fedlora::test::CountAllocations counter;
        auto* probe = new std::vector<int>(100);
        EXPECT_GE(counter.count().operator_new, 2);
        delete probe;
    }
    EXPECT_GE(det.size(), 7u);
}

// ---------------------------------------------------------------------------------------------------------------
// CFO correction

TEST(SyncCfo, CorrectorIsPhaseContinuousAndMatchesDirectRotation) {
    std::mt19937_64 rng(8);
    std::vector<cf32> x(100000, cf32{});
    add_noise(x, 1.0, rng);
    const double omega = 2.0 * kPi * 0.37 / 256.0, phi0 = 0.9;
    std::vector<cf32> one(x.size()), chunked(x.size()), inplace(x);
    const double end = fedlora::phy::correct_cfo(x.data(), one.data(), x.size(), omega, phi0);
    CfoCorrector c(omega, phi0);
    std::size_t i = 0, k = 0;
    const std::size_t sizes[] = {1, 7, 100, 3000, 5};
    while (i < x.size()) {
        const std::size_t m = std::min(sizes[k++ % 5], x.size() - i);
        c.apply(x.data() + i, chunked.data() + i, m);
        i += m;
    }
    CfoCorrector(omega, phi0).apply(inplace.data(), inplace.data(), inplace.size());
    double max_err = 0.0;
    for (std::size_t n = 0; n < x.size(); ++n) {
        const cd ref = cd(x[n]) * std::polar(1.0, -(phi0 + omega * static_cast<double>(n)));
        max_err = std::max({max_err, std::abs(cd(one[n]) - ref) / (std::abs(ref) + 1e-3),
                            std::abs(cd(chunked[n]) - ref) / (std::abs(ref) + 1e-3),
                            std::abs(cd(inplace[n]) - ref) / (std::abs(ref) + 1e-3)});
    }
    EXPECT_LT(max_err, 2e-4);
    const double expect_end = std::remainder(phi0 + omega * static_cast<double>(x.size()), 2.0 * kPi);
    EXPECT_NEAR(std::remainder(end - expect_end, 2.0 * kPi), 0.0, 1e-9);
    EXPECT_NEAR(std::remainder(c.phase() - expect_end, 2.0 * kPi), 0.0, 1e-9);
}

TEST(SyncCfo, CorrectedBurstDemodulatesToTheTrainingSymbol) {
    // End to end: detect, remove the estimated CFO from the detected start, demodulate symbol 2, compare with the
    // known carriers after removing one common phase (error vector magnitude well below the 30 dB SNR's -30 dB + a
    // margin for the residual CFO).
    const auto num = acceptance();
    Synchronizer sync(config_for(num));
    const Preamble& pre = sync.preamble();
    std::mt19937_64 rng(99);
    std::vector<cf32> x(4000, cf32{});
    add_preamble(x, 1234, pre, 0.33, 2.0);
    add_noise(x, pre.power() / 1000.0, rng);
    std::vector<SyncDetection> det;
    sync.process(x.data(), x.size(), det);
    ASSERT_EQ(det.size(), 1u);
    std::vector<cf32> y(static_cast<std::size_t>(pre.length()));
    fedlora::phy::correct_cfo(x.data() + det[0].start, y.data(), y.size(), det[0].cfo_rad_per_sample);
    fedlora::phy::OfdmDemodulator demod(num);
    std::vector<cf32> X(2 * static_cast<std::size_t>(num.n_occupied));
    demod.demodulate(y.data(), X.data(), 2);
    cd common{};
    for (int i = 0; i < num.n_occupied; ++i)
        common += cd(X[static_cast<std::size_t>(num.n_occupied + i)]) *
                  std::conj(cd(pre.symbol2()[static_cast<std::size_t>(i)]));
    common /= std::abs(common);
    double err = 0.0, ref = 0.0;
    for (int i = 0; i < num.n_occupied; ++i) {
        const cd s(pre.symbol2()[static_cast<std::size_t>(i)]);
        err += std::norm(cd(X[static_cast<std::size_t>(num.n_occupied + i)]) - s * common);
        ref += std::norm(s);
    }
    EXPECT_LT(10.0 * std::log10(err / ref), -25.0);
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration errors

TEST(SyncConfig, BadConfigurationNamesTheField) {
    auto expect_error = [](SyncConfig c, const std::string& needle) {
        try {
            Synchronizer s(c);
            FAIL() << "accepted " << needle;
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    SyncConfig c = config_for(acceptance());
    c.threshold = 1.5;
    expect_error(c, "threshold = 1.5");
    c = config_for(acceptance());
    c.threshold = -0.2;
    expect_error(c, "threshold = -0.2");
    c = config_for(acceptance());
    c.false_alarm_rate = 0.0;
    expect_error(c, "false_alarm_rate = 0");
    c = config_for(acceptance());
    c.xcorr_threshold = 2.0;
    expect_error(c, "xcorr_threshold = 2");
    expect_error(config_for(make(100, 16, 48)), "fft_size = 100");
    expect_error(config_for(make(64, 80, 48)), "cp_len = 80");
    expect_error(config_for(make(64, 16, 2)), "n_occupied = 2");
    try {
        Preamble p(make(64, 16, 2));
        FAIL() << "preamble accepted n_occupied = 2";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("n_occupied = 2"), std::string::npos) << e.what();
    }
    EXPECT_THROW(SchmidlCoxMetric(6), std::invalid_argument);
}

TEST(SyncConfig, AutomaticThresholdFollowsTheBetaTail) {
    SyncConfig c = config_for(acceptance());
    const double g = c.resolved_threshold();
    EXPECT_NEAR(std::pow(1.0 - g, 128 - 2), c.false_alarm_rate, 1e-12);
    EXPECT_EQ(c.resolved_xcorr_threshold(), g);
    c.threshold = 0.4;
    c.xcorr_threshold = 0.3;
    EXPECT_EQ(c.resolved_threshold(), 0.4);
    EXPECT_EQ(c.resolved_xcorr_threshold(), 0.3);
}

// ---------------------------------------------------------------------------------------------------------------
// Metric kernels of the synchroniser (AVX-512, AVX2, portable): each against the exact per-sample metric
// (SchmidlCoxMetric, itself checked against the direct computation above) and against each other.

namespace {

std::vector<std::string> kernels_here() {
    std::vector<std::string> out;
    for (const char* k : {"generic", "avx2", "avx512"}) {
        SyncConfig c = config_for(acceptance());
        c.kernel = k;
        try {
            c.validate();
            out.emplace_back(k);
        } catch (const std::invalid_argument&) {
        }
    }
    return out;
}

// Preambles at 10 dB with random CFO, phase and spacing (some back to back), noise with a DC offset, a silent
// stretch (exact zeros) and a strong noise burst followed by exact zeros.
std::vector<cf32> kernel_stream(const Numerology& num, std::uint64_t seed, std::vector<std::size_t>& starts) {
    const Preamble pre(num);
    const auto P = static_cast<std::size_t>(pre.length());
    std::mt19937_64 rng(seed);
    std::vector<cf32> x(40 * P, cf32{});
    std::uniform_real_distribution<double> cfo(-0.45, 0.45), ph(-kPi, kPi);
    std::uniform_int_distribution<std::size_t> gap(0, 2 * P);
    for (std::size_t at = 300 + gap(rng); at + 3 * P < x.size() / 2; at += P + gap(rng)) {
        add_preamble(x, at, pre, cfo(rng), ph(rng));
        starts.push_back(at);
    }
    add_noise(x, pre.power() / 10.0, rng, cd(0.5, -0.3));
    std::fill(x.begin() + static_cast<std::ptrdiff_t>(x.size() / 2),
              x.begin() + static_cast<std::ptrdiff_t>(x.size() / 2 + 3 * P), cf32{});
    std::vector<cf32> burst(2 * P, cf32{});
    add_noise(burst, 1e4, rng);
    std::copy(burst.begin(), burst.end(), x.begin() + static_cast<std::ptrdiff_t>(x.size() / 2 + 5 * P));
    std::fill(x.begin() + static_cast<std::ptrdiff_t>(x.size() / 2 + 7 * P),
              x.begin() + static_cast<std::ptrdiff_t>(x.size() / 2 + 12 * P), cf32{});
    for (std::size_t at = x.size() / 2 + 13 * P; at + 2 * P < x.size(); at += 2 * P + gap(rng)) {
        add_preamble(x, at, pre, cfo(rng), ph(rng));
        starts.push_back(at);
    }
    return x;
}

struct KernelRun {
    std::vector<SyncDetection> det;
    std::vector<std::uint64_t> reported_at;  // sync.samples() - 1 after the call that reported each detection
    fedlora::phy::SyncStats stats;
    std::string kernel;
};

KernelRun run_kernel(const Numerology& num, const std::string& kernel, const std::vector<cf32>& x,
                     const std::vector<std::size_t>& sizes, double threshold = 0.0) {
    SyncConfig c = config_for(num);
    c.kernel = kernel;
    c.threshold = threshold;
    Synchronizer sync(c);
    KernelRun r;
    r.kernel = sync.kernel_name();
    r.det.reserve(sync.max_detections(x.size()));
    std::size_t i = 0, k = 0;
    while (i < x.size()) {
        const std::size_t m = std::min(sizes[k++ % sizes.size()], x.size() - i);
        const std::size_t got = sync.process(x.data() + i, m, r.det);
        EXPECT_LE(got, sync.max_detections(m));
        i += m;
        for (std::size_t j = 0; j < got; ++j)
            r.reported_at.push_back(sync.samples() - 1);
    }
    r.stats = sync.stats();
    return r;
}

}  // namespace

TEST(SyncKernels, CoarseStageMatchesTheExactPerSampleMetric) {
    // Replays the coarse stage (trigger on M >= g, argmax over fft_size + cp_len values of d, hold-off after a
    // detection or a rejection) on SchmidlCoxMetric and compares triggers, peaks and peak values with every kernel.
    // Threshold 0 is the automatic one; 3/L makes about 5% of noise samples cross (P(M >= g) <= (1-g)^(L-2)), so
    // noise triggers often and the cross-correlation rejects.
    for (const double thr_l : {0.0, 3.0})
    for (const auto& num : {make(64, 16, 48), acceptance(), make(1024, 128, 768)}) {
        std::vector<std::size_t> starts;
        const auto x = kernel_stream(num, 4000 + static_cast<std::uint64_t>(num.fft_size), starts);
        const std::int64_t L = num.fft_size / 2, cp = num.cp_len, span = num.fft_size + cp, Lp = 2 * span;
        const std::int64_t margin = std::min(L / 2, L / 4 + 8);
        SyncConfig cfg = config_for(num);
        cfg.threshold = thr_l / static_cast<double>(L);
        const double g = cfg.resolved_threshold();
        for (const auto& kernel : kernels_here()) {
            const auto r = run_kernel(num, kernel, x, {4096}, cfg.threshold);
            SchmidlCoxMetric ref(static_cast<int>(L));
            std::int64_t holdoff = 0, search_last = -1, best_d = 0, wait_until = -1;
            double best_m = 0.0;
            std::size_t k = 0, triggers = 0, rejected = 0;
            for (std::size_t n = 0; n < x.size(); ++n) {
                ref.push(x[n]);
                const std::int64_t d = static_cast<std::int64_t>(n) - 2 * L + 1;
                if (d < 0 || static_cast<std::int64_t>(n) <= wait_until)
                    continue;
                if (search_last < 0) {
                    if (d >= holdoff && ref.exceeds(g)) {
                        ++triggers;
                        search_last = d + span - 1;
                        best_d = d;
                        best_m = ref.metric();
                    }
                    continue;
                }
                if (ref.metric() > best_m) {
                    best_d = d;
                    best_m = ref.metric();
                }
                if (d < search_last)
                    continue;
                // Search complete: the kernel's detection (or rejection) of this peak.
                wait_until = best_d + margin + Lp - 1;
                if (k < r.det.size() && r.det[k].metric_peak == static_cast<std::uint64_t>(best_d)) {
                    const auto& det = r.det[k++];
                    EXPECT_NEAR(det.metric, best_m, 1e-9 * (1.0 + best_m)) << r.kernel << " N=" << num.fft_size;
                    const auto direct = direct_metric(x, static_cast<std::size_t>(best_d), static_cast<int>(L));
                    EXPECT_NEAR(det.metric, direct.m, 1e-9 * (1.0 + direct.m)) << r.kernel << " N=" << num.fft_size;
                    holdoff = static_cast<std::int64_t>(det.start) + Lp;
                } else {
                    ++rejected;
                    holdoff = search_last + 1;
                }
                search_last = -1;
            }
            EXPECT_EQ(k, r.det.size()) << r.kernel << " N=" << num.fft_size;
            EXPECT_EQ(triggers, r.stats.triggers) << r.kernel << " N=" << num.fft_size;
            EXPECT_EQ(rejected, r.stats.rejected) << r.kernel << " N=" << num.fft_size;
            if (kernel == "generic")
                std::cout << "[sync] replay N=" << num.fft_size << " threshold " << g << ": " << triggers
                          << " triggers, " << rejected << " rejected, " << r.det.size() << " detections\n";
            if (thr_l > 0.0)
                continue;
            // Every preamble found, at its start.
            ASSERT_EQ(r.det.size(), starts.size()) << r.kernel << " N=" << num.fft_size;
            for (std::size_t i = 0; i < starts.size(); ++i)
                EXPECT_EQ(r.det[i].start, starts[i]) << r.kernel << " N=" << num.fft_size;
        }
    }
}

TEST(SyncKernels, KernelsAgreeAndNoneDependsOnChunking) {
    for (const auto& num : {make(64, 16, 48), acceptance(), make(1024, 128, 768)}) {
        std::vector<std::size_t> starts;
        const auto x = kernel_stream(num, 5000 + static_cast<std::uint64_t>(num.fft_size), starts);
        const std::size_t latency = Synchronizer(config_for(num)).max_latency();
        std::mt19937_64 crng(17);
        std::uniform_int_distribution<std::size_t> rs(1, 3000);
        std::vector<std::size_t> random_sizes(400);
        for (auto& s : random_sizes)
            s = rs(crng);
        const auto base = run_kernel(num, "generic", x, {x.size()});
        ASSERT_EQ(base.det.size(), starts.size()) << "N=" << num.fft_size;
        for (const auto& kernel : kernels_here()) {
            const auto one = run_kernel(num, kernel, x, {x.size()});
            std::cout << "[sync] N=" << num.fft_size << " kernel " << kernel << " runs " << one.kernel << ": "
                      << one.det.size() << " detections, " << one.stats.triggers << " triggers\n";
            // The kernels round differently in their last bits only.
            ASSERT_EQ(one.det.size(), base.det.size()) << one.kernel << " N=" << num.fft_size;
            EXPECT_EQ(one.stats.triggers, base.stats.triggers) << one.kernel << " N=" << num.fft_size;
            for (std::size_t i = 0; i < base.det.size(); ++i) {
                EXPECT_EQ(one.det[i].start, base.det[i].start) << one.kernel;
                EXPECT_EQ(one.det[i].metric_peak, base.det[i].metric_peak) << one.kernel;
                EXPECT_NEAR(one.det[i].metric, base.det[i].metric, 1e-12) << one.kernel;
                EXPECT_NEAR(one.det[i].cfo, base.det[i].cfo, 1e-9) << one.kernel;
                EXPECT_NEAR(one.det[i].xcorr, base.det[i].xcorr, 1e-9) << one.kernel;
            }
            // Within one kernel, chunking changes nothing at all, and every report comes within max_latency().
            for (const auto& sizes : std::vector<std::vector<std::size_t>>{{1}, {7}, {4096}, random_sizes}) {
                const auto got = run_kernel(num, kernel, x, sizes);
                ASSERT_EQ(got.det.size(), one.det.size()) << one.kernel << " chunk " << sizes[0];
                EXPECT_EQ(got.stats.triggers, one.stats.triggers);
                EXPECT_EQ(got.stats.samples, x.size());
                for (std::size_t i = 0; i < one.det.size(); ++i) {
                    EXPECT_EQ(got.det[i].start, one.det[i].start) << one.kernel << " chunk " << sizes[0];
                    EXPECT_EQ(got.det[i].metric_peak, one.det[i].metric_peak);
                    EXPECT_EQ(got.det[i].metric, one.det[i].metric);
                    EXPECT_EQ(got.det[i].cfo, one.det[i].cfo);
                    EXPECT_EQ(got.det[i].cfo_coarse, one.det[i].cfo_coarse);
                    EXPECT_EQ(got.det[i].xcorr, one.det[i].xcorr);
                    if (sizes[0] == 1) {
                        EXPECT_LE(got.reported_at[i], got.det[i].start + latency) << one.kernel;
                    }
                }
            }
        }
    }
}

TEST(SyncKernels, ZerosAndPureDcNeverTriggerInAnyKernel) {
    for (const auto& num : {make(64, 16, 48), acceptance(), make(1024, 128, 768)}) {
        std::vector<cf32> x(60000, cf32{});
        std::fill(x.begin() + 5000, x.begin() + 25000, cf32(3.0f, -1.5f));
        std::mt19937_64 rng(3);
        std::vector<cf32> burst(5000, cf32{});
        add_noise(burst, 1e6, rng);
        std::copy(burst.begin(), burst.end(), x.begin() + 30000);  // strong noise burst, then exact zeros
        std::copy(burst.begin(), burst.end(), x.begin() + 45000);
        std::fill(x.begin() + 50000, x.end(), cf32(-2.0f, 0.25f));  // burst, then DC
        for (const auto& kernel : kernels_here()) {
            const auto r = run_kernel(num, kernel, x, {1000});
            EXPECT_TRUE(r.det.empty()) << r.kernel << " N=" << num.fft_size;
            EXPECT_EQ(r.stats.triggers, 0u) << r.kernel << " N=" << num.fft_size;
        }
    }
}

TEST(SyncConfig, KernelChoice) {
    SyncConfig c = config_for(acceptance());
    c.kernel = "sse9";
    try {
        Synchronizer s(c);
        FAIL() << "accepted kernel sse9";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("kernel = \"sse9\""), std::string::npos) << e.what();
    }
    c.kernel = "generic";
    EXPECT_STREQ(Synchronizer(c).kernel_name(), "generic");
    c.kernel = "auto";
    const std::string chosen = Synchronizer(c).kernel_name();
    EXPECT_TRUE(chosen == "avx512" || chosen == "avx2" || chosen == "generic") << chosen;
    // Below fft_size 128 the AVX-512 kernel does not apply; the portable code runs.
    c = config_for(make(64, 16, 48));
    EXPECT_STRNE(Synchronizer(c).kernel_name(), "avx512");
}
