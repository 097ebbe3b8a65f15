// One whole AirComp round at waveform level, single- or multi-stream:
//   devices send preamble + time-orthogonal pilots → multi-user channel → server synchronises (Schmidl & Cox),
//   corrects the common CFO, estimates every device's channel per subcarrier → plans power from those estimates
//   (and the measured noise) → devices precode and send their encoded updates at once → channel sums them →
//   server removes the common phase error on the payload pilots, scales by 1/√η and decodes the weighted sum.
// The report puts the measured NMSE next to the policy's analytic NMSE (plan from the true channel, evaluated on
// it) and the analytic NMSE of the plan actually used (from estimated CSI, evaluated on the true channel).
// The round is assembled from the phases of aircomp_round.h (DeviceTransmitter bursts, the streaming
// AircompReceiver, plan_round), the same pieces the gr-fedlora blocks run, so a flowgraph of those blocks with the
// same inputs and channel seed gives the same estimate (docs/gr-fedlora.md).
#pragma once

#include <cstddef>
#include <random>
#include <vector>

#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/calibration.h"
#include "fedlora/phy/chanest.h"
#include "fedlora/phy/channel.h"
#include "fedlora/phy/frame.h"
#include "fedlora/phy/power_control.h"

namespace fedlora::phy {

struct WaveformRoundConfig {
    FrameConfig frame;                  // n_devices = K, n_tx = N_t; numerology with pilot_spacing
    // 0: single stream (N_t = N_r = 1) with the power-control policy of `power`. L ≥ 1: multi-stream AirComp with
    // zero-forcing precoders and a receive beamformer per subcarrier (mimo.h), N_t ≥ L, N_r ≥ L.
    std::size_t n_streams = 0;
    int mimo_iterations = 60;           // Riemannian iterations per subcarrier (warm-started from the previous one)
    PowerControlConfig power;           // budgets P_k (per subcarrier, all antennas); policy, g_th when single-stream
    ChannelEstimatorConfig estimator;
    int timing_backoff = -1;            // FFT windows start this early; -1: cp_len / 8
    std::size_t lead = 0;               // idle samples before the frame (unknown to the receiver)
    bool perfect_csi = false;           // plan from the simulator's true channels, perfect timing, no sync
    // Per device (K entries; empty: none): the calibration's correction of its radio (calibration.h), applied to
    // every antenna's samples of the waveform round as the gr-fedlora aircomp_transmitter applies it: each burst
    // keeps its length and starts TransmitCorrector::lead() samples earlier (the pilot burst padded with zeros up
    // to the payload, the payload followed by one symbol of zeros). The gap is then raised to at least
    // receiver_min_gap + the largest lead + the largest tail (correction_span), and `lead` must be at least the
    // largest lead. The effective round ignores them (it models neither timing nor CFO).
    std::vector<TransmitCorrection> corrections;
    // Noise variance the plan uses: the receiver's estimate (from the pilots) unless perfect_csi, where the
    // channel's configured noise_variance is used.
};

struct WaveformReport : AircompReport {
    double nmse_analytic_used_plan = 0.0;  // plan from the CSI used, evaluated on the true channel
    double detected_start = 0.0;           // frame start found by the synchroniser (samples)
    double cfo_estimate = 0.0;             // common CFO, subcarrier spacings
    double mean_cpe_rad = 0.0;             // mean |common phase error| removed per payload symbol
    std::vector<double> device_snr_db_estimated;  // from the pilots (device_snr_db holds the true values)
    // The CSI the plan used, as the receiver reports it: |ĥ_k[m]|² summed over the device's links (rx × tx
    // antennas), row-major [k · M + m] over the M occupied carriers (the truth when perfect_csi).
    std::vector<double> csi_gain;
    double noise_var_estimated = 0.0;
    std::size_t frame_samples = 0;         // preamble + pilots + gap + payload
    double airtime_s = 0.0;                // frame_samples / sample_rate
};

// Runs one round through `channel` (which keeps its state: rounds run back to back on one timeline). The channel
// must have K devices, N_t tx antennas per device and the numerology's sample rate (N_r = 1 when single-stream). Throws std::runtime_error if the
// synchroniser finds no frame, std::invalid_argument on inconsistent inputs.
// The same round without waveforms, for fast sweeps ("aircomp-analytic"): the simulator's true channels on every
// occupied carrier carry the encoded symbols, y = Σ_k H_k P_k s_k + n per carrier and receive antenna, with the same
// plans (policy, or MIMO design) as the waveform round and the same report. With perfect_csi false the plan sees the
// true channels plus estimation errors CN(0, ε_k²) of the size the configured estimator leaves: ε_k² = σ² r /
// (M R p_k), p_k the per-antenna pilot power, R the pilot repeats and r = M (ls), the delay window (dft, lmmse) or
// the number of taps of the true impulse response (sparse). Synchronisation is taken as perfect; the channel's state
// is read, not advanced (call new_realisation() between rounds for block fading).
WaveformReport aircomp_round_effective(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                       const AircompCodec& codec, MultiUserChannel& channel,
                                       const WaveformRoundConfig& cfg, std::mt19937_64& rng,
                                       std::vector<float>& estimate);

WaveformReport aircomp_round_waveform(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                      const AircompCodec& codec, MultiUserChannel& channel,
                                      const WaveformRoundConfig& cfg, std::vector<float>& estimate);

}  // namespace fedlora::phy
