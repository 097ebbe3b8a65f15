#include "fedlora/phy/aircomp_waveform.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "fedlora/phy/mimo.h"
#include "fedlora/phy/sync.h"

namespace fedlora::phy {

namespace {

using cf = std::complex<float>;
using cd = std::complex<double>;

// Channels of every (device, rx, tx) link on the occupied carriers: h[((k·R + r)·T + a)·M + m].
struct Channels {
    std::size_t K = 0, R = 0, T = 0, M = 0;
    std::vector<cd> h;
    cd& at(std::size_t k, std::size_t r, std::size_t a, std::size_t m) { return h[((k * R + r) * T + a) * M + m]; }
    cd at(std::size_t k, std::size_t r, std::size_t a, std::size_t m) const { return h[((k * R + r) * T + a) * M + m]; }
    Eigen::MatrixXcd matrix(std::size_t k, std::size_t m) const {
        Eigen::MatrixXcd x(static_cast<Eigen::Index>(R), static_cast<Eigen::Index>(T));
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t a = 0; a < T; ++a)
                x(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(a)) = at(k, r, a, m);
        return x;
    }
};

// Σ over links of |h_k[m]|², [k · M + m]: the per-carrier CSI a receiver reports.
std::vector<double> link_gains(const Channels& c) {
    std::vector<double> g(c.K * c.M, 0.0);
    for (std::size_t k = 0; k < c.K; ++k)
        for (std::size_t r = 0; r < c.R; ++r)
            for (std::size_t a = 0; a < c.T; ++a)
                for (std::size_t m = 0; m < c.M; ++m)
                    g[k * c.M + m] += std::norm(c.at(k, r, a, m));
    return g;
}

// What the server decides for a round, in the general (multi-stream) form. Single-stream is L = T = R = 1 with
// precoder b_k[m] and combiner 1/√η_m.
struct Plan {
    std::size_t L = 1;
    std::vector<std::vector<cd>> precoders;  // per device: [(m·T + a)·L + l]
    std::vector<cd> combiner;                // [(m·L + l)·R + r]
    double truncated_fraction = 0.0;
};

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

Channels true_channels(const MultiUserChannel& ch, const Numerology& num, double reference_delay) {
    Channels c;
    c.K = static_cast<std::size_t>(ch.n_devices());
    c.R = static_cast<std::size_t>(ch.n_rx());
    c.T = static_cast<std::size_t>(ch.n_tx());
    c.M = static_cast<std::size_t>(num.n_occupied);
    c.h.resize(c.K * c.R * c.T * c.M);
    std::vector<cf> buf(c.M);
    for (std::size_t k = 0; k < c.K; ++k)
        for (std::size_t r = 0; r < c.R; ++r)
            for (std::size_t a = 0; a < c.T; ++a) {
                ch.frequency_response(num, static_cast<int>(k), static_cast<int>(r), static_cast<int>(a), buf.data(),
                                      reference_delay);
                for (std::size_t m = 0; m < c.M; ++m)
                    c.at(k, r, a, m) = cd(buf[m]);
            }
    return c;
}

Plan single_stream_plan(const Channels& h, const PowerControlConfig& pc) {
    const std::size_t K = h.K, M = h.M;
    std::vector<cd> hk(K * M);
    for (std::size_t k = 0; k < K; ++k)
        for (std::size_t m = 0; m < M; ++m)
            hk[k * M + m] = h.at(k, 0, 0, m);
    const auto pp = plan_power(hk, K, M, pc);
    Plan p;
    p.precoders.assign(K, std::vector<cd>(M));
    for (std::size_t k = 0; k < K; ++k)
        for (std::size_t m = 0; m < M; ++m)
            p.precoders[k][m] = pp.b(k, m);
    p.combiner.resize(M);
    for (std::size_t m = 0; m < M; ++m)
        p.combiner[m] = 1.0 / std::sqrt(pp.eta[m]);
    p.truncated_fraction = pp.truncated_fraction;
    return p;
}

// Per-subcarrier MIMO designs. Each subcarrier starts from warm[m] if given, else from the previous subcarrier's
// beamformer (neighbouring subcarriers have similar channels). beamformers receives the A of every subcarrier.
Plan multi_stream_plan(const Channels& h, std::size_t L, const PowerControlConfig& pc, int iterations,
                       const std::vector<Eigen::MatrixXcd>* warm, std::vector<Eigen::MatrixXcd>* beamformers) {
    MimoConfig mc;
    mc.n_streams = L;
    mc.noise_var = pc.noise_var;
    mc.budget = pc.budget;
    mc.signal_var = pc.signal_var;
    mc.csi_error_var = pc.csi_error_var;
    mc.max_iterations = iterations;
    Plan p;
    p.L = L;
    p.precoders.assign(h.K, std::vector<cd>(h.M * h.T * L));
    p.combiner.resize(h.M * L * h.R);
    std::vector<Eigen::MatrixXcd> hm(h.K);
    Eigen::MatrixXcd prev;
    for (std::size_t m = 0; m < h.M; ++m) {
        for (std::size_t k = 0; k < h.K; ++k)
            hm[k] = h.matrix(k, m);
        const Eigen::MatrixXcd* start = warm ? &(*warm)[m] : (m == 0 ? nullptr : &prev);
        const auto d = mimo_design(hm, mc, start);
        prev = d.A;
        if (beamformers)
            beamformers->push_back(d.A);
        for (std::size_t k = 0; k < h.K; ++k)
            for (std::size_t a = 0; a < h.T; ++a)
                for (std::size_t l = 0; l < L; ++l)
                    p.precoders[k][(m * h.T + a) * L + l] =
                        d.B[k](static_cast<Eigen::Index>(a), static_cast<Eigen::Index>(l));
        for (std::size_t l = 0; l < L; ++l)
            for (std::size_t r = 0; r < h.R; ++r)
                p.combiner[(m * L + l) * h.R + r] =
                    std::conj(d.A(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(l))) / std::sqrt(d.eta);
    }
    return p;
}

// G[m] = W[m] Σ_k H_k[m] P_k[m] (L × L): the response the plan gives on the channels h.
std::vector<cd> response(const Plan& p, const Channels& h) {
    const std::size_t L = p.L;
    std::vector<cd> g(h.M * L * L, cd{});
    for (std::size_t m = 0; m < h.M; ++m)
        for (std::size_t k = 0; k < h.K; ++k)
            for (std::size_t l = 0; l < L; ++l)
                for (std::size_t l2 = 0; l2 < L; ++l2) {
                    cd v = 0.0;
                    for (std::size_t r = 0; r < h.R; ++r)
                        for (std::size_t a = 0; a < h.T; ++a)
                            v += p.combiner[(m * L + l) * h.R + r] * h.at(k, r, a, m) *
                                 p.precoders[k][(m * h.T + a) * L + l2];
                    g[(m * L + l) * L + l2] += v;
                }
    return g;
}

// Expected error energy per (carrier, stream) of a plan on channels h with independent symbols of power v_k and
// noise σ²: E|e_l|² = Σ_k v_k Σ_l2 |(W H_k P_k)(l, l2) − δ(l, l2)|² + σ² Σ_r |W(l, r)|².
std::vector<double> stream_mse(const Plan& p, const Channels& h, const std::vector<double>& v, double noise_var) {
    const std::size_t L = p.L;
    std::vector<double> e(h.M * L, 0.0);
    for (std::size_t m = 0; m < h.M; ++m)
        for (std::size_t l = 0; l < L; ++l) {
            double acc = 0.0;
            for (std::size_t r = 0; r < h.R; ++r)
                acc += noise_var * std::norm(p.combiner[(m * L + l) * h.R + r]);
            for (std::size_t k = 0; k < h.K; ++k)
                for (std::size_t l2 = 0; l2 < L; ++l2) {
                    cd g = 0.0;
                    for (std::size_t r = 0; r < h.R; ++r)
                        for (std::size_t a = 0; a < h.T; ++a)
                            g += p.combiner[(m * L + l) * h.R + r] * h.at(k, r, a, m) *
                                 p.precoders[k][(m * h.T + a) * L + l2];
                    acc += v[k] * std::norm(g - (l == l2 ? 1.0 : 0.0));
                }
            e[m * L + l] = acc;
        }
    return e;
}

// NMSE the plan should give: the per-(carrier, stream) errors summed over the symbols the payload uses.
double analytic_nmse(const Plan& p, const Channels& h, const std::vector<double>& v, double noise_var,
                     const std::vector<int>& data_pos, std::size_t n_sym, double scale, double ref) {
    const auto e = stream_mse(p, h, v, noise_var);
    const std::size_t n_data = data_pos.size(), L = p.L;
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
std::vector<double> device_snr_db(const Channels& h, const std::vector<double>& pilot_power, double noise_var) {
    const std::size_t links = h.R * h.T * h.M;
    std::vector<double> snr(h.K);
    for (std::size_t k = 0; k < h.K; ++k) {
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

    SyncConfig sc;
    sc.numerology = num;
    sc.preamble_seed = fc.preamble_seed;
    Synchronizer sync(sc);
    FrameConfig frame = fc;
    frame.gap = std::max(fc.gap, sync.max_latency() + static_cast<std::size_t>(channel.bulk_delay()) + 64);
    const FrameLayout layout(frame);
    FrameReceiver receiver(frame, cfg.estimator, backoff);

    // --- pilot burst: every device from sample `lead` on the common timeline --------------------------------
    const std::size_t burst = cfg.lead + layout.pilots_end() + frame.gap;
    std::vector<std::vector<cf>> tx(K * T, std::vector<cf>(burst, cf{}));
    std::vector<std::vector<cf>> one(T, std::vector<cf>(layout.pilots_end()));
    for (std::size_t k = 0; k < K; ++k) {
        DeviceTransmitter dev(frame, k, cfg.power.budget[k] / static_cast<double>(T));
        dev.pilot_burst(one);
        for (std::size_t a = 0; a < T; ++a)
            std::copy(one[a].begin(), one[a].end(), tx[k * T + a].begin() + static_cast<std::ptrdiff_t>(cfg.lead));
    }
    std::vector<std::vector<cf>> rx(R);
    for (auto& r : rx)
        r.reserve(burst + n_ofdm * layout.symbol_len());
    through_channel(channel, tx, rx);

    WaveformReport rep;
    std::size_t start = cfg.lead;
    double cfo_rad = 0.0;
    if (!cfg.perfect_csi) {
        std::vector<SyncDetection> det;
        det.reserve(sync.max_detections(rx[0].size()));
        sync.process(rx[0].data(), rx[0].size(), det);
        if (det.empty())
            throw std::runtime_error("waveform round: the synchroniser found no frame in " +
                                     std::to_string(rx[0].size()) + " samples (SNR too low for the preamble?)");
        start = static_cast<std::size_t>(det.front().start);
        cfo_rad = det.front().cfo_rad_per_sample;
        rep.cfo_estimate = det.front().cfo;
    }
    rep.detected_start = static_cast<double>(start);
    if (start < static_cast<std::size_t>(backoff))
        throw std::runtime_error("waveform round: frame detected at sample " + std::to_string(start) +
                                 ", earlier than the timing backoff");
    // Common CFO removed from the frame start on, on every antenna, phase-continuous into the payload.
    const std::size_t fix_from = start - static_cast<std::size_t>(backoff);
    auto correct_all = [&](double omega, double phase, std::size_t from) {
        double end_phase = phase;
        for (auto& r : rx) {
            CfoCorrector c(omega, phase);
            c.apply(r.data() + from, r.data() + from, r.size() - from);
            end_phase = c.phase();
        }
        return end_phase;
    };
    double cfo_phase = correct_all(cfo_rad, 0.0, fix_from);
    if (!cfg.perfect_csi) {
        // Refine with the residual CFO between preamble and postamble, so that every device's channel estimate
        // refers to the same phase reference whatever its slot.
        const double residual = receiver.residual_cfo(rx[0], start);
        rep.cfo_estimate += residual * num.fft_size / (2.0 * M_PI);
        cfo_phase += correct_all(residual, 0.0, fix_from);
        cfo_rad += residual;
    }

    // --- channel state: from the pilots, or the truth -------------------------------------------------------
    const double ref_delay = static_cast<double>(start) - backoff - static_cast<double>(cfg.lead);
    const auto h_true = true_channels(channel, num, ref_delay);
    const double noise_true = channel.config().noise_variance;
    PowerControlConfig pc = cfg.power;
    pc.signal_var = symbol_powers(updates, weights, codec);
    const auto pilot_power = pilot_powers(cfg.power, T);
    rep.device_snr_db = device_snr_db(h_true, pilot_power, noise_true);
    Channels h_used = h_true;
    if (cfg.perfect_csi) {
        pc.noise_var = noise_true;
    } else {
        double nv = 0.0;
        rep.device_snr_db_estimated.assign(K, 0.0);
        pc.csi_error_var.assign(K, 0.0);
        std::vector<ChannelEstimate> est;
        for (std::size_t r = 0; r < R; ++r) {
            receiver.estimate_channels(rx[r], start, pilot_power, est);
            for (std::size_t k = 0; k < K; ++k)
                for (std::size_t a = 0; a < T; ++a) {
                    const auto& e = est[k * T + a];
                    for (std::size_t m = 0; m < M; ++m)
                        h_used.at(k, r, a, m) = cd(e.h[m]);
                    const double share = 1.0 / static_cast<double>(R * T);
                    nv += e.noise_var * share / static_cast<double>(K);
                    pc.csi_error_var[k] += e.error_var * share;
                    rep.device_snr_db_estimated[k] += e.snr_db * share;
                }
        }
        pc.noise_var = nv;
    }
    rep.noise_var_estimated = pc.noise_var;
    rep.csi_gain = link_gains(h_used);
    std::vector<Eigen::MatrixXcd> beamformers;
    const Plan plan = mimo ? multi_stream_plan(h_used, L, pc, cfg.mimo_iterations, nullptr, &beamformers)
                           : single_stream_plan(h_used, pc);

    // --- payload: every device encodes, precodes and transmits at once ---------------------------------------
    std::vector<cf> sym(n_ofdm * L * n_data, cf{});
    std::vector<std::vector<cf>> wave;
    for (std::size_t k = 0; k < K; ++k) {
        std::fill(sym.begin(), sym.end(), cf{});
        codec.encode(updates[k].data(), weights[k], sym.data());
        DeviceTransmitter dev(frame, k, pilot_power[k]);
        dev.payload(sym, L, plan.precoders[k], wave);
        for (std::size_t a = 0; a < T; ++a)
            tx[k * T + a].assign(wave[a].begin(), wave[a].end());
    }
    const std::size_t before = rx[0].size();
    through_channel(channel, tx, rx);
    correct_all(cfo_rad, cfo_phase, before);

    // --- receive: combining, common phase, decoding ------------------------------------------------------------
    std::vector<cf> data;
    rep.mean_cpe_rad = receiver.payload(rx, start, n_ofdm, L, plan.combiner, response(plan, h_used), data);
    estimate.resize(codec.dim);
    codec.decode(data.data(), estimate.data());

    const auto [err, ref] = sum_error(updates, weights, codec, estimate);
    rep.nmse_measured = ref > 0.0 ? err / ref : 0.0;
    // The policy's NMSE with perfect CSI: its plan for the true channels and noise, evaluated on them. The MIMO
    // beamformer search is local, so it starts from the beamformers of the plan used: the comparison then measures
    // what estimated CSI costs, not which local optimum each search happened to reach.
    auto pc_true = pc;
    pc_true.noise_var = noise_true;
    pc_true.csi_error_var.clear();
    const Plan plan_true = cfg.perfect_csi ? plan
                           : mimo ? multi_stream_plan(h_true, L, pc_true, cfg.mimo_iterations, &beamformers, nullptr)
                                  : single_stream_plan(h_true, pc_true);
    rep.nmse_analytic = analytic_nmse(plan_true, h_true, pc.signal_var, noise_true, data_pos, n_sym, codec.scale, ref);
    // The plan actually used, evaluated on the true channels turned to the estimates' common phase (the absolute
    // phase of the estimates is arbitrary: the receiver removes the common phase on the payload pilots).
    cd align = 0.0;
    for (std::size_t i = 0; i < h_true.h.size(); ++i)
        align += h_used.h[i] * std::conj(h_true.h[i]);
    Channels h_aligned = h_true;
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
    Channels h_used = h_true;
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
    rep.csi_gain = link_gains(h_used);
    std::vector<Eigen::MatrixXcd> beamformers;
    const Plan plan = mimo ? multi_stream_plan(h_used, L, pc, cfg.mimo_iterations, nullptr, &beamformers)
                           : single_stream_plan(h_used, pc);

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
    const Plan plan_true = cfg.perfect_csi ? plan
                           : mimo ? multi_stream_plan(h_true, L, pc_true, cfg.mimo_iterations, &beamformers, nullptr)
                                  : single_stream_plan(h_true, pc_true);
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
