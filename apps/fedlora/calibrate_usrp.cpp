// fedlora calibrate usrp: the calibration procedures on USRPs through UHD (docs/hardware.md).
//
// One host drives every radio of the cabled calibration setup: the server's receive channel and each device's
// transmit channel (several may be channels of one USRP). All radios take their clock and time from the same
// reference; their time registers are set at a common PPS edge, so that sample m of the common timeline is UHD
// time m / rate on every radio. Each measurement is one timed burst: every device transmits its slot of the
// calibration burst (calibration.h) at the same time_spec, the server receives from a little before it, and the
// same estimator as the virtual radio's measures each device.
//
//   noise      the server receives with every device silent: noise power per sample, dBFS, per frequency
//   tx-power   per frequency and TX gain: each device's received power through the known attenuation, turned
//              into output dBm with the server's RX power calibration (--rx-offset-db)
//   align      per frequency, at --tx-gain: timing offset, phase and residual CFO of every device
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <uhd/device.hpp>
#include <uhd/stream.hpp>
#include <uhd/types/device_addr.hpp>
#include <uhd/types/metadata.hpp>
#include <uhd/types/tune_request.hpp>
#include <uhd/usrp/multi_usrp.hpp>

#include "calibrate.h"
#include "fedlora/calib/file.h"

namespace fedlora::app::calibrate {

namespace {

using cf = std::complex<float>;

struct Radio {
    std::string args;
    uhd::usrp::multi_usrp::sptr usrp;
};

struct TxChannel {
    Radio* radio = nullptr;
    std::size_t channel = 0;
    std::string serial, product;
    std::string label;  // serial, or serial#channel on a radio with several TX channels
    uhd::tx_streamer::sptr stream;
};

// "args#channel" → (args, channel)
std::pair<std::string, std::size_t> split_channel(const std::string& s) {
    const auto at = s.rfind('#');
    if (at == std::string::npos)
        return {s, 0};
    try {
        return {s.substr(0, at), static_cast<std::size_t>(std::stoul(s.substr(at + 1)))};
    } catch (const std::exception&) {
        throw std::invalid_argument("--device '" + s + "': the text after '#' must be a channel number");
    }
}

std::string num(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
}

std::string info(const uhd::dict<std::string, std::string>& d, const char* key) {
    return d.has_key(key) ? d.get(key) : std::string();
}

// Waits for a sensor that some radios have ("ref_locked", "gps_locked"); true if it is absent or locked.
bool wait_locked(uhd::usrp::multi_usrp& u, const std::string& sensor, double timeout_s) {
    const auto names = u.get_mboard_sensor_names(0);
    if (std::find(names.begin(), names.end(), sensor) == names.end())
        return true;
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < until) {
        if (u.get_mboard_sensor(sensor, 0).to_bool())
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
}

const char* async_text(uhd::async_metadata_t::event_code_t c) {
    switch (c) {
        case uhd::async_metadata_t::EVENT_CODE_UNDERFLOW:
        case uhd::async_metadata_t::EVENT_CODE_UNDERFLOW_IN_PACKET:
            return "U (underflow: the host did not deliver the burst's samples in time; lower --rate or close other "
                   "programs)";
        case uhd::async_metadata_t::EVENT_CODE_TIME_ERROR:
            return "L (late: the burst reached the radio after its time_spec; raise --start-delay)";
        case uhd::async_metadata_t::EVENT_CODE_SEQ_ERROR:
        case uhd::async_metadata_t::EVENT_CODE_SEQ_ERROR_IN_BURST:
            return "S (sequence error: packets lost between host and radio; check the link, MTU and buffers)";
        default:
            return nullptr;
    }
}

class Lab {
public:
    explicit Lab(const UsrpOptions& o) : o_(o) {}

    // Opens every radio; returns false (after one error line) if UHD finds none of them.
    bool open() {
        std::vector<std::string> all{o_.server_args};
        for (const auto& d : o_.devices)
            all.push_back(split_channel(d).first);
        for (const auto& a : all) {
            uhd::device_addrs_t found;
            try {
                found = uhd::device::find(uhd::device_addr_t(a));
            } catch (const std::exception& e) {
                spdlog::error("UHD device search failed (args '{}'): {}", a, e.what());
                return false;
            }
            if (found.empty()) {
                spdlog::error("no USRP found (UHD device args '{}'); check the cable/network and 'uhd_find_devices'",
                              a);
                return false;
            }
        }
        server_ = radio(o_.server_args);
        for (const auto& d : o_.devices) {
            const auto [args, ch] = split_channel(d);
            TxChannel t;
            t.radio = radio(args);
            t.channel = ch;
            if (ch >= t.radio->usrp->get_tx_num_channels())
                throw std::invalid_argument("--device '" + d + "': the radio has " +
                                            std::to_string(t.radio->usrp->get_tx_num_channels()) + " TX channels");
            const auto inf = t.radio->usrp->get_usrp_tx_info(ch);
            t.serial = info(inf, "mboard_serial");
            t.product = info(inf, "mboard_id");
            if (t.serial.empty())
                t.serial = args;
            t.label = t.serial;
            if (t.radio->usrp->get_tx_num_channels() > 1)
                t.label += "#" + std::to_string(ch);
            tx_.push_back(std::move(t));
        }
        return true;
    }

