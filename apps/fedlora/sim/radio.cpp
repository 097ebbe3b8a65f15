#include "radio.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>

#include <cstdio>
#include <filesystem>

#include "fedlora/calib/file.h"
#include "fedlora/learn/adapter.h"  // mix_seed (plain data, no LibTorch)
#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/aircomp_waveform.h"
#include "fedlora/phy/channel.h"
#include "fedlora/phy/digital.h"

namespace fedlora::sim {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Stream tags of mix_seed: independent random streams derived from the run's seed.
constexpr std::uint64_t kTagClientSnr = 0x534e52;    // "SNR"
constexpr std::uint64_t kTagChannel = 0x4348414e;    // "CHAN"
constexpr std::uint64_t kTagNoise = 0x4e4f4953;      // "NOIS"
constexpr std::uint64_t kTagQuantise = 0x5155414e;   // "QUAN"
constexpr std::uint64_t kTagEstimate = 0x45535449;   // "ESTI"
constexpr std::uint64_t kTagShadowing = 0x53484144;  // "SHAD"
constexpr double kNoiseVar = 1e-3;                   // receiver noise per sample; SNRs are set relative to it

double to_db(double x) { return 10.0 * std::log10(x); }

void check_round(const RadioRound& r) {
    const auto K = r.payloads.size();
    if (K == 0)
        throw std::invalid_argument("radio round " + std::to_string(r.round) + ": no payloads");
    if (r.clients.size() != K || r.weights.size() != K)
        throw std::invalid_argument("radio round " + std::to_string(r.round) + ": " + std::to_string(K) +
                                    " payloads but " + std::to_string(r.clients.size()) + " client ids and " +
                                    std::to_string(r.weights.size()) + " weights");
    const auto d = r.payloads[0].size();
    if (d == 0)
        throw std::invalid_argument("radio round " + std::to_string(r.round) + ": empty payload");
    for (std::size_t k = 0; k < K; ++k) {
        if (r.payloads[k].size() != d)
            throw std::invalid_argument("radio round " + std::to_string(r.round) + ": client " +
                                        std::to_string(r.clients[k]) + " sent " +
                                        std::to_string(r.payloads[k].size()) + " values, expected " +
                                        std::to_string(d));
        for (std::size_t i = 0; i < d; ++i)
            if (!std::isfinite(r.payloads[k][i]))
                throw std::invalid_argument("radio round " + std::to_string(r.round) + ": client " +
                                            std::to_string(r.clients[k]) + " payload entry " + std::to_string(i) +
                                            " is not finite");
        if (!std::isfinite(r.weights[k]) || r.weights[k] < 0.0)
            throw std::invalid_argument("radio round " + std::to_string(r.round) + ": weight of client " +
                                        std::to_string(r.clients[k]) + " is " + std::to_string(r.weights[k]));
    }
}

void exact_sum(const RadioRound& r, std::vector<float>& out) {
    const auto d = r.payloads[0].size();
    std::vector<double> acc(d, 0.0);
    for (std::size_t k = 0; k < r.payloads.size(); ++k)
        for (std::size_t i = 0; i < d; ++i)
            acc[i] += r.weights[k] * static_cast<double>(r.payloads[k][i]);
    out.assign(d, 0.0f);
    for (std::size_t i = 0; i < d; ++i)
        out[i] = static_cast<float>(acc[i]);
}

class IdealRadio final : public Radio {
public:
    std::string mode() const override { return "ideal"; }
    RadioReport aggregate(const RadioRound& r, std::vector<float>& estimate) override {
        check_round(r);
        exact_sum(r, estimate);
        RadioReport rep;
        rep.nmse = kNaN;
        rep.nmse_analytic = kNaN;
        rep.snr_db = kNaN;
        rep.noise_var = kNaN;
        return rep;
    }
};

// aircomp and aircomp-analytic: the same round, waveform level or effective-noise model.
class AircompRadio final : public Radio {
public:
    AircompRadio(const SimConfig& cfg, bool waveform)
        : cfg_(cfg), waveform_(waveform), cal_(load_radio_calibration(cfg)) {
        (void)round_numerology(cfg, 0);  // fail early on a bad numerology
    }
    std::string mode() const override { return waveform_ ? "aircomp" : "aircomp-analytic"; }

