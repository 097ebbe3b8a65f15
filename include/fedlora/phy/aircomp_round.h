// The phases of one waveform-level AirComp round, as separate steps: what the server's receiver measures, what it
// decides, and the streaming receiver that runs both ends of its side. aircomp_round_waveform (aircomp_waveform.h)
// runs a whole round in one process from these pieces; the gr-fedlora blocks run the same pieces on a flowgraph:
//
//   device   DeviceTransmitter::pilot_burst (frame.h)                        ─┐
//   server   AircompReceiver: sync, CFO, channel estimation → RoundCsi         │ pilots, gap
//            plan_round(csi) → RoundPlan (precoders to the devices)            │
//   device   AircompCodec::encode + DeviceTransmitter::payload(plan)           │ payload
//   server   AircompReceiver::set_plan, payload → data grid → AircompCodec::decode
//
// Timeline of the server (docs/math.md, "Flowgraph round"): the synchroniser reports the frame start t0; the frame
// grid starts at f0 = t0 − timing_backoff. The pilot section [f0, f0 + pilots_end) is corrected for the detected CFO
// and then for the residual CFO measured on its training symbols (two passes, each from phase 0 at f0), and the
// channels are estimated from it. Payload symbol i is read from [f0 + payload_offset(i), + symbol_len), corrected
// with the total CFO, phase-continuous from phase ω·payload_offset(0) at f0 + payload_offset(0), one symbol per call.
// Every step works on whole, fixed sample ranges of the frame, so the results do not depend on how the samples
// arrive (in one buffer or in pieces).
#pragma once

#include <array>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/chanest.h"
#include "fedlora/phy/frame.h"
#include "fedlora/phy/power_control.h"
#include "fedlora/phy/sync.h"

namespace fedlora::phy {

// Channels of every (device, rx, tx) link on the M occupied carriers: h[((k·R + r)·T + a)·M + m].
struct LinkChannels {
    std::size_t n_devices = 0, n_rx = 0, n_tx = 0, n_carriers = 0;
    std::vector<std::complex<double>> h;

