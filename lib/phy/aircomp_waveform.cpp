#include "fedlora/phy/aircomp_waveform.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "fedlora/phy/aircomp_round.h"
#include "fedlora/phy/mimo.h"
#include "round_plan.h"

namespace fedlora::phy {

namespace {

using cf = std::complex<float>;
using cd = std::complex<double>;

// Runs the device streams `tx` (K·T streams, same length) through the channel and appends to rx[r].
void through_channel(MultiUserChannel& ch, const std::vector<std::vector<cf>>& tx, std::vector<std::vector<cf>>& rx) {
    const std::size_t n = tx.front().size();
    std::vector<const cf*> in(tx.size());
    for (std::size_t i = 0; i < tx.size(); ++i)
        in[i] = tx[i].data();
    std::vector<cf*> out(rx.size());
    const std::size_t at = rx.front().size();
    for (std::size_t r = 0; r < rx.size(); ++r) {
        rx[r].resize(at + n);
        out[r] = rx[r].data() + at;
    }
    ch.process(in.data(), out.data(), n);
}

LinkChannels true_channels(const MultiUserChannel& ch, const Numerology& num, double reference_delay) {
    LinkChannels c;
    c.resize(static_cast<std::size_t>(ch.n_devices()), static_cast<std::size_t>(ch.n_rx()),
             static_cast<std::size_t>(ch.n_tx()), static_cast<std::size_t>(num.n_occupied));
    std::vector<cf> buf(c.n_carriers);
    for (std::size_t k = 0; k < c.n_devices; ++k)
        for (std::size_t r = 0; r < c.n_rx; ++r)
            for (std::size_t a = 0; a < c.n_tx; ++a) {
                ch.frequency_response(num, static_cast<int>(k), static_cast<int>(r), static_cast<int>(a), buf.data(),
                                      reference_delay);
                for (std::size_t m = 0; m < c.n_carriers; ++m)
                    c.at(k, r, a, m) = cd(buf[m]);
            }
    return c;
}

// NMSE the plan should give: the per-(carrier, stream) errors summed over the symbols the payload uses.
double analytic_nmse(const RoundPlan& p, const LinkChannels& h, const std::vector<double>& v, double noise_var,
                     const std::vector<int>& data_pos, std::size_t n_sym, double scale, double ref) {
    const auto e = plan_stream_mse(p, h, v, noise_var);
    const std::size_t n_data = data_pos.size(), L = p.n_streams;
    double total = 0.0;
    for (std::size_t s = 0; s < n_sym; ++s) {
        const std::size_t l = (s / n_data) % L, j = s % n_data;
        total += e[static_cast<std::size_t>(data_pos[j]) * L + l];
    }
    return ref > 0.0 ? total * scale * scale / ref : 0.0;
}

// Pilots go out at P_k / N_t per antenna; the estimates are divided by that amplitude.
std::vector<double> pilot_powers(const PowerControlConfig& pc, std::size_t n_tx) {
    std::vector<double> p(pc.budget.size());
    for (std::size_t k = 0; k < p.size(); ++k)
        p[k] = pc.budget[k] / static_cast<double>(n_tx);
    return p;
}

// Each device's mean per-carrier receive SNR over its links at pilot power, in dB.
std::vector<double> device_snr_db(const LinkChannels& h, const std::vector<double>& pilot_power, double noise_var) {
    const std::size_t links = h.n_rx * h.n_tx * h.n_carriers;
    std::vector<double> snr(h.n_devices);
    for (std::size_t k = 0; k < h.n_devices; ++k) {
        double g = 0.0;
        for (std::size_t i = 0; i < links; ++i)
            g += std::norm(h.h[k * links + i]);
        snr[k] = 10.0 * std::log10(g / static_cast<double>(links) * pilot_power[k] / noise_var);
    }
    return snr;
}

// Dimensions of a round, after checking that updates, weights, codec, frame and channel agree. `what` names the
// caller in error messages.
struct RoundShape {
    std::size_t K = 0, L = 1, T = 1, R = 1, M = 0, n_data = 0, n_sym = 0, n_ofdm = 0;
    bool mimo = false;
    std::vector<int> data_pos;
};

RoundShape check_round(const char* what, const std::vector<std::vector<float>>& updates,
                       const std::vector<double>& weights, const AircompCodec& codec, const MultiUserChannel& channel,
                       const WaveformRoundConfig& cfg) {
    codec.validate();
    cfg.frame.validate();
    const auto& num = cfg.frame.numerology;
    const std::string w = what;
    RoundShape r;
    r.K = updates.size();
    r.mimo = cfg.n_streams > 0;
    r.L = r.mimo ? cfg.n_streams : 1;
    r.T = cfg.frame.n_tx;
    r.R = static_cast<std::size_t>(channel.n_rx());
    if (r.K == 0 || weights.size() != r.K || cfg.frame.n_devices != r.K)
        throw std::invalid_argument(w + ": " + std::to_string(r.K) + " updates, " + std::to_string(weights.size()) +
                                    " weights, frame for " + std::to_string(cfg.frame.n_devices) + " devices");
    if (static_cast<std::size_t>(channel.n_devices()) != r.K || static_cast<std::size_t>(channel.n_tx()) != r.T)
        throw std::invalid_argument(w + ": channel has " + std::to_string(channel.n_devices()) + " devices x " +
                                    std::to_string(channel.n_tx()) + " antennas, the frame " + std::to_string(r.K) +
                                    " x " + std::to_string(r.T));
    if (!r.mimo && (r.T != 1 || r.R != 1))
        throw std::invalid_argument(w + ": single-stream needs n_tx = n_rx = 1 (set n_streams for MIMO)");
    if (r.mimo && (r.T < r.L || r.R < r.L))
        throw std::invalid_argument(w + ": " + std::to_string(r.L) + " streams need n_tx >= L and n_rx >= L (" +
                                    std::to_string(r.T) + ", " + std::to_string(r.R) + ")");
    if (std::abs(channel.config().sample_rate - num.sample_rate) > 1e-9 * num.sample_rate)
        throw std::invalid_argument(w + ": channel sample rate differs from the numerology's");
    for (std::size_t k = 0; k < r.K; ++k)
        if (updates[k].size() != codec.dim)
            throw std::invalid_argument(w + ": update " + std::to_string(k) + " has " +
                                        std::to_string(updates[k].size()) + " entries, expected " +
                                        std::to_string(codec.dim));
    cfg.power.validate(r.K);
    r.M = static_cast<std::size_t>(num.n_occupied);
    r.data_pos = num.data_positions();
    r.n_data = r.data_pos.size();
    r.n_sym = codec.n_symbols();
    r.n_ofdm = (r.n_sym + r.L * r.n_data - 1) / (r.L * r.n_data);
    return r;
}

}  // namespace

WaveformReport aircomp_round_waveform(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                      const AircompCodec& codec, MultiUserChannel& channel,
                                      const WaveformRoundConfig& cfg, std::vector<float>& estimate) {
    const auto shape = check_round("waveform round", updates, weights, codec, channel, cfg);
    const auto& fc = cfg.frame;
    const auto& num = fc.numerology;
    const auto [K, L, T, R, M, n_data, n_sym, n_ofdm, mimo, data_pos] = shape;
    const int backoff = cfg.timing_backoff < 0 ? num.cp_len / 8 : cfg.timing_backoff;

    // The same pieces a flowgraph runs (aircomp_round.h): device transmitters, the channel, the server's
    // streaming receiver and the round planner.
    // Calibrated radios: every device's bursts pass through its TransmitCorrector, each burst as long as
    // uncorrected and starting lead_k samples earlier (as the aircomp_transmitter block sends them).
    std::vector<TransmitCorrector> corr;
    CorrectionSpan span;
    if (!cfg.corrections.empty()) {
        if (cfg.corrections.size() != K)
            throw std::invalid_argument("waveform round: " + std::to_string(cfg.corrections.size()) +
                                        " transmit corrections for " + std::to_string(K) + " devices");
        for (const auto& c : cfg.corrections)
            corr.emplace_back(c, num.sample_rate);
        span = correction_span(cfg.corrections, num.sample_rate);
        if (cfg.lead < span.lead)
            throw std::invalid_argument("waveform round: lead = " + std::to_string(cfg.lead) +
                                        " samples is shorter than the largest corrected burst's advance (" +
                                        std::to_string(span.lead) + " samples)");
    }
    FrameConfig frame = fc;
    frame.gap = std::max(fc.gap, receiver_min_gap(fc, static_cast<std::size_t>(channel.bulk_delay())) + span.lead +
                                     span.tail);
    const FrameLayout layout(frame);
    const auto pilot_power = pilot_powers(cfg.power, T);
    AircompReceiverConfig rc;
    rc.frame = frame;
    rc.n_rx = R;
    rc.estimator = cfg.estimator;
    rc.timing_backoff = backoff;
    rc.pilot_power = pilot_power;
    AircompReceiver receiver(rc);

    // --- pilot burst: every device from sample `lead` on the common timeline --------------------------------
    // (corrected: device k's pilot burst, zero-padded to the payload offset P, occupies [lead − lead_k, lead −
    // lead_k + P); this pass ends where the earliest corrected payload begins)
    const std::size_t burst = cfg.lead + layout.pilots_end() + frame.gap;
    const std::size_t P = layout.payload_offset(0);
    const std::size_t pass1 = burst - span.lead;
    std::vector<std::vector<cf>> tx(K * T, std::vector<cf>(pass1, cf{}));
    std::vector<std::vector<cf>> one(T, std::vector<cf>(corr.empty() ? layout.pilots_end() : P, cf{}));
    for (std::size_t k = 0; k < K; ++k) {
        DeviceTransmitter dev(frame, k, pilot_power[k]);
        dev.pilot_burst(one);
        for (std::size_t a = 0; a < T; ++a) {
            if (corr.empty()) {
                std::copy(one[a].begin(), one[a].end(),
                          tx[k * T + a].begin() + static_cast<std::ptrdiff_t>(cfg.lead));
                continue;
            }
            const std::size_t w = cfg.lead - corr[k].lead();
            corr[k].apply(one[a].data(), P, static_cast<std::int64_t>(cfg.lead), tx[k * T + a].data() + w,
                          std::min(P, pass1 - w), static_cast<std::int64_t>(w));
        }
    }
    std::vector<std::vector<cf>> rx(R);
    for (auto& r : rx)
        r.reserve(burst + n_ofdm * layout.symbol_len());
    through_channel(channel, tx, rx);

    // --- server: synchronisation, CFO, channel estimation, from the samples before the payload ---------------
    if (cfg.perfect_csi)
        receiver.expect_frame_at(cfg.lead, false);
    std::vector<const cf*> at(R);
    auto feed = [&](std::size_t from) {
        for (std::size_t r = 0; r < R; ++r)
            at[r] = rx[r].data() + from;
        return from + receiver.consume(at.data(), rx[0].size() - from);
    };
    const std::size_t used = feed(0);
    if (receiver.stage() == AircompReceiver::Stage::Searching)
        throw std::runtime_error("waveform round: the synchroniser found no frame in " + std::to_string(burst) +
                                 " samples (SNR too low for the preamble?" +
                                 (receiver.skipped_detections()
                                      ? " " + std::to_string(receiver.skipped_detections()) +
                                            " detection(s) came earlier than the timing backoff)"
                                      : std::string(")")));
    if (receiver.stage() != AircompReceiver::Stage::NeedPlan)
        throw std::invalid_argument("waveform round: the pilot section of the frame at " +
                                    std::to_string(receiver.frame_start()) + " does not fit in the " +
                                    std::to_string(burst) + " received samples");
    WaveformReport rep;
    const auto start = static_cast<std::size_t>(receiver.frame_start());
    rep.detected_start = static_cast<double>(start);
    rep.cfo_estimate = receiver.cfo();

    // --- channel state: from the pilots, or the truth -------------------------------------------------------
    const double ref_delay = static_cast<double>(start) - backoff - static_cast<double>(cfg.lead);
    const auto h_true = true_channels(channel, num, ref_delay);
    const double noise_true = channel.config().noise_variance;
    PowerControlConfig pc = cfg.power;
    pc.signal_var = symbol_powers(updates, weights, codec);
    rep.device_snr_db = device_snr_db(h_true, pilot_power, noise_true);
    LinkChannels h_used = h_true;
    if (cfg.perfect_csi) {
        pc.noise_var = noise_true;
    } else {
        const auto& csi = receiver.csi();
        h_used = csi.h;
        pc.noise_var = csi.noise_var;
        pc.csi_error_var = csi.error_var;
        rep.device_snr_db_estimated = csi.snr_db;
    }
    rep.noise_var_estimated = pc.noise_var;
    rep.csi_gain = h_used.gains();
    std::vector<Eigen::MatrixXcd> beamformers;
    const RoundPlan plan =
        detail::plan_round(h_used, mimo ? L : 0, pc, cfg.mimo_iterations, nullptr, mimo ? &beamformers : nullptr);
    receiver.set_plan(plan.combiner, plan_response(plan, h_used), L, n_ofdm);

    // --- payload: every device encodes, precodes and transmits at once ---------------------------------------
    // Devices with timing offsets (or calibrated bursts) arrive up to their offset later: the channel then also
    // runs through a silent symbol and the largest offset after the payload, so that the last payload symbol is
    // received whole (without offsets and corrections nothing is added: the timeline stays as it was).
    double max_offset = 0.0;
    for (const auto& d : channel.config().devices)
        max_offset = std::max(max_offset, d.timing_offset_samples);
    const std::size_t after = corr.empty() && max_offset == 0.0
                                  ? 0
                                  : (corr.empty() ? layout.symbol_len() : 0) +
                                        static_cast<std::size_t>(std::ceil(max_offset));
    std::vector<cf> sym(n_ofdm * L * n_data, cf{});
    std::vector<std::vector<cf>> wave;
    for (std::size_t k = 0; k < K; ++k) {
        std::fill(sym.begin(), sym.end(), cf{});
        codec.encode(updates[k].data(), weights[k], sym.data());
        DeviceTransmitter dev(frame, k, pilot_power[k]);
        dev.payload(sym, L, plan.precoders[k], wave);
        for (std::size_t a = 0; a < T; ++a) {
            if (corr.empty()) {
                tx[k * T + a].assign(wave[a].begin(), wave[a].end());
                tx[k * T + a].resize(wave[a].size() + after, cf{});
                continue;
            }
            // The payload and one symbol of zeros, from lead + P − lead_k; this pass starts at lead + P − span.lead.
            const std::size_t n = (n_ofdm + 1) * layout.symbol_len();
            wave[a].resize(n, cf{});
            tx[k * T + a].assign(span.lead + n + after, cf{});
            const std::size_t o = span.lead - corr[k].lead();
            corr[k].apply(wave[a].data(), n, static_cast<std::int64_t>(cfg.lead + P), tx[k * T + a].data() + o, n,
                          static_cast<std::int64_t>(cfg.lead + P - corr[k].lead()));
        }
    }
    through_channel(channel, tx, rx);

    // --- receive: combining, common phase, decoding ------------------------------------------------------------
    feed(used);
    if (receiver.stage() != AircompReceiver::Stage::Done)
        throw std::invalid_argument("waveform round: the payload of the frame detected at " + std::to_string(start) +
                                    " does not fit in the " + std::to_string(rx[0].size()) + " received samples");
    rep.mean_cpe_rad = receiver.mean_cpe_rad();
    estimate.resize(codec.dim);
    codec.decode(receiver.data().data(), estimate.data());

    const auto [err, ref] = sum_error(updates, weights, codec, estimate);
    rep.nmse_measured = ref > 0.0 ? err / ref : 0.0;
    // The policy's NMSE with perfect CSI: its plan for the true channels and noise, evaluated on them. The MIMO
    // beamformer search is local, so it starts from the beamformers of the plan used: the comparison then measures
    // what estimated CSI costs, not which local optimum each search happened to reach.
    auto pc_true = pc;
    pc_true.noise_var = noise_true;
    pc_true.csi_error_var.clear();
    const RoundPlan plan_true =
        cfg.perfect_csi ? plan
                        : detail::plan_round(h_true, mimo ? L : 0, pc_true, cfg.mimo_iterations,
                                             mimo ? &beamformers : nullptr, nullptr);
    rep.nmse_analytic = analytic_nmse(plan_true, h_true, pc.signal_var, noise_true, data_pos, n_sym, codec.scale, ref);
    // The plan actually used, evaluated on the true channels turned to the estimates' common phase (the absolute
    // phase of the estimates is arbitrary: the receiver removes the common phase on the payload pilots).
    cd align = 0.0;
    for (std::size_t i = 0; i < h_true.h.size(); ++i)
        align += h_used.h[i] * std::conj(h_true.h[i]);
    LinkChannels h_aligned = h_true;
    if (std::abs(align) > 0.0)
        for (auto& v : h_aligned.h)
            v *= align / std::abs(align);
    rep.nmse_analytic_used_plan =
        analytic_nmse(plan, h_aligned, pc.signal_var, noise_true, data_pos, n_sym, codec.scale, ref);
    rep.truncated_fraction = plan.truncated_fraction;
    rep.ofdm_symbols = n_ofdm;
    rep.channel_uses = n_ofdm * M;  // time-frequency resources: the L streams share them
    rep.frame_samples = layout.frame_len(n_ofdm);
    rep.airtime_s = static_cast<double>(rep.frame_samples) / num.sample_rate;
    return rep;
}

}  // namespace fedlora::phy

