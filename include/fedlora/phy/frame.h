// The AirComp frame on a common timeline, what a device transmits in it, and what the server's receiver does.
//
//   [ preamble: 2 symbols ][ G pilot slots ][ T ][ G pilot slots ][ T ] ... [ last ≤ G slots ][ T ][ gap ][ payload ]
//
// Every device sends the Schmidl & Cox preamble (preamble.h) on its first antenna, so the receiver detects the
// superposition and corrects the common CFO. A pilot slot carries one device's one antenna alone: a Zadoff-Chu
// sequence on all occupied carriers at the device's per-antenna power (chanest.h); each of the K·N_t pilots is
// repeated R times, slot order (device, antenna, repetition). After every G = reference_interval slots, and after
// the last, all devices repeat the preamble's training symbol (T). The phase between consecutive training symbols
// (at most G + 1 symbols apart, so unambiguous for residual CFOs up to fft_size / (2 (G + 1) symbol_len) subcarrier
// spacings) adds up to the residual CFO over the whole pilot section, precisely enough that every device's channel
// estimate can be referred to one instant (otherwise a residual CFO rotates the estimates of later slots more, and
// the devices' signals no longer add in phase). The gap is the time the
// server needs to plan power and feed precoders back. In the payload every device sends its encoded update on the
// data carriers and a known BPSK pilot on the pilot carriers (numerology pilot_spacing), both multiplied by its
// per-carrier precoder, so the receiver sees the precoded sum of the pilots too and removes the common phase
// error per OFDM symbol. All offsets are in samples from the first cyclic-prefix sample of the preamble.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
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
    std::size_t reference_interval = 8;  // pilot slots between training symbols (residual CFO tracking)
    std::uint32_t preamble_seed = Preamble::kDefaultSeed;
    void validate() const;       // throws std::invalid_argument naming the field
};

class FrameLayout {
public:
    explicit FrameLayout(const FrameConfig& cfg);
    const FrameConfig& config() const { return cfg_; }
    std::size_t symbol_len() const { return static_cast<std::size_t>(cfg_.numerology.symbol_len()); }
    std::size_t preamble_len() const { return 2 * symbol_len(); }
    std::size_t n_slots() const { return cfg_.n_devices * cfg_.n_tx * cfg_.pilot_repeats; }
    // Training symbols after the preamble: one per group of reference_interval slots.
    std::size_t n_references() const { return (n_slots() + cfg_.reference_interval - 1) / cfg_.reference_interval; }
    // Repetition `rep` of the pilot symbol of (device, antenna).
    std::size_t pilot_offset(std::size_t device, std::size_t antenna, std::size_t rep = 0) const {
        const std::size_t s = (device * cfg_.n_tx + antenna) * cfg_.pilot_repeats + rep;
        return preamble_len() + (s + s / cfg_.reference_interval) * symbol_len();
    }
    // Training symbol g: g = 0 is the preamble's second symbol, g ≥ 1 the one after pilot group g − 1.
    std::size_t reference_offset(std::size_t g) const {
        if (g == 0)
            return symbol_len();
        const std::size_t slots_before = std::min(g * cfg_.reference_interval, n_slots());
        return preamble_len() + (slots_before + g - 1) * symbol_len();
    }
    // End of what the devices send before the server plans power.
    std::size_t pilots_end() const { return reference_offset(n_references()) + symbol_len(); }
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
    // power: per antenna, for the pilots (the preamble and postamble, sent on the first antenna only, get
    // n_tx · power).
    DeviceTransmitter(const FrameConfig& cfg, std::size_t device, double power);
    // Writes the preamble and pilot part of the frame, [0, pilots_end()), to each out[a] (pre-sized by the caller
    // to at least pilots_end() samples).
    void pilot_burst(std::vector<std::vector<std::complex<float>>>& out);
    // Writes n payload OFDM symbols carrying L streams. data holds n · L · n_data values in resource-grid order
    // (OFDM symbol, then stream, then data carrier: ResourceGrid in aircomp.h). Carrier m of antenna a sends
    // Σ_l P[m](a, l) x_l with P[m] = precoders[(m · n_tx + a) · L + l] (n_occupied · n_tx · L values); pilot carriers
    // send the known pilots payload_pilot(i, j · L + l) through the same precoder. out[a] receives
    // n · symbol_len samples.
    void payload(const std::vector<std::complex<float>>& data, std::size_t n_streams,
                 const std::vector<std::complex<double>>& precoders, std::vector<std::vector<std::complex<float>>>& out);

private:
    FrameLayout layout_;
    std::size_t device_;
    double amplitude_;
    OfdmModulator mod_;
    Preamble preamble_;
    std::vector<std::complex<float>> pilot_, grid_;
    std::vector<int> data_pos_, pilot_pos_;
};

