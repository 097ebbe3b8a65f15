// Calibration (calibration.h, calibrated_round.h): the server's estimates of every device's gain error, timing
// offset, phase and CFO from its calibration burst through the multi-user channel simulator, against the
// impairments the simulator injected; the transmit corrector; AirComp rounds with and without the corrections
// against the unimpaired case; the calibration record's interpolation, dBm budgets and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>

#include "fedlora/phy/aircomp_waveform.h"
#include "fedlora/phy/calibrated_round.h"
#include "fedlora/phy/calibration.h"

using namespace fedlora::phy;
using cf = std::complex<float>;
using cd = std::complex<double>;

namespace {

constexpr double kPi = 3.14159265358979323846;

double wrap(double x) {
    return std::remainder(x, 2.0 * kPi);
}

Numerology numerology() {
    Numerology n;
    n.fft_size = 256;
    n.cp_len = 32;
    n.n_occupied = 200;
    n.pilot_spacing = 20;
    n.sample_rate = 15.36e6;
    return n;
}

// Impairments of one device, drawn from ranges.
struct Impairment {
    double gain_error_db = 0.0, timing = 0.0, cfo_hz = 0.0;
};

std::vector<Impairment> draw(std::size_t K, std::mt19937_64& rng, double max_gain_db, double max_timing,
                             double max_cfo_hz) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<Impairment> v(K);
    for (auto& i : v) {
        i.gain_error_db = max_gain_db * (2.0 * u(rng) - 1.0);
        i.timing = max_timing * u(rng);
        i.cfo_hz = max_cfo_hz * (2.0 * u(rng) - 1.0);
    }
    return v;
}

// The cabled calibration setup: flat, no fading, a known attenuation; noise for snr_db per carrier at unit pilot
// power; every device with its impairments and a random phase.
ChannelSimConfig cabled(const std::vector<Impairment>& imp, double attenuation_db, double snr_db, std::uint64_t seed) {
    ChannelSimConfig c;
    c.sample_rate = numerology().sample_rate;
    c.seed = seed;
    c.noise_variance = std::pow(10.0, -(attenuation_db + snr_db) / 10.0);
    c.devices.resize(imp.size());
    for (std::size_t k = 0; k < imp.size(); ++k) {
        auto& d = c.devices[k];
        d.path_loss_db = attenuation_db;
        d.fading = "none";
        d.gain_error_db = imp[k].gain_error_db;
        d.timing_offset_samples = imp[k].timing;
        d.cfo_hz = imp[k].cfo_hz;
        d.random_phase = true;
    }
    return c;
}

AlignmentConfig alignment_config(std::size_t K, double attenuation_db, double system_delay) {
    AlignmentConfig a;
    a.burst.numerology = numerology();
    a.burst.n_devices = K;
    a.burst.pilot_repeats = 16;
    a.expected_gain_db.assign(K, -attenuation_db);
    a.system_delay = system_delay;
    return a;
}

// Sends one calibration burst from every device (corrected if `corr` is given) starting `lead` samples after the
// channel's current position, and estimates.
std::vector<DeviceAlignment> calibrate(MultiUserChannel& ch, const AlignmentConfig& ac,
                                       const std::vector<TransmitCorrection>* corr = nullptr,
                                       std::int64_t* burst_start = nullptr) {
    const std::size_t K = ac.burst.n_devices;
    AlignmentEstimator est(ac);
    const std::size_t lead = 600;
    const std::size_t len = lead + est.layout().length() + est.tail() + 600;
    const auto base = static_cast<std::int64_t>(ch.position());
    const std::int64_t start = base + static_cast<std::int64_t>(lead);
    std::vector<std::vector<cf>> tx(K, std::vector<cf>(len));
    std::vector<cf> b;
    for (std::size_t k = 0; k < K; ++k) {
        CalibrationTransmitter(ac.burst, k, ac.pilot_power.empty() ? 1.0 : ac.pilot_power[k]).burst(b);
        if (corr) {
            TransmitCorrector(corr->at(k), ac.burst.numerology.sample_rate)
                .apply(b.data(), b.size(), start, tx[k].data(), len, base);
        } else {
            std::copy(b.begin(), b.end(), tx[k].begin() + static_cast<std::ptrdiff_t>(lead));
        }
    }
    std::vector<const cf*> in(K);
    for (std::size_t k = 0; k < K; ++k)
        in[k] = tx[k].data();
    std::vector<cf> rx(len);
    cf* out = rx.data();
    ch.process(in.data(), &out, len);
    if (burst_start)
        *burst_start = start;
    return est.estimate(rx.data(), rx.size(), base, start);
}

// The simulator's phase of device k (the argument of its combined FIR's DC response).
double true_phase(const MultiUserChannel& ch, int k) {
    const auto ir = ch.impulse_response(k, 0, 0);
    cd s = 0.0;
    for (const auto& t : ir.taps)
        s += cd(t);
    return std::arg(s);
}

