// fedlora calibrate: the calibration procedures of docs/hardware.md.
//
//   fedlora calibrate [options]            the virtual radio (default): devices with gain errors, timing offsets,
//                                          phases and CFOs the procedure does not know, injected by the channel
//                                          simulator; measures the RX noise floor, sweeps TX gain against the
//                                          reference receiver, measures the alignment from calibration bursts,
//                                          prints estimated against injected values, writes the calibration file
//                                          and checks AirComp with and without it (--verify)
//   fedlora calibrate usrp [options]       the same measurements through UHD (calibrate_usrp.cpp)
//   fedlora calibrate check FILE [...]     validates a calibration file and looks values up in it
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "calibrate.h"
#include "commands.h"
#include "fedlora/calib/file.h"
#include "fedlora/phy/calibrated_round.h"
#include "fedlora/phy/channel.h"

namespace fedlora::app {

namespace calibrate {

phy::Numerology burst_numerology(double sample_rate) {
    phy::Numerology n;
    n.fft_size = 256;
    n.cp_len = 32;
    n.n_occupied = 200;
    n.pilot_spacing = 20;
    n.sample_rate = sample_rate;
    n.validate();
    return n;
}

}  // namespace calibrate

namespace {

using cf = std::complex<float>;
constexpr double kPi = 3.14159265358979323846;
constexpr double kRefGain = 60.0;  // the virtual radio's gain at which phy power 1 radiates 0 dBm

double db(double x) { return 10.0 * std::log10(x); }

struct VirtualOptions {
    int devices = 4;
    unsigned seed = 1;
    std::vector<double> gain_error_db, timing_offset, cfo_hz;  // explicit, one per device; empty: drawn
    double max_gain_error_db = 3.0, max_timing_offset = 16.0, max_cfo_hz = 1500.0;
    double snr_db = 25.0;         // per carrier at the server, at the reference gain
    double attenuation_db = 30.0;
    std::vector<double> freqs{2.45e9};
    std::vector<double> gains{50, 55, 60, 65, 70};
    double tx_gain = kRefGain;
    double rate = 15.36e6;
    int repeats = 16;
    std::string out = "calibration_virtual.yaml";
    bool verify = true;
    int rounds = 4;
};

std::vector<double> per_device(const std::vector<double>& given, const char* option, std::size_t K, double max,
                               bool symmetric, std::mt19937_64& rng) {
    if (!given.empty()) {
        if (given.size() != K)
            throw CLI::ValidationError(option, std::to_string(given.size()) + " values for " + std::to_string(K) +
                                                   " devices (give one per device, or none to draw them)");
        return given;
    }
    std::uniform_real_distribution<double> u(symmetric ? -max : 0.0, max);
    std::vector<double> v(K);
    for (auto& x : v)
        x = u(rng);
    return v;
}

// The virtual lab: K devices whose impairments the procedure does not know, cabled to the server through
// `attenuation_db`; a virtual TX gain stage (setting g radiates g − 60 dBm for phy power 1, plus the device's gain
// error); the server's receiver full scale is sample power 1.
struct VirtualLab {
    std::size_t K;
    std::vector<double> gain_error_db, timing, cfo_hz;
    double attenuation_db, noise_var, rate;

