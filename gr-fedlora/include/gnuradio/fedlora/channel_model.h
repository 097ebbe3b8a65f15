/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_CHANNEL_MODEL_H
#define INCLUDED_FEDLORA_CHANNEL_MODEL_H

#include <gnuradio/fedlora/api.h>
#include <gnuradio/block.h>

#include <string>
#include <vector>

namespace gr {
namespace fedlora {

/*!
 * \brief Multi-user AirComp channel: K devices x N_t antennas in, N_r server antennas out.
 * \ingroup fedlora
 *
 * Input k * n_tx + t is device k's antenna t; output r is server antenna r: the superposition of every device
 * through its own fading multipath channel, with per-device CFO, timing offset and random phase, and the server's
 * phase noise, AWGN and DC offset. The DSP is fedlora::phy::MultiUserChannel, the simulator the in-process
 * experiments use. Per-device parameters given as one value apply to every device.
 *
 * Common timeline: output sample n is time n / sample_rate. Each input is placed on it sample by sample: a sample
 * tagged tx_time (UHD's (full seconds, fractional seconds) tuple, or seconds) goes to that time and the samples
 * after it follow contiguously; an untagged sample follows the previous one (an untagged stream is therefore the
 * continuous stream from time 0). Where an input has no sample the device is silent. So bursts tagged
 * tx_sob/tx_eob/tx_time, as a USRP sink takes them, land where their tx_time says and superpose there. A tx_time
 * earlier than the end of the input's previous burst is late: the burst is sent right after that end and a
 * warning is logged (a USRP would drop it). The output advances to time t only when every input has placed a
 * sample at or after t: an input that has not sent its next burst yet holds the channel back (silence is known
 * only once the next burst, or the end of the stream, shows where it ends).
 *
 * Deterministic by seed; the output does not depend on how the scheduler cuts the streams.
 */
class FEDLORA_API channel_model : virtual public gr::block
{
public:
    typedef std::shared_ptr<channel_model> sptr;

    /*!
     * \param n_devices K
     * \param n_tx antennas per device
     * \param n_rx server antennas
     * \param sample_rate sample rate (S/s)
     * \param snr_db mean receive SNR per link and device (one value or K values), relative to noise_variance
     * \param profile power-delay profile: flat, exponential, EPA, EVA, ETU
     * \param fading none, rayleigh or rician
     * \param rician_k K-factor of the first path (rician)
     * \param doppler_hz maximum Doppler (0: block fading, one realisation)
     * \param cfo_hz carrier frequency offset per device (one value or K values)
     * \param timing_offset timing offset in samples per device (one value or K values)
     * \param noise_variance AWGN variance per complex sample (> 0)
     * \param phase_noise_hz server oscillator linewidth (Wiener phase noise)
     * \param dc_offset constant DC offset added at the server
     * \param seed random seed
     */
    static sptr make(int n_devices = 2,
                     int n_tx = 1,
                     int n_rx = 1,
                     double sample_rate = 1e6,
                     const std::vector<double>& snr_db = std::vector<double>{ 20.0 },
                     const std::string& profile = "EPA",
                     const std::string& fading = "rayleigh",
                     double rician_k = 0.0,
                     double doppler_hz = 0.0,
                     const std::vector<double>& cfo_hz = std::vector<double>{ 0.0 },
                     const std::vector<double>& timing_offset = std::vector<double>{ 0.0 },
                     double noise_variance = 1e-3,
                     double phase_noise_hz = 0.0,
                     gr_complex dc_offset = gr_complex(0.0f, 0.0f),
                     unsigned long long seed = 1);

    //! Draws a new independent fading realisation for every device (block fading), from the next sample on.
    virtual void new_realisation() = 0;
};

} // namespace fedlora
} // namespace gr

#endif /* INCLUDED_FEDLORA_CHANNEL_MODEL_H */
