// AirComp codec: update vectors ↔ complex symbols on a resource grid, with aggregation weights, a common scale and
// a sparse support shared by all devices; and a symbol-level AirComp round (exact per-subcarrier channel model,
// perfect CSI) whose measured error is checked against the power-control policy's analytic MSE.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "fedlora/phy/power_control.h"

namespace fedlora::phy {

// Resources of one OFDM symbol: n_carriers data subcarriers on each of n_streams spatial streams.
// Symbol i of a payload goes to OFDM symbol i / (S·M), stream (i / M) % S, carrier i % M.
struct ResourceGrid {
    std::size_t n_carriers = 0;
    std::size_t n_streams = 1;
    void validate() const;
    std::size_t per_ofdm_symbol() const { return n_carriers * n_streams; }
    std::size_t ofdm_symbols_for(std::size_t n_symbols) const {
        return (n_symbols + per_ofdm_symbol() - 1) / per_ofdm_symbol();
    }
    std::size_t carrier_of(std::size_t i) const { return i % n_carriers; }
    std::size_t stream_of(std::size_t i) const { return (i / n_carriers) % n_streams; }
    std::size_t ofdm_symbol_of(std::size_t i) const { return i / per_ofdm_symbol(); }
};

// What every device and the server agree on before a round: the support (indices of the update entries sent,
// ascending, unique; empty = all d entries), and the common scale c.
struct AircompCodec {
    std::size_t dim = 0;                 // d: full update length
    std::vector<std::uint32_t> support;  // empty: dense
    double scale = 1.0;                  // c > 0

    void validate() const;  // throws std::invalid_argument naming the problem
    std::size_t n_values() const { return support.empty() ? dim : support.size(); }
    std::size_t n_symbols() const { return (n_values() + 1) / 2; }

    // s = pack(weight · x[support] / c). `out` holds n_symbols() values.
    void encode(const float* x, double weight, std::complex<float>* out) const;
    // x̂[support] = c · unpack(in); entries off the support are set to 0. `x` holds dim values.
    void decode(const std::complex<float>* in, float* x) const;
};

// Common scale so that the device with the largest weighted RMS sends unit average power per symbol:
// c = √2 · max_k |p_k| rms_k (two reals of variance (p_k rms_k / c)² per symbol). Throws on empty, NaN or
// all-zero input (a NaN update must never reach the radio).
double common_scale(const std::vector<double>& rms, const std::vector<double>& weights);

// RMS of a vector's entries on a support (empty = all). Throws std::invalid_argument on a non-finite entry,
// naming its index.
double update_rms(const float* x, std::size_t dim, const std::vector<std::uint32_t>& support);

// Per-symbol power E|s_k|² = 2 (p_k rms_k / c)² of each device's encoded update, from the RMS it reports
// (DESIGN.md §2): what power control needs to meet the budgets and to weigh truncation errors.
std::vector<double> symbol_powers(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                  const AircompCodec& codec);
// The same for one device from its weight, the RMS it reports and the common scale: 2 (p_k rms_k / c)², floored at
// 1e-30 (what the server plans with when the updates themselves are on the devices).
double symbol_power(double weight, double rms, double scale);

// (‖x̂ − Σ p_k x_k‖², ‖Σ p_k x_k‖²) over the codec's support.
std::pair<double, double> sum_error(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                    const AircompCodec& codec, const std::vector<float>& estimate);

// Adds CN(0, noise_var) samples to y[0..n): real part then imaginary part of each, from `rng` in that order.
void add_awgn(std::complex<double>* y, std::size_t n, double noise_var, std::mt19937_64& rng);

struct AircompReport {
    double nmse_measured = 0.0;       // ‖ŝ − s‖² / ‖s‖² of the weighted sum, on the support
    double nmse_analytic = 0.0;       // the policy's analytic MSE normalised the same way
    double truncated_fraction = 0.0;  // fraction of (device, carrier) pairs silenced by power control
    std::vector<double> device_snr_db;  // per device: mean |h|² P_k / σ² over carriers, in dB
    std::size_t channel_uses = 0;     // complex symbols on air per device (OFDM symbols × carriers × streams)
    std::size_t ofdm_symbols = 0;
};

// One AirComp round at symbol level on a single stream: K updates (each `codec.dim` long) are encoded with their
// weights, sent through per-carrier channels h[k * M + m] (constant over the round: block fading) with the power
// plan, summed, hit by CN(0, σ²) noise, scaled by 1/√η_m and decoded. `estimate` receives the estimated weighted
// sum Σ p_k x_k (dim values). `pc.signal_var` is ignored: each device's per-symbol power follows from its update's
// RMS, as in the protocol. Deterministic for a given `rng` state.
AircompReport aircomp_round_symbols(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                    const AircompCodec& codec, const std::vector<std::complex<double>>& h,
                                    std::size_t n_carriers, const PowerControlConfig& pc, std::mt19937_64& rng,
                                    std::vector<float>& estimate);

}  // namespace fedlora::phy
