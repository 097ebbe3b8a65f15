// Multi-user channel simulator: K devices with N_t antennas each transmit at the same time to a server with N_r
// antennas; the server sees the superposition (the over-the-air sum) of every device's signal through its own
// multipath fading channel, plus the server's impairments. Complex baseband, std::complex<float>, deterministic by
// seed, streaming (state kept between calls, so cutting the stream into chunks does not change the output).
//
// Signal model (derivations and references in docs/math.md, "Multi-user channel simulator"). For server antenna r
// and absolute sample index n,
//
//   y_r[n] = e^{jθ[n]} Σ_k Σ_t Σ_l c_{k,r,t}[l; n] s_{k,t}[n - l] + dc + w_r[n],
//   s_{k,t}[n] = x_{k,t}[n] e^{j2π Δf_k n / fs}                        (device k's CFO, applied at its transmitter)
//   c_{k,r,t}[·; n] = a_k e^{jφ_k} · (d_{ε_k} ⊛ Σ_p g_{k,r,t,p}[n] q_p)  (combined FIR, piecewise constant in n)
//
//   q_p        path p of the power-delay profile placed on the sample grid: nearest sample (a unit tap at
//              round(τ_p fs); paths on the same sample are simulated as one fading process with their summed
//              power, which has the same distribution), or a Kaiser-windowed sinc centred on
//              τ_p fs + sinc_half_length ("sinc").
//   g_p[n]     fading gain of path p, E|g_p|² = G_k P_p (G_k: mean link gain from snr_db or path_loss_db, P_p:
//              profile powers normalised to sum 1). Rayleigh: CN(0, G P_p). Rician: path 0 gets a line-of-sight
//              component with power fraction K/(K+1) and a random, constant phase.
//              Block fading: a new independent draw every block_length samples and on new_realisation().
//              Doppler (doppler_hz > 0): sum of M sinusoids with random arrival angles and phases (Jakes-type,
//              ensemble autocorrelation J0(2π f_d τ) exactly); evaluated at the centre of each update block of U
//              samples (U chosen so that f_d U / fs <= 1e-3 unless set) and held over the block.
//   d_ε        fractional-delay filter for the timing offset ε_k: a 2W-tap Kaiser-windowed sinc (W =
//              fd_half_length) whose delay is ε_k + (W - 1). The common latency W - 1 is added to every device
//              (bulk_delay()) as soon as one device has a non-integer offset, so relative timing is exact.
//   a_k, φ_k   amplitude gain error (10^{gain_error_db/20}) and random phase (uniform, redrawn per realisation).
//   θ[n]       server phase noise, a Wiener process: θ[n] = θ[n-1] + N(0, 2π·linewidth/fs), common to all N_r.
//   w_r[n]     AWGN, CN(0, noise_variance), independent per server antenna; dc: constant offset.
//
// Inputs: device k's antenna t signal has unit average power by convention, so the mean received power per
// (device, rx, tx) link is G_k = noise_variance · 10^{snr_db/10} (snr_db given) or 10^{-path_loss_db/10}.
//
// Memory and real time: every buffer is sized in the constructor for segment_size samples; process() accepts any n
// and splits it internally into segments, and neither process() nor new_realisation() allocates.
// The FIR kernel is chosen at construction: "avx512" or "avx2" (this project's register-blocked FMA kernels,
// used when the CPU has them) or "volk" (VOLK's multiply and add kernels, any CPU).
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fedlora/phy/numerology.h"

namespace fedlora::phy {

// One path of a power-delay profile: delay in seconds and linear power (profile powers sum to 1).
struct PdpPath {
    double delay_s = 0.0;
    double power = 1.0;
};

// The named profile, powers normalised to sum 1.
//  "flat"         one path at delay 0.
//  "exponential"  paths at l/fs, l = 0, 1, ..., power ∝ q^l, with q chosen so that the rms delay spread of the
//                 (untruncated) discrete profile equals rms_delay_spread_s; truncated where q^l < 1e-4 (−40 dB).
//  "EPA", "EVA", "ETU"  3GPP TS 36.104 Annex B.2 (Table B.2-2/3/4) extended pedestrian A, vehicular A, typical
//                 urban: 7, 9 and 9 paths with the tabulated delays (ns) and relative powers (dB).
// Throws std::invalid_argument on an unknown name or a non-positive rms_delay_spread_s for "exponential".
std::vector<PdpPath> power_delay_profile(const std::string& name, double rms_delay_spread_s, double sample_rate);

struct DeviceChannelConfig {
    // Mean received power per link: noise_variance · 10^{snr_db/10} if snr_db is set (needs noise_variance > 0),
    // otherwise 10^{-path_loss_db/10}.
    std::optional<double> snr_db;
    double path_loss_db = 0.0;

    std::string profile = "flat";     // flat | exponential | EPA | EVA | ETU
    double rms_delay_spread_s = 0.0;  // "exponential" only (> 0)

