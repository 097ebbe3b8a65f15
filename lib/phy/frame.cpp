#include "fedlora/phy/frame.h"

#include "complex_kernels.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace fedlora::phy {

void FrameConfig::validate() const {
    numerology.validate();
    if (numerology.pilot_spacing == 0)
        throw std::invalid_argument("frame: numerology.pilot_spacing = 0; the payload needs pilot carriers");
    if (n_devices == 0)
        throw std::invalid_argument("frame: n_devices = 0");
    if (n_tx == 0)
        throw std::invalid_argument("frame: n_tx = 0");
    if (reference_interval == 0)
        throw std::invalid_argument("frame: reference_interval = 0");
    if (pilot_repeats == 0 || pilot_repeats > 64)
        throw std::invalid_argument("frame: pilot_repeats = " + std::to_string(pilot_repeats) + " must be in [1, 64]");
}

FrameLayout::FrameLayout(const FrameConfig& cfg) : cfg_(cfg) { cfg_.validate(); }

namespace {
// Payload pilot j of payload symbol i: a fixed pseudo-random ±1 from a 32-bit integer hash of (i, j), the same on
// every host.
inline float pilot_sign(std::size_t i, std::size_t j) {
    std::uint32_t x = static_cast<std::uint32_t>(i) * 0x9E3779B1u ^ static_cast<std::uint32_t>(j) * 0x85EBCA77u;
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    x ^= x >> 12;
    return (x & 1u) ? 1.0f : -1.0f;
}
}  // namespace

std::complex<float> FrameLayout::payload_pilot(std::size_t i, std::size_t j) const {
    return {pilot_sign(i, j), 0.0f};
}

DeviceTransmitter::DeviceTransmitter(const FrameConfig& cfg, std::size_t device, double power)
    : layout_(cfg),
      device_(device),
      amplitude_(std::sqrt(power)),
      mod_(cfg.numerology),
      preamble_(cfg.numerology, cfg.preamble_seed),
      pilot_(zadoff_chu(static_cast<std::size_t>(cfg.numerology.n_occupied))),
      grid_(static_cast<std::size_t>(cfg.numerology.n_occupied)),
      data_pos_(cfg.numerology.data_positions()),
      pilot_pos_(cfg.numerology.pilot_positions()) {
    if (device >= cfg.n_devices)
        throw std::invalid_argument("device transmitter: device " + std::to_string(device) + " of " +
                                    std::to_string(cfg.n_devices));
    if (!(power > 0.0) || !std::isfinite(power))
        throw std::invalid_argument("device transmitter: power = " + std::to_string(power) + " must be > 0");
    for (auto& p : pilot_)
        p *= static_cast<float>(amplitude_);
}

void DeviceTransmitter::pilot_burst(std::vector<std::vector<std::complex<float>>>& out) {
    const auto& cfg = layout_.config();
    if (out.size() != cfg.n_tx)
        throw std::invalid_argument("device transmitter: " + std::to_string(out.size()) + " output streams for " +
                                    std::to_string(cfg.n_tx) + " antennas");
    for (auto& s : out) {
        if (s.size() < layout_.pilots_end())
            throw std::invalid_argument("device transmitter: output of " + std::to_string(s.size()) +
                                        " samples is shorter than the pilot burst (" +
                                        std::to_string(layout_.pilots_end()) + ")");
        std::fill(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(layout_.pilots_end()), std::complex<float>{});
    }
    // Preamble and postamble go out on the first antenna only, at the power of all antennas together.
    const auto& pre = preamble_.samples();
    const auto pre_amp = static_cast<float>(amplitude_ * std::sqrt(static_cast<double>(cfg.n_tx)));
    for (std::size_t i = 0; i < pre.size(); ++i)
        out[0][i] = pre[i] * pre_amp;
    // Training symbols: the preamble's second symbol with its CP, after every group of pilot slots.
    const std::size_t S = layout_.symbol_len();
    for (std::size_t g = 1; g <= layout_.n_references(); ++g)
        for (std::size_t i = 0; i < S; ++i)
            out[0][layout_.reference_offset(g) + i] = pre[S + i] * pre_amp;
    for (std::size_t a = 0; a < cfg.n_tx; ++a)
        for (std::size_t rep = 0; rep < cfg.pilot_repeats; ++rep)
            mod_.modulate(pilot_.data(), out[a].data() + layout_.pilot_offset(device_, a, rep), 1);
}