namespace fedlora::phy {

WaveformReport aircomp_round_effective(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                       const AircompCodec& codec, MultiUserChannel& channel,
                                       const WaveformRoundConfig& cfg, std::mt19937_64& rng,
                                       std::vector<float>& estimate) {
    const auto shape = check_round("effective round", updates, weights, codec, channel, cfg);
    const auto& fc = cfg.frame;
    const auto& num = fc.numerology;
    const auto [K, L, T, R, M, n_data, n_sym, n_ofdm, mimo, data_pos] = shape;
    const FrameLayout layout(fc);

    const auto h_true = true_channels(channel, num, static_cast<double>(channel.bulk_delay()));
    const double noise = channel.config().noise_variance;
    PowerControlConfig pc = cfg.power;
    pc.signal_var = symbol_powers(updates, weights, codec);
    pc.noise_var = noise;
    const auto pilot_power = pilot_powers(cfg.power, T);
    WaveformReport rep;
    rep.device_snr_db = device_snr_db(h_true, pilot_power, noise);
    LinkChannels h_used = h_true;
    if (!cfg.perfect_csi) {
        const int window = (cfg.estimator.pre_delay < 0 ? num.cp_len / 8 : cfg.estimator.pre_delay) +
                           (cfg.estimator.max_delay < 0 ? num.cp_len : cfg.estimator.max_delay);
        pc.csi_error_var.assign(K, 0.0);
        for (std::size_t k = 0; k < K; ++k) {
            double r = static_cast<double>(M);
            if (cfg.estimator.name == "dft" || cfg.estimator.name == "lmmse")
                r = window;
            else if (cfg.estimator.name == "sparse")
                r = static_cast<double>(channel.impulse_response(static_cast<int>(k), 0, 0).lags.size());
            else if (cfg.estimator.name != "ls")
                throw std::invalid_argument("effective round: estimator '" + cfg.estimator.name + "' is unknown");
            const double eps2 = noise * r / (static_cast<double>(M) * static_cast<double>(fc.pilot_repeats) *
                                             pilot_power[k]);
            pc.csi_error_var[k] = eps2;
            std::normal_distribution<double> e(0.0, std::sqrt(eps2 / 2.0));
            for (std::size_t i = 0; i < R * T * M; ++i) {
                const double re = e(rng);
                const double im = e(rng);
                h_used.h[k * R * T * M + i] += cd(re, im);
            }
        }
    }
    rep.noise_var_estimated = noise;
    rep.csi_gain = h_used.gains();
    std::vector<Eigen::MatrixXcd> beamformers;
    const RoundPlan plan =
        detail::plan_round(h_used, mimo ? L : 0, pc, cfg.mimo_iterations, nullptr, mimo ? &beamformers : nullptr);

    // Symbols on the resource grid; per carrier and OFDM symbol: z = W (Σ_k H_k P_k s_k + n).
    std::vector<std::vector<cf>> sym(K, std::vector<cf>(n_ofdm * L * n_data, cf{}));
    for (std::size_t k = 0; k < K; ++k)
        codec.encode(updates[k].data(), weights[k], sym[k].data());
    std::normal_distribution<double> w(0.0, std::sqrt(noise / 2.0));
    std::vector<cf> data(n_ofdm * L * n_data);
    std::vector<cd> y(R), x(T);
    for (std::size_t i = 0; i < n_ofdm; ++i)
        for (std::size_t j = 0; j < n_data; ++j) {
            const auto m = static_cast<std::size_t>(data_pos[j]);
            for (std::size_t r = 0; r < R; ++r) {
                const double re = w(rng);
                const double im = w(rng);
                y[r] = cd(re, im);
            }
            for (std::size_t k = 0; k < K; ++k) {
                for (std::size_t a = 0; a < T; ++a) {
                    x[a] = 0.0;
                    for (std::size_t l = 0; l < L; ++l)
                        x[a] += plan.precoders[k][(m * T + a) * L + l] * cd(sym[k][(i * L + l) * n_data + j]);
                }
                for (std::size_t r = 0; r < R; ++r)
                    for (std::size_t a = 0; a < T; ++a)
                        y[r] += h_true.at(k, r, a, m) * x[a];
            }
            for (std::size_t l = 0; l < L; ++l) {
                cd z = 0.0;
                for (std::size_t r = 0; r < R; ++r)
                    z += plan.combiner[(m * L + l) * R + r] * y[r];
                data[(i * L + l) * n_data + j] = cf(z);
            }
        }
    estimate.resize(codec.dim);
    codec.decode(data.data(), estimate.data());
    const auto [err, ref] = sum_error(updates, weights, codec, estimate);
    rep.nmse_measured = ref > 0.0 ? err / ref : 0.0;
    auto pc_true = pc;
    pc_true.csi_error_var.clear();
    const RoundPlan plan_true =
        cfg.perfect_csi ? plan
                        : detail::plan_round(h_true, mimo ? L : 0, pc_true, cfg.mimo_iterations,
                                             mimo ? &beamformers : nullptr, nullptr);
    rep.nmse_analytic = analytic_nmse(plan_true, h_true, pc.signal_var, noise, data_pos, n_sym, codec.scale, ref);
    rep.nmse_analytic_used_plan = analytic_nmse(plan, h_true, pc.signal_var, noise, data_pos, n_sym, codec.scale, ref);
    rep.truncated_fraction = plan.truncated_fraction;
    rep.ofdm_symbols = n_ofdm;
    rep.channel_uses = n_ofdm * M;
    rep.frame_samples = layout.frame_len(n_ofdm);
    rep.airtime_s = static_cast<double>(rep.frame_samples) / num.sample_rate;
    return rep;
}

}  // namespace fedlora::phy
