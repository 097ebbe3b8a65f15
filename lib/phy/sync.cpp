#include "fedlora/phy/sync.h"

#include "complex_kernels.h"

#include "fft_plan.h"

#include <fftw3.h>
#include <volk/volk.h>
#include <volk/volk_alloc.hh>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FEDLORA_SYNC_X86 1
#else
#define FEDLORA_SYNC_X86 0
#endif

namespace fedlora::phy {

using cd64 = std::complex<double>;

namespace {

constexpr double kPi = 3.14159265358979323846;

[[noreturn]] void bad(const std::string& field, double value, const std::string& why) {
    throw std::invalid_argument("sync config: " + field + " = " + std::to_string(value) + " " + why);
}

[[noreturn]] void bad(const std::string& field, const std::string& value, const std::string& why) {
    throw std::invalid_argument("sync config: " + field + " = " + value + " " + why);
}

bool cpu_has(const char* what) {
#if FEDLORA_SYNC_X86
    __builtin_cpu_init();
    if (std::strcmp(what, "avx512") == 0)
        return __builtin_cpu_supports("avx512f");
    if (std::strcmp(what, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    (void)what;
#endif
    return false;
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
    if (kernel != "auto" && kernel != "avx512" && kernel != "avx2" && kernel != "generic")
        bad("kernel", "\"" + kernel + "\"", "is not one of auto, avx512, avx2, generic");
    if ((kernel == "avx512" || kernel == "avx2") && !cpu_has(kernel.c_str()))
        bad("kernel", "\"" + kernel + "\"", "is not supported by this CPU");
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

}  // namespace

CfoCorrector::CfoCorrector(double rad_per_sample, double phase)
    : omega_(rad_per_sample), phase_(wrap_phase(phase)), table_omega_(std::nan("")) {}

void CfoCorrector::set_phase(double phase) {
    phase_ = wrap_phase(phase);
}

void CfoCorrector::apply(const std::complex<float>* in, std::complex<float>* out, std::size_t n) {
    if (!(table_omega_ == omega_)) {
        for (std::size_t k = 0; k < kRun; ++k) {
            const double a = -omega_ * static_cast<double>(k);
            table_[k] = {static_cast<float>(std::cos(a)), static_cast<float>(std::sin(a))};
        }
        step_ = std::polar(1.0, -omega_ * static_cast<double>(kRun));
        table_omega_ = omega_;
    }
    std::size_t done = 0;
    while (done < n) {
        const std::size_t m = std::min(kRotatorBlock, n - done);
        std::complex<double> s = std::polar(1.0, -phase_);
        for (std::size_t k = 0; k < m; k += kRun) {
            const std::size_t len = std::min(kRun, m - k);
            kernels::rotate(in + done + k, table_.data(), std::complex<float>(s), out + done + k, len);
            s *= step_;
        }
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
// Block metric (the Synchronizer's form of SchmidlCoxMetric)
//
// The same centred quantities, computed a group of L samples at a time. Group g holds samples [gL, gL + L); it is
// cut into NL = 8 blocks ("lanes") of B = L/8 consecutive samples (NL = 4, B = 1 for L = 4), and the kernels walk
// the rows k = 0 .. B-1, row k holding sample k of every block: lane j of row k is sample n = gL + jB + k. So every
// running sum is a plain vertical addition, 8 samples per vector operation, with no scan across lanes per sample:
//
//  pass 1, per sample: x (and x[n-L]: the same row and lane of the previous group, kept from there), the five
//    streams a = x (re, im), e = |x|^2, p = conj(x[n-L]) x (re, im), and each block's prefix sums Pre(k), added in
//    sample order. Products of float samples are exact in double, so every kernel rounds only these additions, in
//    the same order: pass 1 is bit-identical in all kernels.
//  pass 2, per sample: the window (n-L, n] of the sample at offset k of block b is
//      [block b, offsets 0..k] + [blocks b-NL+1 .. b-1] + [block b-NL, offsets k+1 .. B-1],
//    W = (Pre_b(k) - Pre_{b-NL}(k)) + (G_b + T_{b-NL}),
//    T a block total (Pre(B-1)), G_b the NL-1 whole blocks in between (lanes j+1.. of the previous group and ..j-1
//    of this one: once per group and lane). The window's first half is the second half of the window ending L
//    samples earlier: the same row and lane of the previous group, kept from there. Then the centring, R and the
//    test |P|^2 >= g R^2, as a lane mask per row; for rows with a crossing also P and M (for the search stage,
//    which only needs the samples at or above the threshold).
// Only Pre_{b-NL}(k), which lies outside the window, is subtracted, and it cancels against T_{b-NL}, a sum of the
// same block in the same order: the error is bounded by rounding of one block's sum (no drift), and a window of
// exact zeros sums to exactly zero (adding zeros is exact). Each value depends on its sample index only (groups are
// aligned to multiples of L), so nothing depends on how the stream is chunked.

namespace {

enum class KernelId { Generic, Avx2, Avx512 };

constexpr int kStreams = 5;  // a_r, a_i, e, p_r, p_i
constexpr int kKept = 3;     // second-half window sums kept for the next group: a_r, a_i, centred e
constexpr int kOut = 3;      // P_r, P_i, M of rows with a threshold crossing

// Work arrays of one synchroniser. Layout: row k, then quantity, then lane j. `pre` has two halves, indexed by group
// parity (this group, previous group); `xs` and `kept` hold, per row, the previous group's values until this
// group's replace them.
struct BlockWork {
    int L = 0, NL = 0, B = 0, log2_b = 0;
    double g4 = 0.0;  // threshold / 4: |P|^2 >= g R^2  <=>  |P|^2 >= g4 (2R)^2
    double inv_l = 0.0;
    volk::vector<double> xs;         // [B][2][NL] samples (re, im)
    volk::vector<double> pre;        // [2][B][5][NL] per-block prefix sums
    volk::vector<double> kept;       // [B][3][NL]
    volk::vector<double> out;        // [B][3][NL], valid in rows whose mask is not 0
    std::vector<std::uint8_t> mask;  // [B] bit j: lane j of row k crosses the threshold

    void init(int half_len, double threshold) {
        L = half_len;
        NL = L >= 8 ? 8 : L;
        B = L / NL;
        while ((1 << log2_b) < B)
            ++log2_b;
        g4 = 0.25 * threshold;
        inv_l = 1.0 / L;
        const auto rows = static_cast<std::size_t>(B), lanes = static_cast<std::size_t>(NL);
        xs.assign(rows * 2 * lanes, 0.0);
        pre.assign(2 * rows * kStreams * lanes, 0.0);
        kept.assign(rows * kKept * lanes, 0.0);
        out.assign(rows * kOut * lanes, 0.0);
        mask.assign(rows, 0);
    }
    void reset() {
        std::fill(xs.begin(), xs.end(), 0.0);
        std::fill(pre.begin(), pre.end(), 0.0);
        std::fill(kept.begin(), kept.end(), 0.0);
        std::fill(out.begin(), out.end(), 0.0);
        std::fill(mask.begin(), mask.end(), std::uint8_t{0});
    }
    // Output q of the sample with time index i = j B + k in the group (B is a power of two).
    double at(std::int64_t i, int q) const {
        const auto u = static_cast<std::size_t>(i);
        const std::size_t k = u & static_cast<std::size_t>(B - 1), j = u >> log2_b;
        return out[(k * kOut + static_cast<std::size_t>(q)) * static_cast<std::size_t>(NL) + j];
    }
};

// pass 1 reads the group from `in`; if `copy` is not null it also copies the group there (into the history ring).
using Pass1 = void (*)(BlockWork&, const lv_32fc_t* in, lv_32fc_t* copy, int cur);
// pass 2 fills mask (and out where a mask is not 0); returns whether any sample crosses the threshold.
using Pass2 = bool (*)(BlockWork&, int cur);

// ---- portable kernels (NL lanes as plain loops; compiled for the baseline ISA and, cloned, for AVX2 + FMA) -------

template <int NL>
[[gnu::always_inline]] inline void pass1_portable(BlockWork& w, const lv_32fc_t* in, lv_32fc_t* copy, int cur) {
    if (copy)
        std::copy(in, in + w.L, copy);
    const std::size_t B = static_cast<std::size_t>(w.B), xrow = 2 * NL, prow = kStreams * NL;
    double* __restrict pc = w.pre.data() + static_cast<std::size_t>(cur) * B * prow;
    double* __restrict xs = w.xs.data();
    const float* __restrict f = reinterpret_cast<const float*>(in);
    double acc[kStreams][NL] = {};
    for (std::size_t k = 0; k < B; ++k) {
        double* __restrict x = xs + k * xrow;
        double* __restrict p = pc + k * prow;
        double xr[NL], xi[NL];
        for (int j = 0; j < NL; ++j) {
            xr[j] = f[2 * (static_cast<std::size_t>(j) * B + k)];
            xi[j] = f[2 * (static_cast<std::size_t>(j) * B + k) + 1];
        }
        for (int j = 0; j < NL; ++j) {
            const double lr = x[j], li = x[NL + j];
            x[j] = xr[j];
            x[NL + j] = xi[j];
            acc[0][j] += xr[j];
            acc[1][j] += xi[j];
            acc[2][j] += xr[j] * xr[j] + xi[j] * xi[j];
            acc[3][j] += lr * xr[j] + li * xi[j];  // conj(x[n-L]) x[n]
            acc[4][j] += lr * xi[j] - li * xr[j];
            for (int s = 0; s < kStreams; ++s)
                p[s * NL + j] = acc[s][j];
        }
    }
}

template <int NL>
[[gnu::always_inline]] inline bool pass2_portable(BlockWork& w, int cur) {
    const std::size_t B = static_cast<std::size_t>(w.B), prow = kStreams * NL, krow = kKept * NL, orow = kOut * NL;
    const double* __restrict pc = w.pre.data() + static_cast<std::size_t>(cur) * B * prow;
    const double* __restrict pp = w.pre.data() + static_cast<std::size_t>(cur ^ 1) * B * prow;
    double* __restrict kept = w.kept.data();

    // Per lane j: G (whole blocks between) + T of the block NL back, summed in a fixed order.
    const double* tc = pc + (B - 1) * prow;
    const double* tp = pp + (B - 1) * prow;
    double c[kStreams][NL];
    for (int s = 0; s < kStreams; ++s) {
        double before[NL];
        double run = 0.0;
        for (int j = 0; j < NL; ++j) {
            before[j] = run;
            run += tc[s * NL + j];
        }
        run = 0.0;
        for (int j = NL - 1; j >= 0; --j) {
            c[s][j] = (run + before[j]) + tp[s * NL + j];
            run += tp[s * NL + j];
        }
    }

    const double il = w.inv_l, g4 = w.g4;
    std::uint8_t* mk = w.mask.data();
    unsigned any = 0;
    for (std::size_t k = 0; k < B; ++k) {
        const double* __restrict a = pc + k * prow;
        const double* __restrict b = pp + k * prow;
        double* __restrict h = kept + k * krow;  // first halves in, second halves out
        double pr[NL], pi[NL], pw[NL], r2[NL];
        int flag[NL];
        for (int j = 0; j < NL; ++j) {
            const double war = (a[j] - b[j]) + c[0][j];
            const double wai = (a[NL + j] - b[NL + j]) + c[1][j];
            const double we = (a[2 * NL + j] - b[2 * NL + j]) + c[2][j];
            const double wpr = (a[3 * NL + j] - b[3 * NL + j]) + c[3][j];
            const double wpi = (a[4 * NL + j] - b[4 * NL + j]) + c[4][j];
            const double s2 = war * war + wai * wai;
            const double e2c = we - s2 * il;
            const double har = h[j], hai = h[NL + j], he2c = h[2 * NL + j];
            h[j] = war;
            h[NL + j] = wai;
            h[2 * NL + j] = e2c;
            pr[j] = wpr - (har * war + hai * wai) * il;
            pi[j] = wpi - (har * wai - hai * war) * il;
            r2[j] = he2c + e2c;                                             // 2R
            const double raw2 = r2[j] + ((har * har + hai * hai) + s2) * il;  // its uncentred form E1 + E2
            pw[j] = pr[j] * pr[j] + pi[j] * pi[j];
            flag[j] = (r2[j] > 0.0) & (r2[j] > 1e-9 * raw2) & (pw[j] >= g4 * r2[j] * r2[j]);
        }
        unsigned m = 0;
        for (int j = 0; j < NL; ++j)
            m |= static_cast<unsigned>(flag[j]) << j;
        mk[k] = static_cast<std::uint8_t>(m);
        if (m != 0) {
            double* q = w.out.data() + k * orow;
            for (int j = 0; j < NL; ++j) {
                q[j] = pr[j];
                q[NL + j] = pi[j];
                q[2 * NL + j] = flag[j] ? 4.0 * pw[j] / (r2[j] * r2[j]) : 0.0;
            }
        }
        any |= m;
    }
    return any != 0;
}

void pass1_generic(BlockWork& w, const lv_32fc_t* in, lv_32fc_t* copy, int cur) {
    if (w.NL == 8)
        pass1_portable<8>(w, in, copy, cur);
    else
        pass1_portable<4>(w, in, copy, cur);
}
bool pass2_generic(BlockWork& w, int cur) {
    return w.NL == 8 ? pass2_portable<8>(w, cur) : pass2_portable<4>(w, cur);
}

#if FEDLORA_SYNC_X86
__attribute__((target("avx2,fma"))) void pass1_avx2(BlockWork& w, const lv_32fc_t* in, lv_32fc_t* copy, int cur) {
    if (w.NL == 8)
        pass1_portable<8>(w, in, copy, cur);
    else
        pass1_portable<4>(w, in, copy, cur);
}
__attribute__((target("avx2,fma"))) bool pass2_avx2(BlockWork& w, int cur) {
    return w.NL == 8 ? pass2_portable<8>(w, cur) : pass2_portable<4>(w, cur);
}

// ---- AVX-512 kernels (NL = 8 lanes = one vector of doubles; B a multiple of 8, i.e. L >= 64) --------------------

// GCC 12's unmasked forms of several intrinsics start from _mm512_undefined_*(), which -Wuninitialized flags; the
// zero-masking forms with a full mask are the same instructions.
constexpr __mmask8 kAll8 = 0xFF;

// 8x8 transpose of 64-bit elements: on return v[k] lane j = old v[j] lane k.
__attribute__((target("avx512f"))) inline void transpose8(__m512d* v) {
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    __m512d a[8], b[8];
    for (int i = 0; i < 8; i += 2) {
        a[i] = _mm512_maskz_unpacklo_pd(kAll8, v[i], v[i + 1]);  // elements 0,2,4,6 of rows i, i+1
        a[i + 1] = _mm512_maskz_unpackhi_pd(kAll8, v[i], v[i + 1]);
    }
    for (int h = 0; h < 8; h += 4) {
        b[h + 0] = _mm512_permutex2var_pd(a[h + 0], lo, a[h + 2]);  // elements 0 | 4 of rows h..h+3
        b[h + 1] = _mm512_permutex2var_pd(a[h + 0], hi, a[h + 2]);  // 2 | 6
        b[h + 2] = _mm512_permutex2var_pd(a[h + 1], lo, a[h + 3]);  // 1 | 5
        b[h + 3] = _mm512_permutex2var_pd(a[h + 1], hi, a[h + 3]);  // 3 | 7
    }
    v[0] = _mm512_maskz_shuffle_f64x2(kAll8, b[0], b[4], 0x44);
    v[4] = _mm512_maskz_shuffle_f64x2(kAll8, b[0], b[4], 0xEE);
    v[2] = _mm512_maskz_shuffle_f64x2(kAll8, b[1], b[5], 0x44);
    v[6] = _mm512_maskz_shuffle_f64x2(kAll8, b[1], b[5], 0xEE);
    v[1] = _mm512_maskz_shuffle_f64x2(kAll8, b[2], b[6], 0x44);
    v[5] = _mm512_maskz_shuffle_f64x2(kAll8, b[2], b[6], 0xEE);
    v[3] = _mm512_maskz_shuffle_f64x2(kAll8, b[3], b[7], 0x44);
    v[7] = _mm512_maskz_shuffle_f64x2(kAll8, b[3], b[7], 0xEE);
}

__attribute__((target("avx512f"))) void pass1_avx512(BlockWork& w, const lv_32fc_t* in, lv_32fc_t* copy, int cur) {
    const std::size_t B = static_cast<std::size_t>(w.B), L = static_cast<std::size_t>(w.L);
    double* xs = w.xs.data();
    double* pc = w.pre.data() + static_cast<std::size_t>(cur) * B * 40;
    const __m512i deint = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0, s4 = s0;
    for (std::size_t k0 = 0; k0 < B; k0 += 8) {
        // 8 rows at once: each complex float sample moves as one 64-bit element. Eight strided streams, which the
        // hardware prefetchers follow poorly: fetch 4 tiles ahead, near the end of the group into the next one
        // (usually the next L samples; a prefetch never faults).
        __m512d t[8];
        const std::size_t ahead = k0 + 32;
        const lv_32fc_t* pf = ahead < B ? in + ahead : in + L + (ahead - B);
        for (std::size_t j = 0; j < 8; ++j) {
            _mm_prefetch(reinterpret_cast<const char*>(pf + j * B), _MM_HINT_T0);
            t[j] = _mm512_loadu_pd(reinterpret_cast<const double*>(in + j * B + k0));
        }
        if (copy)
            for (std::size_t j = 0; j < 8; ++j)
                _mm512_storeu_pd(reinterpret_cast<double*>(copy + j * B + k0), t[j]);
        transpose8(t);
        for (std::size_t r = 0; r < 8; ++r) {
            const std::size_t k = k0 + r;
            const __m512d ri = _mm512_castps_pd(_mm512_maskz_permutexvar_ps(0xFFFF, deint, _mm512_castpd_ps(t[r])));
            const __m512d xr = _mm512_maskz_cvtps_pd(kAll8, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xF, ri, 0)));
            const __m512d xi = _mm512_maskz_cvtps_pd(kAll8, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xF, ri, 1)));
            double* x = xs + k * 16;  // x[n - L] in, x[n] out
            const __m512d lr = _mm512_loadu_pd(x), li = _mm512_loadu_pd(x + 8);
            _mm512_storeu_pd(x, xr);
            _mm512_storeu_pd(x + 8, xi);
            s0 = _mm512_add_pd(s0, xr);
            s1 = _mm512_add_pd(s1, xi);
            s2 = _mm512_add_pd(s2, _mm512_fmadd_pd(xr, xr, _mm512_mul_pd(xi, xi)));  // exact products: one rounding
            s3 = _mm512_add_pd(s3, _mm512_fmadd_pd(lr, xr, _mm512_mul_pd(li, xi)));
            s4 = _mm512_add_pd(s4, _mm512_fmsub_pd(lr, xi, _mm512_mul_pd(li, xr)));
            double* p = pc + k * 40;
            _mm512_storeu_pd(p, s0);
            _mm512_storeu_pd(p + 8, s1);
            _mm512_storeu_pd(p + 16, s2);
            _mm512_storeu_pd(p + 24, s3);
            _mm512_storeu_pd(p + 32, s4);
        }
    }
}

// Exclusive sums over the lanes below / above each lane (zeros shifted in).
__attribute__((target("avx512f"))) inline __m512d lanes_below(__m512d t) {
    const __m512i z = _mm512_setzero_si512();
    __m512i x = _mm512_castpd_si512(t);
    __m512d s = _mm512_add_pd(t, _mm512_castsi512_pd(_mm512_maskz_alignr_epi64(kAll8, x, z, 7)));  // + lane j-1
    x = _mm512_castpd_si512(s);
    s = _mm512_add_pd(s, _mm512_castsi512_pd(_mm512_maskz_alignr_epi64(kAll8, x, z, 6)));  // + lanes j-3, j-2
    x = _mm512_castpd_si512(s);
    s = _mm512_add_pd(s, _mm512_castsi512_pd(_mm512_maskz_alignr_epi64(kAll8, x, z, 4)));  // + lanes j-7 .. j-4
    return _mm512_castsi512_pd(_mm512_maskz_alignr_epi64(kAll8, _mm512_castpd_si512(s), z, 7));  // exclusive
}
__attribute__((target("avx512f"))) inline __m512d lanes_above(__m512d t) {
    const __m512i z = _mm512_setzero_si512();
    __m512i x = _mm512_castpd_si512(t);
    __m512d s = _mm512_add_pd(t, _mm512_castsi512_pd(_mm512_maskz_alignr_epi64(kAll8, z, x, 1)));  // + lane j+1
    x = _mm512_castpd_si512(s);
    s = _mm512_add_pd(s, _mm512_castsi512_pd(_mm512_maskz_alignr_epi64(kAll8, z, x, 2)));
    x = _mm512_castpd_si512(s);
    s = _mm512_add_pd(s, _mm512_castsi512_pd(_mm512_maskz_alignr_epi64(kAll8, z, x, 4)));
    return _mm512_castsi512_pd(_mm512_maskz_alignr_epi64(kAll8, z, _mm512_castpd_si512(s), 1));
}

__attribute__((target("avx512f"))) bool pass2_avx512(BlockWork& w, int cur) {
    const std::size_t B = static_cast<std::size_t>(w.B);
    const double* pc = w.pre.data() + static_cast<std::size_t>(cur) * B * 40;
    const double* pp = w.pre.data() + static_cast<std::size_t>(cur ^ 1) * B * 40;
    double* kept = w.kept.data();
    double* out = w.out.data();
    std::uint8_t* mk = w.mask.data();

    __m512d c[kStreams];
    for (int s = 0; s < kStreams; ++s) {
        const __m512d tc = _mm512_loadu_pd(pc + (B - 1) * 40 + 8 * s);
        const __m512d tp = _mm512_loadu_pd(pp + (B - 1) * 40 + 8 * s);
        c[s] = _mm512_add_pd(_mm512_add_pd(lanes_above(tp), lanes_below(tc)), tp);
    }
    const __m512d il = _mm512_set1_pd(w.inv_l), g4 = _mm512_set1_pd(w.g4), tiny = _mm512_set1_pd(1e-9);
    const __m512d zero = _mm512_setzero_pd(), four = _mm512_set1_pd(4.0);
    unsigned any = 0;
    for (std::size_t k = 0; k < B; ++k) {
        const double* a = pc + k * 40;
        const double* b = pp + k * 40;
        const __m512d war = _mm512_add_pd(_mm512_sub_pd(_mm512_loadu_pd(a), _mm512_loadu_pd(b)), c[0]);
        const __m512d wai = _mm512_add_pd(_mm512_sub_pd(_mm512_loadu_pd(a + 8), _mm512_loadu_pd(b + 8)), c[1]);
        const __m512d we = _mm512_add_pd(_mm512_sub_pd(_mm512_loadu_pd(a + 16), _mm512_loadu_pd(b + 16)), c[2]);
        const __m512d wpr = _mm512_add_pd(_mm512_sub_pd(_mm512_loadu_pd(a + 24), _mm512_loadu_pd(b + 24)), c[3]);
        const __m512d wpi = _mm512_add_pd(_mm512_sub_pd(_mm512_loadu_pd(a + 32), _mm512_loadu_pd(b + 32)), c[4]);
        const __m512d s2 = _mm512_fmadd_pd(war, war, _mm512_mul_pd(wai, wai));
        const __m512d e2c = _mm512_fnmadd_pd(s2, il, we);
        double* h = kept + k * 24;  // first halves in, second halves out
        const __m512d har = _mm512_loadu_pd(h), hai = _mm512_loadu_pd(h + 8), he2c = _mm512_loadu_pd(h + 16);
        _mm512_storeu_pd(h, war);
        _mm512_storeu_pd(h + 8, wai);
        _mm512_storeu_pd(h + 16, e2c);
        const __m512d pr = _mm512_fnmadd_pd(_mm512_fmadd_pd(har, war, _mm512_mul_pd(hai, wai)), il, wpr);
        const __m512d pi = _mm512_fnmadd_pd(_mm512_fmsub_pd(har, wai, _mm512_mul_pd(hai, war)), il, wpi);
        const __m512d s1 = _mm512_fmadd_pd(har, har, _mm512_mul_pd(hai, hai));
        const __m512d r2 = _mm512_add_pd(he2c, e2c);                          // 2R
        const __m512d raw2 = _mm512_fmadd_pd(_mm512_add_pd(s1, s2), il, r2);  // E1 + E2
        const __m512d pw = _mm512_fmadd_pd(pr, pr, _mm512_mul_pd(pi, pi));
        const __mmask8 valid = _mm512_cmp_pd_mask(r2, zero, _CMP_GT_OQ) &
                               _mm512_cmp_pd_mask(r2, _mm512_mul_pd(tiny, raw2), _CMP_GT_OQ);
        const __mmask8 m =
            _mm512_mask_cmp_pd_mask(valid, pw, _mm512_mul_pd(_mm512_mul_pd(g4, r2), r2), _CMP_GE_OQ);
        mk[k] = static_cast<std::uint8_t>(m);
        if (m != 0) {  // rare on noise
            double* q = out + k * 24;
            _mm512_storeu_pd(q, pr);
            _mm512_storeu_pd(q + 8, pi);
            _mm512_storeu_pd(q + 16, _mm512_maskz_div_pd(m, _mm512_mul_pd(four, pw), _mm512_mul_pd(r2, r2)));
        }
        any |= m;
    }
    return any != 0;
}
#endif

// Cross-correlation of a segment with a fixed template by FFT: c[t] = sum_n seg[t + n] conj(tmpl[n]) for every t,
// in O(n log n) instead of one dot product per t.
class FftCorrelator {
public:
    FftCorrelator(const lv_32fc_t* tmpl, std::size_t tmpl_len, std::size_t max_lags) {
        n_ = 1;
        while (n_ < tmpl_len + max_lags - 1)
            n_ <<= 1;
        {
            std::lock_guard<std::mutex> lock(fftw_planner_mutex());
            buf_ = reinterpret_cast<lv_32fc_t*>(fftwf_alloc_complex(n_));
            if (buf_) {
                auto* b = reinterpret_cast<fftwf_complex*>(buf_);
                const int n = static_cast<int>(n_);
                fwd_ = fftwf_plan_dft_1d(n, b, b, FFTW_FORWARD, fftw_planner_flags());
                inv_ = fftwf_plan_dft_1d(n, b, b, FFTW_BACKWARD, fftw_planner_flags());
            }
        }
        if (!buf_ || !fwd_ || !inv_) {
            release();
            throw std::runtime_error("sync: FFTW could not plan a " + std::to_string(n_) + "-point transform");
        }
        std::copy(tmpl, tmpl + tmpl_len, buf_);
        std::fill(buf_ + tmpl_len, buf_ + n_, lv_32fc_t{});
        fftwf_execute(fwd_);
        spec_.assign(n_, lv_32fc_t{});
        for (std::size_t i = 0; i < n_; ++i)
            spec_[i] = std::conj(buf_[i]);
    }
    ~FftCorrelator() { release(); }
    FftCorrelator(const FftCorrelator&) = delete;
    FftCorrelator& operator=(const FftCorrelator&) = delete;

    // Index t < lags of the largest |c[t]| (the first one on ties); seg holds lags + tmpl_len - 1 samples.
    std::size_t argmax(const lv_32fc_t* seg, std::size_t seg_len, std::size_t lags) {
        std::copy(seg, seg + seg_len, buf_);
        std::fill(buf_ + seg_len, buf_ + n_, lv_32fc_t{});
        fftwf_execute(fwd_);
        float* f = reinterpret_cast<float*>(buf_);
        const float* s = reinterpret_cast<const float*>(spec_.data());
        for (std::size_t i = 0; i < 2 * n_; i += 2) {  // spelled out: std::complex's operator* is slow
            const float ar = f[i], ai = f[i + 1], br = s[i], bi = s[i + 1];
            f[i] = ar * br - ai * bi;
            f[i + 1] = ar * bi + ai * br;
        }
        fftwf_execute(inv_);
        std::size_t best = 0;
        float best_c = -1.0f;
        for (std::size_t t = 0; t < lags; ++t) {
            const float c = f[2 * t] * f[2 * t] + f[2 * t + 1] * f[2 * t + 1];
            if (c > best_c) {
                best_c = c;
                best = t;
            }
        }
        return best;
    }

private:
    void release() {
        std::lock_guard<std::mutex> lock(fftw_planner_mutex());
        if (fwd_)
            fftwf_destroy_plan(fwd_);
        if (inv_)
            fftwf_destroy_plan(inv_);
        if (buf_)
            fftwf_free(buf_);
        fwd_ = inv_ = nullptr;
        buf_ = nullptr;
    }
    std::size_t n_ = 0;
    lv_32fc_t* buf_ = nullptr;
    fftwf_plan fwd_ = nullptr, inv_ = nullptr;
    volk::vector<lv_32fc_t> spec_;  // conj(FFT(template, zero-padded))
};

KernelId choose_kernel(const std::string& name, int half_len) {
    const bool avx512 = cpu_has("avx512") && half_len >= 64;
    const bool avx2 = cpu_has("avx2");
    if (name == "generic")
        return KernelId::Generic;
    if (name == "avx2")
        return KernelId::Avx2;
    // "auto" or "avx512" (validate() checked that the CPU has what was asked for)
    return avx512 ? KernelId::Avx512 : avx2 ? KernelId::Avx2 : KernelId::Generic;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Synchronizer

struct Synchronizer::Impl {
    enum class State { Idle, Search, WaitFine };

    SyncConfig cfg;
    Preamble pre;
    double gamma, gamma_x;
    std::int64_t N, cp, L, Ls, Lp, span;
    std::int64_t margin;  // fine timing searches [d* - cp - margin, d* + margin]
    KernelId kernel;
    Pass1 pass1 = pass1_generic;
    Pass2 pass2 = pass2_generic;
    BlockWork bw;
    std::vector<std::uint64_t> flags;  // threshold crossings of the current group in time order (bit i: sample gL+i)
    std::uint64_t hmask;
    volk::vector<lv_32fc_t> hist;     // last H input samples, H a power of two (a multiple of L)
    volk::vector<lv_32fc_t> ref;      // the preamble, both symbols with CP
    volk::vector<lv_32fc_t> scratch;  // fine-stage window
    double e_ref = 0.0;
    CfoCorrector rot;
    std::unique_ptr<FftCorrelator> xcorr;  // against symbol 2 with its CP
    SyncStats stats;

    std::uint64_t group = 0;  // the group of L samples being received
    std::size_t fill = 0;     // how many of its samples are in `hist`

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
          kernel(choose_kernel(c.kernel, static_cast<int>(N / 2))) {
        bw.init(static_cast<int>(L), gamma);
#if FEDLORA_SYNC_X86
        if (kernel == KernelId::Avx512) {
            pass1 = pass1_avx512;
            pass2 = pass2_avx512;
        } else if (kernel == KernelId::Avx2) {
            pass1 = pass1_avx2;
            pass2 = pass2_avx2;
        }
#endif
        flags.assign(static_cast<std::size_t>((L + 63) / 64), 0);
        // Oldest sample the fine stage reads, relative to the newest sample in `hist` when it runs: at most
        // 2 margin + cp + Lp - 1 <= 5L + 3cp behind the sample at which it runs, plus up to L - 1 samples of the
        // group being processed. H >= 2 (5L + 3cp + 1) covers that with room to spare, and is a multiple of L (both
        // powers of two), so every group is contiguous in the ring.
        std::uint64_t h = 1;
        while (h < static_cast<std::uint64_t>(2 * (5 * L + 3 * cp + 1)))
            h <<= 1;
        hmask = h - 1;
        hist.assign(h, lv_32fc_t{});
        ref.assign(pre.samples().begin(), pre.samples().end());
        scratch.assign(static_cast<std::size_t>(cp + L + 1 + Lp), lv_32fc_t{});
        for (const auto& x : ref)
            e_ref += std::norm(cd64(x));
        xcorr = std::make_unique<FftCorrelator>(ref.data() + Ls, static_cast<std::size_t>(Ls),
                                                static_cast<std::size_t>(2 * margin + cp + 1));
    }

    void reset() {
        bw.reset();
        std::fill(flags.begin(), flags.end(), 0);
        std::fill(hist.begin(), hist.end(), lv_32fc_t{});
        stats = {};
        group = 0;
        fill = 0;
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

    // Sum and energy in double, with eight interleaved partial sums (independent chains; vectorisable).
    static cd64 sum(const lv_32fc_t* x, std::int64_t len) {
        const float* f = reinterpret_cast<const float*>(x);
        const auto n = static_cast<std::size_t>(2 * len);
        double acc[8] = {};
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (std::size_t j = 0; j < 8; ++j)
                acc[j] += f[i + j];
        for (std::size_t j = 0; i < n; ++i, ++j)
            acc[j] += f[i];
        return {(acc[0] + acc[2]) + (acc[4] + acc[6]), (acc[1] + acc[3]) + (acc[5] + acc[7])};
    }
    static double energy(const lv_32fc_t* x, std::int64_t len) {
        const float* f = reinterpret_cast<const float*>(x);
        const auto n = static_cast<std::size_t>(2 * len);
        double acc[8] = {};
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (std::size_t j = 0; j < 8; ++j)
                acc[j] += static_cast<double>(f[i + j]) * f[i + j];
        for (std::size_t j = 0; i < n; ++i, ++j)
            acc[j] += static_cast<double>(f[i]) * f[i];
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
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
        const lv_32fc_t mf(sum(s, len) / static_cast<double>(len));
        for (std::int64_t i = 0; i < len; ++i)
            s[i] -= mf;
        const double cfo_coarse = std::arg(best_p) / kPi;
        const double omega_coarse = std::arg(best_p) / static_cast<double>(L);
        rot.set_frequency(omega_coarse);
        rot.set_phase(0.0);
        rot.apply(s, s, static_cast<std::size_t>(len));

        // Timing on symbol 2 alone: half the work of the whole preamble, and no sidelobe at lag L from the
        // periodic symbol 1. All candidate starts at once: c(t) = sum_n s[t - t_lo + Ls + n] conj(p2[n]).
        const std::int64_t lags = t_hi - t_lo + 1;
        const std::int64_t best_t =
            t_lo + static_cast<std::int64_t>(xcorr->argmax(s + Ls, static_cast<std::size_t>(lags + Ls - 1),
                                                            static_cast<std::size_t>(lags)));
        const lv_32fc_t* w = s + (best_t - t_lo);
        const cd64 c1(dot(w, ref.data(), Ls));
        const cd64 c2(dot(w + Ls, ref.data() + Ls, Ls));
        const double e_rx = energy(w, Lp);
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

    // First threshold crossing at time index >= lo in the current group, or L.
    std::int64_t next_flag(std::int64_t lo) const {
        if (lo >= L)
            return L;
        std::size_t wi = static_cast<std::size_t>(lo) >> 6;
        std::uint64_t word = flags[wi] & (~std::uint64_t{0} << (lo & 63));
        while (word == 0) {
            if (++wi == flags.size())
                return L;
            word = flags[wi];
        }
        return static_cast<std::int64_t>(wi * 64 + static_cast<std::size_t>(__builtin_ctzll(word)));
    }

    // The group of samples [gL, gL + L) has arrived, in `src`: its place in `hist`, or the caller's buffer (then
    // pass 1 copies it to `hist`). Metric kernel, then the detection state machine, sample by sample in time order
    // (d = n - 2L + 1 for the window ending at n), jumping over stretches where nothing can happen.
    template <class Emit>
    void process_group(const lv_32fc_t* src, Emit&& emit) {
        const auto n0 = static_cast<std::int64_t>(group) * L;
        const int cur = static_cast<int>(group & 1);
        lv_32fc_t* ring = hist.data() + (static_cast<std::uint64_t>(n0) & hmask);
        pass1(bw, src, src == ring ? nullptr : ring, cur);
        const bool any = pass2(bw, cur);
        if (any) {
            std::fill(flags.begin(), flags.end(), 0);
            for (int k = 0; k < bw.B; ++k)
                for (unsigned m = bw.mask[static_cast<std::size_t>(k)]; m != 0; m &= m - 1) {
                    const auto i = static_cast<std::size_t>(__builtin_ctz(m) * bw.B + k);
                    flags[i >> 6] |= std::uint64_t{1} << (i & 63);
                }
        }

        std::int64_t i = 0;
        while (i < L) {
            switch (state) {
                case State::Idle: {
                    if (!any) {
                        i = L;
                        break;
                    }
                    // d >= holdoff and d >= 0
                    const std::int64_t t = next_flag(std::max({i, holdoff + 2 * L - 1 - n0, 2 * L - 1 - n0}));
                    if (t >= L) {
                        i = L;
                        break;
                    }
                    const std::int64_t d = n0 + t - 2 * L + 1;
                    ++stats.triggers;
                    state = State::Search;
                    search_last = d + span - 1;
                    best_d = d;
                    best_m = bw.at(t, 2);
                    best_p = cd64(bw.at(t, 0), bw.at(t, 1));
                    i = t + 1;
                    break;
                }
                case State::Search: {
                    // argmax of M over the search; a sample below the threshold cannot beat the trigger's M (which
                    // is at or above it), so only the crossings are visited.
                    const std::int64_t last = search_last + 2 * L - 1 - n0;  // time index of d == search_last
                    const std::int64_t end = std::min(L - 1, last);
                    if (any && i <= end)
                        for (std::int64_t wi = i >> 6; wi <= end >> 6; ++wi) {
                            std::uint64_t word = flags[static_cast<std::size_t>(wi)];
                            if (wi == i >> 6)
                                word &= ~std::uint64_t{0} << (i & 63);
                            if (wi == end >> 6 && (end & 63) != 63)
                                word &= (std::uint64_t{1} << ((end & 63) + 1)) - 1;
                            for (; word != 0; word &= word - 1) {
                                const std::int64_t t = wi * 64 + __builtin_ctzll(word);
                                if (const double m = bw.at(t, 2); m > best_m) {
                                    best_d = n0 + t - 2 * L + 1;
                                    best_m = m;
                                    best_p = cd64(bw.at(t, 0), bw.at(t, 1));
                                }
                            }
                        }
                    i = end + 1;
                    if (end == last) {
                        fine_at = best_d + margin + Lp - 1;
                        if (fine_at <= n0 + last)
                            run_fine(emit);
                        else
                            state = State::WaitFine;
                    }
                    break;
                }
                case State::WaitFine: {
                    const std::int64_t t = fine_at - n0;
                    if (t >= L) {
                        i = L;
                        break;
                    }
                    run_fine(emit);
                    i = t + 1;
                    break;
                }
            }
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
const char* Synchronizer::kernel_name() const {
    switch (impl_->kernel) {
        case KernelId::Avx512:
            return "avx512";
        case KernelId::Avx2:
            return "avx2";
        case KernelId::Generic:
            break;
    }
    return "generic";
}

std::size_t Synchronizer::max_detections(std::size_t n) const {
    // A detection at t1 is reported at most at t1 + cp + 2 margin + Lp - 1; the next search opens at d >= t1 + Lp and
    // reports at least at t1 + 2 Lp + margin - 1: reports are at least Lp - cp - margin samples apart. One call
    // completes the groups of at most n + L - 1 consecutive samples.
    const auto& m = *impl_;
    return (n + static_cast<std::size_t>(m.L) - 1) / static_cast<std::size_t>(m.Lp - m.cp - m.margin) + 1;
}

std::size_t Synchronizer::max_latency() const {
    // A preamble starting at t0 opens its search at d0 <= t0 + cp + L (beyond that its windows hold no periodic
    // pair); the peak is at most span - 1 later; the fine stage needs margin + Lp more samples; the group holding
    // that sample completes at most L - 1 samples later.
    const auto& m = *impl_;
    return static_cast<std::size_t>(m.cp + m.L + m.span - 1 + m.margin + m.Lp - 1 + m.L - 1);
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
    const auto L = static_cast<std::size_t>(m.L);
    std::size_t i = 0;
    while (i < n) {
        // Samples enter the ring one group at a time, so it never holds more than the group being processed.
        if (m.fill == 0 && n - i >= L) {  // a whole group in the caller's buffer: pass 1 copies it to the ring
            m.stats.samples += L;
            m.process_group(in + i, emit);
            i += L;
            ++m.group;
            continue;
        }
        const std::size_t take = std::min(n - i, L - m.fill);
        const std::uint64_t at = (m.group * L + m.fill) & m.hmask;
        std::copy(in + i, in + i + take, m.hist.begin() + static_cast<std::ptrdiff_t>(at));
        m.fill += take;
        i += take;
        m.stats.samples += take;
        if (m.fill == L) {
            m.process_group(m.hist.data() + ((m.group * L) & m.hmask), emit);
            m.fill = 0;
            ++m.group;
        }
    }
    return found;
}

}  // namespace fedlora::phy