void DeviceTransmitter::payload(const std::vector<std::complex<float>>& data, std::size_t L,
                                const std::vector<std::complex<double>>& precoders,
                                std::vector<std::vector<std::complex<float>>>& out) {
    const auto& cfg = layout_.config();
    const std::size_t M = static_cast<std::size_t>(cfg.numerology.n_occupied);
    const std::size_t n_data = data_pos_.size(), T = cfg.n_tx;
    if (L == 0 || data.size() % (L * n_data) != 0)
        throw std::invalid_argument("device transmitter: " + std::to_string(data.size()) +
                                    " payload values are not whole OFDM symbols of " + std::to_string(L) + " x " +
                                    std::to_string(n_data));
    if (precoders.size() != M * T * L)
        throw std::invalid_argument("device transmitter: " + std::to_string(precoders.size()) +
                                    " precoder entries, expected n_occupied x n_tx x L = " + std::to_string(M * T * L));
    const std::size_t n = data.size() / (L * n_data);
    out.resize(T);
    for (auto& o : out)
        o.resize(n * layout_.symbol_len());
    for (std::size_t i = 0; i < n; ++i) {
        const auto* x = data.data() + i * L * n_data;
        for (std::size_t a = 0; a < T; ++a) {
            for (std::size_t j = 0; j < n_data; ++j) {
                const auto m = static_cast<std::size_t>(data_pos_[j]);
                std::complex<double> v = 0.0;
                for (std::size_t l = 0; l < L; ++l)
                    v += precoders[(m * T + a) * L + l] * std::complex<double>(x[l * n_data + j]);
                grid_[m] = std::complex<float>(v);
            }
            for (std::size_t j = 0; j < pilot_pos_.size(); ++j) {
                const auto m = static_cast<std::size_t>(pilot_pos_[j]);
                std::complex<double> v = 0.0;
                for (std::size_t l = 0; l < L; ++l)
                    v += precoders[(m * T + a) * L + l] * std::complex<double>(layout_.payload_pilot(i, j * L + l));
                grid_[m] = std::complex<float>(v);
            }
            mod_.modulate(grid_.data(), out[a].data() + i * layout_.symbol_len(), 1);
        }
    }
}

FrameReceiver::FrameReceiver(const FrameConfig& cfg, const ChannelEstimatorConfig& est, int timing_backoff)
    : layout_(cfg),
      backoff_(timing_backoff),
      demod_(cfg.numerology),
      estimator_(make_channel_estimator(cfg.numerology, est)),
      pilot_(zadoff_chu(static_cast<std::size_t>(cfg.numerology.n_occupied))),
      y_(static_cast<std::size_t>(cfg.numerology.n_occupied)),
      y2_(static_cast<std::size_t>(cfg.numerology.n_occupied)),
      acc_(static_cast<std::size_t>(cfg.numerology.n_occupied)),
      data_pos_(cfg.numerology.data_positions()),
      pilot_pos_(cfg.numerology.pilot_positions()) {
    for (std::size_t j = 0; j < data_pos_.size(); ++j) {
        const auto m = static_cast<std::size_t>(data_pos_[j]);
        if (j > 0 && m == static_cast<std::size_t>(data_pos_[j - 1]) + 1)
            ++data_runs_.back().second;
        else
            data_runs_.emplace_back(m, 1);
    }
    if (timing_backoff < 0 || timing_backoff > cfg.numerology.cp_len)
        throw std::invalid_argument("frame receiver: timing_backoff = " + std::to_string(timing_backoff) +
                                    " must be in [0, cp_len = " + std::to_string(cfg.numerology.cp_len) + "]");
}

void FrameReceiver::check_fits(std::size_t rx_size, std::size_t start, std::size_t end, const char* what) const {
    if (start < static_cast<std::size_t>(backoff_) || start - backoff_ + end > rx_size)
        throw std::invalid_argument(std::string("frame receiver: ") + what + " of the frame at " +
                                    std::to_string(start) + " does not fit in the " + std::to_string(rx_size) +
                                    " received samples");
}

double FrameReceiver::residual_cfo(const std::vector<std::complex<float>>& rx, std::size_t start) {
    check_fits(rx.size(), start, layout_.pilots_end(), "the pilot burst");
    return residual_cfo(rx.data() + start - backoff_);
}

