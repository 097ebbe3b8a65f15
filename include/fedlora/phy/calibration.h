// Calibration of independent radios for AirComp: what the server measures from each device's calibration burst
// (gain, timing offset, phase offset, CFO), the transmit-side correction that undoes it, and the calibration record
// (TX gain → output power tables, RX noise floor, alignment) with its lookups and the conversion of power budgets
// in dBm into the linear budgets of power_control.h. Derivations and measured tolerances: docs/math.md,
// "Calibration"; the hardware procedure: docs/hardware.md. The file format (YAML) lives in fedlora_calib
// (include/fedlora/calib/file.h), so that fedlora_phy stays free of a parser.
//
// Calibration burst (one per procedure run; every device transmits its own slot, the others are silent):
//
//   [ guard ][ device 0: preamble (2 symbols) · R pilot symbols ][ guard ][ device 1: ... ] ... [ guard ]
//
// The preamble is the Schmidl & Cox preamble of preamble.h, so the server finds each slot with the project's
// synchroniser even when a device's timing offset is far beyond the cyclic prefix (up to the guard); the R pilot
// symbols are the Zadoff-Chu pilot of chanest.h, repeated, from which the server measures the device's CFO (phase
// progression between repetitions), its timing (phase slope across carriers), its phase and its gain.
//
// Sign conventions (the same as the channel simulator's, channel.h): device k's samples x[m] on the common transmit
// timeline (absolute sample index m) reach the server as
//   r[n] = a_k e^{j(φ_k + ω_k (n − D − τ_k))} x[n − D − τ_k] + noise,
// a_k the link amplitude (gain error included), ω_k = 2π Δf_k / f_s, D the system latency common to every device
// and τ_k the device's own timing offset. The phase is reported at a reference sample m_ref of the transmit
// timeline (the start of the device's slot in the burst): φ_ref = φ_k + ω_k m_ref. TransmitCorrector sends
//   x'[m] = g e^{−j(φ_ref + ω_k (m − m_ref))} x(m + τ_k),
// with which the server receives √(link gain) · g · x[n − D]: the same as from an ideal device.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedlora/phy/numerology.h"
#include "fedlora/phy/ofdm.h"
#include "fedlora/phy/preamble.h"