    // Clock and time: the same reference everywhere, time registers set at one PPS edge.
    void synchronise() {
        for (auto& [args, r] : radios_) {
            r->usrp->set_clock_source(o_.reference);
            r->usrp->set_time_source(o_.reference);
        }
        if (o_.reference == "internal") {
            spdlog::warn("internal reference: every radio runs on its own oscillator and its time is set from the "
                         "host, so CFOs drift and timing offsets include host latency. Use --ref external (10 MHz + "
                         "PPS) or gpsdo for alignment");
            for (auto& [args, r] : radios_)
                r->usrp->set_time_now(uhd::time_spec_t(0.0));
            return;
        }
        for (auto& [args, r] : radios_) {
            if (!wait_locked(*r->usrp, "ref_locked", 5.0))
                throw std::runtime_error("radio '" + args + "': its 10 MHz reference does not lock (ref_locked is "
                                         "false after 5 s): check the reference cable and level");
            if (o_.reference == "gpsdo" && !wait_locked(*r->usrp, "gps_locked", 1.0))
                spdlog::warn("radio '{}': the GPSDO is not locked to GPS yet (its 10 MHz and PPS are still shared, "
                             "so the radios stay aligned with each other)",
                             args);
        }
        // Wait for a PPS edge on the server, then latch time 0 at the next edge on every radio.
        auto& s = *server_->usrp;
        const auto last = s.get_time_last_pps();
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
        while (s.get_time_last_pps() == last) {
            if (std::chrono::steady_clock::now() > until)
                throw std::runtime_error("no PPS edge seen by the server in 3 s: check the PPS cable");
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        for (auto& [args, r] : radios_)
            r->usrp->set_time_next_pps(uhd::time_spec_t(0.0));
        std::this_thread::sleep_for(std::chrono::milliseconds(1200));
        for (auto& [args, r] : radios_) {
            const double dt = (r->usrp->get_time_last_pps() - s.get_time_last_pps()).get_real_secs();
            if (std::fabs(dt) > 0.5)
                throw std::runtime_error("radio '" + args + "': its last PPS time differs from the server's by " +
                                         std::to_string(dt) + " s: the PPS edge was missed, run again");
        }
    }

    void tune(double freq) {
        auto& s = *server_->usrp;
        const auto rc = static_cast<std::size_t>(o_.rx_channel);
        s.set_rx_rate(o_.rate, rc);
        s.set_rx_freq(uhd::tune_request_t(freq), rc);
        s.set_rx_gain(o_.rx_gain, rc);
        check_rate(s.get_rx_rate(rc), "server RX");
        for (auto& t : tx_) {
            t.radio->usrp->set_tx_rate(o_.rate, t.channel);
            t.radio->usrp->set_tx_freq(uhd::tune_request_t(freq), t.channel);
            check_rate(t.radio->usrp->get_tx_rate(t.channel), t.label.c_str());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // LOs settle
    }

    void set_tx_gain(double g) {
        for (auto& t : tx_)
            t.radio->usrp->set_tx_gain(g, t.channel);
    }

    // One timed measurement: device k sends tx[k] (empty: silent) from sample m0 of the common timeline; returns
    // n received samples from sample rx0.
    std::vector<cf> measure(const std::vector<std::vector<cf>>& tx, std::int64_t m0, std::int64_t rx0,
                            std::size_t n) {
        if (!rx_) {
            uhd::stream_args_t a("fc32", "sc16");
            a.channels = {static_cast<std::size_t>(o_.rx_channel)};
            rx_ = server_->usrp->get_rx_stream(a);
        }
        for (auto& t : tx_)
            if (!t.stream) {
                uhd::stream_args_t a("fc32", "sc16");
                a.channels = {t.channel};
                t.stream = t.radio->usrp->get_tx_stream(a);
            }
        uhd::stream_cmd_t cmd(uhd::stream_cmd_t::STREAM_MODE_NUM_SAMPS_AND_DONE);
        cmd.num_samps = n;
        cmd.stream_now = false;
        cmd.time_spec = uhd::time_spec_t::from_ticks(rx0, o_.rate);
        rx_->issue_stream_cmd(cmd);
        std::vector<std::thread> senders;
        std::vector<std::string> tx_errors(tx_.size());
        for (std::size_t k = 0; k < tx_.size(); ++k) {
            if (tx[k].empty())
                continue;
            senders.emplace_back([&, k] {
                uhd::tx_metadata_t md;
                md.start_of_burst = true;
                md.end_of_burst = true;
                md.has_time_spec = true;
                md.time_spec = uhd::time_spec_t::from_ticks(m0, o_.rate);
                const double timeout = o_.start_delay_s + 1.0;
                const std::size_t sent = tx_[k].stream->send(tx[k].data(), tx[k].size(), md, timeout);
                if (sent != tx[k].size())
                    tx_errors[k] = "sent " + std::to_string(sent) + " of " + std::to_string(tx[k].size()) + " samples";
                uhd::async_metadata_t am;
                while (tx_[k].stream->recv_async_msg(am, o_.start_delay_s + 1.0)) {
                    if (const char* e = async_text(am.event_code))
                        tx_errors[k] += std::string(tx_errors[k].empty() ? "" : "; ") + e;
                    if (am.event_code == uhd::async_metadata_t::EVENT_CODE_BURST_ACK)
                        break;
                }
            });
        }
        std::vector<cf> rx(n);
        std::size_t got = 0;
        uhd::rx_metadata_t md;
        std::string rx_error;
        double timeout = o_.start_delay_s + 1.0;
        while (got < n) {
            cf* p = rx.data() + got;
            const std::size_t r = rx_->recv(p, n - got, md, timeout);
            timeout = 0.5;
            if (md.error_code == uhd::rx_metadata_t::ERROR_CODE_TIMEOUT) {
                rx_error = "timed out after " + std::to_string(got) + " of " + std::to_string(n) + " samples";
                break;
            }
            if (md.error_code == uhd::rx_metadata_t::ERROR_CODE_OVERFLOW) {
                rx_error = "O (overflow: the host did not read the server's samples fast enough; lower --rate)";
                break;
            }
            if (md.error_code == uhd::rx_metadata_t::ERROR_CODE_LATE_COMMAND) {
                rx_error = "the receive command reached the radio after its time (late); raise --start-delay";
                break;
            }
            if (md.error_code != uhd::rx_metadata_t::ERROR_CODE_NONE) {
                rx_error = md.strerror();
                break;
            }
            if (got == 0 && md.has_time_spec && md.time_spec.to_ticks(o_.rate) != rx0)
                rx_error = "the first received sample is at tick " + std::to_string(md.time_spec.to_ticks(o_.rate)) +
                           ", not the requested " + std::to_string(rx0);
            got += r;
        }
        for (auto& s : senders)
            s.join();
        for (std::size_t k = 0; k < tx_.size(); ++k)
            if (!tx_errors[k].empty())
                throw std::runtime_error("device " + tx_[k].label + ": " + tx_errors[k]);
        if (!rx_error.empty())
            throw std::runtime_error("server: " + rx_error);
        return rx;
    }

    // The next start on the common timeline, start_delay_s ahead of the server's time.
    std::int64_t next_start() const {
        return (server_->usrp->get_time_now() + uhd::time_spec_t(o_.start_delay_s)).to_ticks(o_.rate);
    }

    std::vector<TxChannel>& devices() { return tx_; }
    Radio& server() { return *server_; }

private:
    Radio* radio(const std::string& args) {
        auto& r = radios_[args];
        if (!r) {
            r = std::make_unique<Radio>();
            r->args = args;
            r->usrp = uhd::usrp::multi_usrp::make(uhd::device_addr_t(args));
        }
        return r.get();
    }

    void check_rate(double actual, const char* who) const {
        if (std::fabs(actual - o_.rate) > 1e-6 * o_.rate)
            throw std::runtime_error(std::string(who) + ": the radio runs at " + std::to_string(actual) +
                                     " S/s instead of " + std::to_string(o_.rate) +
                                     " (choose a rate its master clock divides; X310: master_clock_rate=184.32e6 "
                                     "for 15.36 MS/s)");
    }

    const UsrpOptions& o_;
    std::map<std::string, std::unique_ptr<Radio>> radios_;
    Radio* server_ = nullptr;
    std::vector<TxChannel> tx_;
    uhd::rx_streamer::sptr rx_;
};

}  // namespace

int run_usrp(const UsrpOptions& o) {
    // Usage checks first: nothing is touched on a radio for a command that cannot complete.
    const bool do_noise = o.mode == "all" || o.mode == "noise";
    const bool do_power = o.mode == "all" || o.mode == "tx-power";
    const bool do_align = o.mode == "all" || o.mode == "align";
    if (o.attenuation_db.size() != 1 && o.attenuation_db.size() != o.devices.size())
        throw std::invalid_argument("--attenuation-db: " + std::to_string(o.attenuation_db.size()) + " values for " +
                                    std::to_string(o.devices.size()) +
                                    " devices (give one for all, or one per --device)");
    if (do_power && std::isnan(o.rx_offset_db))
        throw std::invalid_argument("--mode " + o.mode +
                                    " measures TX output power in dBm, which needs the server's RX power "
                                    "calibration: give --rx-offset-db (docs/hardware.md, step 2), or run "
                                    "--mode noise / align");
    if (o.sweep_gains.size() == 1)
        throw std::invalid_argument("--gains: one gain setting; the TX power sweep needs at least two");
    auto attenuation = [&](std::size_t k) { return o.attenuation_db[o.attenuation_db.size() == 1 ? 0 : k]; };

    Lab lab(o);
    if (!lab.open())
        return 1;
    lab.synchronise();
    auto& devs = lab.devices();
    const std::size_t K = devs.size();

    phy::CalibrationSet set;
    set.date = calib::utc_now();
    set.reference = o.reference;
    if (o.conditions.empty()) {
        set.conditions = "cabled; attenuation device -> server:";
        for (std::size_t k = 0; k < K; ++k)
            set.conditions += " " + devs[k].label + " " + num(attenuation(k)) + " dB";
    } else {
        set.conditions = o.conditions;
    }
    set.source = o.out;
    const double ref_amp = std::pow(10.0, set.tx_reference_dbfs / 20.0);

    phy::AlignmentConfig ac;
    ac.burst.numerology = burst_numerology(o.rate);
    ac.burst.n_devices = K;
    ac.burst.pilot_repeats = o.repeats;
    ac.pilot_power.assign(K, ref_amp * ref_amp);
    ac.system_delay = o.system_delay;
    phy::AlignmentEstimator est(ac);
    const auto& layout = est.layout();
    std::vector<std::vector<cf>> bursts(K);
    for (std::size_t k = 0; k < K; ++k) {
        phy::CalibrationTransmitter(ac.burst, k, 1.0).burst(bursts[k]);
        for (auto& v : bursts[k])
            v *= static_cast<float>(ref_amp);
    }
    const std::size_t margin = 2000;
    const std::size_t n_rx = layout.length() + est.tail() + 2 * margin;

    // What is measured, per device channel and for the server's receive channel; merged into the file's
    // per-serial, per-channel records at the end.
    std::vector<phy::ChannelCalibration> meas(K);
    for (std::size_t k = 0; k < K; ++k)
        meas[k].channel = static_cast<int>(devs[k].channel);
    phy::ChannelCalibration rx_meas;
    rx_meas.channel = o.rx_channel;
    rx_meas.rx_noise.gain_db = o.rx_gain;
    std::string server_serial, server_product;
    {
        const auto inf = lab.server().usrp->get_usrp_rx_info(static_cast<std::size_t>(o.rx_channel));
        server_serial = info(inf, "mboard_serial").empty() ? o.server_args : info(inf, "mboard_serial");
        server_product = info(inf, "mboard_id");
    }

    std::vector<double> freqs = o.freqs;
    std::sort(freqs.begin(), freqs.end());
    std::vector<double> gains = o.sweep_gains;
    if (gains.empty()) {
        // The top 50 dB of the first device's gain range in 10 dB steps, and its maximum.
        const auto range = devs.front().radio->usrp->get_tx_gain_range(devs.front().channel);
        for (double g = std::max(range.start(), range.stop() - 50.0); g < range.stop() - 1e-9; g += 10.0)
            gains.push_back(g);
        gains.push_back(range.stop());
    }
    std::sort(gains.begin(), gains.end());
    gains.erase(std::unique(gains.begin(), gains.end()), gains.end());
    for (std::size_t k = 0; k < K && do_power; ++k) {
        auto& t = meas[k].tx_power;
        t.frequencies_hz = freqs;
        t.gains_db = gains;
    }

    auto run_burst = [&](double gain) {
        lab.set_tx_gain(gain);
        const std::int64_t m0 = lab.next_start();
        const auto rx = lab.measure(bursts, m0, m0 - static_cast<std::int64_t>(margin), n_rx);
        return est.estimate(rx.data(), rx.size(), m0 - static_cast<std::int64_t>(margin), m0);
    };

    for (double f : freqs) {
        spdlog::info("tuning every radio to {}", phy::format_frequency(f));
        lab.tune(f);
        if (do_noise) {
            const std::vector<std::vector<cf>> silent(K);
            const std::int64_t m0 = lab.next_start();
            const auto rx = lab.measure(silent, m0, m0, 1 << 18);
            double p = 0.0;
            for (const auto& v : rx)
                p += std::norm(std::complex<double>(v));
            const double dbfs = 10.0 * std::log10(p / static_cast<double>(rx.size()));
            rx_meas.rx_noise.frequencies_hz.push_back(f);
            rx_meas.rx_noise.dbfs.push_back(dbfs);
            std::printf("%s: server RX noise floor %.1f dBFS at gain %g dB\n", phy::format_frequency(f).c_str(), dbfs,
                        o.rx_gain);
        }
        if (do_power) {
            for (double g : gains) {
                const auto a = run_burst(g);
                for (std::size_t k = 0; k < K; ++k) {
                    // Output power for the reference level: received dBFS + RX calibration + path loss.
                    const double dbm = a[k].gain_db + set.tx_reference_dbfs + o.rx_offset_db + attenuation(k);
                    meas[k].tx_power.power_dbm.push_back(dbm);
                    std::printf("%s: %s at TX gain %5.2f dB: %6.2f dBm (SNR %.1f dB)\n",
                                phy::format_frequency(f).c_str(), devs[k].label.c_str(), g, dbm, a[k].snr_db);
                }
            }
        }
        if (do_align) {
            auto a = run_burst(o.tx_gain);
            double ref = 0.0;
            if (!o.timing_reference.empty()) {
                const auto it = std::find_if(devs.begin(), devs.end(),
                                             [&](const TxChannel& t) { return t.label == o.timing_reference; });
                if (it == devs.end())
                    throw std::invalid_argument("--timing-reference '" + o.timing_reference +
                                                "' is none of the devices (serial, or serial#channel on a radio "
                                                "with several TX channels)");
                ref = a[static_cast<std::size_t>(it - devs.begin())].timing_offset_samples;
            }
            for (std::size_t k = 0; k < K; ++k) {
                phy::AlignmentRecord r;
                r.frequency_hz = f;
                r.sample_rate_hz = o.rate;
                r.timing_offset_samples = a[k].timing_offset_samples - ref;
                r.phase_rad = a[k].phase_rad;
                r.reference_time_s = static_cast<double>(a[k].reference_sample) / o.rate;
                r.cfo_hz = a[k].cfo_hz;
                r.tx_gain_db = o.tx_gain;
                meas[k].alignment.push_back(r);
                std::printf("%s: %s timing %+.3f samples (+-%.3f), phase %+.3f rad (+-%.3f), CFO %+.1f Hz (+-%.1f), "
                            "SNR %.1f dB\n",
                            phy::format_frequency(f).c_str(), devs[k].label.c_str(), r.timing_offset_samples,
                            a[k].timing_std_samples, r.phase_rad, a[k].phase_std_rad, r.cfo_hz, a[k].cfo_std_hz,
                            a[k].snr_db);
            }
        }
    }
    // One record per serial, one entry per channel (the server's receive channel joins its radio's record).
    auto channel_of = [&](const std::string& serial, const std::string& product, int ch) -> phy::ChannelCalibration& {
        auto d = std::find_if(set.devices.begin(), set.devices.end(),
                              [&](const phy::DeviceCalibration& x) { return x.serial == serial; });
        if (d == set.devices.end()) {
            set.devices.push_back({serial, product, {}});
            d = set.devices.end() - 1;
        }
        auto c = std::find_if(d->channels.begin(), d->channels.end(),
                              [&](const phy::ChannelCalibration& x) { return x.channel == ch; });
        if (c == d->channels.end()) {
            d->channels.push_back({});
            d->channels.back().channel = ch;
            return d->channels.back();
        }
        return *c;
    };
    for (std::size_t k = 0; k < K; ++k) {
        if (!do_power && !do_align)
            break;
        auto& c = channel_of(devs[k].serial, devs[k].product, meas[k].channel);
        if (do_power)
            c.tx_power = meas[k].tx_power;
        c.alignment = meas[k].alignment;
    }
    if (do_noise)
        channel_of(server_serial, server_product, o.rx_channel).rx_noise = rx_meas.rx_noise;
    calib::save_calibration(set, o.out);
    std::printf("wrote %s\n", o.out.c_str());
    return 0;
}

}  // namespace fedlora::app::calibrate
