#include "fedlora/phy/sync.h"

#include <volk/volk.h>
#include <volk/volk_alloc.hh>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace fedlora::phy {

using cd64 = std::complex<double>;

namespace {

constexpr double kPi = 3.14159265358979323846;

[[noreturn]] void bad(const std::string& field, double value, const std::string& why) {
    throw std::invalid_argument("sync config: " + field + " = " + std::to_string(value) + " " + why);
}

double wrap_phase(double ph) {
    ph = std::fmod(ph + kPi, 2.0 * kPi);
    if (ph < 0.0)
        ph += 2.0 * kPi;
    return ph - kPi;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// SyncConfig

void SyncConfig::validate() const {
    numerology.validate();
    if (numerology.n_occupied < 4)
        bad("n_occupied", numerology.n_occupied, "must be at least 4 for the Schmidl & Cox preamble");
    if (!(threshold == 0.0 || (threshold > 0.0 && threshold < 1.0)))
        bad("threshold", threshold, "must be 0 (automatic) or in (0, 1)");
    if (!(false_alarm_rate > 0.0 && false_alarm_rate <= 0.1))
        bad("false_alarm_rate", false_alarm_rate, "must be in (0, 0.1]");
    if (!(xcorr_threshold == 0.0 || (xcorr_threshold > 0.0 && xcorr_threshold < 1.0)))
        bad("xcorr_threshold", xcorr_threshold, "must be 0 (same as threshold) or in (0, 1)");
}

double SyncConfig::resolved_threshold() const {
    if (threshold > 0.0)
        return threshold;
    // Noise-only metric: M <= |<u,v>|^2 / (|u|^2 |v|^2) with u, v the centred halves, a Beta(1, L-2) variable.
    const double L = numerology.fft_size / 2;
    const double g = 1.0 - std::pow(false_alarm_rate, 1.0 / (L - 2.0));
    return std::clamp(g, 0.05, 0.95);
}

double SyncConfig::resolved_xcorr_threshold() const {
    return xcorr_threshold > 0.0 ? xcorr_threshold : resolved_threshold();
}

// ---------------------------------------------------------------------------------------------------------------
// SchmidlCoxMetric
//
// Three per-sample streams are summed over sliding windows of L samples: a[n] = r[n], e[n] = |r[n]|^2 and
// p[n] = conj(r[n-L]) r[n]. A window of L values is the suffix of the previous block of L (suffix sums computed
// once when that block completes: O(L) every L samples) plus the prefix of the current block (a running sum), so
// no value is ever subtracted: no drift, an all-zero window sums to exactly zero, and the result depends only on
// the sample index, never on how the input is chunked.

SchmidlCoxMetric::SchmidlCoxMetric(int half_len) : L_(half_len), inv_l_(1.0 / half_len) {
    if (half_len < 4 || (half_len & (half_len - 1)) != 0)
        throw std::invalid_argument("SchmidlCoxMetric: half_len = " + std::to_string(half_len) +
                                    " must be a power of two >= 4");
    const auto L = static_cast<std::size_t>(L_);
    ring_.assign(2 * L, {});
    suf_.assign(L + 1, Sums{});
    hist_.assign(L, Half{});
}

void SchmidlCoxMetric::reset() {
    count_ = 0;
    k_ = 0;
    std::fill(ring_.begin(), ring_.end(), std::complex<float>{});
    pre_ = Sums{};
    std::fill(suf_.begin(), suf_.end(), Sums{});
    std::fill(hist_.begin(), hist_.end(), Half{});
    r_ = raw_ = 0.0;
    p_ = {};
}

// Complex arithmetic is spelled out on doubles: std::complex's operator* carries NaN/Inf recovery code that costs
// more than the whole update.
[[gnu::always_inline]] inline void SchmidlCoxMetric::update(std::complex<float> xf) {
    const std::uint64_t n = count_++;
    const auto L = static_cast<std::uint64_t>(L_);
    const std::uint64_t ring_mask = 2 * L - 1;
    const std::complex<float> xlf = ring_[(n - L) & ring_mask];  // r[n-L] (zero before the stream)
    ring_[n & ring_mask] = xf;
    const double xr = xf.real(), xi = xf.imag(), lr = xlf.real(), li = xlf.imag();

    pre_.ar += xr;
    pre_.ai += xi;
    pre_.e += xr * xr + xi * xi;
    pre_.pr += lr * xr + li * xi;  // conj(r[n-L]) r[n]
    pre_.pi += lr * xi - li * xr;

    Sums w;
    if (++k_ == L_) {
        // Block [n-L+1, n] complete: the window is exactly this block. Keep its suffix sums for the next L windows.
        w = pre_;
        Sums s;
        for (int i = L_ - 1; i >= 0; --i) {
            const std::uint64_t j = n - L + 1 + static_cast<std::uint64_t>(i);
            const std::complex<float> v = ring_[j & ring_mask], vl = ring_[(j - L) & ring_mask];
            const double vr = v.real(), vi = v.imag(), ur = vl.real(), ui = vl.imag();
            s.ar += vr;
            s.ai += vi;
            s.e += vr * vr + vi * vi;
            s.pr += ur * vr + ui * vi;
            s.pi += ur * vi - ui * vr;
            suf_[static_cast<std::size_t>(i)] = s;
        }
        pre_ = Sums{};
        k_ = 0;
    } else {
        const Sums& s = suf_[static_cast<std::size_t>(k_)];
        w = {s.ar + pre_.ar, s.ai + pre_.ai, s.e + pre_.e, s.pr + pre_.pr, s.pi + pre_.pi};
    }

    // First half = the second-half sums of L samples ago.
    Half& slot = hist_[static_cast<std::size_t>(n & (L - 1))];
    const Half h1 = slot;
    slot = {w.ar, w.ai, w.e};

    // Centred quantities: subtract the product of the half means.
    const double pr = w.pr - (h1.ar * w.ar + h1.ai * w.ai) * inv_l_;
    const double pi = w.pi - (h1.ar * w.ai - h1.ai * w.ar) * inv_l_;
    const double e1c = h1.e - (h1.ar * h1.ar + h1.ai * h1.ai) * inv_l_;
    const double e2c = w.e - (w.ar * w.ar + w.ai * w.ai) * inv_l_;
    p_ = {pr, pi};
    r_ = 0.5 * (e1c + e2c);
    // A window that is (numerically) a pure constant has no centred energy left, only rounding residue; valid()
    // reports M = 0 for it.
    raw_ = 0.5 * (h1.e + w.e);
}

void SchmidlCoxMetric::push(std::complex<float> x) {
    update(x);
}

void SchmidlCoxMetric::process(const std::complex<float>* in, std::size_t n, float* metric, float* cfo) {
    for (std::size_t i = 0; i < n; ++i) {
        update(in[i]);
        metric[i] = static_cast<float>(this->metric());
        if (cfo)
            cfo[i] = static_cast<float>(std::arg(p_) / kPi);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// CfoCorrector

namespace {
constexpr std::size_t kRotatorBlock = 1024;
}

CfoCorrector::CfoCorrector(double rad_per_sample, double phase) : omega_(rad_per_sample), phase_(wrap_phase(phase)) {}

void CfoCorrector::set_phase(double phase) {
    phase_ = wrap_phase(phase);
}

void CfoCorrector::apply(const std::complex<float>* in, std::complex<float>* out, std::size_t n) {
    const lv_32fc_t inc(static_cast<float>(std::cos(-omega_)), static_cast<float>(std::sin(-omega_)));
    std::size_t done = 0;
    while (done < n) {
        const std::size_t m = std::min(kRotatorBlock, n - done);
        lv_32fc_t ph(static_cast<float>(std::cos(-phase_)), static_cast<float>(std::sin(-phase_)));
        volk_32fc_s32fc_x2_rotator_32fc(out + done, in + done, inc, &ph, static_cast<unsigned int>(m));
        phase_ = wrap_phase(phase_ + omega_ * static_cast<double>(m));
        done += m;
    }
}

double correct_cfo(const std::complex<float>* in, std::complex<float>* out, std::size_t n, double rad_per_sample,
                   double phase) {
    CfoCorrector c(rad_per_sample, phase);
    c.apply(in, out, n);
    return c.phase();
}

// ---------------------------------------------------------------------------------------------------------------
// Synchronizer

struct Synchronizer::Impl {
    enum class State { Idle, Search, WaitFine };

    SyncConfig cfg;
    Preamble pre;
    double gamma, gamma_x;
    std::int64_t N, cp, L, Ls, Lp, span;
    std::int64_t margin;  // fine timing searches [d* - cp - margin, d* + margin]
    SchmidlCoxMetric metric;
    std::uint64_t hmask;
    volk::vector<lv_32fc_t> hist;     // last H input samples, H a power of two
    volk::vector<lv_32fc_t> ref;      // the preamble, both symbols with CP
    volk::vector<lv_32fc_t> scratch;  // fine-stage window
    double e_ref = 0.0;
    CfoCorrector rot;
    SyncStats stats;

    State state = State::Idle;
    std::int64_t holdoff = 0;  // smallest d that may open a search
    std::int64_t search_last = 0;
    std::int64_t best_d = 0;
    double best_m = 0.0;
    cd64 best_p{};
    std::int64_t fine_at = 0;

    explicit Impl(const SyncConfig& c)
        : cfg(c),
          pre(c.numerology, c.preamble_seed),
          gamma(c.resolved_threshold()),
          gamma_x(c.resolved_xcorr_threshold()),
          N(c.numerology.fft_size),
          cp(c.numerology.cp_len),
          L(N / 2),
          Ls(N + cp),
          Lp(2 * (N + cp)),
          span(N + cp),
          // The metric peak d* lies on the plateau [t0, t0 + cp] up to noise: measured within 20 samples of it
          // down to 0 dB for fft_size 64..1024.
          margin(std::min(L / 2, L / 4 + 8)),
          metric(static_cast<int>(N / 2)) {
        // Oldest sample the fine stage reads, relative to the sample at which it runs (run_fine, step): at most
        // max(span + 2L + cp + margin, 2 margin + cp + Lp) <= 5L + 3cp.
        std::uint64_t h = 1;
        while (h < static_cast<std::uint64_t>(2 * (5 * L + 3 * cp + 1)))
            h <<= 1;
        hmask = h - 1;
        hist.assign(h, lv_32fc_t{});
        ref.assign(pre.samples().begin(), pre.samples().end());
        scratch.assign(static_cast<std::size_t>(cp + L + 1 + Lp), lv_32fc_t{});
        for (const auto& x : ref)
            e_ref += std::norm(cd64(x));
    }

    void reset() {
        metric.reset();
        std::fill(hist.begin(), hist.end(), lv_32fc_t{});
        stats = {};
        state = State::Idle;
        holdoff = 0;
        search_last = best_d = fine_at = 0;
        best_m = 0.0;
        best_p = {};
    }

    // Copies samples [t0, t0 + len) of the stream out of the history ring.
    void copy_out(std::int64_t t0, std::int64_t len, lv_32fc_t* dst) const {
        const std::size_t H = hmask + 1;
        std::size_t pos = static_cast<std::size_t>(static_cast<std::uint64_t>(t0) & hmask);
        std::size_t left = static_cast<std::size_t>(len);
        while (left > 0) {
            const std::size_t m = std::min(left, H - pos);
            std::copy(hist.begin() + static_cast<std::ptrdiff_t>(pos),
                      hist.begin() + static_cast<std::ptrdiff_t>(pos + m), dst);
            dst += m;
            left -= m;
            pos = 0;
        }
    }

    lv_32fc_t dot(const lv_32fc_t* x, const lv_32fc_t* r, std::int64_t len) const {
        lv_32fc_t c;
        volk_32fc_x2_conjugate_dot_prod_32fc(&c, x, r, static_cast<unsigned int>(len));  // sum x * conj(r)
        return c;
    }

    // Fine timing, confirmation and fine CFO around the metric peak; runs once all needed samples are in `hist`.
    template <class Emit>
    void run_fine(Emit&& emit) {
        const std::int64_t t_lo = std::max<std::int64_t>(0, best_d - cp - margin);
        const std::int64_t t_hi = best_d + margin;
        const std::int64_t len = t_hi - t_lo + Lp;
        lv_32fc_t* s = scratch.data();
        copy_out(t_lo, len, s);

        // Remove the window's mean (a DC offset), then the coarse CFO.
        cd64 mean{};
        for (std::int64_t i = 0; i < len; ++i)
            mean += cd64(s[i]);
        const lv_32fc_t mf(mean / static_cast<double>(len));
        for (std::int64_t i = 0; i < len; ++i)
            s[i] -= mf;
        const double cfo_coarse = std::arg(best_p) / kPi;
        const double omega_coarse = std::arg(best_p) / static_cast<double>(L);
        rot.set_frequency(omega_coarse);
        rot.set_phase(0.0);
        rot.apply(s, s, static_cast<std::size_t>(len));

        // Timing on symbol 2 alone: half the work of the whole preamble, and no sidelobe at lag L from the
        // periodic symbol 1.
        std::int64_t best_t = t_lo;
        float best_c = -1.0f;
        for (std::int64_t t = t_lo; t <= t_hi; ++t) {
            const float c = std::norm(dot(s + (t - t_lo) + Ls, ref.data() + Ls, Ls));
            if (c > best_c) {
                best_c = c;
                best_t = t;
            }
        }
        const lv_32fc_t* w = s + (best_t - t_lo);
        const cd64 c1(dot(w, ref.data(), Ls));
        const cd64 c2(dot(w + Ls, ref.data() + Ls, Ls));
        double e_rx = 0.0;
        for (std::int64_t i = 0; i < Lp; ++i)
            e_rx += std::norm(cd64(w[i]));
        const double rho = e_rx > 0.0 ? std::norm(c1 + c2) / (e_ref * e_rx) : 0.0;

        state = State::Idle;
        if (rho >= gamma_x) {
            SyncDetection d;
            d.start = static_cast<std::uint64_t>(best_t);
            d.cfo_coarse = cfo_coarse;
            d.cfo = cfo_coarse +
                    std::arg(c2 * std::conj(c1)) * static_cast<double>(N) / (2.0 * kPi * static_cast<double>(Ls));
            d.cfo_rad_per_sample = 2.0 * kPi * d.cfo / static_cast<double>(N);
            d.metric = best_m;
            d.metric_peak = static_cast<std::uint64_t>(best_d);
            d.xcorr = rho;
            holdoff = best_t + Lp;
            ++stats.detections;
            emit(d);
        } else {
            holdoff = search_last + 1;
            ++stats.rejected;
        }
    }

    template <class Emit>
    void step(lv_32fc_t x, Emit&& emit) {
        const auto n = static_cast<std::int64_t>(stats.samples++);
        hist[static_cast<std::size_t>(static_cast<std::uint64_t>(n) & hmask)] = x;
        metric.update(x);
        const std::int64_t d = n - 2 * L + 1;
        if (d < 0)
            return;
        switch (state) {
            case State::Idle:
                if (d >= holdoff && metric.exceeds(gamma)) {
                    ++stats.triggers;
                    state = State::Search;
                    search_last = d + span - 1;
                    best_d = d;
                    best_m = metric.metric();
                    best_p = metric.correlation();
                }
                break;
            case State::Search:
                if (const double m = metric.metric(); m > best_m) {
                    best_d = d;
                    best_m = m;
                    best_p = metric.correlation();
                }
                if (d == search_last) {
                    fine_at = best_d + margin + Lp - 1;
                    if (fine_at <= n)
                        run_fine(emit);
                    else
                        state = State::WaitFine;
                }
                break;
            case State::WaitFine:
                if (n == fine_at)
                    run_fine(emit);
                break;
        }
    }
};

Synchronizer::Synchronizer(const SyncConfig& cfg) {
    cfg.validate();
    impl_ = std::make_unique<Impl>(cfg);
}
Synchronizer::~Synchronizer() = default;
Synchronizer::Synchronizer(Synchronizer&&) noexcept = default;
Synchronizer& Synchronizer::operator=(Synchronizer&&) noexcept = default;

const SyncConfig& Synchronizer::config() const {
    return impl_->cfg;
}
const Preamble& Synchronizer::preamble() const {
    return impl_->pre;
}
double Synchronizer::threshold() const {
    return impl_->gamma;
}
double Synchronizer::xcorr_threshold() const {
    return impl_->gamma_x;
}
std::uint64_t Synchronizer::samples() const {
    return impl_->stats.samples;
}
const SyncStats& Synchronizer::stats() const {
    return impl_->stats;
}
void Synchronizer::reset() {
    impl_->reset();
}

std::size_t Synchronizer::max_detections(std::size_t n) const {
    // A detection at t1 is reported at most at t1 + cp + 2 margin + Lp - 1; the next search opens at d >= t1 + Lp and
    // reports at least at t1 + 2 Lp + margin - 1: reports are at least Lp - cp - margin samples apart.
    const auto& m = *impl_;
    return n / static_cast<std::size_t>(m.Lp - m.cp - m.margin) + 1;
}

std::size_t Synchronizer::max_latency() const {
    // A preamble starting at t0 opens its search at d0 <= t0 + cp + L (beyond that its windows hold no periodic
    // pair); the peak is at most span - 1 later; the fine stage needs margin + Lp more samples.
    const auto& m = *impl_;
    return static_cast<std::size_t>(m.cp + m.L + m.span - 1 + m.margin + m.Lp - 1);
}

std::size_t Synchronizer::process(const std::complex<float>* in, std::size_t n, std::vector<SyncDetection>& out) {
    return process_impl(
        in, n, [](void* ctx, const SyncDetection& d) { static_cast<std::vector<SyncDetection>*>(ctx)->push_back(d); },
        &out);
}

std::size_t Synchronizer::process_impl(const std::complex<float>* in, std::size_t n, Sink sink, void* ctx) {
    std::size_t found = 0;
    auto emit = [&](const SyncDetection& d) {
        ++found;
        sink(ctx, d);
    };
    Impl& m = *impl_;
    for (std::size_t i = 0; i < n; ++i)
        m.step(in[i], emit);
    return found;
}

}  // namespace fedlora::phy