namespace fedlora::phy {

// ---------------------------------------------------------------------------------------------------------------
// Calibration burst
// ---------------------------------------------------------------------------------------------------------------

struct CalibrationBurstConfig {
    Numerology numerology;           // pilot_spacing is not used
    std::size_t n_devices = 1;
    std::size_t pilot_repeats = 16;  // R pilot symbols per device, 2 ≤ R ≤ 256
    // Silent samples before, between and after the device slots: the largest timing offset the procedure can
    // measure (either sign). 0: two OFDM symbols.
    std::size_t guard = 0;
    std::uint32_t preamble_seed = Preamble::kDefaultSeed;
    void validate() const;  // throws std::invalid_argument naming the field
    std::size_t resolved_guard() const { return guard ? guard : 2 * static_cast<std::size_t>(numerology.symbol_len()); }
};

class CalibrationBurstLayout {
public:
    explicit CalibrationBurstLayout(const CalibrationBurstConfig& cfg);
    const CalibrationBurstConfig& config() const { return cfg_; }
    std::size_t symbol_len() const { return S_; }
    std::size_t guard() const { return G_; }
    // Preamble and pilots of one device.
    std::size_t slot_len() const { return (2 + cfg_.pilot_repeats) * S_; }
    // First sample of device k's preamble, from the burst start.
    std::size_t slot_offset(std::size_t k) const { return G_ + k * (slot_len() + G_); }
    // First (cyclic-prefix) sample of device k's pilot repetition r.
    std::size_t pilot_offset(std::size_t k, std::size_t r) const { return slot_offset(k) + (2 + r) * S_; }
    std::size_t length() const { return G_ + cfg_.n_devices * (slot_len() + G_); }

private:
    CalibrationBurstConfig cfg_;
    std::size_t S_, G_;
};

// Device k's calibration burst: its preamble and pilots at per-carrier power `power` (the convention of
// DeviceTransmitter in frame.h: unit-modulus values scaled by √power on every occupied carrier), zeros elsewhere.
class CalibrationTransmitter {
public:
    CalibrationTransmitter(const CalibrationBurstConfig& cfg, std::size_t device, double power);
    // Writes layout().length() samples to out (resized).
    void burst(std::vector<std::complex<float>>& out);
    const CalibrationBurstLayout& layout() const { return layout_; }

private:
    CalibrationBurstLayout layout_;
    std::size_t device_;
    double amplitude_;
    OfdmModulator mod_;
    Preamble preamble_;
    std::vector<std::complex<float>> pilot_;
};

// ---------------------------------------------------------------------------------------------------------------
// Estimation at the server
// ---------------------------------------------------------------------------------------------------------------

struct AlignmentConfig {
    CalibrationBurstConfig burst;
    std::vector<double> pilot_power;       // per device, the power its burst was sent at; empty: all 1
    // Per device, the link gain (dB) the procedure expects without a gain error: −(cable + attenuator loss) in a
    // cabled setup, in the units of the received samples. Empty: all 0 dB.
    std::vector<double> expected_gain_db;
    // Latency common to every device (samples) between the transmit timeline and the received samples: the
    // simulator's bulk_delay(), or a loopback measurement on hardware. Timing offsets are reported beyond it.
    double system_delay = 0.0;
    int timing_backoff = -1;               // FFT windows start this early (samples); -1: cp_len / 4
    double sync_false_alarm_rate = 1e-6;   // synchroniser (sync.h)
    void validate() const;                 // throws std::invalid_argument naming the field
};

struct DeviceAlignment {
    double gain_db = 0.0;                // measured link gain (received per-carrier power / pilot power), dB
    double gain_error_db = 0.0;          // gain_db − expected_gain_db
    double timing_offset_samples = 0.0;  // τ: arrival − (scheduled time + system_delay)
    double phase_rad = 0.0;              // φ_ref in [−π, π), at the transmit timeline's reference sample
    std::int64_t reference_sample = 0;   // m_ref: the start of the device's slot on the transmit timeline
    double cfo_hz = 0.0;                 // Δf_k, relative to the server's oscillator
    double snr_db = 0.0;                 // per carrier, at the burst's pilot power
    double noise_var = 0.0;              // receiver noise per carrier (units of |Y|²)
    // Standard deviations expected at the measured SNR (docs/math.md, "Calibration").
    double gain_std_db = 0.0, timing_std_samples = 0.0, phase_std_rad = 0.0, cfo_std_hz = 0.0;
};

class AlignmentEstimator {
public:
    explicit AlignmentEstimator(const AlignmentConfig& cfg);
    ~AlignmentEstimator();
    AlignmentEstimator(AlignmentEstimator&&) noexcept;
    AlignmentEstimator& operator=(AlignmentEstimator&&) noexcept;

    // rx: n received samples, rx[0] at absolute index rx_first; the devices started the burst at transmit
    // timeline index burst_start. One estimate per device. Throws std::runtime_error naming the device when its
    // slot is not found (no preamble within ±guard of where it was expected) or does not fit in rx.
    std::vector<DeviceAlignment> estimate(const std::complex<float>* rx, std::size_t n, std::int64_t rx_first,
                                          std::int64_t burst_start);

    const CalibrationBurstLayout& layout() const;
    // Samples the receiver needs after the burst's last sample (synchroniser latency).
    std::size_t tail() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------------------------
// Transmit-side correction
// ---------------------------------------------------------------------------------------------------------------

struct TransmitCorrection {
    double gain_db = 0.0;               // amplitude multiplier 10^{gain_db/20} (e.g. a residual gain trim)
    double advance_samples = 0.0;       // timing advance τ (negative: delay)
    double phase_rad = 0.0;             // φ_ref, removed by a pre-rotation
    double cfo_hz = 0.0;                // Δf, removed by a counter-rotation
    std::int64_t reference_sample = 0;  // m_ref of phase_rad on the transmit timeline