    void resize(std::size_t K, std::size_t R, std::size_t T, std::size_t M);
    std::complex<double>& at(std::size_t k, std::size_t r, std::size_t a, std::size_t m) {
        return h[((k * n_rx + r) * n_tx + a) * n_carriers + m];
    }
    std::complex<double> at(std::size_t k, std::size_t r, std::size_t a, std::size_t m) const {
        return h[((k * n_rx + r) * n_tx + a) * n_carriers + m];
    }
    // Σ over the device's links of |h_k[m]|², [k · M + m]: the per-carrier CSI a receiver reports.
    std::vector<double> gains() const;
};

// What the server measured from the pilots of one frame.
struct RoundCsi {
    LinkChannels h;                  // estimates ĥ (per-antenna pilot amplitude divided out)
    double noise_var = 0.0;          // σ² per carrier, mean over links
    std::vector<double> error_var;   // ε_k² per device, mean over its links
    std::vector<double> snr_db;      // per device: per-carrier receive SNR at pilot power, mean over its links
};

// What the server decides for a round. Single-stream is n_streams = n_tx = n_rx = 1 with precoder b_k[m] and
// combiner 1/√η_m.
struct RoundPlan {
    std::size_t n_devices = 0, n_carriers = 0, n_tx = 1, n_rx = 1, n_streams = 1;
    bool multi_stream = false;                            // zero-forcing MIMO design (mimo.h) instead of a policy
    std::vector<std::vector<std::complex<double>>> precoders;  // per device: [(m·T + a)·L + l]
    std::vector<std::complex<double>> combiner;           // [(m·L + l)·R + r]
    std::vector<double> eta;                              // η_m per carrier
    double truncated_fraction = 0.0;                      // single-stream: (device, carrier) pairs silenced
};

// OFDM symbols a payload of the codec's symbols takes on L streams of the numerology's data carriers.
std::size_t payload_ofdm_symbols(const AircompCodec& codec, const Numerology& num, std::size_t n_streams);

// Plans the round for channels h: n_streams = 0 plans a single stream with pc's policy (n_tx = n_rx = 1 required);
// n_streams = L ≥ 1 designs zero-forcing precoders and a receive beamformer per carrier (mimo.h), warm-started from
// the previous carrier, with mimo_iterations Riemannian iterations. pc.signal_var, noise_var and csi_error_var are
// used as given. Throws std::invalid_argument as plan_power / mimo_design do.
RoundPlan plan_round(const LinkChannels& h, std::size_t n_streams, const PowerControlConfig& pc, int mimo_iterations);

// G[m] = W[m] Σ_k H_k[m] P_k[m] (L × L, [(m·L + l)·L + l']): the response the plan gives on channels h (the
// receiver's expected response on the estimated channels, for common-phase removal).
std::vector<std::complex<double>> plan_response(const RoundPlan& plan, const LinkChannels& h);

// Expected error energy per (carrier, stream), [m·L + l], of the plan on channels h with independent symbols of
// power v_k and noise σ²: Σ_k v_k Σ_l' |(W H_k P_k)(l, l') − δ(l, l')|² + σ² Σ_r |W(l, r)|².
std::vector<double> plan_stream_mse(const RoundPlan& plan, const LinkChannels& h, const std::vector<double>& v,
                                    double noise_var);

// A gap with which the server's receiver has detected the frame and measured its pilots from the samples before the
// payload alone, whatever the length of the pilot section: the synchroniser's detection latency (max_latency(),
// sync.h) plus channel_delay (the channel's delay and any timing offset, in samples) plus 64. (What is needed is
// gap ≥ latency + delay − pilots_end and gap ≥ delay − timing_backoff; docs/math.md, "The AirComp round in phases".)
std::size_t receiver_min_gap(const FrameConfig& frame, std::size_t channel_delay);

struct AircompReceiverConfig {
    FrameConfig frame;                // as the devices send it, gap included
    std::size_t n_rx = 1;             // receive antennas
    ChannelEstimatorConfig estimator;
    int timing_backoff = -1;          // FFT windows start this early (samples, inside the CP); -1: cp_len / 8
    std::vector<double> pilot_power;  // per device: its per-antenna pilot power (P_k / N_t)
    // Synchroniser thresholds and metric kernel (SyncConfig); its numerology and preamble seed are the frame's.
    double sync_threshold = 0.0;
    double sync_false_alarm_rate = 1e-6;
    std::string sync_kernel = "auto";
    void validate() const;            // throws std::invalid_argument naming the field
};

// The server's side of rounds on a continuous stream of samples (every receive antenna), one frame after another.
//
//   Searching  the synchroniser runs on antenna 0; the last detection-latency + backoff samples are kept
//   Pilots     a frame was detected at t0: samples are kept from f0 = t0 − backoff until the pilot section is in;
//              then CFO (detected + residual) correction and channel estimation → csi()
//   NeedPlan   samples are taken up to the payload's first window f0 + payload_offset(0), then consume() stops
//              until set_plan()
//   Payload    each payload symbol is corrected, demodulated and combined as soon as its window is in
//   Done       data() holds the frame's data grid until next_frame()
//
// consume() returns at every change to NeedPlan or Done, so the caller can act there. Buffers are sized in the
// constructor; consume() does not allocate (set_plan() sizes the data grid for its symbol count once).
// Detections inside a frame are ignored; a frame whose start would precede the samples kept is skipped (counted).
class AircompReceiver {
public:
    enum class Stage { Searching, Pilots, NeedPlan, Payload, Done };

    explicit AircompReceiver(const AircompReceiverConfig& cfg);

    // in[r]: n samples of antenna r, the stream's next ones. Returns how many were consumed (all n unless the
    // stage became NeedPlan or Done, or is NeedPlan at the payload's first window).
    std::size_t consume(const std::complex<float>* const* in, std::size_t n);

    // The next frame starts at absolute sample `start` with no CFO (a simulator's perfect timing): its detection
    // and CFO estimation are skipped. With estimate = false the channels are not estimated (csi() stays empty).
    // Only while Searching, and while the sample at start − timing_backoff is still held (not yet dropped from the
    // detection history); throws std::logic_error / std::invalid_argument otherwise.
    void expect_frame_at(std::uint64_t start, bool estimate = true);

