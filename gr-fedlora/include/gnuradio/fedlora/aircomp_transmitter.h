/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_AIRCOMP_TRANSMITTER_H
#define INCLUDED_FEDLORA_AIRCOMP_TRANSMITTER_H

#include <gnuradio/block.h>
#include <gnuradio/fedlora/api.h>

namespace gr {
namespace fedlora {

/*!
 * \brief One device's AirComp transmitter: update PDU and power plan in, pilot and payload bursts out.
 * \ingroup fedlora
 *
 * Output a is antenna a (n_tx outputs). For each round the block emits two bursts, each tagged tx_sob and tx_time
 * on its first sample and tx_eob on its last (UHD's burst tags), plus a "fedlora_burst" tag (dict: round, device,
 * kind = pilots | payload) on the first sample:
 *  - the pilot burst, at the frame time: preamble, this device's pilot slots, training symbols, then zeros until
 *    the payload offset (the gap travels as zeros, so a receiver and a simulated channel can run through it
 *    before the plan exists);
 *  - the payload burst, at frame time + payload offset, once the plan has arrived: the update encoded
 *    (AircompCodec: weight / scale, two reals per symbol), precoded per carrier with this device's plan
 *    coefficients, payload pilots through the same precoders; followed by one OFDM symbol of zeros.
 * The DSP is fedlora::phy::DeviceTransmitter and AircompCodec, the kernels aircomp_round_waveform runs.
 *
 * Message port "update": a PDU (meta, f32 vector x). Meta keys: "round" (integer), "device" (integer; PDUs for
 * other devices are ignored), "weight" (number, default 1), "scale" (number > 0, the common scale c), optionally
 * "support" (s32/u32/s64 vector of ascending indices: only those entries are sent) and "frame_time" (seconds, a
 * number or a tx_time tuple; default: the end of the previous frame plus its guard symbol, start_time for the
 * first). Updates arriving while a round is in progress wait for it.
 *
 * Message port "plan": the server receiver's plan dict ("round", "n_streams", "n_devices", "n_carriers", "n_tx",
 * "precoders" c64 vector [((k·M + m)·n_tx + a)·L + l], "scale"). A plan for the current round (while its pilot
 * burst is sent or after) releases the payload burst; others are ignored.
 *
 * Bursts straddle work() calls freely. Sample buffers are sized in the constructor (max_dim bounds the update
 * length); the bursts are computed when their update or plan arrives, and work() only copies them out (per burst,
 * the tag values are the only new objects). After n_rounds payload bursts (0: no limit) the block is done.
 */
class FEDLORA_API aircomp_transmitter : virtual public gr::block
{
public:
    typedef std::shared_ptr<aircomp_transmitter> sptr;

    /*!
     * \param n_devices K, devices in the frame
     * \param device this device's index k in [0, K)
     * \param n_tx antennas N_t
     * \param fft_size FFT size
     * \param cp_len cyclic prefix length
     * \param n_occupied occupied subcarriers M
     * \param pilot_spacing a payload pilot every pilot_spacing occupied carriers (> 0)
     * \param sample_rate sample rate (S/s), for tx_time
     * \param gap silent samples between the pilot section and the payload
     * \param pilot_repeats pilot symbols per device antenna
     * \param reference_interval pilot slots between training symbols
     * \param budget power budget P_k (pilots go out at P_k / N_t per antenna)
     * \param max_dim largest update length accepted
     * \param start_time time of the first frame (seconds) when the update names none
     * \param n_rounds payload bursts before the block is done (0: no limit)
     */
    static sptr make(int n_devices = 2,
                     int device = 0,
                     int n_tx = 1,
                     int fft_size = 256,
                     int cp_len = 32,
                     int n_occupied = 200,
                     int pilot_spacing = 20,
                     double sample_rate = 15.36e6,
                     int gap = 2048,
                     int pilot_repeats = 2,
                     int reference_interval = 8,
                     double budget = 1.0,
                     int max_dim = 1 << 16,
                     double start_time = 0.0,
                     int n_rounds = 0);

    //! Rounds whose payload burst has been emitted completely.
    virtual unsigned long rounds_sent() const = 0;
};

} // namespace fedlora
} // namespace gr

#endif /* INCLUDED_FEDLORA_AIRCOMP_TRANSMITTER_H */