    // The correction that undoes a measurement. relative_to (optional): another device's timing offset, taken as
    // the reference so that only relative timing is corrected (what superposition needs). With_gain: also undo
    // the measured gain error digitally (otherwise gains are handled by the TX power table and dBm budgets).
    static TransmitCorrection from(const DeviceAlignment& a, bool with_gain = false, double relative_to = 0.0);
    void validate(double sample_rate) const;  // throws std::invalid_argument naming the field
};

// Applies a TransmitCorrection to a device's samples:
//   out[m] = 10^{gain_db/20} e^{−j(phase + ω (m − m_ref))} x(m + advance),
// x(t) interpolated between samples by a Kaiser-windowed sinc of 2·half_length taps (exact for whole-sample
// advances). Sample indices are absolute on the transmit timeline. Stateless apart from the filter, so bursts can
// be corrected in any order.
class TransmitCorrector {
public:
    TransmitCorrector(const TransmitCorrection& c, double sample_rate, int half_length = 16, double kaiser_beta = 8.0);
    const TransmitCorrection& correction() const { return c_; }
    // The corrected signal of an input on [in_start, in_start + n) is nonzero on
    // [in_start − lead(), in_start + n + tail()).
    std::size_t lead() const { return lead_; }
    std::size_t tail() const { return tail_; }
    // out[j] = corrected sample at index out_start + j (j < n_out), from in[i] at index in_start + i (zero
    // outside [0, n_in)). out must not alias in.
    void apply(const std::complex<float>* in, std::size_t n_in, std::int64_t in_start, std::complex<float>* out,
               std::size_t n_out, std::int64_t out_start) const;

private:
    TransmitCorrection c_;
    double omega_;
    std::int64_t whole_;             // floor(advance)
    std::vector<double> taps_;       // weights of x[i0 + first_ + q]
    int first_ = 0;
    std::size_t lead_ = 0, tail_ = 0;
};

// How far corrected bursts reach beyond the uncorrected ones: the largest lead() and tail() of the correctors of
// `c` (both 0 for an empty list). Transmitters that keep their burst lengths shift every burst lead() samples
// earlier; the silence after a burst's content must then hold lead() + tail() samples.
struct CorrectionSpan {
    std::size_t lead = 0, tail = 0;
};
CorrectionSpan correction_span(const std::vector<TransmitCorrection>& c, double sample_rate);

// ---------------------------------------------------------------------------------------------------------------
// The calibration record
// ---------------------------------------------------------------------------------------------------------------

// Every error about a calibration record or a lookup in it.
class CalibrationError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// TX gain setting → output power at the antenna port (dBm) for a digital signal at the record's reference level,
// per carrier frequency. power_dbm[f · n_gains + g]; frequencies and gains strictly ascending; power strictly
// increasing with gain along every row (so that it can be inverted).
struct TxPowerTable {
    std::vector<double> frequencies_hz;
    std::vector<double> gains_db;
    std::vector<double> power_dbm;
    bool empty() const { return frequencies_hz.empty(); }
};

// RX noise floor: noise power per sample relative to digital full scale (dBFS) with the input terminated, at one
// RX gain setting, per frequency.
struct NoiseFloorTable {
    double gain_db = 0.0;
    std::vector<double> frequencies_hz;
    std::vector<double> dbfs;
    bool empty() const { return frequencies_hz.empty(); }
};

// Inter-device alignment measured at the server from the device's calibration bursts, at one LO frequency and
// sample rate (filter latencies depend on the rate, phases on the tuning).
struct AlignmentRecord {
    double frequency_hz = 0.0;
    double sample_rate_hz = 0.0;
    double timing_offset_samples = 0.0;
    double phase_rad = 0.0;
    double reference_time_s = 0.0;  // transmit-timeline time (UHD time) at which phase_rad holds
    double cfo_hz = 0.0;
    double tx_gain_db = 0.0;        // the gain the burst was sent at (informational)
};

struct ChannelCalibration {
    int channel = 0;
    TxPowerTable tx_power;       // may be empty (receive-only channel)
    NoiseFloorTable rx_noise;    // may be empty
    std::vector<AlignmentRecord> alignment;
};

struct DeviceCalibration {
    std::string serial;
    std::string product;  // "B210", "X310", "virtual", ...
    std::vector<ChannelCalibration> channels;
};

struct CalibrationSet {
    static constexpr int kVersion = 1;
    int version = kVersion;
    std::string date;        // ISO 8601, when measured
    std::string conditions;  // setup, attenuation, temperature, ...
    std::string reference;   // clock/time reference during the measurement: internal | external | gpsdo
    double tx_reference_dbfs = -12.0;  // digital mean power (dBFS) that phy's unit power maps to
    std::vector<DeviceCalibration> devices;
    std::string source = "calibration";  // where it came from (file name), for error messages

