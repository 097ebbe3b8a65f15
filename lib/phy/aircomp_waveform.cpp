#include "fedlora/phy/aircomp_waveform.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "fedlora/phy/sync.h"

namespace fedlora::phy {

namespace {

using cf = std::complex<float>;
using cd = std::complex<double>;

// Runs `tx[k]` (one stream per device, all the same length) through the channel and appends to rx.
void through_channel(MultiUserChannel& ch, const std::vector<std::vector<cf>>& tx, std::vector<cf>& rx) {
    const std::size_t n = tx.front().size();
    std::vector<const cf*> in(tx.size());
    for (std::size_t k = 0; k < tx.size(); ++k)
        in[k] = tx[k].data();
    const std::size_t at = rx.size();
    rx.resize(at + n);
    cf* out = rx.data() + at;
    ch.process(in.data(), &out, n);
}

// True per-carrier channels H[k*M + m] seen by FFT windows starting `reference_delay` samples after the
// transmitted ones.
std::vector<cd> true_channels(const MultiUserChannel& ch, const Numerology& num, double reference_delay) {
    const auto K = static_cast<std::size_t>(ch.n_devices());
    const auto M = static_cast<std::size_t>(num.n_occupied);
    std::vector<cd> h(K * M);
    std::vector<cf> buf(M);
    for (std::size_t k = 0; k < K; ++k) {
        ch.frequency_response(num, static_cast<int>(k), 0, 0, buf.data(), reference_delay);
        for (std::size_t m = 0; m < M; ++m)
            h[k * M + m] = cd(buf[m]);
    }
    return h;
}

// Expected NMSE of a plan on true channels: per-carrier MSE summed over the carriers the payload symbols use.
double analytic_nmse(const PowerPlan& plan, const std::vector<cd>& h, const PowerControlConfig& pc,
                     const std::vector<int>& data_pos, std::size_t n_sym, double scale, double ref) {
    const auto per = plan_mse_per_carrier(plan, h, pc);
    double e = 0.0;
    for (std::size_t i = 0; i < n_sym; ++i)
        e += per[static_cast<std::size_t>(data_pos[i % data_pos.size()])];
    return ref > 0.0 ? e * scale * scale / ref : 0.0;
}

}  // namespace

WaveformReport aircomp_round_waveform(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                      const AircompCodec& codec, MultiUserChannel& channel,
                                      const WaveformRoundConfig& cfg, std::vector<float>& estimate) {
    codec.validate();
    const auto& fc = cfg.frame;
    fc.validate();
    const auto& num = fc.numerology;
    const std::size_t K = updates.size();
    if (K == 0 || weights.size() != K || fc.n_devices != K)
        throw std::invalid_argument("waveform round: " + std::to_string(K) + " updates, " +
                                    std::to_string(weights.size()) + " weights, frame for " +
                                    std::to_string(fc.n_devices) + " devices");
    if (fc.n_tx != 1 || channel.n_tx() != 1 || channel.n_rx() != 1)
        throw std::invalid_argument("waveform round: the single-stream round needs n_tx = n_rx = 1");
    if (static_cast<std::size_t>(channel.n_devices()) != K)
        throw std::invalid_argument("waveform round: channel has " + std::to_string(channel.n_devices()) +
                                    " devices, " + std::to_string(K) + " updates");
    if (std::abs(channel.config().sample_rate - num.sample_rate) > 1e-9 * num.sample_rate)
        throw std::invalid_argument("waveform round: channel sample rate differs from the numerology's");
    for (std::size_t k = 0; k < K; ++k)
        if (updates[k].size() != codec.dim)
            throw std::invalid_argument("waveform round: update " + std::to_string(k) + " has " +
                                        std::to_string(updates[k].size()) + " entries, expected " +
                                        std::to_string(codec.dim));
    cfg.power.validate(K);
    const int backoff = cfg.timing_backoff < 0 ? num.cp_len / 8 : cfg.timing_backoff;
    const std::size_t M = static_cast<std::size_t>(num.n_occupied);
    const auto data_pos = num.data_positions();
    const std::size_t n_data = data_pos.size();
    const std::size_t n_sym = codec.n_symbols();
    const std::size_t n_ofdm = (n_sym + n_data - 1) / n_data;

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
    std::vector<std::vector<cf>> tx(K, std::vector<cf>(burst, cf{}));
    for (std::size_t k = 0; k < K; ++k) {
        DeviceTransmitter dev(frame, k, cfg.power.budget[k]);
        std::vector<std::vector<cf>> one(1, std::vector<cf>(layout.pilots_end()));
        dev.pilot_burst(one);
        std::copy(one[0].begin(), one[0].end(), tx[k].begin() + static_cast<std::ptrdiff_t>(cfg.lead));
    }
    std::vector<cf> rx;
    rx.reserve(burst + n_ofdm * layout.symbol_len());
    through_channel(channel, tx, rx);

    WaveformReport rep;
    std::size_t start = cfg.lead;
    double cfo_rad = 0.0;
    if (!cfg.perfect_csi) {
        std::vector<SyncDetection> det;
        det.reserve(sync.max_detections(rx.size()));
        sync.process(rx.data(), rx.size(), det);
        if (det.empty())
            throw std::runtime_error("waveform round: the synchroniser found no frame in " + std::to_string(rx.size()) +
                                     " samples (SNR too low for the preamble?)");
        start = static_cast<std::size_t>(det.front().start);
        cfo_rad = det.front().cfo_rad_per_sample;
        rep.cfo_estimate = det.front().cfo;
    }
    rep.detected_start = static_cast<double>(start);
    if (start < static_cast<std::size_t>(backoff))
        throw std::runtime_error("waveform round: frame detected at sample " + std::to_string(start) +
                                 ", earlier than the timing backoff");
    // Common CFO removed from the frame start on, phase-continuous into the payload.
    CfoCorrector cfo(cfo_rad);
    const std::size_t fix_from = start - static_cast<std::size_t>(backoff);
    cfo.apply(rx.data() + fix_from, rx.data() + fix_from, rx.size() - fix_from);

    if (!cfg.perfect_csi) {
        // Refine with the residual CFO between preamble and postamble, so that every device's channel estimate
        // refers to the same phase reference whatever its slot.
        const double residual = receiver.residual_cfo(rx, start);
        cfo_rad += residual;
        rep.cfo_estimate += residual * num.fft_size / (2.0 * M_PI);
        CfoCorrector refine(residual);
        refine.apply(rx.data() + fix_from, rx.data() + fix_from, rx.size() - fix_from);
        cfo = CfoCorrector(cfo_rad, cfo.phase() + refine.phase());
    }

    // --- channel estimates: from the pilots, or the truth --------------------------------------------------
    const double ref_delay = static_cast<double>(start) - backoff - static_cast<double>(cfg.lead);
    const auto h_true = true_channels(channel, num, ref_delay);
    std::vector<cd> h_used;
    PowerControlConfig pc = cfg.power;
    pc.signal_var = symbol_powers(updates, weights, codec);
    rep.device_snr_db.resize(K);
    for (std::size_t k = 0; k < K; ++k) {
        double g = 0.0;
        for (std::size_t m = 0; m < M; ++m)
            g += std::norm(h_true[k * M + m]);
        rep.device_snr_db[k] =
            10.0 * std::log10(g / static_cast<double>(M) * pc.budget[k] / channel.config().noise_variance);
    }
    if (cfg.perfect_csi) {
        h_used = h_true;
        pc.noise_var = channel.config().noise_variance;
    } else {
        std::vector<ChannelEstimate> est;
        receiver.estimate_channels(rx, start, pc.budget, est);
        h_used.resize(K * M);
        double nv = 0.0;
        rep.device_snr_db_estimated.resize(K);
        pc.csi_error_var.resize(K);
        for (std::size_t k = 0; k < K; ++k) {
            pc.csi_error_var[k] = est[k].error_var;
            for (std::size_t m = 0; m < M; ++m)
                h_used[k * M + m] = cd(est[k].h[m]);
            nv += est[k].noise_var / static_cast<double>(K);
            rep.device_snr_db_estimated[k] = est[k].snr_db;
        }
        pc.noise_var = nv;
    }
    rep.noise_var_estimated = pc.noise_var;
    const auto plan = plan_power(h_used, K, M, pc);

    // --- payload: every device encodes, precodes and transmits at once ---------------------------------------
    std::vector<cf> sym(n_ofdm * n_data, cf{}), wave;
    std::vector<cd> b(M);
    for (std::size_t k = 0; k < K; ++k) {
        std::fill(sym.begin(), sym.end(), cf{});
        codec.encode(updates[k].data(), weights[k], sym.data());
        for (std::size_t m = 0; m < M; ++m)
            b[m] = plan.b(k, m);
        DeviceTransmitter dev(frame, k, cfg.power.budget[k]);
        dev.payload(sym, b, wave);
        tx[k].assign(wave.begin(), wave.end());
    }
    const std::size_t before = rx.size();
    through_channel(channel, tx, rx);
    cfo.apply(rx.data() + before, rx.data() + before, rx.size() - before);

    // --- receive: common phase, scaling, decoding -------------------------------------------------------------
    std::vector<cd> gain(M, cd{});
    for (std::size_t m = 0; m < M; ++m)
        for (std::size_t k = 0; k < K; ++k)
            gain[m] += h_used[k * M + m] * plan.b(k, m);
    std::vector<cf> data;
    // The payload follows the pilot burst and the gap on the common timeline; `start` is the detected frame
    // start, so the payload's first window is at start + payload_offset(0) (the lead is already in `start`).
    rep.mean_cpe_rad = receiver.payload(rx, start, n_ofdm, gain, plan.eta, data);
    estimate.resize(codec.dim);
    codec.decode(data.data(), estimate.data());

    const auto [err, ref] = sum_error(updates, weights, codec, estimate);
    rep.nmse_measured = ref > 0.0 ? err / ref : 0.0;
    const auto plan_true = cfg.perfect_csi ? plan : [&] {
        auto pt = pc;
        pt.noise_var = channel.config().noise_variance;
        pt.csi_error_var.clear();
        return plan_power(h_true, K, M, pt);
    }();
    auto pc_true = pc;
    pc_true.noise_var = channel.config().noise_variance;
    pc_true.csi_error_var.clear();
    rep.nmse_analytic = analytic_nmse(plan_true, h_true, pc_true, data_pos, n_sym, codec.scale, ref);
    // The absolute phase of the estimates is arbitrary (the receiver removes the common phase on the payload
    // pilots), so the plan used is evaluated on the true channels turned to the estimates' common phase.
    cd align = 0.0;
    for (std::size_t i = 0; i < h_true.size(); ++i)
        align += h_used[i] * std::conj(h_true[i]);
    auto h_aligned = h_true;
    if (std::abs(align) > 0.0)
        for (auto& v : h_aligned)
            v *= align / std::abs(align);
    rep.nmse_analytic_used_plan = analytic_nmse(plan, h_aligned, pc_true, data_pos, n_sym, codec.scale, ref);
    rep.truncated_fraction = plan.truncated_fraction;
    rep.ofdm_symbols = n_ofdm;
    rep.channel_uses = n_ofdm * M;
    rep.frame_samples = layout.frame_len(n_ofdm);
    rep.airtime_s = static_cast<double>(rep.frame_samples) / num.sample_rate;
    return rep;
}

}  // namespace fedlora::phy