    RadioReport aggregate(const RadioRound& r, std::vector<float>& estimate) override {
        check_round(r);
        const auto K = r.payloads.size();
        const auto num = round_numerology(cfg_, r.subcarriers);
        auto wc = round_waveform_config(cfg_, r, num);
        if (cal_)
            wc.corrections = round_corrections(cfg_, *cal_, r);
        phy::MultiUserChannel channel(round_channel_config(cfg_, r, num));

        // The protocol's common scale: every client reports its payload RMS, the server answers c.
        phy::AircompCodec codec;
        codec.dim = r.payloads[0].size();
        std::vector<double> rms(K);
        for (std::size_t k = 0; k < K; ++k)
            rms[k] = phy::update_rms(r.payloads[k].data(), codec.dim, codec.support);
        RadioReport rep;
        rep.subcarriers = num.n_occupied;
        if (std::all_of(rms.begin(), rms.end(), [](double v) { return v == 0.0; })) {
            // Nothing to send (every update zero): the sum is zero and no airtime is spent.
            estimate.assign(codec.dim, 0.0f);
            rep.nmse = 0.0;
            rep.nmse_analytic = 0.0;
            rep.snr_db = kNaN;
            return rep;
        }
        codec.scale = phy::common_scale(rms, r.weights);

        phy::WaveformReport w;
        try {
            if (waveform_) {
                w = phy::aircomp_round_waveform(r.payloads, r.weights, codec, channel, wc, estimate);
            } else {
                std::mt19937_64 rng(learn::mix_seed(cfg_.seed, kTagNoise, static_cast<std::uint64_t>(r.round)));
                w = phy::aircomp_round_effective(r.payloads, r.weights, codec, channel, wc, rng, estimate);
            }
        } catch (const std::runtime_error& e) {
            // The receiver found no frame: the aggregate of this round is lost, the run goes on.
            rep.delivered = false;
            rep.failure = e.what();
            estimate.assign(codec.dim, 0.0f);
            rep.nmse = kNaN;
            rep.nmse_analytic = kNaN;
            rep.snr_db = kNaN;
            return rep;
        }
        rep.nmse = w.nmse_measured;
        rep.nmse_analytic = w.nmse_analytic;
        rep.device_snr_db = w.device_snr_db_estimated.empty() ? w.device_snr_db : w.device_snr_db_estimated;
        double lin = 0.0;
        for (const double s : rep.device_snr_db)
            lin += std::pow(10.0, s / 10.0) / static_cast<double>(K);
        rep.snr_db = to_db(lin);
        const auto M = static_cast<std::size_t>(num.n_occupied);
        rep.device_gain.assign(K, 0.0);
        rep.device_csi.assign(K, {});
        for (std::size_t k = 0; k < K && w.csi_gain.size() == K * M; ++k) {
            rep.device_csi[k].assign(w.csi_gain.begin() + static_cast<std::ptrdiff_t>(k * M),
                                     w.csi_gain.begin() + static_cast<std::ptrdiff_t>((k + 1) * M));
            for (std::size_t m = 0; m < M; ++m)
                rep.device_gain[k] += w.csi_gain[k * M + m] / static_cast<double>(M);
        }
        rep.noise_var = w.noise_var_estimated;
        rep.channel_uses = w.channel_uses;
        rep.ofdm_symbols = w.ofdm_symbols;
        rep.airtime_s = w.airtime_s;
        rep.truncated_fraction = w.truncated_fraction;
        return rep;
    }

private:
    SimConfig cfg_;
    bool waveform_;
    std::shared_ptr<const RadioCalibration> cal_;
};

// OFDMA with stochastic q-bit quantisation; the rate from each device's SNR on the round's channel.
class DigitalRadio final : public Radio {
public:
    explicit DigitalRadio(const SimConfig& cfg) : cfg_(cfg) { (void)round_numerology(cfg, 0); }
    std::string mode() const override { return "digital"; }