    // Semantic checks (table shapes, ordering, finite values, unique serials and channels, a known reference);
    // throws CalibrationError naming the device serial, the key and the bad value.
    void validate() const;

    // Lookups; each throws CalibrationError naming the serial, the key and what the record does hold.
    const DeviceCalibration& device(const std::string& serial) const;
    const ChannelCalibration& channel(const std::string& serial, int channel) const;
    // Output power (dBm) at a frequency and gain: linear interpolation between the frequencies around it and the
    // gains around it. The frequency must lie within the table's range (a single-frequency table: within
    // frequency_tolerance_hz of it), the gain within the calibrated gains.
    double tx_power_dbm(const std::string& serial, int channel, double frequency_hz, double gain_db) const;
    // The gain setting whose output power is power_dbm (inverse of the above, at that frequency).
    double tx_gain_for(const std::string& serial, int channel, double frequency_hz, double power_dbm) const;
    double noise_floor_dbfs(const std::string& serial, int channel, double frequency_hz) const;
    // The alignment measured at this LO frequency (within frequency_tolerance_hz) and sample rate.
    const AlignmentRecord& alignment(const std::string& serial, int channel, double frequency_hz,
                                     double sample_rate_hz) const;
    // That alignment as a correction for the transmitter, with phase_rad referred to sample
    // round(reference_time_s · sample_rate).
    TransmitCorrection correction(const std::string& serial, int channel, double frequency_hz,
                                  double sample_rate_hz) const;
    // Serials of the devices whose `channel` holds an alignment at this frequency and sample rate, in file order.
    std::vector<std::string> aligned_serials(int channel, double frequency_hz, double sample_rate_hz) const;

    // Records an alignment: adds the device (with `product`, if new) and the channel if missing, and replaces an
    // entry at the same frequency (within frequency_tolerance_hz) and sample rate. Does not validate.
    void set_alignment(const std::string& serial, const std::string& product, int channel, const AlignmentRecord& a);

    double frequency_tolerance_hz = 1e3;
};

// A power budget in dBm turned into what the radio is set to: the TX gain setting that reaches the budget with the
// digital signal at the reference level (clamped to the calibrated gains), and the linear budget for
// power_control.h, relative to that level: 10^{(budget − P(f, gain))/10}. Throws CalibrationError naming the
// device when the budget exceeds the highest calibrated output power at that frequency.
struct TxPowerSetting {
    double gain_db = 0.0;
    double linear_budget = 1.0;
    double output_dbm = 0.0;  // the table's output power at the reference level and this gain
};
TxPowerSetting tx_power_setting(const CalibrationSet& cal, const std::string& serial, int channel,
                                double frequency_hz, double budget_dbm);
// The same at a fixed gain setting: only the digital level changes.
double linear_budget(const CalibrationSet& cal, const std::string& serial, int channel, double frequency_hz,
                     double gain_db, double budget_dbm);

// "2450 MHz", "915.5 MHz": frequencies as the error messages print them.
std::string format_frequency(double hz);

}  // namespace fedlora::phy
