#include "fedlora/phy/aircomp_round.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "fedlora/phy/mimo.h"
#include "round_plan.h"

namespace fedlora::phy {

using cf = std::complex<float>;
using cd = std::complex<double>;

// ---------------------------------------------------------------------------------------------------------------
// Channels and plans

void LinkChannels::resize(std::size_t K, std::size_t R, std::size_t T, std::size_t M) {
    n_devices = K;
    n_rx = R;
    n_tx = T;
    n_carriers = M;
    h.assign(K * R * T * M, cd{});
}

std::vector<double> LinkChannels::gains() const {
    std::vector<double> g(n_devices * n_carriers, 0.0);
    for (std::size_t k = 0; k < n_devices; ++k)
        for (std::size_t r = 0; r < n_rx; ++r)
            for (std::size_t a = 0; a < n_tx; ++a)
                for (std::size_t m = 0; m < n_carriers; ++m)
                    g[k * n_carriers + m] += std::norm(at(k, r, a, m));
    return g;
}

std::size_t payload_ofdm_symbols(const AircompCodec& codec, const Numerology& num, std::size_t L) {
    const auto per = static_cast<std::size_t>(num.n_data()) * L;
    if (per == 0)
        throw std::invalid_argument("payload_ofdm_symbols: no data carriers or no streams");
    return (codec.n_symbols() + per - 1) / per;
}

namespace {

Eigen::MatrixXcd link_matrix(const LinkChannels& h, std::size_t k, std::size_t m) {
    Eigen::MatrixXcd x(static_cast<Eigen::Index>(h.n_rx), static_cast<Eigen::Index>(h.n_tx));
    for (std::size_t r = 0; r < h.n_rx; ++r)
        for (std::size_t a = 0; a < h.n_tx; ++a)
            x(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(a)) = h.at(k, r, a, m);
    return x;
}

RoundPlan single_stream_plan(const LinkChannels& h, const PowerControlConfig& pc) {
    const std::size_t K = h.n_devices, M = h.n_carriers;
    if (h.n_rx != 1 || h.n_tx != 1)
        throw std::invalid_argument("plan_round: a single-stream plan needs n_tx = n_rx = 1 (got " +
                                    std::to_string(h.n_tx) + " x " + std::to_string(h.n_rx) + ")");
    std::vector<cd> hk(K * M);
    for (std::size_t k = 0; k < K; ++k)
        for (std::size_t m = 0; m < M; ++m)
            hk[k * M + m] = h.at(k, 0, 0, m);
    const auto pp = plan_power(hk, K, M, pc);
    RoundPlan p;
    p.n_devices = K;
    p.n_carriers = M;
    p.precoders.assign(K, std::vector<cd>(M));
    for (std::size_t k = 0; k < K; ++k)
        for (std::size_t m = 0; m < M; ++m)
            p.precoders[k][m] = pp.b(k, m);
    p.combiner.resize(M);
    for (std::size_t m = 0; m < M; ++m)
        p.combiner[m] = 1.0 / std::sqrt(pp.eta[m]);
    p.eta = pp.eta;
    p.truncated_fraction = pp.truncated_fraction;
    return p;
}

RoundPlan multi_stream_plan(const LinkChannels& h, std::size_t L, const PowerControlConfig& pc, int iterations,
                            const std::vector<Eigen::MatrixXcd>* warm, std::vector<Eigen::MatrixXcd>* beamformers) {
    MimoConfig mc;
    mc.n_streams = L;
    mc.noise_var = pc.noise_var;
    mc.budget = pc.budget;
    mc.signal_var = pc.signal_var;
    mc.csi_error_var = pc.csi_error_var;
    mc.max_iterations = iterations;
    RoundPlan p;
    p.n_devices = h.n_devices;
    p.n_carriers = h.n_carriers;
    p.n_tx = h.n_tx;
    p.n_rx = h.n_rx;
    p.n_streams = L;
    p.multi_stream = true;
    p.precoders.assign(h.n_devices, std::vector<cd>(h.n_carriers * h.n_tx * L));
    p.combiner.resize(h.n_carriers * L * h.n_rx);
    p.eta.resize(h.n_carriers);
    std::vector<Eigen::MatrixXcd> hm(h.n_devices);
    Eigen::MatrixXcd prev;
    for (std::size_t m = 0; m < h.n_carriers; ++m) {
        for (std::size_t k = 0; k < h.n_devices; ++k)
            hm[k] = link_matrix(h, k, m);
        const Eigen::MatrixXcd* start = warm ? &(*warm)[m] : (m == 0 ? nullptr : &prev);
        const auto d = mimo_design(hm, mc, start);
        prev = d.A;
        if (beamformers)
            beamformers->push_back(d.A);
        p.eta[m] = d.eta;
        for (std::size_t k = 0; k < h.n_devices; ++k)
            for (std::size_t a = 0; a < h.n_tx; ++a)
                for (std::size_t l = 0; l < L; ++l)
                    p.precoders[k][(m * h.n_tx + a) * L + l] =
                        d.B[k](static_cast<Eigen::Index>(a), static_cast<Eigen::Index>(l));
        for (std::size_t l = 0; l < L; ++l)
            for (std::size_t r = 0; r < h.n_rx; ++r)
                p.combiner[(m * L + l) * h.n_rx + r] =
                    std::conj(d.A(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(l))) / std::sqrt(d.eta);
    }
    return p;
}

// (W H_k P_k)(l, l2) on carrier m.
cd link_response(const RoundPlan& p, const LinkChannels& h, std::size_t k, std::size_t m, std::size_t l,
                 std::size_t l2) {
    const std::size_t L = p.n_streams;
    cd v = 0.0;
    for (std::size_t r = 0; r < h.n_rx; ++r)
        for (std::size_t a = 0; a < h.n_tx; ++a)
            v += p.combiner[(m * L + l) * h.n_rx + r] * h.at(k, r, a, m) * p.precoders[k][(m * h.n_tx + a) * L + l2];
    return v;
}

void check_plan_fits(const RoundPlan& p, const LinkChannels& h, const char* what) {
    if (p.n_devices != h.n_devices || p.n_carriers != h.n_carriers || p.n_tx != h.n_tx || p.n_rx != h.n_rx)
        throw std::invalid_argument(std::string(what) + ": the plan is for " + std::to_string(p.n_devices) +
                                    " devices x " + std::to_string(p.n_carriers) + " carriers, the channels " +
                                    std::to_string(h.n_devices) + " x " + std::to_string(h.n_carriers));
}

}  // namespace

namespace detail {

RoundPlan plan_round(const LinkChannels& h, std::size_t n_streams, const PowerControlConfig& pc, int iterations,
                     const std::vector<Eigen::MatrixXcd>* warm, std::vector<Eigen::MatrixXcd>* beamformers) {
    if (h.h.size() != h.n_devices * h.n_rx * h.n_tx * h.n_carriers || h.n_devices == 0 || h.n_carriers == 0)
        throw std::invalid_argument("plan_round: channels hold " + std::to_string(h.h.size()) + " values for " +
                                    std::to_string(h.n_devices) + " devices x " + std::to_string(h.n_rx) + " x " +
                                    std::to_string(h.n_tx) + " antennas x " + std::to_string(h.n_carriers) +
                                    " carriers");
    return n_streams > 0 ? multi_stream_plan(h, n_streams, pc, iterations, warm, beamformers)
                         : single_stream_plan(h, pc);
}

}  // namespace detail

RoundPlan plan_round(const LinkChannels& h, std::size_t n_streams, const PowerControlConfig& pc, int mimo_iterations) {
    return detail::plan_round(h, n_streams, pc, mimo_iterations, nullptr, nullptr);
}

std::vector<cd> plan_response(const RoundPlan& p, const LinkChannels& h) {
    check_plan_fits(p, h, "plan_response");
    const std::size_t L = p.n_streams;
    std::vector<cd> g(h.n_carriers * L * L, cd{});
    for (std::size_t m = 0; m < h.n_carriers; ++m)
        for (std::size_t k = 0; k < h.n_devices; ++k)
            for (std::size_t l = 0; l < L; ++l)
                for (std::size_t l2 = 0; l2 < L; ++l2)
                    g[(m * L + l) * L + l2] += link_response(p, h, k, m, l, l2);
    return g;
}

std::vector<double> plan_stream_mse(const RoundPlan& p, const LinkChannels& h, const std::vector<double>& v,
                                    double noise_var) {
    check_plan_fits(p, h, "plan_stream_mse");
    if (v.size() != h.n_devices)
        throw std::invalid_argument("plan_stream_mse: " + std::to_string(v.size()) + " signal variances for " +
                                    std::to_string(h.n_devices) + " devices");
    const std::size_t L = p.n_streams;
    std::vector<double> e(h.n_carriers * L, 0.0);
    for (std::size_t m = 0; m < h.n_carriers; ++m)
        for (std::size_t l = 0; l < L; ++l) {
            double acc = 0.0;
            for (std::size_t r = 0; r < h.n_rx; ++r)
                acc += noise_var * std::norm(p.combiner[(m * L + l) * h.n_rx + r]);
            for (std::size_t k = 0; k < h.n_devices; ++k)
                for (std::size_t l2 = 0; l2 < L; ++l2)
                    acc += v[k] * std::norm(link_response(p, h, k, m, l, l2) - (l == l2 ? 1.0 : 0.0));
            e[m * L + l] = acc;
        }
    return e;
}

// ---------------------------------------------------------------------------------------------------------------
// Streaming receiver

void AircompReceiverConfig::validate() const {
    frame.validate();
    if (n_rx == 0)
        throw std::invalid_argument("AirComp receiver: n_rx = 0");
    if (timing_backoff > frame.numerology.cp_len)
        throw std::invalid_argument("AirComp receiver: timing_backoff = " + std::to_string(timing_backoff) +
                                    " must be -1 or in [0, cp_len = " + std::to_string(frame.numerology.cp_len) + "]");
    if (pilot_power.size() != frame.n_devices)
        throw std::invalid_argument("AirComp receiver: pilot_power has " + std::to_string(pilot_power.size()) +
                                    " values for " + std::to_string(frame.n_devices) + " devices");
    for (std::size_t k = 0; k < pilot_power.size(); ++k)
        if (!(pilot_power[k] > 0.0) || !std::isfinite(pilot_power[k]))
            throw std::invalid_argument("AirComp receiver: pilot_power[" + std::to_string(k) + "] = " +
                                        std::to_string(pilot_power[k]) + " must be finite and > 0");
}

namespace {

const AircompReceiverConfig& validated(const AircompReceiverConfig& c) {
    c.validate();
    return c;
}

SyncConfig sync_config(const AircompReceiverConfig& c) {
    SyncConfig s;
    s.numerology = c.frame.numerology;
    s.preamble_seed = c.frame.preamble_seed;
    s.threshold = c.sync_threshold;
    s.false_alarm_rate = c.sync_false_alarm_rate;
    s.kernel = c.sync_kernel;
    return s;
}

int resolved_backoff(const AircompReceiverConfig& c) {
    return c.timing_backoff < 0 ? c.frame.numerology.cp_len / 8 : c.timing_backoff;
}

constexpr std::size_t kSearchChunk = 4096;  // samples per synchroniser call while searching

}  // namespace

std::size_t receiver_min_gap(const FrameConfig& frame, std::size_t channel_delay) {
    frame.validate();
    SyncConfig sc;
    sc.numerology = frame.numerology;
    sc.preamble_seed = frame.preamble_seed;
    return Synchronizer(sc).max_latency() + channel_delay + 64;
}

AircompReceiver::AircompReceiver(const AircompReceiverConfig& cfg)
    : cfg_(validated(cfg)),
      sync_(sync_config(cfg)),
      frame_(cfg.frame, cfg.estimator, resolved_backoff(cfg)),
      R_(cfg.n_rx),
      S_(frame_.layout().symbol_len()),
      backoff_(static_cast<std::size_t>(resolved_backoff(cfg))),
      keep_(sync_.max_latency() + backoff_ + 1),
      cap_(std::max(frame_.layout().pilots_end(), keep_ + kSearchChunk) + S_ + kSearchChunk),
      pilots_end_(frame_.layout().pilots_end()),
      n_data_(static_cast<std::size_t>(cfg.frame.numerology.n_data())) {
    n_pilots_ = static_cast<std::size_t>(cfg.frame.numerology.n_occupied) - n_data_;
    const auto& fc = cfg.frame;
    const auto M = static_cast<std::size_t>(fc.numerology.n_occupied);
    buf_.assign(R_, std::vector<cf>(cap_));
    est_.resize(fc.n_devices * fc.n_tx);
    for (auto& e : est_)
        e.h.resize(M);
    csi_.h.resize(fc.n_devices, R_, fc.n_tx, M);
    csi_.error_var.assign(fc.n_devices, 0.0);
    csi_.snr_db.assign(fc.n_devices, 0.0);
    correctors_.resize(R_);
    windows_.resize(R_);
}

const char* to_string(AircompReceiver::Stage s) {
    switch (s) {
    case AircompReceiver::Stage::Searching:
        return "searching";
    case AircompReceiver::Stage::Pilots:
        return "pilots";
    case AircompReceiver::Stage::NeedPlan:
        return "need-plan";
    case AircompReceiver::Stage::Payload:
        return "payload";
    case AircompReceiver::Stage::Done:
        return "done";
    }
    return "?";
}

double AircompReceiver::mean_cpe_rad() const {
    return n_ofdm_ ? cpe_sum_ / static_cast<double>(n_ofdm_) : 0.0;
}

void AircompReceiver::make_room(std::size_t n) {
    if (len_ + n <= cap_)
        return;
    // The earliest sample each stage still needs.
    std::uint64_t keep_from = abs_;
    switch (stage_) {
    case Stage::Searching:
        keep_from = std::max<std::uint64_t>(search_from_, consumed_ > keep_ ? consumed_ - keep_ : 0);
        break;
    case Stage::Pilots:
        keep_from = f0_;
        break;
    case Stage::NeedPlan:
        keep_from = f0_ + frame_.layout().payload_offset(0);
        break;
    case Stage::Payload:
        keep_from = f0_ + frame_.layout().payload_offset(symbol_);
        break;
    case Stage::Done:
        break;
    }
    if (keep_from <= abs_)
        return;
    const auto drop = static_cast<std::size_t>(std::min<std::uint64_t>(keep_from - abs_, len_));
    for (auto& b : buf_)
        std::memmove(b.data(), b.data() + drop, (len_ - drop) * sizeof(cf));
    abs_ += drop;
    len_ -= drop;
}

std::size_t AircompReceiver::append(const std::complex<float>* const* in, std::size_t offset, std::size_t n) {
    make_room(n);
    const std::size_t m = std::min(n, cap_ - len_);
    if (m == 0)
        throw std::logic_error("AirComp receiver: sample buffer full in stage " + std::string(to_string(stage_)));
    for (std::size_t r = 0; r < R_; ++r)
        std::memcpy(buf_[r].data() + len_, in[r] + offset, m * sizeof(cf));
    sync_.process(in[0] + offset, m, [this](const SyncDetection& d) {
        if (n_pending_ < pending_.size())
            pending_[n_pending_++] = d;
        else
            ++skipped_;
    });
    len_ += m;
    consumed_ += m;
    return m;
}

bool AircompReceiver::take_detection() {
    for (std::size_t i = 0; i < n_pending_; ++i) {
        const SyncDetection& d = pending_[i];
        if (d.start < backoff_) {
            ++skipped_;
            continue;
        }
        const std::uint64_t f0 = d.start - backoff_;
        if (f0 < search_from_)
            continue;  // inside the previous frame
        if (f0 < abs_) {
            ++skipped_;
            continue;
        }
        detection_ = d;
        start_ = d.start;
        f0_ = f0;
        cfo_ = d.cfo;
        cfo_rad_ = d.cfo_rad_per_sample;
        known_timing_ = false;
        estimate_ = true;
        n_pending_ = 0;
        stage_ = Stage::Pilots;
        return true;
    }
    n_pending_ = 0;
    return false;
}

void AircompReceiver::expect_frame_at(std::uint64_t start, bool estimate) {
    if (stage_ != Stage::Searching)
        throw std::logic_error("AirComp receiver: expect_frame_at() in stage " + std::string(to_string(stage_)));
    if (start < backoff_ || start - backoff_ < abs_ || start - backoff_ < search_from_)
        throw std::invalid_argument("AirComp receiver: expected frame at sample " + std::to_string(start) +
                                    " begins before the samples kept (from " + std::to_string(abs_) + ")");
    detection_ = SyncDetection{};
    detection_.start = start;
    start_ = start;
    f0_ = start - backoff_;
    cfo_ = 0.0;
    cfo_rad_ = 0.0;
    known_timing_ = true;
    estimate_ = estimate;
    stage_ = Stage::Pilots;
}

void AircompReceiver::process_pilots() {
    const auto p0 = static_cast<std::size_t>(f0_ - abs_);
    if (!known_timing_) {
        // The detected CFO, then the residual measured on the training symbols, each from phase 0 at f0.
        for (auto& b : buf_)
            CfoCorrector(cfo_rad_, 0.0).apply(b.data() + p0, b.data() + p0, pilots_end_);
        const double residual = frame_.residual_cfo(buf_[0].data() + p0);
        for (auto& b : buf_)
            CfoCorrector(residual, 0.0).apply(b.data() + p0, b.data() + p0, pilots_end_);
        const auto d0 = static_cast<double>(frame_.layout().payload_offset(0));
        payload_phase_ = cfo_rad_ * d0 + residual * d0;
        cfo_ += residual * cfg_.frame.numerology.fft_size / (2.0 * M_PI);
        cfo_rad_ += residual;
    } else {
        payload_phase_ = 0.0;
    }
    if (estimate_) {
        const std::size_t K = cfg_.frame.n_devices, T = cfg_.frame.n_tx;
        const std::size_t M = csi_.h.n_carriers;
        double nv = 0.0;
        std::fill(csi_.error_var.begin(), csi_.error_var.end(), 0.0);
        std::fill(csi_.snr_db.begin(), csi_.snr_db.end(), 0.0);
        const double share = 1.0 / static_cast<double>(R_ * T);
        for (std::size_t r = 0; r < R_; ++r) {
            frame_.estimate_channels(buf_[r].data() + p0, cfg_.pilot_power, est_);
            for (std::size_t k = 0; k < K; ++k)
                for (std::size_t a = 0; a < T; ++a) {
                    const auto& e = est_[k * T + a];
                    for (std::size_t m = 0; m < M; ++m)
                        csi_.h.at(k, r, a, m) = cd(e.h[m]);
                    nv += e.noise_var * share / static_cast<double>(K);
                    csi_.error_var[k] += e.error_var * share;
                    csi_.snr_db[k] += e.snr_db * share;
                }
        }
        csi_.noise_var = nv;
    }
    stage_ = Stage::NeedPlan;
}

void AircompReceiver::set_plan(const std::vector<cd>& combiner, const std::vector<cd>& expected, std::size_t L,
                               std::size_t n_ofdm) {
    if (stage_ != Stage::NeedPlan)
        throw std::logic_error("AirComp receiver: set_plan() in stage " + std::string(to_string(stage_)));
    if (L == 0 || cfg_.frame.n_tx < L || R_ < L)
        throw std::invalid_argument("AirComp receiver: " + std::to_string(L) + " streams for " +
                                    std::to_string(cfg_.frame.n_tx) + " tx and " + std::to_string(R_) +
                                    " rx antennas");
    frame_.set_payload_plan(R_, L, combiner, expected);
    streams_ = L;
    n_ofdm_ = n_ofdm;
    symbol_ = 0;
    data_.resize(n_ofdm * L * n_data_);
    cpe_sum_ = 0.0;
    pilot_err_[0] = pilot_err_[1] = 0.0;
    pilot_count_ = 0;
    for (auto& c : correctors_)
        c = CfoCorrector(cfo_rad_, payload_phase_);
    stage_ = n_ofdm ? Stage::Payload : Stage::Done;
}

void AircompReceiver::process_symbol() {
    const std::uint64_t w0 = f0_ + frame_.layout().payload_offset(symbol_);
    const auto p = static_cast<std::size_t>(w0 - abs_);
    for (std::size_t r = 0; r < R_; ++r) {
        cf* w = buf_[r].data() + p;
        if (!known_timing_)
            correctors_[r].apply(w, w, S_);
        windows_[r] = w;
    }
    const std::size_t per = streams_ * n_data_;
    cpe_sum_ += std::abs(frame_.payload_symbol(windows_.data(), symbol_, data_.data() + symbol_ * per, pilot_err_));
    pilot_count_ += n_pilots_ * streams_;
    ++symbol_;
}

void AircompReceiver::next_frame() {
    if (stage_ != Stage::Done)
        throw std::logic_error("AirComp receiver: next_frame() in stage " + std::string(to_string(stage_)));
    search_from_ = f0_ + frame_.layout().payload_offset(n_ofdm_);
    stage_ = Stage::Searching;
}

void AircompReceiver::skip_frame() {
    if (stage_ == Stage::Searching)
        return;
    search_from_ = std::max(search_from_, consumed_);
    n_pending_ = 0;
    known_timing_ = false;
    stage_ = Stage::Searching;
}

std::size_t AircompReceiver::consume(const std::complex<float>* const* in, std::size_t n) {
    std::size_t done = 0;
    const auto& layout = frame_.layout();
    for (;;) {
        // Act on what is buffered.
        if (stage_ == Stage::Searching)
            take_detection();
        if (stage_ == Stage::Pilots && consumed_ >= f0_ + pilots_end_) {
            process_pilots();
            return done;
        }
        if (stage_ == Stage::Payload) {
            while (symbol_ < n_ofdm_ && consumed_ >= f0_ + layout.payload_offset(symbol_ + 1))
                process_symbol();
            if (symbol_ == n_ofdm_) {
                stage_ = Stage::Done;
                return done;
            }
        }
        if (stage_ == Stage::Done || done == n)
            return done;
        // Take what the stage can use now.
        std::size_t want = n - done;
        switch (stage_) {
        case Stage::Searching:
            want = std::min(want, kSearchChunk);
            break;
        case Stage::Pilots:
            want = std::min<std::uint64_t>(want, f0_ + pilots_end_ - consumed_);
            break;
        case Stage::NeedPlan: {
            const std::uint64_t b = f0_ + layout.payload_offset(0);
            if (consumed_ >= b)
                return done;
            want = std::min<std::uint64_t>(want, b - consumed_);
            break;
        }
        case Stage::Payload:
            want = std::min<std::uint64_t>(want, f0_ + layout.payload_offset(symbol_ + 1) - consumed_);
            break;
        case Stage::Done:
            return done;
        }
        done += append(in, done, want);
    }
}

}  // namespace fedlora::phy