    RadioReport aggregate(const RadioRound& r, std::vector<float>& estimate) override {
        check_round(r);
        const auto K = r.payloads.size();
        const auto d = r.payloads[0].size();
        const auto num = round_numerology(cfg_, r.subcarriers);
        phy::MultiUserChannel channel(round_channel_config(cfg_, r, num));
        const auto model = phy::rate_model_from_name(cfg_.digital.rate);

        // Each device's rate: from its measured channel, the mean spectral efficiency over the occupied carriers of its channel (its share is
        // spread across the band), turned into the effective SNR that gives that efficiency.
        RadioReport rep;
        rep.subcarriers = num.n_occupied;
        rep.device_snr_db.resize(K);
        rep.device_gain.assign(K, 0.0);
        rep.device_csi.assign(K, {});
        std::vector<double> snr_eff(K), bits(K);
        const double p_carrier = r.carrier_budget > 0.0 ? r.carrier_budget : cfg_.device.power;
        double lin = 0.0;
        for (std::size_t k = 0; k < K; ++k) {
            // What the server measures: each carrier's channel from pilot_repeats least-squares pilot symbols,
            // h + CN(0, σ² / (R p)).
            std::vector<double> gain(static_cast<std::size_t>(num.n_occupied), 0.0);
            std::mt19937_64 est_rng(learn::mix_seed(cfg_.seed, kTagEstimate, static_cast<std::uint64_t>(r.round),
                                                    static_cast<std::uint64_t>(r.clients[k])));
            std::normal_distribution<double> est_err(
                0.0, std::sqrt(kNoiseVar / (2.0 * static_cast<double>(cfg_.phy.pilot_repeats) * p_carrier)));
            for (int rx = 0; rx < channel.n_rx(); ++rx)
                for (int tx = 0; tx < channel.n_tx(); ++tx) {
                    const auto h = channel.frequency_response(num, static_cast<int>(k), rx, tx,
                                                              static_cast<double>(channel.bulk_delay()));
                    for (std::size_t m = 0; m < h.size(); ++m) {
                        const double re = est_err(est_rng);
                        const double im = est_err(est_rng);
                        gain[m] += std::norm(std::complex<double>(h[m]) + std::complex<double>(re, im)) /
                                   static_cast<double>(channel.n_tx());
                    }
                }
            double se = 0.0, mean_snr = 0.0;
            for (const double g : gain) {
                const double snr = g * p_carrier / kNoiseVar;
                se += phy::spectral_efficiency(model, snr) / static_cast<double>(gain.size());
                mean_snr += snr / static_cast<double>(gain.size());
                rep.device_gain[k] += g / static_cast<double>(gain.size());
            }
            rep.device_csi[k] = gain;
            snr_eff[k] = model == phy::RateModel::Shannon ? std::exp2(se) - 1.0 : effective_mcs_snr(se);
            rep.device_snr_db[k] = to_db(mean_snr);
            lin += mean_snr / static_cast<double>(K);
        }
        rep.snr_db = to_db(lin);
        rep.noise_var = kNoiseVar;

        // Quantise, "decode" (error-free at the chosen rate) and sum.
        std::vector<double> acc(d, 0.0);
        for (std::size_t k = 0; k < K; ++k) {
            std::mt19937_64 rng(learn::mix_seed(cfg_.seed, kTagQuantise, static_cast<std::uint64_t>(r.round),
                                                static_cast<std::uint64_t>(r.clients[k])));
            const auto q = phy::quantize_stochastic(r.payloads[k], static_cast<int>(cfg_.digital.bits), rng);
            bits[k] = static_cast<double>(q.payload_bits());
            const auto x = phy::dequantize(q);
            for (std::size_t i = 0; i < d; ++i)
                acc[i] += r.weights[k] * static_cast<double>(x[i]);
        }
        estimate.resize(d);
        for (std::size_t i = 0; i < d; ++i)
            estimate[i] = static_cast<float>(acc[i]);
        phy::AircompCodec dense;  // the whole payload, no support: the error of the sum over every entry
        dense.dim = d;
        const auto [err, ref] = phy::sum_error(r.payloads, r.weights, dense, estimate);
        rep.nmse = ref > 0.0 ? err / ref : 0.0;
        rep.nmse_analytic = kNaN;

        phy::OfdmaConfig oc;
        oc.n_carriers = static_cast<std::size_t>(num.n_occupied);
        oc.symbol_rate = num.sample_rate / num.symbol_len();
        oc.rate = model;
        std::vector<double> shares = r.shares;
        if (shares.empty())
            shares.assign(K, 1.0 / static_cast<double>(K));
        const auto air = phy::ofdma_airtime(bits, snr_eff, shares, oc);
        rep.ofdm_symbols = air.round_ofdm_symbols;
        rep.channel_uses = air.channel_uses;
        rep.airtime_s = air.airtime_s;
        return rep;
    }

private:
    // The SNR threshold of the highest MCS entry whose efficiency does not exceed `se` (the mean per-carrier
    // efficiency of bit loading): one MCS over the device's whole share. Below the lowest entry the device cannot
    // send: 0 (ofdma_airtime then reports the failure).
    static double effective_mcs_snr(double se) {
        double snr = 0.0;
        for (const auto& e : phy::mcs_table())
            if (e.bits_per_symbol <= se)
                snr = std::pow(10.0, e.min_snr_db / 10.0);
        return snr;
    }
    SimConfig cfg_;
};

}  // namespace

