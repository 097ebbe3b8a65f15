#include "fedlora/phy/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <set>

#include "fedlora/phy/chanest.h"
#include "fedlora/phy/sync.h"

namespace fedlora::phy {

namespace {

using cf = std::complex<float>;
using cd = std::complex<double>;
constexpr double kPi = 3.14159265358979323846;
constexpr double kTwoPi = 2.0 * kPi;

double wrap(double x) {
    x = std::fmod(x + kPi, kTwoPi);
    if (x < 0.0)
        x += kTwoPi;
    return x - kPi;
}

std::string num(double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.6g", v);
    return b;
}

// Kaiser-windowed sinc at x (|x| < half_width), not normalised.
double windowed_sinc(double x, double half_width, double beta) {
    const double r = x / half_width;
    if (std::fabs(r) >= 1.0)
        return 0.0;
    const double w = std::cyl_bessel_i(0.0, beta * std::sqrt(1.0 - r * r)) / std::cyl_bessel_i(0.0, beta);
    const double s = std::fabs(x) < 1e-12 ? 1.0 : std::sin(kPi * x) / (kPi * x);
    return w * s;
}

}  // namespace

std::string format_frequency(double hz) {
    return num(hz / 1e6) + " MHz";
}

// ---------------------------------------------------------------------------------------------------------------
// Burst

void CalibrationBurstConfig::validate() const {
    numerology.validate();
    if (numerology.n_occupied < 4)
        throw std::invalid_argument("calibration burst: numerology.n_occupied = " +
                                    std::to_string(numerology.n_occupied) + " must be at least 4 (preamble)");
    if (n_devices == 0)
        throw std::invalid_argument("calibration burst: n_devices = 0");
    if (pilot_repeats < 2 || pilot_repeats > 256)
        throw std::invalid_argument("calibration burst: pilot_repeats = " + std::to_string(pilot_repeats) +
                                    " must be in [2, 256] (the CFO is measured between repetitions)");
    if (guard > (1u << 20))
        throw std::invalid_argument("calibration burst: guard = " + std::to_string(guard) +
                                    " samples is larger than 2^20");
}

CalibrationBurstLayout::CalibrationBurstLayout(const CalibrationBurstConfig& cfg)
    : cfg_(cfg), S_(static_cast<std::size_t>(cfg.numerology.symbol_len())), G_(cfg.resolved_guard()) {
    cfg_.validate();
}

CalibrationTransmitter::CalibrationTransmitter(const CalibrationBurstConfig& cfg, std::size_t device, double power)
    : layout_(cfg),
      device_(device),
      amplitude_(std::sqrt(power)),
      mod_(cfg.numerology),
      preamble_(cfg.numerology, cfg.preamble_seed),
      pilot_(zadoff_chu(static_cast<std::size_t>(cfg.numerology.n_occupied))) {
    if (device >= cfg.n_devices)
        throw std::invalid_argument("calibration transmitter: device " + std::to_string(device) + " of " +
                                    std::to_string(cfg.n_devices));
    if (!(power > 0.0) || !std::isfinite(power))
        throw std::invalid_argument("calibration transmitter: power = " + num(power) + " must be > 0");
    for (auto& p : pilot_)
        p *= static_cast<float>(amplitude_);
}

void CalibrationTransmitter::burst(std::vector<cf>& out) {
    out.assign(layout_.length(), cf{});
    const auto& pre = preamble_.samples();
    const std::size_t at = layout_.slot_offset(device_);
    for (std::size_t i = 0; i < pre.size(); ++i)
        out[at + i] = pre[i] * static_cast<float>(amplitude_);
    for (std::size_t r = 0; r < layout_.config().pilot_repeats; ++r)
        mod_.modulate(pilot_.data(), out.data() + layout_.pilot_offset(device_, r), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Estimation

void AlignmentConfig::validate() const {
    burst.validate();
    const std::size_t K = burst.n_devices;
    if (!pilot_power.empty() && pilot_power.size() != K)
        throw std::invalid_argument("alignment: " + std::to_string(pilot_power.size()) + " pilot powers for " +
                                    std::to_string(K) + " devices");
    for (std::size_t k = 0; k < pilot_power.size(); ++k)
        if (!(pilot_power[k] > 0.0) || !std::isfinite(pilot_power[k]))
            throw std::invalid_argument("alignment: pilot_power[" + std::to_string(k) + "] = " +
                                        num(pilot_power[k]) + " must be > 0");
    if (!expected_gain_db.empty() && expected_gain_db.size() != K)
        throw std::invalid_argument("alignment: " + std::to_string(expected_gain_db.size()) +
                                    " expected gains for " + std::to_string(K) + " devices");
    for (std::size_t k = 0; k < expected_gain_db.size(); ++k)
        if (!std::isfinite(expected_gain_db[k]))
            throw std::invalid_argument("alignment: expected_gain_db[" + std::to_string(k) + "] is not finite");
    if (!std::isfinite(system_delay) || system_delay < 0.0)
        throw std::invalid_argument("alignment: system_delay = " + num(system_delay) + " must be >= 0");
    if (timing_backoff < -1 || timing_backoff > burst.numerology.cp_len)
        throw std::invalid_argument("alignment: timing_backoff = " + std::to_string(timing_backoff) +
                                    " must be -1 or in [0, cp_len = " + std::to_string(burst.numerology.cp_len) +
                                    "]");
}

struct AlignmentEstimator::Impl {
    AlignmentConfig cfg;
    CalibrationBurstLayout layout;
    Synchronizer sync;
    OfdmDemodulator demod;
    std::vector<cf> pilot, buf, y;
    std::vector<int> carriers;
    std::vector<std::vector<cd>> H;  // R × M LS estimates of one device
    std::vector<SyncDetection> dets;
    int backoff;

    static SyncConfig sync_config(const AlignmentConfig& c) {
        SyncConfig s;
        s.numerology = c.burst.numerology;
        s.numerology.pilot_spacing = 0;
        s.false_alarm_rate = c.sync_false_alarm_rate;
        s.preamble_seed = c.burst.preamble_seed;
        return s;
    }

    explicit Impl(const AlignmentConfig& c)
        : cfg((c.validate(), c)),
          layout(c.burst),
          sync(sync_config(c)),
          demod(c.burst.numerology),
          pilot(zadoff_chu(static_cast<std::size_t>(c.burst.numerology.n_occupied))),
          buf(static_cast<std::size_t>(c.burst.numerology.symbol_len())),
          y(static_cast<std::size_t>(c.burst.numerology.n_occupied)),
          carriers(c.burst.numerology.occupied_carriers()),
          H(c.burst.pilot_repeats, std::vector<cd>(static_cast<std::size_t>(c.burst.numerology.n_occupied))),
          backoff(c.timing_backoff < 0 ? c.burst.numerology.cp_len / 4 : c.timing_backoff) {}

    DeviceAlignment one(std::size_t k, const cf* rx, std::size_t n, std::int64_t rx_first, std::int64_t burst_start);
};

AlignmentEstimator::AlignmentEstimator(const AlignmentConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {}
AlignmentEstimator::~AlignmentEstimator() = default;
AlignmentEstimator::AlignmentEstimator(AlignmentEstimator&&) noexcept = default;
AlignmentEstimator& AlignmentEstimator::operator=(AlignmentEstimator&&) noexcept = default;
const CalibrationBurstLayout& AlignmentEstimator::layout() const { return impl_->layout; }
std::size_t AlignmentEstimator::tail() const { return impl_->sync.max_latency(); }

std::vector<DeviceAlignment> AlignmentEstimator::estimate(const cf* rx, std::size_t n, std::int64_t rx_first,
                                                          std::int64_t burst_start) {
    auto& d = *impl_;
    d.sync.reset();
    d.dets.clear();
    d.dets.reserve(d.sync.max_detections(n));
    d.sync.process(rx, n, d.dets);
    std::vector<DeviceAlignment> out(d.cfg.burst.n_devices);
    for (std::size_t k = 0; k < out.size(); ++k)
        out[k] = d.one(k, rx, n, rx_first, burst_start);
    return out;
}

DeviceAlignment AlignmentEstimator::Impl::one(std::size_t k, const cf* rx, std::size_t n, std::int64_t rx_first,
                                              std::int64_t burst_start) {
    const auto& num_ = cfg.burst.numerology;
    const std::size_t S = layout.symbol_len(), R = cfg.burst.pilot_repeats, M = carriers.size();
    const int N = num_.fft_size, cp = num_.cp_len;
    const double G = static_cast<double>(layout.guard());
    const std::string who = "calibration: device " + std::to_string(k);

    // 1. The device's slot: the synchroniser's detection nearest to where it was scheduled.
    const double expected = static_cast<double>(burst_start) + static_cast<double>(layout.slot_offset(k)) +
                            cfg.system_delay;
    const SyncDetection* best = nullptr;
    double best_dist = 0.0;
    for (const auto& det : dets) {
        const double dist = std::fabs(static_cast<double>(rx_first + static_cast<std::int64_t>(det.start)) - expected);
        if (dist <= G && (!best || dist < best_dist)) {
            best = &det;
            best_dist = dist;
        }
    }
    if (!best)
        throw std::runtime_error(who + ": no calibration preamble within +-" + std::to_string(layout.guard()) +
                                 " samples of sample " + num(expected) +
                                 " (the device did not transmit, its SNR is too low, or its timing offset exceeds "
                                 "the guard; " +
                                 std::to_string(dets.size()) + " preamble(s) found in " + std::to_string(n) +
                                 " samples)");
    const std::int64_t t0 = rx_first + static_cast<std::int64_t>(best->start);
    const double w0 = best->cfo_rad_per_sample;
    const double amp = std::sqrt(cfg.pilot_power.empty() ? 1.0 : cfg.pilot_power[k]);

    // 2. Least-squares channel of every pilot repetition, derotated by a CFO w_cur relative to the burst start
    // (phase w_cur (n − burst_start) removed from sample n). 3. Residual CFO w_res: phase increments between
    // consecutive repetitions (each unambiguous), then a least-squares line through the per-repetition phases
    // around their mean. Two passes: the first derotates by the synchroniser's estimate, the second by the first
    // pass's result, so that the intercarrier interference of the synchroniser's CFO error (which has a phase
    // pattern across the chirp-like pilot) does not bias the timing estimate.
    const double Sd = static_cast<double>(S);
    const double rbar = 0.5 * static_cast<double>(R - 1);
    std::vector<cd> Hbar(M);
    auto average = [&](double w) {
        std::fill(Hbar.begin(), Hbar.end(), cd{});
        for (std::size_t r = 0; r < R; ++r) {
            const cd rot = std::polar(1.0, -w * (static_cast<double>(r) - rbar) * Sd);
            for (std::size_t m = 0; m < M; ++m)
                Hbar[m] += H[r][m] * rot;
        }
        for (auto& v : Hbar)
            v /= static_cast<double>(R);
    };
    double w_cur = w0, w_res = 0.0;
    for (int pass = 0; pass < 2; ++pass) {
        if (pass == 1)
            w_cur += w_res;
        for (std::size_t r = 0; r < R; ++r) {
            const std::int64_t cp_start = t0 + static_cast<std::int64_t>((2 + r) * S) - backoff;
            const std::int64_t idx = cp_start - rx_first;
            if (idx < 0 || idx + static_cast<std::int64_t>(S) > static_cast<std::int64_t>(n))
                throw std::runtime_error(who + ": pilot " + std::to_string(r) + " at sample " +
                                         std::to_string(cp_start) + " lies outside the " + std::to_string(n) +
                                         " received samples");
            correct_cfo(rx + idx, buf.data(), S, w_cur, wrap(w_cur * static_cast<double>(cp_start - burst_start)));
            demod.demodulate(buf.data(), y.data(), 1);
            for (std::size_t m = 0; m < M; ++m)
                H[r][m] = cd(y[m]) * std::conj(cd(pilot[m])) / amp;
        }
        double inc = 0.0;
        for (std::size_t r = 0; r + 1 < R; ++r) {
            cd c = 0.0;
            for (std::size_t m = 0; m < M; ++m)
                c += H[r + 1][m] * std::conj(H[r][m]);
            inc += std::arg(c);
        }
        w_res = inc / (static_cast<double>(R - 1) * Sd);
        average(w_res);
        double sxy = 0.0, sxx = 0.0;
        for (std::size_t r = 0; r < R; ++r) {
            const double x = (static_cast<double>(r) - rbar) * Sd;
            const cd rot = std::polar(1.0, -w_res * x);
            cd c = 0.0;
            for (std::size_t m = 0; m < M; ++m)
                c += H[r][m] * rot * std::conj(Hbar[m]);
            sxy += x * std::arg(c);
            sxx += x * x;
        }
        w_res += sxy / sxx;
        average(w_res);
    }

    // 4. Noise (spread of the repetitions around their mean), gain and SNR.
    double e2 = 0.0, p = 0.0;
    for (std::size_t r = 0; r < R; ++r) {
        const cd rot = std::polar(1.0, -w_res * (static_cast<double>(r) - rbar) * Sd);
        for (std::size_t m = 0; m < M; ++m)
            e2 += std::norm(H[r][m] * rot - Hbar[m]);
    }
    for (std::size_t m = 0; m < M; ++m)
        p += std::norm(Hbar[m]);
    const double Md = static_cast<double>(M), Rd = static_cast<double>(R);
    const double sigma_h2 = e2 / (Md * (Rd - 1.0));  // per repetition and carrier, relative to the pilot
    const double gain = p / Md - sigma_h2 / Rd;
    if (!(gain > 0.0))
        throw std::runtime_error(who + ": its pilots carry no signal above the noise");
    const double snr = sigma_h2 > 0.0 ? gain / sigma_h2 : 1e12;

    // 5. Timing: the phase slope across carriers, first from adjacent carriers (unambiguous for |δ| < N/2), then a
    // weighted least-squares line; its intercept at DC is the phase.
    cd adj = 0.0;
    for (std::size_t m = 0; m + 1 < M; ++m)
        if (carriers[m + 1] == carriers[m] + 1)
            adj += Hbar[m + 1] * std::conj(Hbar[m]);
    const double Nd = static_cast<double>(N);
    const double delta0 = -std::arg(adj) * Nd / kTwoPi;
    std::vector<cd> Gm(M);
    cd s0 = 0.0;
    for (std::size_t m = 0; m < M; ++m) {
        Gm[m] = Hbar[m] * std::polar(1.0, kTwoPi * carriers[m] * delta0 / Nd);
        s0 += Gm[m];
    }
    double sw = 0.0, swk = 0.0, swp = 0.0;
    std::vector<double> psi(M), wt(M);
    for (std::size_t m = 0; m < M; ++m) {
        psi[m] = std::arg(Gm[m] * std::conj(s0));
        wt[m] = std::norm(Gm[m]);
        sw += wt[m];
        swk += wt[m] * carriers[m];
        swp += wt[m] * psi[m];
    }
    const double kbar = swk / sw, pbar = swp / sw;
    double sxy = 0.0, sxx = 0.0;
    for (std::size_t m = 0; m < M; ++m) {
        sxy += wt[m] * (carriers[m] - kbar) * (psi[m] - pbar);
        sxx += wt[m] * (carriers[m] - kbar) * (carriers[m] - kbar);
    }
    const double slope = sxy / sxx;
    const double delta = delta0 - slope * Nd / kTwoPi;
    const double alpha = std::arg(s0) + (pbar - slope * kbar);

    // 6. Back to the transmit timeline.
    const double u0 = static_cast<double>(t0 + static_cast<std::int64_t>(2 * S) + cp - backoff);
    const double nominal = static_cast<double>(burst_start) + static_cast<double>(layout.pilot_offset(k, 0) + cp);
    DeviceAlignment a;
    a.timing_offset_samples = u0 + delta - nominal - cfg.system_delay;
    // The phase is reported at the device's own slot start m_ref (close to where it was measured, so that the CFO
    // estimate's error hardly moves it); the derotation above was relative to the burst start.
    const double w = w_cur + w_res;
    const double tbar = u0 + 0.5 * (Nd - 1.0) + rbar * Sd;
    const std::int64_t m_ref = burst_start + static_cast<std::int64_t>(layout.slot_offset(k));
    a.reference_sample = m_ref;
    a.phase_rad = wrap(alpha - w_res * (tbar - static_cast<double>(burst_start)) +
                       w * (cfg.system_delay + a.timing_offset_samples) +
                       w * static_cast<double>(m_ref - burst_start));
    a.cfo_hz = w * num_.sample_rate / kTwoPi;
    a.gain_db = 10.0 * std::log10(gain);
    a.gain_error_db = a.gain_db - (cfg.expected_gain_db.empty() ? 0.0 : cfg.expected_gain_db[k]);
    a.snr_db = 10.0 * std::log10(snr);
    a.noise_var = sigma_h2 * amp * amp;

    // 7. Expected spread at this SNR (docs/math.md, "Calibration").
    double sum_k2 = 0.0;
    for (int c : carriers)
        sum_k2 += (c - kbar) * (c - kbar);
    const double sum_x2 = Sd * Sd * Rd * (Rd * Rd - 1.0) / 12.0;
    const double var_w = 1.0 / (2.0 * Md * snr * sum_x2);
    const double var_delta = (Nd / kTwoPi) * (Nd / kTwoPi) / (2.0 * Rd * snr * sum_k2);
    const double lever = tbar - static_cast<double>(m_ref) - cfg.system_delay - a.timing_offset_samples;
    a.gain_std_db = 10.0 / std::log(10.0) * std::sqrt(2.0 / (Md * Rd * snr));
    a.timing_std_samples = std::sqrt(var_delta);
    a.cfo_std_hz = std::sqrt(var_w) * num_.sample_rate / kTwoPi;
    a.phase_std_rad = std::sqrt(1.0 / (2.0 * Rd * snr) * (1.0 / Md + kbar * kbar / sum_k2) + lever * lever * var_w +
                                w * w * var_delta);
    return a;
}

// ---------------------------------------------------------------------------------------------------------------
// Transmit correction

TransmitCorrection TransmitCorrection::from(const DeviceAlignment& a, bool with_gain, double relative_to) {
    TransmitCorrection c;
    c.gain_db = with_gain ? -a.gain_error_db : 0.0;
    c.advance_samples = a.timing_offset_samples - relative_to;
    c.phase_rad = a.phase_rad;
    c.cfo_hz = a.cfo_hz;
    c.reference_sample = a.reference_sample;
    return c;
}

void TransmitCorrection::validate(double sample_rate) const {
    auto bad = [](const char* field, double v, const std::string& why) {
        throw std::invalid_argument(std::string("transmit correction: ") + field + " = " + num(v) + " " + why);
    };
    if (!std::isfinite(gain_db) || std::fabs(gain_db) > 40.0)
        bad("gain_db", gain_db, "must satisfy |gain_db| <= 40");
    if (!std::isfinite(advance_samples) || std::fabs(advance_samples) > 1e6)
        bad("advance_samples", advance_samples, "must satisfy |advance_samples| <= 1e6");
    if (!std::isfinite(phase_rad))
        bad("phase_rad", phase_rad, "must be finite");
    if (!std::isfinite(cfo_hz) || !(std::fabs(cfo_hz) < sample_rate / 2.0))
        bad("cfo_hz", cfo_hz, "must satisfy |cfo_hz| < sample_rate/2 = " + num(sample_rate / 2.0));
}

TransmitCorrector::TransmitCorrector(const TransmitCorrection& c, double sample_rate, int half_length,
                                     double kaiser_beta)
    : c_(c) {
    if (!(sample_rate > 0.0))
        throw std::invalid_argument("transmit corrector: sample_rate = " + num(sample_rate) + " must be > 0");
    if (half_length < 1 || half_length > 256)
        throw std::invalid_argument("transmit corrector: half_length = " + std::to_string(half_length) +
                                    " must be in [1, 256]");
    if (!(kaiser_beta >= 0.0) || kaiser_beta > 40.0)
        throw std::invalid_argument("transmit corrector: kaiser_beta = " + num(kaiser_beta) + " must be in [0, 40]");
    c.validate(sample_rate);
    omega_ = kTwoPi * c.cfo_hz / sample_rate;
    const double fl = std::floor(c.advance_samples);
    whole_ = static_cast<std::int64_t>(fl);
    const double mu = c.advance_samples - fl;
    if (mu < 1e-9) {
        taps_ = {1.0};
        first_ = 0;
    } else if (mu > 1.0 - 1e-9) {
        taps_ = {1.0};
        first_ = 1;
    } else {
        // x(i0 + mu) ≈ Σ_q h[q] x[i0 + q], q = −W+1 .. W, h[q] = w(q − mu) sinc(q − mu), normalised to unit DC gain.
        const int W = half_length;
        first_ = -W + 1;
        taps_.resize(static_cast<std::size_t>(2 * W));
        double sum = 0.0;
        for (int q = first_; q <= W; ++q)
            sum += taps_[static_cast<std::size_t>(q - first_)] = windowed_sinc(q - mu, W, kaiser_beta);
        for (auto& t : taps_)
            t /= sum;
    }
    const std::int64_t last = first_ + static_cast<std::int64_t>(taps_.size()) - 1;
    lead_ = static_cast<std::size_t>(std::max<std::int64_t>(0, whole_ + last));
    tail_ = static_cast<std::size_t>(std::max<std::int64_t>(0, -whole_ - first_));
}

void TransmitCorrector::apply(const cf* in, std::size_t n_in, std::int64_t in_start, cf* out, std::size_t n_out,
                              std::int64_t out_start) const {
    const double g = std::pow(10.0, c_.gain_db / 20.0);
    const auto T = static_cast<std::int64_t>(taps_.size());
    const auto n = static_cast<std::int64_t>(n_in);
    constexpr std::size_t kAnchor = 1024;
    cd rot = 1.0, step = std::polar(1.0, -omega_);
    for (std::size_t j = 0; j < n_out; ++j) {
        const std::int64_t m = out_start + static_cast<std::int64_t>(j);
        if (j % kAnchor == 0)  // re-anchored in double precision from the absolute index
            rot = std::polar(1.0, -wrap(c_.phase_rad + omega_ * static_cast<double>(m - c_.reference_sample)));
        const std::int64_t base = m - in_start + whole_ + first_;
        cd acc = 0.0;
        const std::int64_t q0 = std::max<std::int64_t>(0, -base), q1 = std::min<std::int64_t>(T, n - base);
        for (std::int64_t q = q0; q < q1; ++q)
            acc += taps_[static_cast<std::size_t>(q)] * cd(in[base + q]);
        out[j] = cf(g * acc * rot);
        rot *= step;
    }
}

CorrectionSpan correction_span(const std::vector<TransmitCorrection>& c, double sample_rate) {
    CorrectionSpan s;
    for (const auto& x : c) {
        const TransmitCorrector t(x, sample_rate);
        s.lead = std::max(s.lead, t.lead());
        s.tail = std::max(s.tail, t.tail());
    }
    return s;
}

// ---------------------------------------------------------------------------------------------------------------
// The record

namespace {

std::string list_frequencies(const std::vector<double>& f) {
    std::string s;
    for (std::size_t i = 0; i < f.size(); ++i)
        s += (i ? ", " : "") + format_frequency(f[i]);
    return s.empty() ? "none" : s;
}

std::string at_device(const CalibrationSet& s, const std::string& serial) {
    return s.source + ": device '" + serial + "'";
}

std::string at_channel(const CalibrationSet& s, const std::string& serial, int ch) {
    return at_device(s, serial) + " channel " + std::to_string(ch);
}

void check_ascending(const std::vector<double>& v, const std::string& where, const char* key, std::size_t min_size,
                     bool positive) {
    if (v.size() < min_size)
        throw CalibrationError(where + ": " + key + " has " + std::to_string(v.size()) + " entries, needs at least " +
                               std::to_string(min_size));
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (!std::isfinite(v[i]) || (positive && !(v[i] > 0.0)))
            throw CalibrationError(where + ": " + key + "[" + std::to_string(i) + "] = " + num(v[i]) + " must be " +
                                   (positive ? "positive and finite" : "finite"));
        if (i && !(v[i] > v[i - 1]))
            throw CalibrationError(where + ": " + key + " must be strictly ascending (" + num(v[i - 1]) + " then " +
                                   num(v[i]) + ")");
    }
}

// Index i and weight u of frequency f between rows i and i + 1 (u = 0 for a single row), or throws.
std::pair<std::size_t, double> bracket(const std::vector<double>& f, double hz, double tol, const std::string& where,
                                       const char* key) {
    if (!std::isfinite(hz) || hz < f.front() - tol || hz > f.back() + tol)
        throw CalibrationError(where + ": " + key + ": " + format_frequency(hz) +
                               " is outside the calibrated frequencies (" + list_frequencies(f) + ")");
    if (f.size() == 1 || hz <= f.front())
        return {0, 0.0};
    if (hz >= f.back())
        return {f.size() - 2, 1.0};
    const std::size_t i = static_cast<std::size_t>(std::upper_bound(f.begin(), f.end(), hz) - f.begin()) - 1;
    return {i, (hz - f[i]) / (f[i + 1] - f[i])};
}

// The table's row (power per gain) at a frequency.
std::vector<double> power_row(const TxPowerTable& t, double hz, double tol, const std::string& where) {
    const auto [i, u] = bracket(t.frequencies_hz, hz, tol, where, "tx_power.frequencies_hz");
    const std::size_t G = t.gains_db.size();
    std::vector<double> row(G);
    for (std::size_t g = 0; g < G; ++g) {
        const double a = t.power_dbm[i * G + g];
        row[g] = u > 0.0 ? a + u * (t.power_dbm[(i + 1) * G + g] - a) : a;
    }
    return row;
}

}  // namespace

void CalibrationSet::validate() const {
    if (version != kVersion)
        throw CalibrationError(source + ": fedlora_calibration = " + std::to_string(version) +
                               " is not a version this build reads (" + std::to_string(kVersion) + ")");
    if (reference != "internal" && reference != "external" && reference != "gpsdo")
        throw CalibrationError(source + ": reference = '" + reference +
                               "' must be one of internal, external, gpsdo");
    if (!std::isfinite(tx_reference_dbfs) || tx_reference_dbfs > 0.0 || tx_reference_dbfs < -60.0)
        throw CalibrationError(source + ": tx_reference_dbfs = " + num(tx_reference_dbfs) + " must be in [-60, 0]");
    if (devices.empty())
        throw CalibrationError(source + ": devices is empty");
    std::set<std::string> serials;
    for (std::size_t d = 0; d < devices.size(); ++d) {
        const auto& dev = devices[d];
        if (dev.serial.empty())
            throw CalibrationError(source + ": devices[" + std::to_string(d) + "].serial is empty");
        if (!serials.insert(dev.serial).second)
            throw CalibrationError(source + ": device serial '" + dev.serial + "' appears twice");
        if (dev.channels.empty())
            throw CalibrationError(at_device(*this, dev.serial) + ": channels is empty");
        std::set<int> chans;
        for (const auto& ch : dev.channels) {
            if (ch.channel < 0 || ch.channel > 31)
                throw CalibrationError(at_device(*this, dev.serial) + ": channel = " + std::to_string(ch.channel) +
                                       " must be in [0, 31]");
            if (!chans.insert(ch.channel).second)
                throw CalibrationError(at_device(*this, dev.serial) + ": channel " + std::to_string(ch.channel) +
                                       " appears twice");
            const std::string where = at_channel(*this, dev.serial, ch.channel);
            if (ch.tx_power.empty() && ch.rx_noise.empty() && ch.alignment.empty())
                throw CalibrationError(where + ": holds none of tx_power, rx_noise_floor, alignment");
            if (!ch.tx_power.empty()) {
                const auto& t = ch.tx_power;
                check_ascending(t.frequencies_hz, where, "tx_power.frequencies_hz", 1, true);
                check_ascending(t.gains_db, where, "tx_power.gains_db", 2, false);
                const std::size_t F = t.frequencies_hz.size(), G = t.gains_db.size();
                if (t.power_dbm.size() != F * G)
                    throw CalibrationError(where + ": tx_power.power_dbm has " + std::to_string(t.power_dbm.size()) +
                                           " values, expected " + std::to_string(F) + " frequencies x " +
                                           std::to_string(G) + " gains = " + std::to_string(F * G));
                for (std::size_t f = 0; f < F; ++f)
                    for (std::size_t g = 0; g < G; ++g) {
                        const double v = t.power_dbm[f * G + g];
                        const std::string cell = "tx_power.power_dbm[" + std::to_string(f) + "][" +
                                                 std::to_string(g) + "]";
                        if (!std::isfinite(v) || std::fabs(v) > 100.0)
                            throw CalibrationError(where + ": " + cell + " = " + num(v) +
                                                   " dBm is not a plausible output power");
                        if (g && !(v > t.power_dbm[f * G + g - 1]))
                            throw CalibrationError(where + ": " + cell + " = " + num(v) + " dBm at gain " +
                                                   num(t.gains_db[g]) +
                                                   " dB does not exceed the power at the gain before (" +
                                                   num(t.power_dbm[f * G + g - 1]) + " dBm at " +
                                                   format_frequency(t.frequencies_hz[f]) +
                                                   "): output power must grow with gain");
                    }
            }
            if (!ch.rx_noise.empty()) {
                const auto& r = ch.rx_noise;
                check_ascending(r.frequencies_hz, where, "rx_noise_floor.frequencies_hz", 1, true);
                if (r.dbfs.size() != r.frequencies_hz.size())
                    throw CalibrationError(where + ": rx_noise_floor.dbfs has " + std::to_string(r.dbfs.size()) +
                                           " values for " + std::to_string(r.frequencies_hz.size()) + " frequencies");
                for (std::size_t i = 0; i < r.dbfs.size(); ++i)
                    if (!std::isfinite(r.dbfs[i]) || r.dbfs[i] > 0.0 || r.dbfs[i] < -200.0)
                        throw CalibrationError(where + ": rx_noise_floor.dbfs[" + std::to_string(i) + "] = " +
                                               num(r.dbfs[i]) + " must be in [-200, 0] dBFS");
                if (!std::isfinite(r.gain_db))
                    throw CalibrationError(where + ": rx_noise_floor.gain_db is not finite");
            }
            for (std::size_t i = 0; i < ch.alignment.size(); ++i) {
                const auto& a = ch.alignment[i];
                const std::string ai = where + ": alignment[" + std::to_string(i) + "]";
                if (!std::isfinite(a.frequency_hz) || !(a.frequency_hz > 0.0))
                    throw CalibrationError(ai + ".frequency_hz = " + num(a.frequency_hz) + " must be positive");
                if (!std::isfinite(a.sample_rate_hz) || !(a.sample_rate_hz > 0.0))
                    throw CalibrationError(ai + ".sample_rate_hz = " + num(a.sample_rate_hz) + " must be positive");
                if (!std::isfinite(a.timing_offset_samples) || std::fabs(a.timing_offset_samples) > 1e6)
                    throw CalibrationError(ai + ".timing_offset_samples = " + num(a.timing_offset_samples) +
                                           " must satisfy |x| <= 1e6");
                if (!std::isfinite(a.phase_rad))
                    throw CalibrationError(ai + ".phase_rad is not finite");
                if (!std::isfinite(a.reference_time_s))
                    throw CalibrationError(ai + ".reference_time_s is not finite");
                if (!std::isfinite(a.cfo_hz) || !(std::fabs(a.cfo_hz) < a.sample_rate_hz / 2.0))
                    throw CalibrationError(ai + ".cfo_hz = " + num(a.cfo_hz) + " must satisfy |cfo_hz| < " +
                                           "sample_rate_hz/2");
                if (!std::isfinite(a.tx_gain_db))
                    throw CalibrationError(ai + ".tx_gain_db is not finite");
                for (std::size_t j = 0; j < i; ++j)
                    if (std::fabs(ch.alignment[j].frequency_hz - a.frequency_hz) <= frequency_tolerance_hz &&
                        ch.alignment[j].sample_rate_hz == a.sample_rate_hz)
                        throw CalibrationError(ai + ": a second entry for " + format_frequency(a.frequency_hz) +
                                               " at " + num(a.sample_rate_hz / 1e6) + " MS/s");
            }
        }
    }
}

const DeviceCalibration& CalibrationSet::device(const std::string& serial) const {
    for (const auto& d : devices)
        if (d.serial == serial)
            return d;
    std::string have;
    for (const auto& d : devices)
        have += (have.empty() ? "" : ", ") + d.serial + (d.product.empty() ? "" : " (" + d.product + ")");
    throw CalibrationError(source + ": no device with serial '" + serial + "' (the file holds: " +
                           (have.empty() ? "none" : have) + ")");
}

const ChannelCalibration& CalibrationSet::channel(const std::string& serial, int ch) const {
    const auto& d = device(serial);
    std::string have;
    for (const auto& c : d.channels) {
        if (c.channel == ch)
            return c;
        have += (have.empty() ? "" : ", ") + std::to_string(c.channel);
    }
    throw CalibrationError(at_device(*this, serial) + ": no channel " + std::to_string(ch) + " (calibrated: " + have +
                           ")");
}

double CalibrationSet::tx_power_dbm(const std::string& serial, int ch, double hz, double gain_db) const {
    const auto& t = channel(serial, ch).tx_power;
    const std::string where = at_channel(*this, serial, ch);
    if (t.empty())
        throw CalibrationError(where + ": no tx_power table");
    const auto row = power_row(t, hz, frequency_tolerance_hz, where);
    const auto& g = t.gains_db;
    if (!std::isfinite(gain_db) || gain_db < g.front() - 1e-9 || gain_db > g.back() + 1e-9)
        throw CalibrationError(where + ": tx_power.gains_db: gain " + num(gain_db) +
                               " dB is outside the calibrated gains [" + num(g.front()) + ", " + num(g.back()) +
                               "] dB");
    std::size_t i = static_cast<std::size_t>(std::upper_bound(g.begin(), g.end(), gain_db) - g.begin());
    i = std::min(std::max<std::size_t>(i, 1), g.size() - 1) - 1;
    const double u = (gain_db - g[i]) / (g[i + 1] - g[i]);
    return row[i] + u * (row[i + 1] - row[i]);
}

double CalibrationSet::tx_gain_for(const std::string& serial, int ch, double hz, double power_dbm) const {
    const auto& t = channel(serial, ch).tx_power;
    const std::string where = at_channel(*this, serial, ch);
    if (t.empty())
        throw CalibrationError(where + ": no tx_power table");
    const auto row = power_row(t, hz, frequency_tolerance_hz, where);
    const auto& g = t.gains_db;
    if (!std::isfinite(power_dbm) || power_dbm < row.front() - 1e-9 || power_dbm > row.back() + 1e-9)
        throw CalibrationError(where + ": tx_power: " + num(power_dbm) + " dBm at " + format_frequency(hz) +
                               " is outside the calibrated output powers [" + num(row.front()) + ", " +
                               num(row.back()) + "] dBm (gains " + num(g.front()) + " to " + num(g.back()) + " dB)");
    std::size_t i = static_cast<std::size_t>(std::upper_bound(row.begin(), row.end(), power_dbm) - row.begin());
    i = std::min(std::max<std::size_t>(i, 1), row.size() - 1) - 1;
    const double u = (power_dbm - row[i]) / (row[i + 1] - row[i]);
    return g[i] + u * (g[i + 1] - g[i]);
}

double CalibrationSet::noise_floor_dbfs(const std::string& serial, int ch, double hz) const {
    const auto& r = channel(serial, ch).rx_noise;
    const std::string where = at_channel(*this, serial, ch);
    if (r.empty())
        throw CalibrationError(where + ": no rx_noise_floor table");
    const auto [i, u] = bracket(r.frequencies_hz, hz, frequency_tolerance_hz, where, "rx_noise_floor.frequencies_hz");
    return u > 0.0 ? r.dbfs[i] + u * (r.dbfs[i + 1] - r.dbfs[i]) : r.dbfs[i];
}

const AlignmentRecord& CalibrationSet::alignment(const std::string& serial, int ch, double hz,
                                                 double sample_rate_hz) const {
    const auto& c = channel(serial, ch);
    const std::string where = at_channel(*this, serial, ch);
    std::vector<double> freqs;
    const AlignmentRecord* other_rate = nullptr;
    for (const auto& a : c.alignment) {
        freqs.push_back(a.frequency_hz);
        if (std::fabs(a.frequency_hz - hz) <= frequency_tolerance_hz) {
            if (std::fabs(a.sample_rate_hz - sample_rate_hz) <= 1e-6 * sample_rate_hz)
                return a;
            other_rate = &a;
        }
    }
    if (other_rate)
        throw CalibrationError(where + ": alignment at " + format_frequency(hz) + " was measured at " +
                               num(other_rate->sample_rate_hz / 1e6) + " MS/s, not " + num(sample_rate_hz / 1e6) +
                               " MS/s (timing offsets depend on the rate's filters: measure at this rate)");
    std::sort(freqs.begin(), freqs.end());
    throw CalibrationError(where + ": alignment has no entry at " + format_frequency(hz) + " (measured at: " +
                           list_frequencies(freqs) + "; phase and CFO depend on the LO: measure at this frequency)");
}

TransmitCorrection CalibrationSet::correction(const std::string& serial, int ch, double hz,
                                              double sample_rate_hz) const {
    const auto& a = alignment(serial, ch, hz, sample_rate_hz);
    TransmitCorrection c;
    c.advance_samples = a.timing_offset_samples;
    c.phase_rad = a.phase_rad;
    c.cfo_hz = a.cfo_hz;
    c.reference_sample = static_cast<std::int64_t>(std::llround(a.reference_time_s * sample_rate_hz));
    return c;
}

std::vector<std::string> CalibrationSet::aligned_serials(int ch, double hz, double sample_rate_hz) const {
    std::vector<std::string> out;
    for (const auto& d : devices)
        for (const auto& c : d.channels)
            if (c.channel == ch)
                for (const auto& a : c.alignment)
                    if (std::fabs(a.frequency_hz - hz) <= frequency_tolerance_hz &&
                        std::fabs(a.sample_rate_hz - sample_rate_hz) <= 1e-6 * sample_rate_hz) {
                        out.push_back(d.serial);
                        break;
                    }
    return out;
}

void CalibrationSet::set_alignment(const std::string& serial, const std::string& product, int ch,
                                   const AlignmentRecord& a) {
    auto dev = std::find_if(devices.begin(), devices.end(), [&](const auto& d) { return d.serial == serial; });
    if (dev == devices.end()) {
        devices.push_back({serial, product, {}});
        dev = devices.end() - 1;
    }
    auto c = std::find_if(dev->channels.begin(), dev->channels.end(), [&](const auto& x) { return x.channel == ch; });
    if (c == dev->channels.end()) {
        ChannelCalibration fresh;
        fresh.channel = ch;
        dev->channels.push_back(fresh);
        c = dev->channels.end() - 1;
    }
    for (auto& old : c->alignment)
        if (std::fabs(old.frequency_hz - a.frequency_hz) <= frequency_tolerance_hz &&
            old.sample_rate_hz == a.sample_rate_hz) {
            old = a;
            return;
        }
    c->alignment.push_back(a);
}

TxPowerSetting tx_power_setting(const CalibrationSet& cal, const std::string& serial, int ch, double hz,
                                double budget_dbm) {
    const auto& t = cal.channel(serial, ch).tx_power;
    const std::string where = cal.source + ": device '" + serial + "' channel " + std::to_string(ch);
    if (t.empty())
        throw CalibrationError(where + ": no tx_power table");
    if (!std::isfinite(budget_dbm))
        throw CalibrationError(where + ": power budget " + num(budget_dbm) + " dBm is not finite");
    const auto row = power_row(t, hz, cal.frequency_tolerance_hz, where);
    TxPowerSetting s;
    if (budget_dbm > row.back() + 1e-9)
        throw CalibrationError(where + ": a budget of " + num(budget_dbm) +
                               " dBm exceeds the highest calibrated output power at " + format_frequency(hz) + ", " +
                               num(row.back()) + " dBm at gain " + num(t.gains_db.back()) + " dB");
    s.gain_db = budget_dbm <= row.front() ? t.gains_db.front() : cal.tx_gain_for(serial, ch, hz, budget_dbm);
    s.output_dbm = cal.tx_power_dbm(serial, ch, hz, s.gain_db);
    s.linear_budget = std::pow(10.0, (budget_dbm - s.output_dbm) / 10.0);
    return s;
}

double linear_budget(const CalibrationSet& cal, const std::string& serial, int ch, double hz, double gain_db,
                     double budget_dbm) {
    if (!std::isfinite(budget_dbm))
        throw CalibrationError(cal.source + ": device '" + serial + "': power budget " + num(budget_dbm) +
                               " dBm is not finite");
    return std::pow(10.0, (budget_dbm - cal.tx_power_dbm(serial, ch, hz, gain_db)) / 10.0);
}

}  // namespace fedlora::phy