    phy::ChannelSimConfig cabled(std::uint64_t seed) const {
        phy::ChannelSimConfig c;
        c.sample_rate = rate;
        c.seed = seed;
        c.noise_variance = noise_var;
        c.devices.resize(K);
        for (std::size_t k = 0; k < K; ++k) {
            auto& d = c.devices[k];
            d.path_loss_db = attenuation_db;
            d.fading = "none";
            d.gain_error_db = gain_error_db[k];
            d.timing_offset_samples = timing[k];
            d.cfo_hz = cfo_hz[k];
        }
        c.validate();
        return c;
    }
};

struct BurstResult {
    std::vector<phy::DeviceAlignment> est;
    std::vector<double> true_phase;  // the simulator's phase at each device's reference sample
};

// Every device sends its calibration burst at TX gain `gain` through `ch`; the server estimates.
BurstResult burst(phy::MultiUserChannel& ch, const phy::AlignmentConfig& ac, double gain) {
    const std::size_t K = ac.burst.n_devices;
    phy::AlignmentEstimator est(ac);
    const std::size_t lead = 512, len = lead + est.layout().length() + est.tail() + 512;
    const auto base = static_cast<std::int64_t>(ch.position());
    const float amp = static_cast<float>(std::pow(10.0, (gain - kRefGain) / 20.0));
    std::vector<std::vector<cf>> tx(K, std::vector<cf>(len));
    std::vector<cf> b;
    std::vector<const cf*> in(K);
    for (std::size_t k = 0; k < K; ++k) {
        phy::CalibrationTransmitter(ac.burst, k, 1.0).burst(b);
        for (std::size_t i = 0; i < b.size(); ++i)
            tx[k][lead + i] = b[i] * amp;
        in[k] = tx[k].data();
    }
    std::vector<cf> rx(len);
    cf* out = rx.data();
    ch.process(in.data(), &out, len);
    BurstResult r;
    r.est = est.estimate(rx.data(), rx.size(), base, base + static_cast<std::int64_t>(lead));
    for (std::size_t k = 0; k < K; ++k) {
        const auto ir = ch.impulse_response(static_cast<int>(k), 0, 0);
        std::complex<double> s = 0.0;
        for (const auto& t : ir.taps)
            s += std::complex<double>(t);
        const double w = 2.0 * kPi * ch.config().devices[k].cfo_hz / ch.config().sample_rate;
        r.true_phase.push_back(std::remainder(std::arg(s) + w * static_cast<double>(r.est[k].reference_sample),
                                              2.0 * kPi));
    }
    return r;
}

std::string serial_of(std::size_t k) { return "virtual-" + std::to_string(k); }

int run_virtual(const VirtualOptions& o) {
    using namespace fedlora::phy;
    const auto K = static_cast<std::size_t>(o.devices);
    std::mt19937_64 rng(o.seed);
    VirtualLab lab;
    lab.K = K;
    lab.gain_error_db = per_device(o.gain_error_db, "--gain-error-db", K, o.max_gain_error_db, true, rng);
    lab.timing = per_device(o.timing_offset, "--timing-offset", K, o.max_timing_offset, false, rng);
    lab.cfo_hz = per_device(o.cfo_hz, "--cfo-hz", K, o.max_cfo_hz, true, rng);
    lab.attenuation_db = o.attenuation_db;
    lab.noise_var = std::pow(10.0, -(o.attenuation_db + o.snr_db) / 10.0);
    lab.rate = o.rate;
    std::vector<double> gains = o.gains;
    std::sort(gains.begin(), gains.end());
    gains.erase(std::unique(gains.begin(), gains.end()), gains.end());
    if (gains.size() < 2)
        throw CLI::ValidationError("--gains", "needs at least two different gain settings");
    std::vector<double> freqs = o.freqs;
    std::sort(freqs.begin(), freqs.end());

    AlignmentConfig ac;
    ac.burst.numerology = calibrate::burst_numerology(o.rate);
    ac.burst.n_devices = K;
    ac.burst.pilot_repeats = static_cast<std::size_t>(o.repeats);
    ac.burst.guard = std::max<std::size_t>(
        2 * static_cast<std::size_t>(ac.burst.numerology.symbol_len()),
        static_cast<std::size_t>(std::ceil(*std::max_element(lab.timing.begin(), lab.timing.end()))) + 64);

    CalibrationSet set;
    set.date = calib::utc_now();
    set.reference = "external";
    {
        char buf[160];
        std::snprintf(buf, sizeof buf,
                      "virtual radio (channel simulator), seed %u, cabled through %g dB, %g dB per-carrier SNR at "
                      "gain 60",
                      o.seed, o.attenuation_db, o.snr_db);
        set.conditions = buf;
    }
    set.source = o.out;
    set.devices.resize(K);
    for (std::size_t k = 0; k < K; ++k) {
        set.devices[k].serial = serial_of(k);
        set.devices[k].product = "virtual";
        set.devices[k].channels.resize(1);
        auto& t = set.devices[k].channels[0].tx_power;
        t.frequencies_hz = freqs;
        t.gains_db = gains;
    }
    DeviceCalibration server;
    server.serial = "virtual-server";
    server.product = "virtual";
    server.channels.resize(1);
    server.channels[0].rx_noise.gain_db = 0.0;

    std::printf("virtual radio: %zu devices cabled to the server through %.1f dB, %.1f dB per-carrier SNR at gain "
                "%.0f, %.2f MS/s, %d pilot repetitions per burst\n",
                K, o.attenuation_db, o.snr_db, kRefGain, o.rate / 1e6, o.repeats);
    // Per-frequency alignment of the reference gain, for the printed comparison.
    std::vector<BurstResult> align_runs;
    for (std::size_t fi = 0; fi < freqs.size(); ++fi) {
        MultiUserChannel ch(lab.cabled(static_cast<std::uint64_t>(o.seed) * 1000 + fi));
        ac.system_delay = ch.bulk_delay();

        // 1. RX noise floor: the server listens while every device is silent.
        {
            const std::size_t n = 1 << 17;
            std::vector<cf> zero(n), rx(n);
            std::vector<const cf*> in(K, zero.data());
            cf* out = rx.data();
            ch.process(in.data(), &out, n);
            double p = 0.0;
            for (const auto& v : rx)
                p += std::norm(std::complex<double>(v));
            server.channels[0].rx_noise.frequencies_hz.push_back(freqs[fi]);
            server.channels[0].rx_noise.dbfs.push_back(db(p / static_cast<double>(n)));
        }
        // 2. TX gain sweep against the reference receiver: output power = received power + attenuation.
        for (double g : gains) {
            const auto r = burst(ch, ac, g);
            for (std::size_t k = 0; k < K; ++k)
                set.devices[k].channels[0].tx_power.power_dbm.push_back(r.est[k].gain_db + o.attenuation_db);
        }
        // 3. Alignment at the alignment gain.
        auto r = burst(ch, ac, o.tx_gain);
        for (std::size_t k = 0; k < K; ++k) {
            AlignmentRecord a;
            a.frequency_hz = freqs[fi];
            a.sample_rate_hz = o.rate;
            a.timing_offset_samples = r.est[k].timing_offset_samples;
            a.phase_rad = r.est[k].phase_rad;
            a.reference_time_s = static_cast<double>(r.est[k].reference_sample) / o.rate;
            a.cfo_hz = r.est[k].cfo_hz;
            a.tx_gain_db = o.tx_gain;
            set.devices[k].channels[0].alignment.push_back(a);
        }
        align_runs.push_back(std::move(r));
    }
    set.devices.push_back(server);

    // What the procedure recovered, against what the simulator injected (first frequency).
    const auto& r0 = align_runs.front();
    std::printf("\nestimated vs injected at %s; in brackets: the error, and the standard deviation expected at the "
                "measured SNR\n",
                format_frequency(freqs.front()).c_str());
    auto cell = [](const char* fmt, double a, double b, double e, double sd) {
        char buf[96];
        std::snprintf(buf, sizeof buf, fmt, a, b, e, sd);
        return std::string(buf);
    };
    std::printf("%-14s %6s | %-29s | %-33s | %-31s | %s\n", "device", "SNR dB", "gain error dB: est, true",
                "timing samples: est, true", "phase rad: est, true", "CFO Hz: est, true");
    bool all_ok = true;
    for (std::size_t k = 0; k < K; ++k) {
        const auto& e = r0.est[k];
        // The gain error from the TX power table at the alignment gain, as budgets will see it.
        const double g_est = set.tx_power_dbm(serial_of(k), 0, freqs.front(), o.tx_gain) - (o.tx_gain - kRefGain);
        const double eg = g_est - lab.gain_error_db[k], et = e.timing_offset_samples - lab.timing[k];
        const double ep = std::remainder(e.phase_rad - r0.true_phase[k], 2.0 * kPi), ec = e.cfo_hz - lab.cfo_hz[k];
        const bool ok = std::fabs(eg) <= 5 * e.gain_std_db + 0.01 &&
                        std::fabs(et) <= 5 * e.timing_std_samples + 0.005 && std::fabs(ep) <= 5 * e.phase_std_rad &&
                        std::fabs(ec) <= 5 * e.cfo_std_hz;
        all_ok &= ok;
        std::printf("%-14s %6.1f | %-29s | %-33s | %-31s | %s%s\n", serial_of(k).c_str(), e.snr_db,
                    cell("%+6.2f %+6.2f (%+.3f; %.3f)", g_est, lab.gain_error_db[k], eg, e.gain_std_db).c_str(),
                    cell("%8.3f %8.3f (%+.4f; %.4f)", e.timing_offset_samples, lab.timing[k], et, e.timing_std_samples)
                        .c_str(),
                    cell("%+6.3f %+6.3f (%+.4f; %.4f)", e.phase_rad, r0.true_phase[k], ep, e.phase_std_rad).c_str(),
                    cell("%+8.1f %+8.1f (%+.1f; %.1f)", e.cfo_hz, lab.cfo_hz[k], ec, e.cfo_std_hz).c_str(),
                    ok ? "" : "  <- outside 5 sigma");
    }
    std::printf("RX noise floor of the server: %.1f dBFS at %s\n", server.channels[0].rx_noise.dbfs.front(),
                format_frequency(freqs.front()).c_str());

    calib::save_calibration(set, o.out);
    std::printf("wrote %s (%zu devices and the server; %zu frequencies)\n", o.out.c_str(), K, freqs.size());

    if (o.verify) {
        // AirComp rounds over the air (EPA Rayleigh, 15 dB per device) with the same virtual devices: unimpaired,
        // impaired without calibration, impaired with the corrections and dBm budgets read back from the file.
        const auto rec = calib::load_calibration(o.out);
        const double f0 = freqs.front();
        double sums[3] = {0, 0, 0};
        int failed[3] = {0, 0, 0};
        for (int t = 0; t < o.rounds; ++t) {
            std::mt19937_64 urng(o.seed * 7919u + static_cast<unsigned>(t));
            std::normal_distribution<float> gn;
            std::vector<std::vector<float>> x(K, std::vector<float>(20000));
            std::vector<double> w(K, 1.0 / static_cast<double>(K)), rms(K);
            AircompCodec codec;
            codec.dim = 20000;
            for (std::size_t k = 0; k < K; ++k) {
                for (auto& v : x[k])
                    v = gn(urng);
                rms[k] = update_rms(x[k].data(), codec.dim, {});
            }
            codec.scale = common_scale(rms, w);
            for (int v = 0; v < 3; ++v) {
                ChannelSimConfig c;
                c.sample_rate = o.rate;
                c.noise_variance = 0.01;
                c.seed = 500 + static_cast<std::uint64_t>(t);
                c.devices.resize(K);
                CalibratedRoundConfig rc;
                rc.frame.numerology = ac.burst.numerology;
                rc.frame.n_devices = K;
                rc.frame.pilot_repeats = 2;
                rc.estimator.name = "sparse";
                rc.power.budget.assign(K, 1.0);
                for (std::size_t k = 0; k < K; ++k) {
                    auto& d = c.devices[k];
                    d.snr_db = 15.0;
                    d.profile = "EPA";
                    if (v > 0) {
                        d.gain_error_db = lab.gain_error_db[k];
                        d.timing_offset_samples = lab.timing[k];
                        d.cfo_hz = lab.cfo_hz[k];
                    }
                    if (v == 2) {
                        rc.corrections.push_back(rec.correction(serial_of(k), 0, f0, o.rate));
                        rc.power.budget[k] = linear_budget(rec, serial_of(k), 0, f0, kRefGain, 0.0);
                    }
                }
                MultiUserChannel ch(c);
                std::vector<float> est;
                try {
                    sums[v] += std::min(aircomp_round_calibrated(x, w, codec, ch, rc, est).nmse_measured, 10.0);
                } catch (const std::runtime_error&) {
                    sums[v] += 1.0;
                    ++failed[v];
                }
            }
        }
        const char* names[3] = {"unimpaired devices", "impaired, without calibration", "impaired, with calibration"};
        std::printf("\nAirComp check: %zu devices, EPA Rayleigh at 15 dB each, truncated inversion, 0 dBm budgets, "
                    "%d rounds\n",
                    K, o.rounds);
        for (int v = 0; v < 3; ++v)
            std::printf("  NMSE %-31s %7.2f dB%s\n", names[v], db(sums[v] / o.rounds),
                        failed[v] ? (" (" + std::to_string(failed[v]) + " rounds without a frame)").c_str() : "");
    }
    if (!all_ok) {
        spdlog::error("some estimates lie outside 5 standard deviations of the injected values (see the table)");
        return 1;
    }
    return 0;
}

struct CheckOptions {
    std::string file;
    std::string serial;
    int channel = 0;
    double freq = 0.0;
    double rate = 0.0;
    double budget_dbm = std::nan("");
    double tx_gain = std::nan("");
};

int run_check(const CheckOptions& o) {
    const auto s = calib::load_calibration(o.file);
    std::printf("%s: valid (fedlora_calibration %d), measured %s, reference %s, TX reference level %.1f dBFS\n",
                o.file.c_str(), s.version, s.date.c_str(), s.reference.c_str(), s.tx_reference_dbfs);
    if (!s.conditions.empty())
        std::printf("  conditions: %s\n", s.conditions.c_str());
    auto list = [](const std::vector<double>& f) {
        std::string r;
        for (double x : f)
            r += (r.empty() ? "" : ", ") + phy::format_frequency(x);
        return r;
    };
    for (const auto& d : s.devices)
        for (const auto& c : d.channels) {
            const std::string product = d.product.empty() ? "" : " (" + d.product + ")";
            std::printf("  %s%s channel %d:", d.serial.c_str(), product.c_str(), c.channel);
            if (!c.tx_power.empty())
                std::printf(" tx_power at %s, gains %g..%g dB;", list(c.tx_power.frequencies_hz).c_str(),
                            c.tx_power.gains_db.front(), c.tx_power.gains_db.back());
            if (!c.rx_noise.empty())
                std::printf(" rx_noise_floor at %s;", list(c.rx_noise.frequencies_hz).c_str());
            std::vector<double> af;
            for (const auto& a : c.alignment)
                af.push_back(a.frequency_hz);
            if (!af.empty())
                std::printf(" alignment at %s;", list(af).c_str());
            std::printf("\n");
        }
    if (o.serial.empty())
        return 0;
    // Lookups for one device: every one of them names what is missing if it fails.
    const auto& ch = s.channel(o.serial, o.channel);
    if (o.freq <= 0.0)
        return 0;
    const std::string who = o.serial + " channel " + std::to_string(o.channel) + " at " + phy::format_frequency(o.freq);
    if (!std::isnan(o.tx_gain))
        std::printf("%s: TX gain %g dB gives %.2f dBm at the reference level\n", who.c_str(), o.tx_gain,
                    s.tx_power_dbm(o.serial, o.channel, o.freq, o.tx_gain));
    if (!std::isnan(o.budget_dbm)) {
        const auto set = phy::tx_power_setting(s, o.serial, o.channel, o.freq, o.budget_dbm);
        std::printf("%s: a %g dBm budget -> TX gain %.2f dB, linear budget %.4g (digital level %.2f dBFS)\n",
                    who.c_str(), o.budget_dbm, set.gain_db, set.linear_budget,
                    s.tx_reference_dbfs + 10.0 * std::log10(set.linear_budget));
    }
    if (!ch.rx_noise.empty())
        std::printf("%s: RX noise floor %.1f dBFS at gain %g dB\n", who.c_str(),
                    s.noise_floor_dbfs(o.serial, o.channel, o.freq), ch.rx_noise.gain_db);
    if (o.rate > 0.0) {
        const auto c = s.correction(o.serial, o.channel, o.freq, o.rate);
        std::printf("%s, %.4g MS/s: advance %.3f samples, phase %.4f rad at sample %lld, CFO %.2f Hz\n", who.c_str(),
                    o.rate / 1e6, c.advance_samples, c.phase_rad, static_cast<long long>(c.reference_sample),
                    c.cfo_hz);
    }
    return 0;
}

}  // namespace

void add_calibrate(CLI::App& app, int& exit_code) {
    auto* cmd = app.add_subcommand(
        "calibrate", "Calibrate radios for AirComp: TX power vs gain, RX noise floor, inter-device timing, phase "
                     "and CFO (virtual radio by default; 'usrp' for hardware; 'check' to validate a file)");
    cmd->require_subcommand(0, 1);
    auto v = std::make_shared<VirtualOptions>();
    cmd->add_option("-k,--devices", v->devices, "Virtual devices")->check(CLI::Range(1, 64))->capture_default_str();
    cmd->add_option("--seed", v->seed, "Seed of the injected impairments and of the simulator")->capture_default_str();
    cmd->add_option("--gain-error-db", v->gain_error_db, "Injected TX gain error per device, dB (default: drawn)")
        ->delimiter(',')
        ->check(CLI::Range(-20.0, 20.0));
    cmd->add_option("--timing-offset", v->timing_offset,
                    "Injected timing offset per device, samples (default: drawn from [0, --max-timing-offset))")
        ->delimiter(',')
        ->check(CLI::Range(0.0, 4096.0));
    cmd->add_option("--cfo-hz", v->cfo_hz, "Injected CFO per device, Hz (default: drawn)")
        ->delimiter(',')
        ->check(CLI::Range(-20000.0, 20000.0));
    cmd->add_option("--max-gain-error-db", v->max_gain_error_db, "Drawn gain errors lie in +-this")
        ->check(CLI::Range(0.0, 20.0))
        ->capture_default_str();
    cmd->add_option("--max-timing-offset", v->max_timing_offset, "Drawn timing offsets lie in [0, this) samples")
        ->check(CLI::Range(0.0, 4096.0))
        ->capture_default_str();
    cmd->add_option("--max-cfo-hz", v->max_cfo_hz, "Drawn CFOs lie in +-this")
        ->check(CLI::Range(0.0, 20000.0))
        ->capture_default_str();
    cmd->add_option("--snr-db", v->snr_db, "Per-carrier SNR at the server at TX gain 60 (reference level)")
        ->check(CLI::Range(10.0, 60.0))
        ->capture_default_str();
    cmd->add_option("--attenuation-db", v->attenuation_db, "Cable and attenuator loss of the cabled setup")
        ->check(CLI::Range(0.0, 100.0))
        ->capture_default_str();
    cmd->add_option("--freq", v->freqs, "LO frequencies, Hz (comma-separated)")
        ->delimiter(',')
        ->check(CLI::Range(1e6, 7e9))
        ->capture_default_str();
    cmd->add_option("--gains", v->gains, "TX gain sweep, dB (comma-separated)")
        ->delimiter(',')
        ->check(CLI::Range(0.0, 100.0))
        ->capture_default_str();
    cmd->add_option("--tx-gain", v->tx_gain, "TX gain of the alignment bursts, dB")
        ->check(CLI::Range(40.0, 80.0))
        ->capture_default_str();
    cmd->add_option("--rate", v->rate, "Sample rate, S/s")->check(CLI::Range(1e5, 1e9))->capture_default_str();
    cmd->add_option("--repeats", v->repeats, "Pilot repetitions per device and burst")
        ->check(CLI::Range(2, 256))
        ->capture_default_str();
    cmd->add_option("-o,--out", v->out, "Calibration file to write")->capture_default_str();
    cmd->add_option("--rounds", v->rounds, "AirComp rounds of the check")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->add_flag("!--no-verify", v->verify, "Skip the AirComp check with and without the calibration");

    auto c = std::make_shared<CheckOptions>();
    auto* check = cmd->add_subcommand("check", "Validate a calibration file and look values up in it");
    check->add_option("file", c->file, "Calibration file (YAML)")->required();
    check->add_option("--serial", c->serial, "Device serial to look up");
    check->add_option("--channel", c->channel, "Channel of that device")
        ->check(CLI::Range(0, 31))
        ->capture_default_str();
    check->add_option("--freq", c->freq, "LO frequency of the lookups, Hz")->check(CLI::Range(1e6, 7e9));
    check->add_option("--rate", c->rate, "Sample rate of the alignment lookup, S/s")->check(CLI::Range(1e5, 1e9));
    check->add_option("--budget-dbm", c->budget_dbm, "Power budget to convert into a gain setting and a linear budget")
        ->check(CLI::Range(-100.0, 60.0));
    check->add_option("--tx-gain", c->tx_gain, "TX gain whose output power to look up, dB");
    check->callback([c, &exit_code] { exit_code = run_check(*c); });

    auto u = std::make_shared<calibrate::UsrpOptions>();
    auto* usrp = cmd->add_subcommand(
        "usrp", "Run the procedures on USRPs through UHD (exits 1 with one line if no USRP is found)");
    usrp->add_option("--server-args", u->server_args,
                     "UHD device args of the server (receiver), e.g. 'serial=...'; a radio that is both server and "
                     "device must be given with the same args string both times")
        ->required();
    usrp->add_option("--device", u->devices,
                     "UHD device args of a transmitting device, 'args' or 'args#channel' (repeat per device)")
        ->required();
    usrp->add_option("--ref", u->reference, "Clock and time reference: internal, external (10 MHz + PPS), gpsdo")
        ->check(CLI::IsMember({"internal", "external", "gpsdo"}))
        ->capture_default_str();
    usrp->add_option("--freq", u->freqs, "LO frequencies, Hz (comma-separated)")
        ->delimiter(',')
        ->check(CLI::Range(1e6, 7e9))
        ->capture_default_str();
    usrp->add_option("--rate", u->rate, "Sample rate, S/s (X310: master_clock_rate=184.32e6 in the args for 15.36e6)")
        ->check(CLI::Range(1e5, 1e9))
        ->capture_default_str();
    usrp->add_option("--rx-gain", u->rx_gain, "Server RX gain, dB")->capture_default_str();
    usrp->add_option("--rx-channel", u->rx_channel, "Server RX channel")->capture_default_str();
    usrp->add_option("--tx-gain", u->tx_gain, "TX gain of the alignment bursts, dB")->capture_default_str();
    usrp->add_option("--gains", u->sweep_gains, "TX gain sweep, dB (comma-separated)")->delimiter(',');
    usrp->add_option("--attenuation-db", u->attenuation_db,
                     "Loss from each device's TX port to the server's RX port, dB: one value, or one per --device")
        ->delimiter(',')
        ->capture_default_str();
    usrp->add_option("--rx-offset-db", u->rx_offset_db,
                     "Server RX power calibration at --rx-gain: dBm at the RX port = dBFS + this "
                     "(needed for tx-power)");
    usrp->add_option("--mode", u->mode, "Procedures to run: all, noise, tx-power, align")
        ->check(CLI::IsMember({"all", "noise", "tx-power", "align"}))
        ->capture_default_str();
    usrp->add_option("--repeats", u->repeats, "Pilot repetitions per device and burst")
        ->check(CLI::Range(2, 256))
        ->capture_default_str();
    usrp->add_option("--system-delay", u->system_delay, "Latency common to every device, samples (loopback)")
        ->check(CLI::Range(0.0, 1e6))
        ->capture_default_str();
    usrp->add_option("--timing-reference", u->timing_reference, "Serial whose timing offset is taken as zero");
    usrp->add_option("--start-delay", u->start_delay_s, "Schedule bursts this far ahead of the device time, s")
        ->check(CLI::Range(0.05, 10.0))
        ->capture_default_str();
    usrp->add_option("--conditions", u->conditions, "Free text for the file: setup, attenuators, temperature");
    usrp->add_option("-o,--out", u->out, "Calibration file to write")->capture_default_str();
    usrp->callback([u, &exit_code] { exit_code = calibrate::run_usrp(*u); });

    cmd->callback([cmd, v, &exit_code] {
        if (cmd->get_subcommands().empty())
            exit_code = run_virtual(*v);
    });
}

}  // namespace fedlora::app
