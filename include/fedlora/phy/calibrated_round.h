// One single-stream AirComp round at waveform level in which every device's transmit samples (pilot burst and
// payload) pass through its TransmitCorrector (calibration.h) before the channel: the check that a calibration
// brings AirComp back to the unimpaired case. Built from the same public pieces as the project's round
// (DeviceTransmitter, MultiUserChannel, Synchronizer, FrameReceiver, plan_power); without corrections it is the
// plain round, so "with" and "without" differ only in the corrections.
//
//   devices: DeviceTransmitter::pilot_burst → TransmitCorrector → channel (all at once, from sample `lead`)
//   server:  Synchronizer (frame start, common CFO) → residual CFO on the training symbols → channel estimates
//            → plan_power (policy of cfg.power, estimated CSI and noise) → precoders to the devices
//   devices: encode, DeviceTransmitter::payload(precoders) → TransmitCorrector → channel
//   server:  FrameReceiver::payload (common phase removal on the payload pilots, 1/√η) → decode → NMSE
#pragma once

#include <cstddef>
#include <vector>

#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/calibration.h"
#include "fedlora/phy/chanest.h"
#include "fedlora/phy/channel.h"
#include "fedlora/phy/frame.h"
#include "fedlora/phy/power_control.h"

namespace fedlora::phy {

struct CalibratedRoundConfig {
    FrameConfig frame;                 // n_tx = 1; numerology with pilot_spacing; n_devices = K
    PowerControlConfig power;          // budgets P_k (phy units: per-carrier power of the device's samples)
    ChannelEstimatorConfig estimator;
    int timing_backoff = -1;           // FFT windows start this early; -1: cp_len / 8
    std::size_t lead = 256;            // idle samples before the frame (unknown to the receiver)
    // Per device (K entries), applied to its samples; empty: no correction.
    std::vector<TransmitCorrection> corrections;
    void validate(std::size_t n_devices) const;  // throws std::invalid_argument naming the field
};

struct CalibratedRoundReport {
    double nmse_measured = 0.0;       // ‖ŝ − s‖² / ‖s‖² of the weighted sum
    double detected_start = 0.0;      // frame start found by the synchroniser, from the round's first sample
    double cfo_estimate = 0.0;        // common CFO (detected + residual), subcarrier spacings
    double mean_cpe_rad = 0.0;        // mean |common phase error| removed per payload symbol
    double truncated_fraction = 0.0;
    // Per device: the mean per-carrier power of its payload samples as planned, Σ_m |b_k[m]|² v_k / M, before the
    // corrector (what its budget P_k limits).
    std::vector<double> tx_power;
    std::vector<double> snr_db_estimated;  // per device, from its pilots
};

// Throws std::runtime_error if the synchroniser finds no frame, std::invalid_argument on inconsistent inputs (the
// channel must have K devices, one antenna each, one receive antenna and the numerology's sample rate).
CalibratedRoundReport aircomp_round_calibrated(const std::vector<std::vector<float>>& updates,
                                               const std::vector<double>& weights, const AircompCodec& codec,
                                               MultiUserChannel& channel, const CalibratedRoundConfig& cfg,
                                               std::vector<float>& estimate);

}  // namespace fedlora::phy
