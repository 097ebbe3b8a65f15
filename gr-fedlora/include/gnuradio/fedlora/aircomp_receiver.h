/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_AIRCOMP_RECEIVER_H
#define INCLUDED_FEDLORA_AIRCOMP_RECEIVER_H

#include <gnuradio/fedlora/api.h>
#include <gnuradio/sync_block.h>

#include <string>
#include <vector>

namespace gr {
namespace fedlora {

/*!
 * \brief The server's AirComp receiver: samples of every receive antenna in; plan, CSI, quality and the
 * aggregate out as messages.
 * \ingroup fedlora
 *
 * Input r is receive antenna r, a continuous stream. Per frame: Schmidl & Cox synchronisation on antenna 0,
 * CFO correction (detected, then the residual measured on the training symbols), channel estimation of every
 * device antenna on every occupied carrier; then, with the round's information, the power plan (single stream:
 * the policy; n_streams >= 1: zero-forcing precoders and receive beamformers per carrier), which leaves on
 * "plan" for the devices; then each payload symbol is corrected, combined, freed of its common phase error and
 * scaled, and the decoded weighted sum Σ p_k x_k leaves on "aggregate". The DSP is
 * fedlora::phy::AircompReceiver and plan_round, the pieces aircomp_round_waveform runs.
 *
 * Message port "round" (in): one dict per round, in frame order: "round" (integer), "dim" (update length),
 * "scale" (c), "weights" and "rms" (K numbers each: aggregation weights and the updates' RMS the devices
 * reported), optionally "support" (ascending indices). The n-th detected frame takes the n-th round dict.
 *
 * Message ports (out), PMT dicts with "round":
 *  - "plan": "n_devices", "n_carriers", "n_tx", "n_rx", "n_streams", "n_ofdm", "scale", "eta" (f64, per
 *    carrier), "precoders" (c64, [((k·M + m)·n_tx + a)·L + l]), "truncated_fraction".
 *  - "csi": "frame_start", "n_devices", "n_carriers", "gain" (f64 [k·M + m]: |ĥ_k[m]|² summed over the device's
 *    links), "snr_db" (f64 [k·M + m]: per carrier SNR at pilot power, mean over links), "device_snr_db" (f64,
 *    K), "error_var" (f64, K: CSI error variance), "noise_var".
 *  - "quality": "pilot_mse" (mean |z − G p|² measured on the payload pilots: noise plus plan mismatch at unit
 *    pilot power), "nmse_pilots" (pilot_mse over Σ_k v_k, the expected energy of the sum: a measured NMSE
 *    proxy), "nmse_predicted" (the plan's MSE on the estimated channels over the same energy),
 *    "truncated_fraction", "cfo" (subcarrier spacings), "detected_start" (sample index), "mean_cpe_rad",
 *    "noise_var", "skipped_detections".
 *  - "aggregate": a PDU (meta: round, dim, scale; f32 vector of dim values, zero off the support).
 *
 * Stream output 0 (optional): antenna 0's samples, unchanged, with every "csi" and "quality" dict also as a
 * stream tag (key csi / quality) on the last sample consumed when it was published (on the first sample of
 * the next work() call if it was published between calls).
 *
 * Sample buffers are sized in the constructor; max_dim bounds the update length.
 */
class FEDLORA_API aircomp_receiver : virtual public gr::sync_block
{
public:
    typedef std::shared_ptr<aircomp_receiver> sptr;

    /*!
     * \param n_devices K
     * \param n_tx antennas per device N_t
     * \param n_rx receive antennas N_r
     * \param fft_size FFT size
     * \param cp_len cyclic prefix length
     * \param n_occupied occupied subcarriers M
     * \param pilot_spacing a payload pilot every pilot_spacing occupied carriers
     * \param sample_rate sample rate (S/s)
     * \param gap samples between the pilot section and the payload (as the devices use it)
     * \param pilot_repeats pilot symbols per device antenna
     * \param reference_interval pilot slots between training symbols
     * \param n_streams 0: single stream with the power-control policy; L >= 1: multi-stream AirComp
     * \param budget power budgets P_k (one value or K)
     * \param policy truncated, mmse or full (single stream)
     * \param g_th truncation threshold (truncated)
     * \param estimator ls, dft, lmmse or sparse
     * \param timing_backoff FFT windows start this early, in samples (-1: cp_len / 8)
     * \param mimo_iterations Riemannian iterations per carrier (multi-stream)
     * \param max_dim largest update length
     */
    static sptr make(int n_devices = 2,
                     int n_tx = 1,
                     int n_rx = 1,
                     int fft_size = 256,
                     int cp_len = 32,
                     int n_occupied = 200,
                     int pilot_spacing = 20,
                     double sample_rate = 15.36e6,
                     int gap = 2048,
                     int pilot_repeats = 2,
                     int reference_interval = 8,
                     int n_streams = 0,
                     const std::vector<double>& budget = std::vector<double>{ 1.0 },
                     const std::string& policy = "truncated",
                     double g_th = 0.1,
                     const std::string& estimator = "sparse",
                     int timing_backoff = -1,
                     int mimo_iterations = 60,
                     int max_dim = 1 << 16);

    //! Frames received completely (aggregates published).
    virtual unsigned long frames() const = 0;

    //! Where the receiver is in the current frame: "searching" (for a preamble), "pilots", "need-plan" (waits
    //! for the round dict), "payload" or "done". With the samples it has read (nitems_read), this tells a
    //! program that feeds it a known amount of signal whether a frame was found there.
    virtual std::string stage() const = 0;
};

} // namespace fedlora
} // namespace gr

#endif /* INCLUDED_FEDLORA_AIRCOMP_RECEIVER_H */
