#include "fedlora/phy/calibrated_round.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "fedlora/phy/sync.h"

namespace fedlora::phy {

namespace {
using cf = std::complex<float>;
using cd = std::complex<double>;
}  // namespace

void CalibratedRoundConfig::validate(std::size_t K) const {
    frame.validate();
    if (frame.n_devices != K)
        throw std::invalid_argument("calibrated round: frame.n_devices = " + std::to_string(frame.n_devices) +
                                    " for " + std::to_string(K) + " updates");
    if (frame.n_tx != 1)
        throw std::invalid_argument("calibrated round: frame.n_tx = " + std::to_string(frame.n_tx) +
                                    " (single stream: one antenna per device)");
    power.validate(K);
    if (!corrections.empty() && corrections.size() != K)
        throw std::invalid_argument("calibrated round: " + std::to_string(corrections.size()) +
                                    " corrections for " + std::to_string(K) + " devices");
    if (timing_backoff < -1 || timing_backoff > frame.numerology.cp_len)
        throw std::invalid_argument("calibrated round: timing_backoff = " + std::to_string(timing_backoff) +
                                    " must be -1 or in [0, cp_len]");
}

CalibratedRoundReport aircomp_round_calibrated(const std::vector<std::vector<float>>& updates,
                                               const std::vector<double>& weights, const AircompCodec& codec,
                                               MultiUserChannel& channel, const CalibratedRoundConfig& cfg,
                                               std::vector<float>& estimate) {
    codec.validate();
    const std::size_t K = updates.size();
    if (K == 0 || weights.size() != K)
        throw std::invalid_argument("calibrated round: " + std::to_string(K) + " updates and " +
                                    std::to_string(weights.size()) + " weights");
    cfg.validate(K);
    for (std::size_t k = 0; k < K; ++k)
        if (updates[k].size() != codec.dim)
            throw std::invalid_argument("calibrated round: update " + std::to_string(k) + " has " +
                                        std::to_string(updates[k].size()) + " entries, expected " +
                                        std::to_string(codec.dim));
    const auto& num = cfg.frame.numerology;
    if (static_cast<std::size_t>(channel.n_devices()) != K || channel.n_tx() != 1 || channel.n_rx() != 1)
        throw std::invalid_argument("calibrated round: the channel must have " + std::to_string(K) +
                                    " single-antenna devices and one receive antenna");
    if (std::abs(channel.config().sample_rate - num.sample_rate) > 1e-9 * num.sample_rate)
        throw std::invalid_argument("calibrated round: channel sample rate differs from the numerology's");

    const std::size_t M = static_cast<std::size_t>(num.n_occupied);
    const std::size_t S = static_cast<std::size_t>(num.symbol_len());
    const int backoff = cfg.timing_backoff < 0 ? num.cp_len / 8 : cfg.timing_backoff;
    const auto data_pos = num.data_positions();
    const std::size_t n_data = data_pos.size();
    const std::size_t n_ofdm = (codec.n_symbols() + n_data - 1) / n_data;

    std::vector<TransmitCorrector> corr;
    std::size_t lmax = 0, tmax = 0;
    for (const auto& c : cfg.corrections) {
        corr.emplace_back(c, num.sample_rate);
        lmax = std::max(lmax, corr.back().lead());
        tmax = std::max(tmax, corr.back().tail());
    }

    SyncConfig sc;
    sc.numerology = num;
    sc.preamble_seed = cfg.frame.preamble_seed;
    Synchronizer sync(sc);

    // The gap holds the corrected pilot burst's tail and the corrected payload's head, and lets the receiver
    // see the whole pilot section (channel delays, synchroniser latency) before the payload starts.
    FrameConfig frame = cfg.frame;
    frame.gap = std::max(frame.gap, lmax + tmax + sync.max_latency() + 4 * S);
    const FrameLayout layout(frame);
    const std::size_t pilots_end = layout.pilots_end();
    const auto base = static_cast<std::int64_t>(channel.position());
    const std::int64_t frame_at = base + static_cast<std::int64_t>(cfg.lead);
    std::vector<double> pilot_power = cfg.power.budget;

    auto place = [&](std::size_t k, const std::vector<cf>& x, std::int64_t x_at, std::vector<cf>& out,
                     std::int64_t out_at) {
        if (corr.empty()) {
            const std::int64_t off = x_at - out_at;
            for (std::size_t i = 0; i < x.size(); ++i)
                out[static_cast<std::size_t>(off) + i] = x[i];
        } else {
            corr[k].apply(x.data(), x.size(), x_at, out.data(), out.size(), out_at);
        }
    };
    auto through = [&](const std::vector<std::vector<cf>>& tx, std::vector<cf>& rx) {
        std::vector<const cf*> in(K);
        for (std::size_t k = 0; k < K; ++k)
            in[k] = tx[k].data();
        const std::size_t at = rx.size(), n = tx.front().size();
        rx.resize(at + n);
        cf* out = rx.data() + at;
        channel.process(in.data(), &out, n);
    };

    // --- pilots ----------------------------------------------------------------------------------------------
    const std::size_t len1 = cfg.lead + pilots_end + frame.gap - lmax;
    std::vector<std::vector<cf>> tx(K, std::vector<cf>(len1, cf{}));
    std::vector<std::vector<cf>> one(1, std::vector<cf>(pilots_end));
    for (std::size_t k = 0; k < K; ++k) {
        DeviceTransmitter dev(frame, k, pilot_power[k]);
        dev.pilot_burst(one);
        place(k, one[0], frame_at, tx[k], base);
    }
    std::vector<cf> rx;
    rx.reserve(len1 + lmax + tmax + n_ofdm * S + 4 * S);
    through(tx, rx);

    // --- server: frame start, CFO, channel estimates ------------------------------------------------------
    std::vector<SyncDetection> dets;
    dets.reserve(sync.max_detections(rx.size()));
    sync.process(rx.data(), rx.size(), dets);
    if (dets.empty())
        throw std::runtime_error("calibrated round: the synchroniser found no frame in " + std::to_string(rx.size()) +
                                 " samples");
    const auto start = static_cast<std::size_t>(dets.front().start);
    if (start < static_cast<std::size_t>(backoff) || start - backoff + pilots_end > rx.size())
        throw std::runtime_error("calibrated round: the frame detected at " + std::to_string(start) +
                                 " does not fit in the received pilot section");
    const std::size_t f0 = start - backoff;
    FrameReceiver receiver(frame, cfg.estimator, backoff);
    std::vector<cf> rxc(rx.size());
    const double w0 = dets.front().cfo_rad_per_sample;
    correct_cfo(rx.data() + f0, rxc.data() + f0, rx.size() - f0, w0, 0.0);
    const double w1 = receiver.residual_cfo(rxc, start);
    const double w = w0 + w1;
    correct_cfo(rx.data() + f0, rxc.data() + f0, rx.size() - f0, w, 0.0);
    std::vector<ChannelEstimate> est;
    receiver.estimate_channels(rxc, start, pilot_power, est);

    CalibratedRoundReport rep;
    rep.detected_start = static_cast<double>(start);
    rep.cfo_estimate = w * num.fft_size / (2.0 * M_PI);
    std::vector<cd> h(K * M);
    PowerControlConfig pc = cfg.power;
    pc.signal_var = symbol_powers(updates, weights, codec);
    pc.noise_var = 0.0;
    pc.csi_error_var.assign(K, 0.0);
    for (std::size_t k = 0; k < K; ++k) {
        for (std::size_t m = 0; m < M; ++m)
            h[k * M + m] = cd(est[k].h[m]);
        pc.noise_var += est[k].noise_var / static_cast<double>(K);
        pc.csi_error_var[k] = est[k].error_var;
        rep.snr_db_estimated.push_back(est[k].snr_db);
    }
    const PowerPlan plan = plan_power(h, K, M, pc);
    std::vector<cd> combiner(M), expected(M);
    for (std::size_t m = 0; m < M; ++m) {
        combiner[m] = 1.0 / std::sqrt(plan.eta[m]);
        cd g = 0.0;
        for (std::size_t k = 0; k < K; ++k)
            g += h[k * M + m] * plan.b(k, m);
        expected[m] = combiner[m] * g;
    }
    rep.truncated_fraction = plan.truncated_fraction;
    rep.tx_power.assign(K, 0.0);
    for (std::size_t k = 0; k < K; ++k) {
        for (std::size_t m = 0; m < M; ++m)
            rep.tx_power[k] += std::norm(plan.b(k, m)) * pc.signal_var[k] / static_cast<double>(M);
    }

    // --- payload ---------------------------------------------------------------------------------------------
    const std::size_t len2 = lmax + n_ofdm * S + tmax + 4 * S;
    const std::int64_t pass2_at = base + static_cast<std::int64_t>(len1);
    const std::int64_t payload_at = frame_at + static_cast<std::int64_t>(layout.payload_offset(0));
    std::vector<cf> sym(n_ofdm * n_data);
    std::vector<cd> prec(M);
    std::vector<std::vector<cf>> wave;
    for (std::size_t k = 0; k < K; ++k) {
        std::fill(sym.begin(), sym.end(), cf{});
        codec.encode(updates[k].data(), weights[k], sym.data());
        for (std::size_t m = 0; m < M; ++m)
            prec[m] = plan.b(k, m);
        DeviceTransmitter dev(frame, k, pilot_power[k]);
        dev.payload(sym, 1, prec, wave);
        tx[k].assign(len2, cf{});
        place(k, wave[0], payload_at, tx[k], pass2_at);
    }
    through(tx, rx);

    rxc.resize(rx.size());
    correct_cfo(rx.data() + f0, rxc.data() + f0, rx.size() - f0, w, 0.0);
    std::vector<cf> grid;
    rep.mean_cpe_rad = receiver.payload({rxc}, start, n_ofdm, 1, combiner, expected, grid);
    estimate.resize(codec.dim);
    codec.decode(grid.data(), estimate.data());
    const auto [err, ref] = sum_error(updates, weights, codec, estimate);
    rep.nmse_measured = ref > 0.0 ? err / ref : 0.0;
    return rep;
}

}  // namespace fedlora::phy