double FrameReceiver::residual_cfo(const std::complex<float>* frame) {
    // Same transmitted symbol, same channel: the phase between consecutive copies is the residual CFO times their
    // distance. Increments are summed (each unambiguous), then divided by the whole distance.
    double phase = 0.0;
    demod_.demodulate(frame + layout_.reference_offset(0), y_.data(), 1);
    for (std::size_t g = 1; g <= layout_.n_references(); ++g) {
        demod_.demodulate(frame + layout_.reference_offset(g), y2_.data(), 1);
        std::complex<double> c = 0.0;
        for (std::size_t m = 0; m < y_.size(); ++m)
            c += std::complex<double>(y2_[m]) * std::conj(std::complex<double>(y_[m]));
        phase += std::abs(c) > 0.0 ? std::arg(c) : 0.0;
        std::swap(y_, y2_);
    }
    const double distance =
        static_cast<double>(layout_.reference_offset(layout_.n_references()) - layout_.reference_offset(0));
    return phase / distance;
}

void FrameReceiver::estimate_channels(const std::vector<std::complex<float>>& rx, std::size_t start,
                                      const std::vector<double>& pilot_power, std::vector<ChannelEstimate>& est) {
    check_fits(rx.size(), start, layout_.pilots_end(), "the pilot burst");
    estimate_channels(rx.data() + start - backoff_, pilot_power, est);
}

void FrameReceiver::estimate_channels(const std::complex<float>* frame, const std::vector<double>& pilot_power,
                                      std::vector<ChannelEstimate>& est) {
    const auto& cfg = layout_.config();
    if (pilot_power.size() != cfg.n_devices)
        throw std::invalid_argument("frame receiver: " + std::to_string(pilot_power.size()) + " pilot powers for " +
                                    std::to_string(cfg.n_devices) + " devices");
    est.resize(cfg.n_devices * cfg.n_tx);
    for (std::size_t k = 0; k < cfg.n_devices; ++k) {
        const double amp = std::sqrt(pilot_power[k]);
        for (std::size_t a = 0; a < cfg.n_tx; ++a) {
            // Average the R repetitions: the noise variance of the average is σ²/R.
            const auto R = static_cast<float>(cfg.pilot_repeats);
            std::fill(acc_.begin(), acc_.end(), std::complex<float>{});
            for (std::size_t rep = 0; rep < cfg.pilot_repeats; ++rep) {
                demod_.demodulate(frame + layout_.pilot_offset(k, a, rep), y_.data(), 1);
                for (std::size_t m = 0; m < acc_.size(); ++m)
                    acc_[m] += y_[m] / R;
            }
            auto& e = est[k * cfg.n_tx + a];
            estimator_->estimate(acc_.data(), pilot_.data(), 0.0, e);
            for (auto& v : e.h)
                v /= static_cast<float>(amp);
            e.error_var /= pilot_power[k];
            e.noise_var *= R;                   // back to the noise of one received symbol
            e.snr_db -= 10.0 * std::log10(R);  // per-symbol SNR
            // noise_var stays the receiver's noise per carrier; snr_db the device's receive SNR per carrier at
            // its pilot (full) power.
        }
    }
}

double FrameReceiver::payload(const std::vector<std::vector<std::complex<float>>>& rx, std::size_t start,
                              std::size_t n, std::size_t L, const std::vector<std::complex<double>>& combiner,
                              const std::vector<std::complex<double>>& expected, std::vector<std::complex<float>>& out) {
    const std::size_t R = rx.size(), n_data = data_pos_.size();
    set_payload_plan(R, L, combiner, expected);
    for (const auto& r : rx)
        check_fits(r.size(), start, layout_.payload_offset(n), "the payload");
    out.resize(n * L * n_data);
    windows_.resize(R);
    double cpe_sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t r = 0; r < R; ++r)
            windows_[r] = rx[r].data() + start - backoff_ + layout_.payload_offset(i);
        cpe_sum += std::abs(payload_symbol(windows_.data(), i, out.data() + i * L * n_data));
    }
    return n ? cpe_sum / static_cast<double>(n) : 0.0;
}