phy::Numerology round_numerology(const SimConfig& cfg, std::int64_t subcarriers) {
    phy::Numerology num;
    num.fft_size = static_cast<int>(cfg.phy.fft);
    num.cp_len = static_cast<int>(cfg.phy.cp);
    num.n_occupied = static_cast<int>(subcarriers > 0 ? subcarriers : cfg.phy.occupied);
    num.pilot_spacing = static_cast<int>(cfg.phy.pilot_spacing);
    num.sample_rate = cfg.phy.sample_rate;
    try {
        num.validate();
    } catch (const std::invalid_argument& e) {
        throw ConfigError(std::string("physical layer (phy.*): ") + e.what());
    }
    return num;
}

// The round's multi-user channel: the clients' own mean SNRs, a fresh block-fading realisation from (seed, round).
phy::ChannelSimConfig round_channel_config(const SimConfig& cfg, const RadioRound& r, const phy::Numerology& num) {
    phy::ChannelSimConfig ch;
    ch.sample_rate = num.sample_rate;
    ch.noise_variance = kNoiseVar;
    ch.n_tx = static_cast<int>(cfg.phy.tx);
    ch.n_rx = static_cast<int>(cfg.phy.rx);
    ch.phase_noise_linewidth_hz = cfg.channel.phase_noise_hz;
    ch.seed = learn::mix_seed(cfg.seed, kTagChannel, static_cast<std::uint64_t>(r.round));
    ch.devices.resize(r.clients.size());
    const auto timing = cfg.radio_timing_offsets();
    const auto cfo = cfg.radio_cfo_offsets_hz();
    for (std::size_t k = 0; k < r.clients.size(); ++k) {
        auto& d = ch.devices[k];
        d.snr_db = client_round_snr_db(cfg, r.clients[k], r.round);
        d.profile = cfg.channel.profile;
        d.doppler_hz = cfg.channel.doppler_hz;
        d.cfo_hz = cfg.channel.cfo * num.subcarrier_spacing();
        // The virtual radios' own impairments (radio.*), by client.
        const auto c = static_cast<std::size_t>(r.clients[k]);
        if (!timing.empty())
            d.timing_offset_samples = timing.at(c);
        if (!cfo.empty())
            d.cfo_hz += cfo.at(c);
    }
    ch.validate();
    return ch;
}

phy::WaveformRoundConfig round_waveform_config(const SimConfig& cfg, const RadioRound& r, const phy::Numerology& num) {
    const auto K = r.payloads.size();
    phy::WaveformRoundConfig wc;
    wc.frame.numerology = num;
    wc.frame.n_devices = K;
    wc.frame.n_tx = static_cast<std::size_t>(cfg.phy.tx);
    wc.frame.pilot_repeats = static_cast<std::size_t>(cfg.phy.pilot_repeats);
    wc.n_streams = static_cast<std::size_t>(cfg.phy.streams);
    wc.power.policy = phy::power_policy_from_name(cfg.phy.policy);
    wc.power.budget.assign(K, r.carrier_budget > 0.0 ? r.carrier_budget : cfg.device.power);
    wc.estimator.name = cfg.phy.estimator;
    wc.lead = static_cast<std::size_t>(cfg.phy.fft);  // idle samples before the frame, unknown to the receiver
    wc.perfect_csi = cfg.phy.perfect_csi;
    return wc;
}

void check_radio_round(const RadioRound& r) { check_round(r); }

