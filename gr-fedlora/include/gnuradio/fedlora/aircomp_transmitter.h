/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_AIRCOMP_TRANSMITTER_H
#define INCLUDED_FEDLORA_AIRCOMP_TRANSMITTER_H

#include <gnuradio/block.h>
#include <gnuradio/fedlora/api.h>

#include <string>

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
 * burst is sent or after) releases the payload burst; a plan for a later round (messages on the two ports keep
 * no order between them) is kept until that round's update starts it; others are ignored.
 *
 * Bursts straddle work() calls freely. Sample buffers are sized in the constructor (max_dim bounds the update
 * length); the bursts are computed when their update or plan arrives, and work() only copies them out (per burst,
 * the tag values are the only new objects). After n_rounds payload bursts (0: no limit) the block is done.
 *
 * Calibration (optional; docs/hardware.md, calibration/README.md): with a calibration file, this radio's serial
 * and the LO frequency, antenna a's samples pass through the fedlora::phy::TransmitCorrector of the file's
 * alignment for channel `channel + a` at (frequency, sample_rate): timing advance, phase pre-rotation and CFO
 * counter-rotation referred to the absolute sample index of the common timeline (tx_time × sample_rate). Each
 * burst keeps its length and goes out advance() samples earlier (its tx_time moved back by as much), so the gap
 * and the guard symbol must hold the corrector's lead + tail. With budget_unit "dBm" (one antenna), `budget` is
 * the power budget in dBm: the file's TX power table at `frequency` gives the TX gain (tx_gain < 0: chosen by the
 * block; otherwise the radio's gain, e.g. as it read back) and the linear budget P_k at that gain
 * (fedlora::phy::tx_power_setting / linear_budget), the samples are scaled to the file's digital reference level
 * (tx_reference_dbfs is phy power 1; the corrector's gain), and every burst's first sample carries a tx_command
 * tag setting that gain on a USRP sink. The server must plan with the same P_k (linear_budget()). With a linear
 * budget the samples stay in phy units (the virtual radio's and the simulator's scale).
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
     * \param calibration calibration file (YAML; "" for none)
     * \param serial this radio's serial in the calibration file
     * \param channel the radio's TX channel of antenna 0 in the file (antenna a: channel + a)
     * \param frequency LO frequency (Hz) of the calibration lookups
     * \param budget_unit "linear" (budget is P_k) or "dBm" (budget in dBm, through the file's TX power table)
     * \param tx_gain budget_unit "dBm": the radio's TX gain (dB), or < 0 to let the block choose it
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
                     int n_rounds = 0,
                     const std::string& calibration = "",
                     const std::string& serial = "",
                     int channel = 0,
                     double frequency = 2.45e9,
                     const std::string& budget_unit = "linear",
                     double tx_gain = -1.0);

    //! Rounds whose payload burst has been emitted completely.
    virtual unsigned long rounds_sent() const = 0;
    //! The power budget P_k in phy units the bursts are made with (the server must plan with it).
    virtual double linear_budget() const = 0;
    //! budget_unit "dBm": the TX gain (dB) the radio is set to (tx_command tags); otherwise -1.
    virtual double tx_gain() const = 0;
    //! Samples by which every burst goes out earlier than uncorrected (0 without calibration).
    virtual int advance() const = 0;
};

} // namespace fedlora
} // namespace gr

#endif /* INCLUDED_FEDLORA_AIRCOMP_TRANSMITTER_H */
