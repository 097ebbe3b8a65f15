// The AirComp frame on a common timeline, what a device transmits in it, and what the server's receiver does.
//
//   [ preamble: 2 symbols ][ pilot slots: K·N_t·R symbols ][ postamble: 1 symbol ][ gap ][ payload: n symbols ]
//
// Every device sends the Schmidl & Cox preamble (preamble.h) on its first antenna, so the receiver detects the
// superposition and corrects the common CFO. Pilot slot k·N_t + a carries device k's antenna a alone: a
// Zadoff-Chu sequence on all occupied carriers at the device's full power (chanest.h), repeated R times. The postamble repeats the
// preamble's training symbol: its phase against the preamble's, K·N_t + 1 symbols later, measures the residual
// CFO precisely enough that every device's channel estimate can be referred to one instant (otherwise a residual
// CFO rotates the estimates of later slots more, and the devices' signals no longer add in phase). The gap is the time the
// server needs to plan power and feed precoders back. In the payload every device sends its encoded update on the
// data carriers and a known BPSK pilot on the pilot carriers (numerology pilot_spacing), both multiplied by its
// per-carrier precoder, so the receiver sees the precoded sum of the pilots too and removes the common phase
// error per OFDM symbol. All offsets are in samples from the first cyclic-prefix sample of the preamble.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fedlora/phy/chanest.h"
#include "fedlora/phy/numerology.h"
#include "fedlora/phy/ofdm.h"
#include "fedlora/phy/preamble.h"

namespace fedlora::phy {

struct FrameConfig {
    Numerology numerology;       // pilot_spacing > 0 is required (common phase tracking)
    std::size_t n_devices = 1;
    std::size_t n_tx = 1;        // antennas per device
    std::size_t gap = 0;         // silent samples between pilots and payload
    std::size_t pilot_repeats = 1;  // pilot symbols per slot, averaged by the receiver (+10·log10 R dB for CSI)
    std::uint32_t preamble_seed = Preamble::kDefaultSeed;
    void validate() const;       // throws std::invalid_argument naming the field
};

class FrameLayout {
public:
    explicit FrameLayout(const FrameConfig& cfg);
    const FrameConfig& config() const { return cfg_; }
    std::size_t symbol_len() const { return static_cast<std::size_t>(cfg_.numerology.symbol_len()); }
    std::size_t preamble_len() const { return 2 * symbol_len(); }
    // Repetition `rep` of the pilot symbol of (device, antenna).
    std::size_t pilot_offset(std::size_t device, std::size_t antenna, std::size_t rep = 0) const {
        return preamble_len() + ((device * cfg_.n_tx + antenna) * cfg_.pilot_repeats + rep) * symbol_len();
    }
    std::size_t postamble_offset() const {
        return preamble_len() + cfg_.n_devices * cfg_.n_tx * cfg_.pilot_repeats * symbol_len();
    }
    // End of what the devices send before the server plans power: preamble, pilots and postamble.
    std::size_t pilots_end() const { return postamble_offset() + symbol_len(); }
    std::size_t payload_offset(std::size_t i) const { return pilots_end() + cfg_.gap + i * symbol_len(); }
    std::size_t frame_len(std::size_t n_payload) const { return payload_offset(n_payload); }
    // Known payload pilot value of OFDM symbol i, pilot j (BPSK ±1 from a fixed sequence).
    std::complex<float> payload_pilot(std::size_t i, std::size_t j) const;

private:
    FrameConfig cfg_;
};

// One device's transmitter. Output streams are antenna-major: out[a] holds that antenna's samples.
class DeviceTransmitter {
public:
    DeviceTransmitter(const FrameConfig& cfg, std::size_t device, double power);
    // Writes the preamble and pilot part of the frame, [0, pilots_end()), to each out[a] (pre-sized by the caller
    // to at least pilots_end() samples).
    void pilot_burst(std::vector<std::vector<std::complex<float>>>& out);
    // Writes n payload OFDM symbols (n = data.size() / n_data, whole symbols) of a single-stream device:
    // data carriers get data[i·n_data + j] · b[m], pilot carriers the known pilot · b[m]; b holds one precoder per
    // occupied carrier (n_occupied values). Output: n · symbol_len samples into out[0].
    void payload(const std::vector<std::complex<float>>& data, const std::vector<std::complex<double>>& b,
                 std::vector<std::complex<float>>& out);

private:
    FrameLayout layout_;
    std::size_t device_;
    double amplitude_;
    OfdmModulator mod_;
    Preamble preamble_;
    std::vector<std::complex<float>> pilot_, grid_;
};

// The server's receiver for one frame in a buffer whose FFT windows are placed from a known frame start.
class FrameReceiver {
public:
    // timing_backoff: FFT windows start this many samples before their nominal position (inside the CP), so a
    // late timing estimate does not cause inter-symbol interference; the channel estimates absorb it.
    FrameReceiver(const FrameConfig& cfg, const ChannelEstimatorConfig& est, int timing_backoff);

    // Residual CFO (radians per sample) from the phase of the postamble against the preamble's training symbol.
    // Unambiguous for |residual| < fft_size / (2 · (postamble_offset − symbol_len)) subcarrier spacings.
    double residual_cfo(const std::vector<std::complex<float>>& rx, std::size_t start);

    // Per device and antenna channel estimates from the pilot slots of rx (frame starting at rx[start]),
    // divided by the device's pilot amplitude (so they estimate the channel itself). est[k * n_tx + a]; each
    // noise_var is the receiver's noise per carrier, snr_db the device's per-carrier SNR at pilot power,
    // error_var the estimation error variance of the (divided) channel.
    void estimate_channels(const std::vector<std::complex<float>>& rx, std::size_t start,
                           const std::vector<double>& pilot_power, std::vector<ChannelEstimate>& est);

    // Demodulates n payload symbols, removes the common phase error of each symbol (measured on the pilot
    // carriers against expected_gain[m] · pilot, expected_gain = Σ_k Ĥ_k b_k), scales carrier m by
    // 1 / √eta[m], and writes the data carriers (n · n_data values) to out. Returns the mean |CPE| in radians.
    double payload(const std::vector<std::complex<float>>& rx, std::size_t start, std::size_t n,
                   const std::vector<std::complex<double>>& expected_gain, const std::vector<double>& eta,
                   std::vector<std::complex<float>>& out);

    const FrameLayout& layout() const { return layout_; }
    int timing_backoff() const { return backoff_; }

private:
    FrameLayout layout_;
    int backoff_;
    OfdmDemodulator demod_;
    std::unique_ptr<ChannelEstimator> estimator_;
    std::vector<std::complex<float>> pilot_, y_, y2_, acc_;
    std::vector<int> data_pos_, pilot_pos_;
};

}  // namespace fedlora::phy