std::shared_ptr<const RadioCalibration> load_radio_calibration(const SimConfig& cfg) {
    if (cfg.radio.calibration.empty())
        return nullptr;
    auto cal = std::make_shared<RadioCalibration>();
    cal->path = cfg.radio.calibration;
    std::error_code ec;
    cal->absolute_path = std::filesystem::absolute(cal->path, ec).string();
    if (ec)
        cal->absolute_path = cal->path;
    const double f = cfg.radio.frequency_hz, fs = cfg.phy.sample_rate;
    try {
        cal->set = calib::load_calibration(cal->path);
    } catch (const phy::CalibrationError& e) {
        throw ConfigError(std::string("config key 'radio.calibration': ") + e.what());
    }
    if (!cfg.radio.serials.empty()) {
        cal->serials = cfg.radio.serials;
    } else {
        cal->serials = cal->set.aligned_serials(0, f, fs);
        char rate[32];
        std::snprintf(rate, sizeof rate, "%g MS/s", fs / 1e6);
        if (cal->serials.empty())
            throw ConfigError("config key 'radio.calibration': " + cal->path + " holds no alignment at " +
                              phy::format_frequency(f) + " (radio.frequency_hz) and " + rate +
                              " (phy.sample_rate) on channel 0");
        if (static_cast<std::int64_t>(cal->serials.size()) < cfg.clients)
            throw ConfigError("config key 'radio.serials': not given, and " + cal->path + " holds " +
                              std::to_string(cal->serials.size()) + " device(s) aligned at " +
                              phy::format_frequency(f) + " and " + rate + " for " + std::to_string(cfg.clients) +
                              " clients; list one serial per client");
        cal->serials.resize(static_cast<std::size_t>(cfg.clients));
    }
    const auto lead = static_cast<std::size_t>(cfg.phy.fft);  // the round's idle samples before the frame
    for (std::size_t c = 0; c < cal->serials.size(); ++c) {
        const auto key = cfg.radio.serials.empty() ? "radio.calibration" : "radio.serials";
        try {
            const phy::TransmitCorrector t(cal->set.correction(cal->serials[c], 0, f, fs), fs);
            if (t.lead() > lead)
                throw ConfigError(std::string("config key '") + key + "': client " + std::to_string(c) +
                                  "'s radio '" + cal->serials[c] + "' would send " + std::to_string(t.lead()) +
                                  " samples early, more than the " + std::to_string(lead) +
                                  " idle samples before a round's frame (phy.fft)");
        } catch (const phy::CalibrationError& e) {
            throw ConfigError(std::string("config key '") + key + "': client " + std::to_string(c) + ": " + e.what());
        } catch (const std::invalid_argument& e) {
            throw ConfigError(std::string("config key '") + key + "': client " + std::to_string(c) + ": " + e.what());
        }
    }
    return cal;
}

std::vector<phy::TransmitCorrection> round_corrections(const SimConfig& cfg, const RadioCalibration& cal,
                                                       const RadioRound& r) {
    std::vector<phy::TransmitCorrection> out;
    for (const auto c : r.clients)
        out.push_back(cal.set.correction(cal.serials.at(static_cast<std::size_t>(c)), 0, cfg.radio.frequency_hz,
                                         cfg.phy.sample_rate));
    return out;
}

double client_mean_snr_db(const SimConfig& cfg, std::int64_t client) {
    std::mt19937_64 rng(learn::mix_seed(cfg.seed, kTagClientSnr, static_cast<std::uint64_t>(client)));
    // Own uniform draw (std::uniform_real_distribution is not specified bit-exactly across libraries).
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    return cfg.channel.snr_db + (2.0 * u - 1.0) * cfg.channel.snr_spread_db;
}

double client_round_snr_db(const SimConfig& cfg, std::int64_t client, std::int64_t round) {
    const double mean = client_mean_snr_db(cfg, client);
    if (cfg.channel.shadowing_db == 0.0)
        return mean;
    // Box-Muller on the engine's own uniforms (portable: no std distribution).
    std::mt19937_64 rng(learn::mix_seed(cfg.seed, kTagShadowing, static_cast<std::uint64_t>(client),
                                        static_cast<std::uint64_t>(round)));
    const double u1 = (static_cast<double>(rng() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    return mean + cfg.channel.shadowing_db * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

std::unique_ptr<Radio> make_radio(const SimConfig& cfg) {
    if (cfg.transport == "flowgraph") {
        if (cfg.mode != "aircomp")
            throw ConfigError("config key 'transport': flowgraph runs the waveform-level AirComp round (mode "
                              "aircomp), not mode '" + cfg.mode + "'");
        return make_flowgraph_radio(cfg);
    }
    if (cfg.mode == "ideal")
        return std::make_unique<IdealRadio>();
    if (cfg.mode == "aircomp")
        return std::make_unique<AircompRadio>(cfg, true);
    if (cfg.mode == "aircomp-analytic")
        return std::make_unique<AircompRadio>(cfg, false);
    if (cfg.mode == "digital")
        return std::make_unique<DigitalRadio>(cfg);
    throw ConfigError("config key 'mode': '" + cfg.mode + "' is not one of ideal, aircomp, aircomp-analytic, digital");
}

}  // namespace fedlora::sim