    // NeedPlan → Payload: the combiner and expected response (plan_response on the estimated channels) of a plan
    // for n_streams streams and n_ofdm payload symbols.
    void set_plan(const std::vector<std::complex<double>>& combiner, const std::vector<std::complex<double>>& expected,
                  std::size_t n_streams, std::size_t n_ofdm);
    // Done → Searching; detection resumes after this frame.
    void next_frame();
    // Abandons the current frame in any stage (e.g. a round that could not be planned): detection resumes with the
    // samples not consumed yet.
    void skip_frame();

    Stage stage() const { return stage_; }
    const RoundCsi& csi() const { return csi_; }
    // Absolute index of the detected frame start t0; CFO in subcarrier spacings (detected + residual) and in
    // radians per sample; the detection itself (zero for an expected frame).
    std::uint64_t frame_start() const { return start_; }
    double cfo() const { return cfo_; }
    double cfo_rad() const { return cfo_rad_; }
    const SyncDetection& detection() const { return detection_; }
    // Data grid of the frame (n_ofdm · L · n_data values, resource-grid order), complete when Done.
    const std::vector<std::complex<float>>& data() const { return data_; }
    double mean_cpe_rad() const;
    // Over the payload pilots after common-phase removal, z the combined value and G p the expected sum of the
    // devices' unit-power pilots: the mean error energy E|z − G p|² (noise plus plan mismatch, measured), and
    // Σ|z − G p|² / Σ|G p|².
    double pilot_mse() const { return pilot_count_ ? pilot_err_[0] / static_cast<double>(pilot_count_) : 0.0; }
    double pilot_nmse() const { return pilot_err_[1] > 0.0 ? pilot_err_[0] / pilot_err_[1] : 0.0; }
    std::uint64_t samples() const { return consumed_; }
    std::uint64_t skipped_detections() const { return skipped_; }
    std::size_t max_latency() const { return sync_.max_latency(); }
    const FrameLayout& layout() const { return frame_.layout(); }
    const AircompReceiverConfig& config() const { return cfg_; }

private:
    // in[r] + offset .. + n into buf_; returns how many
    std::size_t append(const std::complex<float>* const* in, std::size_t offset, std::size_t n);
    void make_room(std::size_t n);
    bool take_detection();
    void process_pilots();
    void process_symbol();

    AircompReceiverConfig cfg_;
    Synchronizer sync_;
    FrameReceiver frame_;
    std::size_t R_, S_, backoff_, keep_, cap_, pilots_end_, n_data_;
    Stage stage_ = Stage::Searching;
    std::vector<std::vector<std::complex<float>>> buf_;  // per antenna, absolute [abs_, abs_ + len_)
    std::uint64_t abs_ = 0, consumed_ = 0;
    std::size_t len_ = 0;
    std::array<SyncDetection, 16> pending_{};
    std::size_t n_pending_ = 0;
    std::uint64_t search_from_ = 0, skipped_ = 0;
    bool expected_ = false, expect_estimate_ = true, estimate_ = true, known_timing_ = false;
    std::uint64_t expected_start_ = 0;
    SyncDetection detection_{};
    std::uint64_t start_ = 0, f0_ = 0;
    double cfo_ = 0.0, cfo_rad_ = 0.0, payload_phase_ = 0.0;
    std::vector<ChannelEstimate> est_;
    RoundCsi csi_;
    std::vector<CfoCorrector> correctors_;
    std::vector<const std::complex<float>*> windows_;
    std::size_t streams_ = 1, n_ofdm_ = 0, symbol_ = 0;
    std::vector<std::complex<float>> data_;
    double cpe_sum_ = 0.0;
    double pilot_err_[2] = {0.0, 0.0};
    std::size_t pilot_count_ = 0, n_pilots_ = 0;
};

const char* to_string(AircompReceiver::Stage s);

}  // namespace fedlora::phy