struct Errors {
    double gain = 0, timing = 0, phase = 0, cfo = 0;              // max |error|
    double gain2 = 0, timing2 = 0, phase2 = 0, cfo2 = 0;          // sums of squares
    double gain_z = 0, timing_z = 0, phase_z = 0, cfo_z = 0;      // sums of (error / predicted std)²
    std::size_t n = 0;
    void add(double eg, double et, double ep, double ec, const DeviceAlignment& a) {
        gain = std::max(gain, std::fabs(eg));
        timing = std::max(timing, std::fabs(et));
        phase = std::max(phase, std::fabs(ep));
        cfo = std::max(cfo, std::fabs(ec));
        gain2 += eg * eg;
        timing2 += et * et;
        phase2 += ep * ep;
        cfo2 += ec * ec;
        gain_z += eg * eg / (a.gain_std_db * a.gain_std_db);
        timing_z += et * et / (a.timing_std_samples * a.timing_std_samples);
        phase_z += ep * ep / (a.phase_std_rad * a.phase_std_rad);
        cfo_z += ec * ec / (a.cfo_std_hz * a.cfo_std_hz);
        ++n;
    }
    static double rms(double s2, std::size_t n) { return std::sqrt(s2 / static_cast<double>(n)); }
    std::string str() const {
        return "max |error|: gain " + std::to_string(gain) + " dB, timing " + std::to_string(timing) +
               " samples, phase " + std::to_string(phase) + " rad, CFO " + std::to_string(cfo) +
               " Hz; rms: " + std::to_string(rms(gain2, n)) + " dB, " + std::to_string(rms(timing2, n)) +
               " samples, " + std::to_string(rms(phase2, n)) + " rad, " + std::to_string(rms(cfo2, n)) +
               " Hz; rms/predicted: " + std::to_string(rms(gain_z, n)) + ", " + std::to_string(rms(timing_z, n)) +
               ", " + std::to_string(rms(phase_z, n)) + ", " + std::to_string(rms(cfo_z, n));
    }
};