void FrameReceiver::set_payload_plan(std::size_t R, std::size_t L, const std::vector<std::complex<double>>& combiner,
                                     const std::vector<std::complex<double>>& expected) {
    const auto M = static_cast<std::size_t>(layout_.config().numerology.n_occupied);
    if (R == 0 || L == 0)
        throw std::invalid_argument("frame receiver: no receive antennas or no streams");
    if (combiner.size() != M * L * R || expected.size() != M * L * L)
        throw std::invalid_argument("frame receiver: combiner needs n_occupied x L x n_rx values and expected "
                                    "n_occupied x L x L");
    plan_rx_ = R;
    plan_streams_ = L;
    ys_.resize(R);
    for (auto& y : ys_)
        y.resize(M);
    // Combining runs in single precision, like the samples (the combiner is rounded once per plan). It is kept
    // carrier-contiguous per (stream, antenna), combiner_[(l · R + r) · M + m], so the combining loops run over
    // contiguous carriers.
    combiner_.resize(combiner.size());
    for (std::size_t m = 0; m < M; ++m)
        for (std::size_t l = 0; l < L; ++l)
            for (std::size_t r = 0; r < R; ++r)
                combiner_[(l * R + r) * M + m] = std::complex<float>(combiner[(m * L + l) * R + r]);
    expected_.assign(expected.begin(), expected.end());
    z_.resize(L * M);
    want_.resize(pilot_pos_.size() * L);
}


double FrameReceiver::payload_symbol(const std::complex<float>* const* window, std::size_t i, std::complex<float>* out,
                                     double* pilot_error) {
    const std::size_t R = plan_rx_, L = plan_streams_, n_data = data_pos_.size(), n_pilot = pilot_pos_.size();
    if (R == 0)
        throw std::logic_error("frame receiver: payload_symbol() before set_payload_plan()");
    const std::size_t M = ys_[0].size();
    for (std::size_t r = 0; r < R; ++r)
        demod_.demodulate(window[r], ys_[r].data(), 1);
    // Combined carriers z_l[m] = Σ_r W[m]_{l,r} y_r[m], summed over r in order from zero, on every carrier.
    std::fill(z_.begin(), z_.end(), std::complex<float>{});
    for (std::size_t l = 0; l < L; ++l)
        for (std::size_t r = 0; r < R; ++r)
            kernels::multiply_accumulate(combiner_.data() + (l * R + r) * M, ys_[r].data(), z_.data() + l * M, M);
    // The expected pilots G[m] p of this symbol, and the common phase error against them: c = Σ z · conj(G p).
    // Real arithmetic again, the operations std::complex<double> performs (p = ±1 + 0j).
    const auto* g = reinterpret_cast<const double*>(expected_.data());
    const auto* zf = reinterpret_cast<const float*>(z_.data());
    double c_re = 0.0, c_im = 0.0;
    for (std::size_t j = 0; j < n_pilot; ++j) {
        const auto m = static_cast<std::size_t>(pilot_pos_[j]);
        for (std::size_t l = 0; l < L; ++l) {
            double w_re = 0.0, w_im = 0.0;
            for (std::size_t l2 = 0; l2 < L; ++l2) {
                const std::size_t e = 2 * ((m * L + l) * L + l2);
                const double p_re = pilot_sign(i, j * L + l2), p_im = 0.0;
                w_re += g[e] * p_re - g[e + 1] * p_im;
                w_im += g[e] * p_im + g[e + 1] * p_re;
            }
            want_[j * L + l] = {w_re, w_im};
            const double z_re = zf[2 * (l * M + m)], z_im = zf[2 * (l * M + m) + 1];
            c_re += z_re * w_re - z_im * -w_im;
            c_im += z_re * -w_im + z_im * w_re;
        }
    }
    const std::complex<double> c(c_re, c_im);
    const double cpe = std::abs(c) > 0.0 ? std::arg(c) : 0.0;
    const auto derot = std::polar(1.0f, static_cast<float>(-cpe));
    // Every carrier derotated in one contiguous pass, then the data carriers (runs between pilots) copied out.
    kernels::multiply_scalar(z_.data(), derot, z_.data(), L * M);
    for (std::size_t l = 0; l < L; ++l) {
        std::complex<float>* o = out + l * n_data;
        for (const auto& run : data_runs_) {
            std::copy_n(z_.data() + l * M + run.first, run.second, o);
            o += run.second;
        }
    }
    if (pilot_error) {
        for (std::size_t j = 0; j < n_pilot; ++j) {
            const auto m = static_cast<std::size_t>(pilot_pos_[j]);
            for (std::size_t l = 0; l < L; ++l) {
                const auto want = want_[j * L + l];
                pilot_error[0] += std::norm(std::complex<double>(z_[l * M + m]) - want);  // z_ is derotated
                pilot_error[1] += std::norm(want);
            }
        }
    }
    return cpe;
}

}  // namespace fedlora::phy
