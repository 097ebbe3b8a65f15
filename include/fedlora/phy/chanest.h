// Pilots and channel estimation, per device, antenna and occupied subcarrier.
//
// Pilots are orthogonal in time: in a pilot burst of K·N_t OFDM symbols, slot k·N_t + a carries device k's
// antenna a, everyone else is silent. Each pilot symbol holds a unit-modulus Zadoff-Chu sequence on the occupied
// carriers (the same sequence in every slot: orthogonality comes from the slots).
//
// Estimators, selectable by name (make_channel_estimator):
//   "ls"     least squares, Ĥ[m] = Y[m] / X[m]: unbiased, error variance σ² per carrier.
//   "dft"    delay-domain projection: the LS estimate projected onto channels whose impulse response lies in
//            [−pre_delay, max_delay) samples (the CP window). Error variance σ²·L/M on average, L = pre + max taps,
//            M occupied carriers; exact with guard bands and the DC gap (no FFT-leakage edge effect), computed with
//            two FFTs and two small r × L products per call.
//   "lmmse"  linear MMSE with a uniform power-delay profile over the same window (robust to the true profile):
//            Ĥ = R (R + σ² I)⁻¹ Ĥ_ls.
//   "sparse" significant taps by orthogonal matching pursuit over the window's delays, stopping when the best
//            remaining correlation is at noise level (~1% chance of a false tap); LS on the taps taken. Error
//            variance σ²·S/M for S taps: far below "dft" for sparse channels such as the 3GPP profiles.
// All of them also estimate the noise variance and the per-device SNR from the projection residual.
#pragma once

#include <complex>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "fedlora/phy/numerology.h"

namespace fedlora::phy {

// Unit-modulus Zadoff-Chu sequence of length n (root u coprime with the odd length used internally).
std::vector<std::complex<float>> zadoff_chu(std::size_t n, unsigned root = 1);

struct PilotLayout {
    std::size_t n_devices = 1;
    std::size_t n_tx = 1;  // antennas per device
    std::size_t n_slots() const { return n_devices * n_tx; }
    std::size_t slot(std::size_t device, std::size_t antenna) const { return device * n_tx + antenna; }
};

struct ChannelEstimate {
    std::vector<std::complex<float>> h;  // M values
    double noise_var = 0.0;              // σ² estimate (per carrier, same units as |Y|²)
    double snr_db = 0.0;                 // mean |Ĥ|² / σ² in dB (the device's receive SNR per carrier)
    double error_var = 0.0;              // expected E|Ĥ − H|² per carrier of this estimator at the measured σ²
};

struct ChannelEstimatorConfig {
    std::string name = "dft";
    int max_delay = -1;  // taps after 0 kept by dft/lmmse; -1: the numerology's cp_len
    int pre_delay = -1;  // taps before 0 (an FFT window that starts late sees negative delays); -1: cp_len / 8
};

class ChannelEstimator {
public:
    virtual ~ChannelEstimator() = default;
    virtual const char* name() const = 0;
    // y: received values of one pilot symbol on the M occupied carriers; pilot: the known values (unit modulus).
    // known_noise_var > 0 is used by "lmmse" instead of its own estimate. Writes into `out`, allocation-free
    // after the first call with this numerology.
    virtual void estimate(const std::complex<float>* y, const std::complex<float>* pilot, double known_noise_var,
                          ChannelEstimate& out) = 0;
};

// Throws std::invalid_argument naming the bad value (unknown estimator name, delays outside [0, fft_size)).
std::unique_ptr<ChannelEstimator> make_channel_estimator(const Numerology& num, const ChannelEstimatorConfig& cfg);

}  // namespace fedlora::phy