    std::string fading = "rayleigh";  // none (deterministic sqrt(G P_p) gains) | rayleigh | rician
    double rician_k = 0.0;            // linear K-factor of path 0 ("rician"), >= 0
    double doppler_hz = 0.0;          // maximum Doppler f_d >= 0; 0: block fading
    std::uint64_t block_length = 0;   // samples per block-fading realisation; 0: only on new_realisation()

    double cfo_hz = 0.0;                 // |cfo_hz| < sample_rate / 2
    double timing_offset_samples = 0.0;  // in [0, 4096]; fractional part through the fractional-delay filter
    bool random_phase = true;            // uniform phase per realisation
    double gain_error_db = 0.0;          // amplitude error, |.| <= 40
};

struct ChannelSimConfig {
    std::vector<DeviceChannelConfig> devices = std::vector<DeviceChannelConfig>(1);  // K = devices.size()
    int n_tx = 1;  // antennas per device (every device the same)
    int n_rx = 1;  // server antennas
    double sample_rate = 1e6;

    std::string tap_interpolation = "nearest";  // nearest | sinc
    int sinc_half_length = 8;                   // "sinc": taps on each side of a path (bulk delay of the profile)
    int fd_half_length = 8;                     // fractional-delay filter: 2·fd_half_length taps
    double kaiser_beta = 6.0;                   // window of the fractional-delay filter and of "sinc" placement

    int doppler_sinusoids = 16;               // M, per path and link
    std::size_t doppler_update_interval = 0;  // U in samples; 0: automatic (power of two, f_d U / fs <= 1e-3)

    double noise_variance = 0.0;           // E|w|² per complex sample
    double phase_noise_linewidth_hz = 0.0;  // 3 dB linewidth of the server oscillator (Wiener phase noise)
    std::complex<double> dc_offset{0.0, 0.0};

    std::size_t segment_size = 1024;  // internal block: buffers are sized for it; larger calls are split
    std::string fir_kernel = "auto";  // auto | volk | avx2 | avx512
    std::uint64_t seed = 1;

    // Throws std::invalid_argument naming the field (e.g. "devices[2].doppler_hz") and its value.
    void validate() const;
};

class MultiUserChannel {
public:
    explicit MultiUserChannel(const ChannelSimConfig& cfg);
    ~MultiUserChannel();
    MultiUserChannel(MultiUserChannel&&) noexcept;
    MultiUserChannel& operator=(MultiUserChannel&&) noexcept;
    MultiUserChannel(const MultiUserChannel&) = delete;
    MultiUserChannel& operator=(const MultiUserChannel&) = delete;

    const ChannelSimConfig& config() const;
    int n_devices() const;
    int n_tx() const;
    int n_rx() const;

    // in:  n_devices()·n_tx() pointers, in[k·n_tx + t] -> n samples of device k, antenna t (nullptr: silent)
    // out: n_rx() pointers, out[r] -> n samples written (not accumulated)
    // Any n; buffers may not alias. Allocation-free.
    void process(const std::complex<float>* const* in, std::complex<float>* const* out, std::size_t n);

    // Draws a new independent fading realisation (and random phase) for every device, effective from the next
    // sample. Allocation-free.
    void new_realisation();

    // Absolute index of the next sample process() will consume.
    std::uint64_t position() const;
    // Latency common to every device (samples): sinc placement half-length plus fd_half_length - 1 when some
    // device has a fractional timing offset.
    int bulk_delay() const;
    // Doppler update interval U of a device (0 for block fading) and its FIR kernel name.
    std::size_t update_interval(int device) const;
    const char* kernel_name() const;
    // Mean power gain G_k of each of the device's links.
    double mean_gain(int device) const;

    // --- ground truth, valid for the next sample (position()) ---
    // Multipath taps on the sample grid, h[l] = Σ_p g_p q_p[l], l = 0 .. L-1: fading and mean gain only (no timing
    // offset, gain error or random phase).
    std::vector<std::complex<float>> taps(int device, int rx, int tx) const;

    // The combined FIR c_{k,r,t} the channel applies to the (CFO-rotated) device signal: timing offset, bulk
    // delay, random phase and gain error included. taps[i] is the tap at lag lags[i] (nonzero lags only).
    struct ImpulseResponse {
        std::vector<int> lags;
        std::vector<std::complex<float>> taps;
    };
    ImpulseResponse impulse_response(int device, int rx, int tx) const;

    // H[m] = Σ_i c[i] e^{-j2π k_m (lags[i] - reference_delay)/N} on num's occupied carriers k_m (order of
    // Numerology::occupied_carriers()): an OFDM receiver whose FFT window starts reference_delay samples after
    // the transmitted window sees Y_m = Σ_k H_k[m] X_k[m] as long as every lag - reference_delay lies in
    // [0, cp_len] (and CFO, Doppler and phase noise are off). num.sample_rate must equal the channel's.
    void frequency_response(const Numerology& num, int device, int rx, int tx, std::complex<float>* out,
                            double reference_delay = 0.0) const;
    std::vector<std::complex<float>> frequency_response(const Numerology& num, int device, int rx, int tx,
                                                        double reference_delay = 0.0) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace fedlora::phy