// Runs `trials` calibrations of K devices with random impairments and collects the estimation errors.
Errors recovery(std::size_t K, double snr_db, double max_timing, int trials, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    Errors e;
    const double att = 30.0;
    for (int t = 0; t < trials; ++t) {
        const auto imp = draw(K, rng, 3.0, max_timing, 3000.0);
        MultiUserChannel ch(cabled(imp, att, snr_db, seed * 1000 + static_cast<std::uint64_t>(t)));
        const auto ac = alignment_config(K, att, ch.bulk_delay());
        std::int64_t start = 0;
        const auto a = calibrate(ch, ac, nullptr, &start);
        for (std::size_t k = 0; k < K; ++k) {
            const double w = 2.0 * kPi * imp[k].cfo_hz / ac.burst.numerology.sample_rate;
            const double phi_ref = true_phase(ch, static_cast<int>(k)) + w * static_cast<double>(a[k].reference_sample);
            e.add(a[k].gain_error_db - imp[k].gain_error_db, a[k].timing_offset_samples - imp[k].timing,
                  wrap(a[k].phase_rad - phi_ref), a[k].cfo_hz - imp[k].cfo_hz, a[k]);
        }
    }
    return e;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Burst and corrector

TEST(Calibration, BurstLayoutAndPower) {
    CalibrationBurstConfig c;
    c.numerology = numerology();
    c.n_devices = 3;
    c.pilot_repeats = 4;
    CalibrationBurstLayout l(c);
    const std::size_t S = 288;
    EXPECT_EQ(l.guard(), 2 * S);
    EXPECT_EQ(l.slot_len(), 6 * S);
    EXPECT_EQ(l.slot_offset(1), 2 * S + 8 * S);
    EXPECT_EQ(l.pilot_offset(2, 3), l.slot_offset(2) + 5 * S);
    EXPECT_EQ(l.length(), 2 * S + 3 * 8 * S);
    std::vector<cf> b;
    CalibrationTransmitter(c, 1, 4.0).burst(b);
    ASSERT_EQ(b.size(), l.length());
    double e_slot = 0.0, e_out = 0.0;
    for (std::size_t i = 0; i < b.size(); ++i)
        (i >= l.slot_offset(1) && i < l.slot_offset(1) + l.slot_len() ? e_slot : e_out) += std::norm(cd(b[i]));
    EXPECT_EQ(e_out, 0.0);
    // Per-carrier power 4 on 200 of 256 carriers: 4 · 200/256 per sample (the preamble has the same mean power).
    EXPECT_NEAR(e_slot / static_cast<double>(l.slot_len()), 4.0 * 200.0 / 256.0, 0.05);
    c.pilot_repeats = 1;
    EXPECT_THROW(CalibrationBurstLayout{c}, std::invalid_argument);
}

TEST(Calibration, CorrectorShiftsRotatesAndScales) {
    // A band-limited signal (tones on the occupied band) evaluated exactly at m + advance, counter-rotated.
    const double fs = 15.36e6;
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> u(-0.38, 0.38), ph(0.0, 2 * kPi);
    std::vector<double> f(12), p(12);
    for (std::size_t i = 0; i < f.size(); ++i) {
        f[i] = u(rng);
        p[i] = ph(rng);
    }
    auto x = [&](double t) {
        cd s = 0.0;
        for (std::size_t i = 0; i < f.size(); ++i)
            s += std::polar(1.0, 2 * kPi * f[i] * t + p[i]);
        return s;
    };
    const std::int64_t in_start = 5000;
    const std::size_t n = 4000;
    std::vector<cf> in(n);
    for (std::size_t i = 0; i < n; ++i)
        in[i] = cf(x(static_cast<double>(in_start) + static_cast<double>(i)));
    for (double adv : {0.0, 3.0, -2.0, 7.37, -4.61, 0.5}) {
        TransmitCorrection c;
        c.advance_samples = adv;
        c.gain_db = -2.0;
        c.phase_rad = 1.1;
        c.cfo_hz = 1234.5;
        c.reference_sample = 4000;
        TransmitCorrector tc(c, fs);
        std::vector<cf> out(n);
        tc.apply(in.data(), n, in_start, out.data(), n, in_start);
        double err = 0.0, ref = 0.0;
        const double g = std::pow(10.0, -2.0 / 20.0), w = 2 * kPi * 1234.5 / fs;
        for (std::size_t j = 100; j + 100 < n; ++j) {  // away from the edges of the input
            const double m = static_cast<double>(in_start) + static_cast<double>(j);
            const cd want = g * x(m + adv) * std::polar(1.0, -(1.1 + w * (m - 4000.0)));
            err += std::norm(cd(out[j]) - want);
            ref += std::norm(want);
        }
        EXPECT_LT(std::sqrt(err / ref), 2e-4) << "advance " << adv;
    }
    // The corrected output of a burst is nonzero only on [in_start − lead, in_start + n + tail).
    TransmitCorrection c;
    c.advance_samples = 10.25;
    TransmitCorrector tc(c, fs);
    std::vector<cf> burst(100, cf(1.0f, 0.0f)), out(400);
    tc.apply(burst.data(), burst.size(), 1000, out.data(), out.size(), 800);
    for (std::size_t j = 0; j < out.size(); ++j) {
        const std::int64_t m = 800 + static_cast<std::int64_t>(j);
        if (m < 1000 - static_cast<std::int64_t>(tc.lead()) || m >= 1100 + static_cast<std::int64_t>(tc.tail())) {
            EXPECT_EQ(out[j], cf{}) << m;
        }
    }
    EXPECT_THROW(TransmitCorrector(TransmitCorrection{0, 0, 0, 8e6, 0}, fs), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------------------------
// Estimation through the channel simulator

TEST(Calibration, RecoversInjectedImpairmentsInsideTheCp) {
    // 8 devices × 25 cabled setups, gain errors ±3 dB, timing offsets in [0, 24) samples (CP 32), CFOs ±3 kHz
    // (±0.05 subcarrier spacings) per device, random phases, 20 dB per-carrier SNR at the server.
    const auto e = recovery(8, 20.0, 24.0, 25, 7);
    RecordProperty("recovery_20dB", e.str());
    EXPECT_LT(e.gain, 0.05) << e.str();
    EXPECT_LT(e.timing, 0.01) << e.str();
    EXPECT_LT(e.phase, 0.02) << e.str();
    EXPECT_LT(e.cfo, 10.0) << e.str();
    // The spread matches the expected standard deviations (docs/math.md) within a factor 1.5.
    for (double z : {e.gain_z, e.timing_z, e.phase_z, e.cfo_z})
        EXPECT_LT(Errors::rms(z, e.n), 1.5) << e.str();
}

TEST(Calibration, RecoversAtLowSnrAndBeyondTheCp) {
    // 10 dB per carrier, and timing offsets up to 400 samples (far beyond the 32-sample CP; the guard is 576).
    const auto e = recovery(6, 10.0, 400.0, 15, 8);
    RecordProperty("recovery_10dB_beyond_cp", e.str());
    EXPECT_LT(e.gain, 0.15) << e.str();
    EXPECT_LT(e.timing, 0.02) << e.str();
    EXPECT_LT(e.phase, 0.06) << e.str();
    EXPECT_LT(e.cfo, 30.0) << e.str();
    for (double z : {e.gain_z, e.timing_z, e.phase_z, e.cfo_z})
        EXPECT_LT(Errors::rms(z, e.n), 1.5) << e.str();
}

TEST(Calibration, CorrectedBurstsArriveAligned) {
    // Closed loop on one channel: measure, correct, measure again. The second measurement must find every device
    // at zero timing offset, zero CFO and zero phase at its reference sample, within the first one's tolerances.
    std::mt19937_64 rng(21);
    const std::size_t K = 6;
    const auto imp = draw(K, rng, 3.0, 24.0, 3000.0);
    const double att = 30.0;
    MultiUserChannel ch(cabled(imp, att, 20.0, 99));
    const auto ac = alignment_config(K, att, ch.bulk_delay());
    std::int64_t t1 = 0, t2 = 0;
    const auto first = calibrate(ch, ac, nullptr, &t1);
    std::vector<TransmitCorrection> corr;
    for (const auto& a : first)
        corr.push_back(TransmitCorrection::from(a, true));
    const auto second = calibrate(ch, ac, &corr, &t2);
    const double fs = ac.burst.numerology.sample_rate;
    for (std::size_t k = 0; k < K; ++k) {
        // Both measurements' errors, and the first CFO error accumulated from one burst to the next: 4 sigma.
        auto tol = [](double a, double b) { return 4.0 * std::hypot(a, b); };
        const double drift = 2.0 * kPi * first[k].cfo_std_hz * static_cast<double>(t2 - t1) / fs;
        EXPECT_NEAR(second[k].gain_error_db, 0.0, tol(first[k].gain_std_db, second[k].gain_std_db)) << k;
        EXPECT_NEAR(second[k].timing_offset_samples, 0.0,
                    tol(first[k].timing_std_samples, second[k].timing_std_samples) + 0.002) << k;
        EXPECT_NEAR(second[k].cfo_hz, 0.0, tol(first[k].cfo_std_hz, second[k].cfo_std_hz)) << k;
        EXPECT_NEAR(wrap(second[k].phase_rad), 0.0,
                    tol(std::hypot(first[k].phase_std_rad, drift), second[k].phase_std_rad)) << k;
    }
}

TEST(Calibration, MissingDeviceIsNamed) {
    std::mt19937_64 rng(5);
    const auto imp = draw(3, rng, 1.0, 4.0, 500.0);
    MultiUserChannel ch(cabled(imp, 30.0, 20.0, 5));
    auto ac = alignment_config(3, 30.0, ch.bulk_delay());
    // The receiver expects 4 devices; only 3 transmit.
    AlignmentConfig four = ac;
    four.burst.n_devices = 4;
    four.expected_gain_db.assign(4, -30.0);
    AlignmentEstimator est(four);
    std::vector<cf> rx(est.layout().length() + est.tail() + 2000);
    std::vector<std::vector<cf>> tx(3, std::vector<cf>(rx.size()));
    std::vector<cf> b;
    for (std::size_t k = 0; k < 3; ++k) {
        CalibrationTransmitter(four.burst, k, 1.0).burst(b);
        std::copy(b.begin(), b.end(), tx[k].begin() + 100);
    }
    const cf* in[3] = {tx[0].data(), tx[1].data(), tx[2].data()};
    cf* out = rx.data();
    ch.process(in, &out, rx.size());
    try {
        est.estimate(rx.data(), rx.size(), 0, 100);
        FAIL() << "no error for a silent device";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("device 3: no calibration preamble"), std::string::npos) << e.what();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// AirComp with and without the calibration

namespace {

struct Updates {
    std::vector<std::vector<float>> x;
    std::vector<double> w;
    AircompCodec codec;
};

Updates make_updates(std::size_t K, std::size_t d, std::mt19937_64& rng) {
    std::normal_distribution<float> g;
    Updates u;
    u.x.assign(K, std::vector<float>(d));
    std::vector<double> rms(K);
    for (std::size_t k = 0; k < K; ++k) {
        for (auto& v : u.x[k])
            v = g(rng) * (0.5f + static_cast<float>(k % 3));
        rms[k] = update_rms(u.x[k].data(), d, {});
    }
    u.w.assign(K, 1.0 / static_cast<double>(K));
    u.codec.dim = d;
    u.codec.scale = common_scale(rms, u.w);
    return u;
}

// The over-the-air channel of the experiment: EPA Rayleigh block fading at snr_db per device (unit budget), with
// the devices' impairments (gain errors, timing offsets, CFOs; random phases always, as fading phases are).
ChannelSimConfig air(const std::vector<Impairment>& imp, double snr_db, std::uint64_t seed) {
    ChannelSimConfig c;
    c.sample_rate = numerology().sample_rate;
    c.noise_variance = 0.01;
    c.seed = seed;
    c.devices.resize(imp.size());
    for (std::size_t k = 0; k < imp.size(); ++k) {
        auto& d = c.devices[k];
        d.snr_db = snr_db;
        d.profile = "EPA";
        d.fading = "rayleigh";
        d.gain_error_db = imp[k].gain_error_db;
        d.timing_offset_samples = imp[k].timing;
        d.cfo_hz = imp[k].cfo_hz;
    }
    return c;
}

CalibratedRoundConfig round_config(std::size_t K) {
    CalibratedRoundConfig c;
    c.frame.numerology = numerology();
    c.frame.n_devices = K;
    c.frame.pilot_repeats = 2;
    c.power.policy = PowerPolicy::Truncated;
    c.power.budget.assign(K, 1.0);
    c.estimator.name = "sparse";
    c.lead = 300;
    return c;
}

// The virtual devices' calibration record: TX power tables measured by the procedure. The virtual radio's gain
// setting g radiates g − 60 dBm (+ its gain error) for a digital signal at the reference level (phy power 1).
CalibrationSet virtual_record(const std::vector<double>& gain_error_db, double hz) {
    CalibrationSet s;
    s.reference = "external";
    s.date = "test";
    for (std::size_t k = 0; k < gain_error_db.size(); ++k) {
        DeviceCalibration d;
        d.serial = "virtual-" + std::to_string(k);
        d.product = "virtual";
        ChannelCalibration c;
        c.tx_power.frequencies_hz = {hz};
        c.tx_power.gains_db = {40.0, 60.0, 80.0};
        for (double g : c.tx_power.gains_db)
            c.tx_power.power_dbm.push_back(g - 60.0 + gain_error_db[k]);
        d.channels.push_back(c);
        s.devices.push_back(d);
    }
    s.validate();
    return s;
}

enum class Fix { None, Calibrated };

// Mean NMSE (linear) over `trials` rounds of K devices with the impairments `make(k, rng)` (or none), with or
// without the calibration: a cabled calibration run on the same virtual devices gives corrections (timing advance,
// phase, CFO) and TX power tables from which the dBm budget (0 dBm: phy power 1 at the nominal gain) becomes each
// device's linear budget.
struct RoundStats {
    double nmse = 0.0;
    int failures = 0;  // rounds in which the receiver found no frame
};

RoundStats rounds(std::size_t K, int trials, bool impaired, Fix fix, double max_gain_db, double min_timing,
                  double max_timing, double max_cfo_hz, bool wide_window = false) {
    const double snr_db = 15.0;
    RoundStats st;
    double sum = 0.0;
    int n = 0;
    for (int t = 0; t < trials; ++t) {
        std::mt19937_64 rng(1000 + static_cast<std::uint64_t>(t));
        auto imp = draw(K, rng, max_gain_db, max_timing - min_timing, max_cfo_hz);
        for (auto& i : imp)
            i.timing += min_timing;
        const auto u = make_updates(K, 20000, rng);
        auto cfg = round_config(K);
        if (wide_window) {
            // FFT windows 16 samples into the CP and an estimator window reaching 20 samples before the detected
            // start: devices that arrive up to 16 samples early are still estimated.
            cfg.timing_backoff = 16;
            cfg.estimator.pre_delay = 20;
        }
        if (!impaired)
            imp.assign(K, Impairment{});
        if (fix == Fix::Calibrated) {
            MultiUserChannel cab(cabled(imp, 30.0, 20.0, 500 + static_cast<std::uint64_t>(t)));
            const auto a = calibrate(cab, alignment_config(K, 30.0, cab.bulk_delay()));
            std::vector<double> gerr;
            for (const auto& ak : a) {
                cfg.corrections.push_back(TransmitCorrection::from(ak));
                gerr.push_back(ak.gain_error_db);
            }
            const auto rec = virtual_record(gerr, 2.45e9);
            for (std::size_t k = 0; k < K; ++k)
                cfg.power.budget[k] = linear_budget(rec, "virtual-" + std::to_string(k), 0, 2.45e9, 60.0, 0.0);
        }
        MultiUserChannel ch(air(imp, snr_db, 77 + static_cast<std::uint64_t>(t)));
        std::vector<float> est;
        try {
            const auto rep = aircomp_round_calibrated(u.x, u.w, u.codec, ch, cfg, est);
            sum += std::min(rep.nmse_measured, 10.0);
        } catch (const std::runtime_error&) {
            sum += 1.0;  // nothing decoded: the estimate is as far off as the sum itself
            ++st.failures;
        }
        ++n;
    }
    st.nmse = sum / n;
    return st;
}

double db(double x) {
    return 10.0 * std::log10(x);
}

}  // namespace

TEST(CalibrationRound, NmseWithinOneDbOfUnimpaired) {
    // K = 8 devices, 15 dB per device, EPA Rayleigh, truncated inversion from estimated CSI; impairments: gain
    // errors ±3 dB, timing offsets in [0, 16) samples (inside the 32-sample CP), CFOs ±1.5 kHz per device
    // (±0.025 subcarrier spacings), random phases. 8 rounds each.
    const std::size_t K = 8;
    const int T = 8;
    const auto ref = rounds(K, T, false, Fix::None, 0, 0, 0, 0);
    const auto raw = rounds(K, T, true, Fix::None, 3.0, 0.0, 16.0, 1500.0);
    const auto cal = rounds(K, T, true, Fix::Calibrated, 3.0, 0.0, 16.0, 1500.0);
    const std::string s = "unimpaired " + std::to_string(db(ref.nmse)) + " dB, impaired " +
                          std::to_string(db(raw.nmse)) + " dB, impaired + calibration " + std::to_string(db(cal.nmse)) +
                          " dB";
    RecordProperty("nmse", s);
    std::printf("%s\n", s.c_str());
    EXPECT_EQ(ref.failures + cal.failures, 0) << s;
    EXPECT_LT(std::fabs(db(cal.nmse) - db(ref.nmse)), 1.0) << s;
    EXPECT_GT(db(raw.nmse), db(ref.nmse) + 3.0) << s;
}

TEST(CalibrationRound, WhatPerRoundEstimationAbsorbsAndWhatItDoesNot) {
    // One impairment at a time, without and with the calibration, against the unimpaired rounds (same fading,
    // noise and updates). The figures go to docs/math.md ("Calibration").
    const std::size_t K = 8;
    const int T = 8;
    const double ref = db(rounds(K, T, false, Fix::None, 0, 0, 0, 0).nmse);
    struct Case {
        const char* name;
        double gain, tmin, tmax, cfo;
        bool must_degrade;  // the per-round channel estimation cannot absorb it
        bool wide = false;  // receiver with a wide timing window
    };
    const Case cases[] = {
        {"gain errors +-3 dB", 3.0, 0.0, 0.0, 0.0, false},
        {"timing offsets [0, 16) samples", 0.0, 0.0, 16.0, 0.0, false},
        {"timing offsets [0, 16) samples, wide receiver window", 0.0, 0.0, 16.0, 0.0, false, true},
        {"timing offsets [0, 32) samples (whole CP)", 0.0, 0.0, 32.0, 0.0, false},
        {"timing offsets [40, 120) samples (beyond the CP)", 0.0, 40.0, 120.0, 0.0, true},
        {"CFO +-150 Hz per device", 0.0, 0.0, 0.0, 150.0, true},
        {"CFO +-1.5 kHz per device", 0.0, 0.0, 0.0, 1500.0, true},
        {"all: +-3 dB, [0, 16) samples, +-1.5 kHz", 3.0, 0.0, 16.0, 1500.0, true},
    };
    RecordProperty("unimpaired", std::to_string(ref) + " dB");
    std::printf("unimpaired: %.2f dB\n", ref);
    for (const auto& c : cases) {
        const auto raw = rounds(K, T, true, Fix::None, c.gain, c.tmin, c.tmax, c.cfo, c.wide);
        const auto cal = rounds(K, T, true, Fix::Calibrated, c.gain, c.tmin, c.tmax, c.cfo, c.wide);
        const std::string s = std::string(c.name) + ": without calibration " + std::to_string(db(raw.nmse)) +
                              " dB (" + std::to_string(raw.failures) + " rounds without a frame), with " +
                              std::to_string(db(cal.nmse)) + " dB";
        RecordProperty(c.name, s);
        std::printf("%s\n", s.c_str());
        EXPECT_EQ(cal.failures, 0) << s;
        EXPECT_LT(std::fabs(db(cal.nmse) - ref), 1.0) << s;
        if (c.must_degrade) {
            EXPECT_GT(db(raw.nmse), ref + 1.0) << s;
        }
    }
}

TEST(CalibrationRound, DbmBudgetsMeetTheRadiatedPower) {
    // A 0 dBm budget through the TX power tables the procedure measured: every virtual device radiates 0 dBm
    // (its linear budget times its true gain error), within the gain estimate's tolerance; through the nominal
    // (uncalibrated) table it radiates its gain error above or below the budget.
    std::mt19937_64 rng(31);
    const std::size_t K = 8;
    const auto imp = draw(K, rng, 3.0, 10.0, 1000.0);
    MultiUserChannel cab(cabled(imp, 30.0, 20.0, 32));
    const auto a = calibrate(cab, alignment_config(K, 30.0, cab.bulk_delay()));
    std::vector<double> measured, nominal(K, 0.0);
    for (const auto& ak : a)
        measured.push_back(ak.gain_error_db);
    const auto cal = virtual_record(measured, 2.45e9), nom = virtual_record(nominal, 2.45e9);
    double worst_cal = 0.0, worst_nom = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
        const std::string serial = "virtual-" + std::to_string(k);
        const double rad_cal = db(linear_budget(cal, serial, 0, 2.45e9, 60.0, 0.0)) + imp[k].gain_error_db;
        const double rad_nom = db(linear_budget(nom, serial, 0, 2.45e9, 60.0, 0.0)) + imp[k].gain_error_db;
        EXPECT_NEAR(rad_cal, 0.0, 0.05) << serial;
        EXPECT_NEAR(rad_nom, imp[k].gain_error_db, 1e-9) << serial;
        worst_cal = std::max(worst_cal, std::fabs(rad_cal));
        worst_nom = std::max(worst_nom, std::fabs(rad_nom));
        // The gain setting that reaches −5 dBm at the reference level.
        const auto set = tx_power_setting(cal, serial, 0, 2.45e9, -5.0);
        EXPECT_NEAR(set.gain_db, 55.0 - measured[k], 1e-9) << serial;
        EXPECT_NEAR(set.linear_budget, 1.0, 1e-12) << serial;
        EXPECT_NEAR(set.output_dbm, -5.0, 1e-9) << serial;
    }
    RecordProperty("radiated_vs_budget", "calibrated: worst " + std::to_string(worst_cal) +
                                             " dB; nominal table: worst " + std::to_string(worst_nom) + " dB");
}

// ---------------------------------------------------------------------------------------------------------------
// The record

namespace {

CalibrationSet two_devices() {
    CalibrationSet s;
    s.source = "cal.yaml";
    s.reference = "external";
    DeviceCalibration b;
    b.serial = "31A0B2C";
    b.product = "B210";
    ChannelCalibration c;
    c.tx_power.frequencies_hz = {915e6, 2450e6};
    c.tx_power.gains_db = {40.0, 60.0, 80.0};
    c.tx_power.power_dbm = {-30.0, -10.0, 8.0,   // 915 MHz
                            -34.0, -14.0, 4.0};  // 2450 MHz
    c.rx_noise.gain_db = 40.0;
    c.rx_noise.frequencies_hz = {915e6, 2450e6};
    c.rx_noise.dbfs = {-70.0, -66.0};
    AlignmentRecord al;
    al.frequency_hz = 2450e6;
    al.sample_rate_hz = 15.36e6;
    al.timing_offset_samples = 3.25;
    al.phase_rad = 0.5;
    al.reference_time_s = 2.0;
    al.cfo_hz = 12.0;
    c.alignment.push_back(al);
    b.channels.push_back(c);
    s.devices.push_back(b);
    DeviceCalibration x;
    x.serial = "F5E4D3";
    x.product = "X310";
    ChannelCalibration cx;
    cx.channel = 1;
    cx.rx_noise = c.rx_noise;
    x.channels.push_back(cx);
    s.devices.push_back(x);
    return s;
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
        f();
        ADD_FAILURE() << "no error; expected one naming: " << parts.front();
    } catch (const CalibrationError& e) {
        for (const auto& p : parts)
            EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << e.what() << "' lacks '" << p << "'";
    }
}

}  // namespace

TEST(CalibrationRecord, InterpolatesAndInverts) {
    const auto s = two_devices();
    s.validate();
    EXPECT_NEAR(s.tx_power_dbm("31A0B2C", 0, 915e6, 60.0), -10.0, 1e-12);
    EXPECT_NEAR(s.tx_power_dbm("31A0B2C", 0, 915e6, 50.0), -20.0, 1e-12);
    EXPECT_NEAR(s.tx_power_dbm("31A0B2C", 0, 915e6, 70.0), -1.0, 1e-12);
    const double mid = 0.5 * (915e6 + 2450e6);
    EXPECT_NEAR(s.tx_power_dbm("31A0B2C", 0, mid, 60.0), -12.0, 1e-9);
    EXPECT_NEAR(s.tx_power_dbm("31A0B2C", 0, mid, 70.0), -3.0, 1e-9);
    for (double p : {-31.0, -12.0, -3.0, 5.9})
        EXPECT_NEAR(s.tx_power_dbm("31A0B2C", 0, mid, s.tx_gain_for("31A0B2C", 0, mid, p)), p, 1e-9);
    EXPECT_NEAR(s.noise_floor_dbfs("31A0B2C", 0, mid), -68.0, 1e-9);
    EXPECT_NEAR(s.noise_floor_dbfs("F5E4D3", 1, 2450e6), -66.0, 1e-12);
    // A budget below the lowest gain's output keeps the lowest gain and lowers the digital level.
    const auto low = tx_power_setting(s, "31A0B2C", 0, 915e6, -40.0);
    EXPECT_EQ(low.gain_db, 40.0);
    EXPECT_NEAR(low.linear_budget, 0.1, 1e-12);
    const auto c = s.correction("31A0B2C", 0, 2450e6 + 300.0, 15.36e6);
    EXPECT_EQ(c.advance_samples, 3.25);
    EXPECT_EQ(c.cfo_hz, 12.0);
    EXPECT_EQ(c.reference_sample, 30720000);
}

TEST(CalibrationRecord, LookupErrorsNameTheProblem) {
    const auto s = two_devices();
    expect_error([&] { s.device("000000"); }, {"cal.yaml", "no device with serial '000000'", "31A0B2C (B210)",
                                              "F5E4D3 (X310)"});
    expect_error([&] { s.channel("31A0B2C", 1); }, {"device '31A0B2C'", "no channel 1", "calibrated: 0"});
    expect_error([&] { s.tx_power_dbm("31A0B2C", 0, 5.8e9, 60.0); },
                 {"device '31A0B2C' channel 0", "tx_power.frequencies_hz", "5800 MHz", "915 MHz, 2450 MHz"});
    expect_error([&] { s.tx_power_dbm("31A0B2C", 0, 915e6, 90.0); }, {"gain 90 dB", "[40, 80] dB"});
    expect_error([&] { s.tx_power_dbm("F5E4D3", 1, 915e6, 60.0); }, {"device 'F5E4D3' channel 1", "no tx_power"});
    expect_error([&] { s.alignment("31A0B2C", 0, 915e6, 15.36e6); },
                 {"device '31A0B2C' channel 0", "alignment has no entry at 915 MHz", "measured at: 2450 MHz"});
    expect_error([&] { s.alignment("31A0B2C", 0, 2450e6, 30.72e6); },
                 {"2450 MHz", "measured at 15.36 MS/s, not 30.72 MS/s"});
    expect_error([&] { tx_power_setting(s, "31A0B2C", 0, 2450e6, 10.0); },
                 {"device '31A0B2C'", "10 dBm exceeds", "4 dBm at gain 80 dB"});
    expect_error([&] { s.noise_floor_dbfs("31A0B2C", 0, 100e6); }, {"rx_noise_floor.frequencies_hz", "100 MHz"});
}

TEST(CalibrationRecord, ValidationErrorsNameTheProblem) {
    auto bad = [](const std::function<void(CalibrationSet&)>& edit, const std::vector<std::string>& parts) {
        auto s = two_devices();
        edit(s);
        expect_error([&] { s.validate(); }, parts);
    };
    bad([](auto& s) { s.devices[1].serial = "31A0B2C"; }, {"serial '31A0B2C' appears twice"});
    bad([](auto& s) { s.devices[0].serial.clear(); }, {"devices[0].serial is empty"});
    bad([](auto& s) { s.reference = "rubidium"; }, {"reference = 'rubidium'", "internal, external, gpsdo"});
    bad([](auto& s) { s.version = 2; }, {"fedlora_calibration = 2"});
    bad([](auto& s) { s.devices[0].channels[0].tx_power.power_dbm.pop_back(); },
        {"device '31A0B2C' channel 0", "power_dbm has 5 values", "2 frequencies x 3 gains = 6"});
    bad([](auto& s) { s.devices[0].channels[0].tx_power.power_dbm[4] = -40.0; },
        {"tx_power.power_dbm[1][1] = -40", "must grow with gain"});
    bad([](auto& s) { s.devices[0].channels[0].tx_power.frequencies_hz = {2450e6, 915e6}; },
        {"tx_power.frequencies_hz must be strictly ascending"});
    bad([](auto& s) { s.devices[0].channels[0].rx_noise.dbfs.push_back(-60.0); },
        {"rx_noise_floor.dbfs has 3 values for 2 frequencies"});
    bad([](auto& s) { s.devices[0].channels[0].alignment[0].cfo_hz = 9e6; }, {"alignment[0].cfo_hz = 9e+06"});
    bad([](auto& s) { s.devices[0].channels[0].alignment.push_back(s.devices[0].channels[0].alignment[0]); },
        {"alignment[1]: a second entry for 2450 MHz"});
    bad([](auto& s) { s.devices[1].channels[0].rx_noise = NoiseFloorTable{}; },
        {"device 'F5E4D3' channel 1: holds none of"});
}

// ---------------------------------------------------------------------------------------------------------------
// The waveform round with calibrated radios (WaveformRoundConfig::corrections: what the aircomp_transmitter block
// and `fedlora sim` with radio.calibration run)

TEST(CalibrationWaveformRound, CorrectionsRestoreTheUnimpairedNmse) {
    // K = 6 at 15 dB, EPA Rayleigh, truncated inversion from sparse estimates; timing offsets [0, 16) samples and
    // CFOs +-1.5 kHz per device, measured through a cabled setup at 20 dB; 6 rounds per variant, the same fading,
    // noise and updates in each.
    const std::size_t K = 6;
    const int T = 6;
    double sums[3] = {0, 0, 0};
    int lost[3] = {0, 0, 0};
    for (int t = 0; t < T; ++t) {
        std::mt19937_64 rng(2000 + static_cast<std::uint64_t>(t));
        const auto imp = draw(K, rng, 0.0, 16.0, 1500.0);
        const auto u = make_updates(K, 6000, rng);
        MultiUserChannel cab(cabled(imp, 30.0, 20.0, 900 + static_cast<std::uint64_t>(t)));
        const auto a = calibrate(cab, alignment_config(K, 30.0, cab.bulk_delay()));
        for (int v = 0; v < 3; ++v) {
            WaveformRoundConfig wc;
            wc.frame.numerology = numerology();
            wc.frame.n_devices = K;
            wc.frame.pilot_repeats = 2;
            wc.power.policy = PowerPolicy::Truncated;
            wc.power.budget.assign(K, 1.0);
            wc.estimator.name = "sparse";
            wc.lead = 300;
            if (v == 2)
                for (const auto& ak : a)
                    wc.corrections.push_back(TransmitCorrection::from(ak));
            MultiUserChannel ch(air(v == 0 ? std::vector<Impairment>(K) : imp, 15.0, 77 + static_cast<std::uint64_t>(t)));
            std::vector<float> est;
            try {
                sums[v] += std::min(aircomp_round_waveform(u.x, u.w, u.codec, ch, wc, est).nmse_measured, 10.0);
            } catch (const std::runtime_error&) {
                sums[v] += 1.0;
                ++lost[v];
            }
        }
    }
    const double ref = db(sums[0] / T), raw = db(sums[1] / T), cal = db(sums[2] / T);
    std::printf("waveform round: unimpaired %.2f dB, impaired %.2f dB, impaired + corrections %.2f dB\n", ref, raw,
                cal);
    EXPECT_EQ(lost[0] + lost[2], 0);
    EXPECT_LT(std::fabs(cal - ref), 1.0);
    EXPECT_GT(raw, ref + 3.0);
}

TEST(CalibrationWaveformRound, CorrectionsMustFitTheLead) {
    const std::size_t K = 2;
    std::mt19937_64 rng(5);
    const auto u = make_updates(K, 500, rng);
    WaveformRoundConfig wc;
    wc.frame.numerology = numerology();
    wc.frame.n_devices = K;
    wc.power.budget.assign(K, 1.0);
    wc.estimator.name = "sparse";
    wc.lead = 20;
    TransmitCorrection c;
    c.advance_samples = 10.5;  // lead 26 samples
    wc.corrections.assign(K, c);
    MultiUserChannel ch(air(std::vector<Impairment>(K), 20.0, 3));
    std::vector<float> est;
    auto refused = [&](const std::vector<std::string>& parts) {
        try {
            aircomp_round_waveform(u.x, u.w, u.codec, ch, wc, est);
            ADD_FAILURE() << "no error; expected one naming: " << parts.front();
        } catch (const std::invalid_argument& e) {
            for (const auto& p : parts)
                EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
        }
    };
    refused({"lead = 20 samples", "advance (26 samples)"});
    wc.corrections.pop_back();
    refused({"1 transmit corrections for 2 devices"});
}

TEST(CalibrationRecord, SpanSerialsAndAlignmentRecords) {
    TransmitCorrection a, b;
    a.advance_samples = 7.37;   // lead 23, tail 8
    b.advance_samples = -3.0;   // whole samples: lead 0, tail 3
    const auto span = correction_span({a, b}, 15.36e6);
    EXPECT_EQ(span.lead, 23u);
    EXPECT_EQ(span.tail, 8u);
    EXPECT_EQ(correction_span({}, 15.36e6).lead, 0u);

    auto s = two_devices();
    EXPECT_EQ(s.aligned_serials(0, 2450e6, 15.36e6), std::vector<std::string>{"31A0B2C"});
    EXPECT_TRUE(s.aligned_serials(0, 915e6, 15.36e6).empty());
    AlignmentRecord r;
    r.frequency_hz = 2450e6 + 400.0;  // within the 1 kHz tolerance: replaces the entry at 2450 MHz
    r.sample_rate_hz = 15.36e6;
    r.timing_offset_samples = 1.5;
    s.set_alignment("31A0B2C", "", 0, r);
    ASSERT_EQ(s.channel("31A0B2C", 0).alignment.size(), 1u);
    EXPECT_EQ(s.correction("31A0B2C", 0, 2450e6, 15.36e6).advance_samples, 1.5);
    r.frequency_hz = 915e6;  // a new entry of a new device
    s.set_alignment("B210-0042", "B210", 1, r);
    EXPECT_EQ(s.device("B210-0042").product, "B210");
    EXPECT_EQ(s.aligned_serials(1, 915e6, 15.36e6), std::vector<std::string>{"B210-0042"});
    EXPECT_NO_THROW(s.validate());
}