// The server's receiver for one frame in a buffer whose FFT windows are placed from a known frame start.
// The vector forms take the whole received buffer and the frame start in it; the pointer forms take `frame`, a
// pointer to the sample at start − timing_backoff (the first FFT-window position of the frame), and read the
// frame's samples from there on, so a streaming receiver (AircompReceiver, aircomp_round.h) can hand over any
// buffer that holds them.
class FrameReceiver {
public:
    // timing_backoff: FFT windows start this many samples before their nominal position (inside the CP), so a
    // late timing estimate does not cause inter-symbol interference; the channel estimates absorb it.
    FrameReceiver(const FrameConfig& cfg, const ChannelEstimatorConfig& est, int timing_backoff);

    // Residual CFO (radians per sample): the phase increments between consecutive training symbols, summed and
    // divided by the distance they span.
    double residual_cfo(const std::vector<std::complex<float>>& rx, std::size_t start);
    double residual_cfo(const std::complex<float>* frame);  // frame[0, pilots_end()) is read

    // Per device and antenna channel estimates from the pilot slots of rx (frame starting at rx[start]),
    // divided by the device's pilot amplitude (so they estimate the channel itself). est[k * n_tx + a]; each
    // noise_var is the receiver's noise per carrier, snr_db the device's per-carrier SNR at pilot power,
    // error_var the estimation error variance of the (divided) channel.
    void estimate_channels(const std::vector<std::complex<float>>& rx, std::size_t start,
                           const std::vector<double>& pilot_power, std::vector<ChannelEstimate>& est);
    void estimate_channels(const std::complex<float>* frame, const std::vector<double>& pilot_power,
                           std::vector<ChannelEstimate>& est);  // frame[0, pilots_end()) is read

    // Demodulates n payload symbols from every receive antenna (rx[r]), combines carrier m with
    // z = W[m] y (W[m] = combiner[(m · L + l) · n_rx + r], L × n_rx, the receive beamformer and scaling), removes
    // the common phase error of each symbol measured on the pilot carriers against the expected response
    // G[m] p (G[m] = expected[(m · L + l) · L + l'], what W[m] Σ_k Ĥ_k P_k[m] should give), and writes the data
    // carriers in resource-grid order (n · L · n_data values). Returns the mean |CPE| in radians.
    // Equivalent to set_payload_plan() followed by payload_symbol() for i = 0 .. n − 1.
    double payload(const std::vector<std::vector<std::complex<float>>>& rx, std::size_t start, std::size_t n,
                   std::size_t n_streams, const std::vector<std::complex<double>>& combiner,
                   const std::vector<std::complex<double>>& expected, std::vector<std::complex<float>>& out);

    // The payload one OFDM symbol at a time. set_payload_plan() keeps the combiner (rounded to single precision)
    // and the expected response for n_rx antennas and L streams; payload_symbol() demodulates payload symbol i
    // from window[r] (symbol_len() samples of antenna r, starting timing_backoff samples before the symbol's
    // nominal start, i.e. at frame + payload_offset(i)), writes its L · n_data data values to out and returns
    // the common phase error it removed (radians). If pilot_error is not null, the symbol's payload pilots after
    // that removal add Σ|z − G p|² to pilot_error[0] and Σ|G p|² to pilot_error[1]. Allocation-free.
    void set_payload_plan(std::size_t n_rx, std::size_t n_streams, const std::vector<std::complex<double>>& combiner,
                          const std::vector<std::complex<double>>& expected);
    double payload_symbol(const std::complex<float>* const* window, std::size_t i, std::complex<float>* out,
                          double* pilot_error = nullptr);

    const FrameLayout& layout() const { return layout_; }
    int timing_backoff() const { return backoff_; }

private:
    // Throws std::invalid_argument unless [start − backoff, start − backoff + end) lies within rx_size samples.
    void check_fits(std::size_t rx_size, std::size_t start, std::size_t end, const char* what) const;

    FrameLayout layout_;
    int backoff_;
    OfdmDemodulator demod_;
    std::unique_ptr<ChannelEstimator> estimator_;
    std::vector<std::complex<float>> pilot_, y_, y2_, acc_;
    std::vector<std::vector<std::complex<float>>> ys_;  // per receive antenna, one demodulated symbol
    std::vector<std::complex<float>> combiner_;          // the plan's combiner, single precision, [(l·R + r)·M + m]
    std::vector<std::complex<double>> expected_;         // the plan's expected response
    std::vector<std::complex<float>> z_;                 // payload_symbol(): combined carriers, [l·M + m]
    std::vector<std::complex<double>> want_;             // payload_symbol(): expected pilots, [j·L + l]
    std::size_t plan_rx_ = 0, plan_streams_ = 0;
    std::vector<const std::complex<float>*> windows_;    // payload(): per antenna, the current symbol
    std::vector<int> data_pos_, pilot_pos_;
    std::vector<std::pair<std::size_t, std::size_t>> data_runs_;  // data carriers as (first carrier, run length)
};

}  // namespace fedlora::phy
