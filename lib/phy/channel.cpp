// Multi-user channel simulator (see include/fedlora/phy/channel.h and docs/math.md, "Multi-user channel simulator").
#include "fedlora/phy/channel.h"

#include <volk/volk.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FEDLORA_CHANNEL_X86 1
#else
#define FEDLORA_CHANNEL_X86 0
#endif

namespace fedlora::phy {

namespace {

using cf32 = std::complex<float>;
using cf64 = std::complex<double>;
constexpr double kTwoPi = 6.283185307179586476925286766559;

// ------------------------------------------------------------------------------------------------------------
// Random numbers: splitmix64 seeding, xoshiro256** stream, 128-layer ziggurat normal deviates (Marsaglia & Tsang
// 2000). Own implementations so that a seed gives the same stream on every platform and standard library.
// ------------------------------------------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

inline std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

struct ZigguratTables {
    static constexpr int kLayers = 128;
    static constexpr double kR = 3.442619855899;             // start of the tail
    static constexpr double kV = 9.91256303526217e-3;        // area of every layer
    std::array<double, kLayers + 1> x{};                     // layer right edges, x[128] = 0
    std::array<double, kLayers + 1> f{};                     // exp(-x²/2)
    ZigguratTables() {
        auto pdf = [](double v) { return std::exp(-0.5 * v * v); };
        x[0] = kV / pdf(kR);  // width of the base strip (rectangle plus tail)
        x[1] = kR;
        for (int i = 1; i < kLayers - 1; ++i)
            x[static_cast<std::size_t>(i + 1)] = std::sqrt(-2.0 * std::log(kV / x[static_cast<std::size_t>(i)] +
                                                                           pdf(x[static_cast<std::size_t>(i)])));
        x[kLayers] = 0.0;
        for (std::size_t i = 0; i <= kLayers; ++i)
            f[i] = pdf(x[i]);
    }
};

const ZigguratTables& ziggurat() {
    static const ZigguratTables t;
    return t;
}

class Rng {
public:
    Rng() : Rng(0) {}
    Rng(std::uint64_t seed, std::uint64_t stream) : Rng(seed ^ (0xd1b54a32d192ed03ULL * (stream + 1))) {}
    explicit Rng(std::uint64_t seed) {
        std::uint64_t st = seed;
        for (auto& v : s_)
            v = splitmix64(st);
    }
    std::uint64_t next() {
        const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const std::uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }
    // [0, 1), 53 bits
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
    // N(0, 1)
    double normal() {
        const auto& z = ziggurat();
        for (;;) {
            const std::uint64_t b = next();
            const std::size_t i = static_cast<std::size_t>(b & 127u);
            const double u = 2.0 * (static_cast<double>(b >> 11) * 0x1.0p-53) - 1.0;  // [-1, 1)
            const double v = u * z.x[i];
            if (std::fabs(v) < z.x[i + 1])
                return v;
            if (i == 0) {  // tail beyond r
                double a, c;
                do {
                    a = -std::log(1.0 - uniform()) / ZigguratTables::kR;
                    c = -std::log(1.0 - uniform());
                } while (c + c < a * a);
                return u < 0.0 ? -(ZigguratTables::kR + a) : ZigguratTables::kR + a;
            }
            const double y = z.f[i] + uniform() * (z.f[i + 1] - z.f[i]);
            if (y < std::exp(-0.5 * v * v))
                return v;
        }
    }
    // CN(0, 1)
    cf64 cnormal() {
        const double re = normal();
        const double im = normal();
        return {re * M_SQRT1_2, im * M_SQRT1_2};
    }

private:
    std::array<std::uint64_t, 4> s_{};
};

// ------------------------------------------------------------------------------------------------------------
// Profiles and interpolation filters
// ------------------------------------------------------------------------------------------------------------

std::string lower(std::string s) {
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

struct Table {
    const char* name;
    std::vector<double> delay_ns;
    std::vector<double> power_db;
};

// 3GPP TS 36.104, Annex B.2, Tables B.2-2 (EPA), B.2-3 (EVA), B.2-4 (ETU): excess tap delay [ns], relative power [dB].
const std::vector<Table>& tables_36104() {
    static const std::vector<Table> t = {
        {"epa", {0, 30, 70, 90, 110, 190, 410}, {0.0, -1.0, -2.0, -3.0, -8.0, -17.2, -20.8}},
        {"eva", {0, 30, 150, 310, 370, 710, 1090, 1730, 2510}, {0.0, -1.5, -1.4, -3.6, -0.6, -9.1, -7.0, -12.0, -16.9}},
        {"etu", {0, 50, 120, 200, 230, 500, 1600, 2300, 5000}, {-1.0, -1.0, -1.0, 0.0, 0.0, 0.0, -3.0, -5.0, -7.0}},
    };
    return t;
}

constexpr double kMaxPathDelaySamples = 16384.0;

std::string fmt(double v) {
    std::ostringstream o;
    o.precision(10);
    o << v;
    return o.str();
}

[[noreturn]] void bad(const std::string& field, const std::string& value, const std::string& why) {
    throw std::invalid_argument("channel simulator: " + field + " = " + value + " " + why);
}
[[noreturn]] void bad(const std::string& field, double value, const std::string& why) { bad(field, fmt(value), why); }

// Kaiser-windowed sinc at x (samples), window support |x| < half_width.
double windowed_sinc(double x, double half_width, double beta) {
    if (std::fabs(x) >= half_width)
        return 0.0;
    if (x == std::round(x))  // exact zeros of the sinc (and 1 at 0)
        return x == 0.0 ? 1.0 : 0.0;
    const double r = x / half_width;
    const double w = std::cyl_bessel_i(0.0, beta * std::sqrt(1.0 - r * r)) / std::cyl_bessel_i(0.0, beta);
    const double px = M_PI * x;
    return w * std::sin(px) / px;
}

bool kernel_supported(const std::string& name) {
    if (name == "volk" || name == "auto")
        return true;
#if FEDLORA_CHANNEL_X86
    __builtin_cpu_init();
    if (name == "avx2")
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (name == "avx512")
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
    return false;
}

// ------------------------------------------------------------------------------------------------------------
// FIR kernels: acc[i] += Σ_j tap_j · x[i - lag_j], i = 0 .. n-1 (x has at least max lag samples of history).
// The AVX kernels perform the same fused operations in the same order for every output sample (full or masked
// vectors), so the result does not depend on where a segment starts or ends.
// ------------------------------------------------------------------------------------------------------------

struct alignas(16) PackedTap {
    float re;
    std::int32_t lag;
    float nim;  // -imag
    float im;
};

using FirKernel = void (*)(cf32* acc, const cf32* x, const PackedTap* taps, int n_taps, std::size_t n, cf32* scratch);

void fir_volk(cf32* acc, const cf32* x, const PackedTap* taps, int n_taps, std::size_t n, cf32* scratch) {
    const auto un = static_cast<unsigned int>(n);
    for (int j = 0; j < n_taps; ++j) {
        const lv_32fc_t h{taps[j].re, taps[j].im};
        volk_32fc_s32fc_multiply_32fc(scratch, x - taps[j].lag, h, un);
        volk_32f_x2_add_32f(reinterpret_cast<float*>(acc), reinterpret_cast<const float*>(acc),
                            reinterpret_cast<const float*>(scratch), 2 * un);
    }
}

#if FEDLORA_CHANNEL_X86
// The (-im, im) float pair of a tap as one double, for a 64-bit broadcast.
inline double tap_pair(const PackedTap& t) {
    double pair;
    std::memcpy(&pair, &t.nim, sizeof(pair));
    return pair;
}

// AVX2 + FMA: 16 outputs per pass with four accumulators, then 4 at a time, then a masked remainder. Every output
// sample goes through the same per-lane operations (two FMAs per tap, taps in order), whichever path handles it.
__attribute__((target("avx2,fma"))) void fir_avx2(cf32* acc, const cf32* x, const PackedTap* taps, int n_taps,
                                                  std::size_t n, cf32*) {
    float* a = reinterpret_cast<float*>(acc);
    const float* xf = reinterpret_cast<const float*>(x);
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a0 = _mm256_loadu_ps(a + 2 * i);
        __m256 a1 = _mm256_loadu_ps(a + 2 * i + 8);
        __m256 a2 = _mm256_loadu_ps(a + 2 * i + 16);
        __m256 a3 = _mm256_loadu_ps(a + 2 * i + 24);
        for (int j = 0; j < n_taps; ++j) {
            const __m256 hr = _mm256_set1_ps(taps[j].re);
            const __m256 hi = _mm256_castpd_ps(_mm256_set1_pd(tap_pair(taps[j])));  // (-im, im, -im, im, ...)
            const float* xp = xf + 2 * (static_cast<std::ptrdiff_t>(i) - taps[j].lag);
            const __m256 x0 = _mm256_loadu_ps(xp);
            const __m256 x1 = _mm256_loadu_ps(xp + 8);
            const __m256 x2 = _mm256_loadu_ps(xp + 16);
            const __m256 x3 = _mm256_loadu_ps(xp + 24);
            a0 = _mm256_fmadd_ps(hr, x0, a0);
            a1 = _mm256_fmadd_ps(hr, x1, a1);
            a2 = _mm256_fmadd_ps(hr, x2, a2);
            a3 = _mm256_fmadd_ps(hr, x3, a3);
            a0 = _mm256_fmadd_ps(hi, _mm256_permute_ps(x0, 0xB1), a0);
            a1 = _mm256_fmadd_ps(hi, _mm256_permute_ps(x1, 0xB1), a1);
            a2 = _mm256_fmadd_ps(hi, _mm256_permute_ps(x2, 0xB1), a2);
            a3 = _mm256_fmadd_ps(hi, _mm256_permute_ps(x3, 0xB1), a3);
        }
        _mm256_storeu_ps(a + 2 * i, a0);
        _mm256_storeu_ps(a + 2 * i + 8, a1);
        _mm256_storeu_ps(a + 2 * i + 16, a2);
        _mm256_storeu_ps(a + 2 * i + 24, a3);
    }
    for (; i < n; i += 4) {
        const std::size_t rem = std::min<std::size_t>(4, n - i);
        alignas(32) std::int32_t m[8];
        for (int q = 0; q < 8; ++q)
            m[q] = static_cast<std::size_t>(q) < 2 * rem ? -1 : 0;
        const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
        __m256 a0 = _mm256_maskload_ps(a + 2 * i, mask);
        for (int j = 0; j < n_taps; ++j) {
            const __m256 hr = _mm256_set1_ps(taps[j].re);
            const __m256 hi = _mm256_castpd_ps(_mm256_set1_pd(tap_pair(taps[j])));  // (-im, im, -im, im, ...)
            const float* xp = xf + 2 * (static_cast<std::ptrdiff_t>(i) - taps[j].lag);
            const __m256 x0 = _mm256_maskload_ps(xp, mask);
            a0 = _mm256_fmadd_ps(hr, x0, a0);
            a0 = _mm256_fmadd_ps(hi, _mm256_permute_ps(x0, 0xB1), a0);
        }
        _mm256_maskstore_ps(a + 2 * i, mask, a0);
    }
}

// AVX-512: 32 outputs per pass, then 8 at a time, then a masked remainder (same per-lane operations throughout).
__attribute__((target("avx512f,fma"))) void fir_avx512(cf32* acc, const cf32* x, const PackedTap* taps, int n_taps,
                                                       std::size_t n, cf32*) {
    float* a = reinterpret_cast<float*>(acc);
    const float* xf = reinterpret_cast<const float*>(x);
    std::size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a0 = _mm512_loadu_ps(a + 2 * i);
        __m512 a1 = _mm512_loadu_ps(a + 2 * i + 16);
        __m512 a2 = _mm512_loadu_ps(a + 2 * i + 32);
        __m512 a3 = _mm512_loadu_ps(a + 2 * i + 48);
        for (int j = 0; j < n_taps; ++j) {
            const __m512 hr = _mm512_set1_ps(taps[j].re);
            const __m512 hi = _mm512_castpd_ps(_mm512_set1_pd(tap_pair(taps[j])));
            const float* xp = xf + 2 * (static_cast<std::ptrdiff_t>(i) - taps[j].lag);
            const __m512 x0 = _mm512_loadu_ps(xp);
            const __m512 x1 = _mm512_loadu_ps(xp + 16);
            const __m512 x2 = _mm512_loadu_ps(xp + 32);
            const __m512 x3 = _mm512_loadu_ps(xp + 48);
            a0 = _mm512_fmadd_ps(hr, x0, a0);
            a1 = _mm512_fmadd_ps(hr, x1, a1);
            a2 = _mm512_fmadd_ps(hr, x2, a2);
            a3 = _mm512_fmadd_ps(hr, x3, a3);
            a0 = _mm512_fmadd_ps(hi, _mm512_shuffle_ps(x0, x0, 0xB1), a0);
            a1 = _mm512_fmadd_ps(hi, _mm512_shuffle_ps(x1, x1, 0xB1), a1);
            a2 = _mm512_fmadd_ps(hi, _mm512_shuffle_ps(x2, x2, 0xB1), a2);
            a3 = _mm512_fmadd_ps(hi, _mm512_shuffle_ps(x3, x3, 0xB1), a3);
        }
        _mm512_storeu_ps(a + 2 * i, a0);
        _mm512_storeu_ps(a + 2 * i + 16, a1);
        _mm512_storeu_ps(a + 2 * i + 32, a2);
        _mm512_storeu_ps(a + 2 * i + 48, a3);
    }
    for (; i < n; i += 8) {
        const std::size_t rem = std::min<std::size_t>(8, n - i);
        const auto mask = static_cast<__mmask16>((1u << (2 * rem)) - 1u);
        __m512 a0 = _mm512_maskz_loadu_ps(mask, a + 2 * i);
        for (int j = 0; j < n_taps; ++j) {
            const __m512 hr = _mm512_set1_ps(taps[j].re);
            const __m512 hi = _mm512_castpd_ps(_mm512_set1_pd(tap_pair(taps[j])));
            const float* xp = xf + 2 * (static_cast<std::ptrdiff_t>(i) - taps[j].lag);
            const __m512 x0 = _mm512_maskz_loadu_ps(mask, xp);
            a0 = _mm512_fmadd_ps(hr, x0, a0);
            a0 = _mm512_fmadd_ps(hi, _mm512_shuffle_ps(x0, x0, 0xB1), a0);
        }
        _mm512_mask_storeu_ps(a + 2 * i, mask, a0);
    }
}
#endif

// CFO rotation: dst[i] = x[i] · (tab[i] · base). Same per-element operations for full and masked vectors.
using RotKernel = void (*)(cf32* dst, const cf32* x, const cf32* tab, cf32 base, std::size_t n);

void rotate_generic(cf32* dst, const cf32* x, const cf32* tab, cf32 base, std::size_t n) {
    const float br = base.real(), bi = base.imag();
    for (std::size_t i = 0; i < n; ++i) {
        const float rr = tab[i].real() * br - tab[i].imag() * bi;
        const float ri = tab[i].real() * bi + tab[i].imag() * br;
        dst[i] = cf32(x[i].real() * rr - x[i].imag() * ri, x[i].real() * ri + x[i].imag() * rr);
    }
}

#if FEDLORA_CHANNEL_X86
__attribute__((target("avx2,fma"))) inline __m256 cmul_avx2(__m256 a, __m256 b) {
    const __m256 t = _mm256_mul_ps(_mm256_movehdup_ps(a), _mm256_permute_ps(b, 0xB1));
    return _mm256_fmaddsub_ps(_mm256_moveldup_ps(a), b, t);
}

__attribute__((target("avx2,fma"))) void rotate_avx2(cf32* dst, const cf32* x, const cf32* tab, cf32 base,
                                                     std::size_t n) {
    double pair;
    std::memcpy(&pair, &base, sizeof(pair));
    const __m256 b = _mm256_castpd_ps(_mm256_set1_pd(pair));
    float* d = reinterpret_cast<float*>(dst);
    const float* xf = reinterpret_cast<const float*>(x);
    const float* tf = reinterpret_cast<const float*>(tab);
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_ps(d + 2 * i, cmul_avx2(_mm256_loadu_ps(xf + 2 * i), cmul_avx2(_mm256_loadu_ps(tf + 2 * i), b)));
    if (i < n) {
        alignas(32) std::int32_t m[8];
        for (int q = 0; q < 8; ++q)
            m[q] = static_cast<std::size_t>(q) < 2 * (n - i) ? -1 : 0;
        const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
        const __m256 r = cmul_avx2(_mm256_maskload_ps(tf + 2 * i, mask), b);
        _mm256_maskstore_ps(d + 2 * i, mask, cmul_avx2(_mm256_maskload_ps(xf + 2 * i, mask), r));
    }
}

__attribute__((target("avx512f,fma"))) inline __m512 cmul_avx512(__m512 a, __m512 b) {
    const __m512 t = _mm512_mul_ps(_mm512_shuffle_ps(a, a, 0xF5), _mm512_shuffle_ps(b, b, 0xB1));
    return _mm512_fmaddsub_ps(_mm512_shuffle_ps(a, a, 0xA0), b, t);
}

__attribute__((target("avx512f,fma"))) void rotate_avx512(cf32* dst, const cf32* x, const cf32* tab, cf32 base,
                                                          std::size_t n) {
    double pair;
    std::memcpy(&pair, &base, sizeof(pair));
    const __m512 b = _mm512_castpd_ps(_mm512_set1_pd(pair));
    float* d = reinterpret_cast<float*>(dst);
    const float* xf = reinterpret_cast<const float*>(x);
    const float* tf = reinterpret_cast<const float*>(tab);
    for (std::size_t i = 0; i < n; i += 8) {
        const std::size_t rem = std::min<std::size_t>(8, n - i);
        const auto mask = static_cast<__mmask16>((1u << (2 * rem)) - 1u);
        const __m512 r = cmul_avx512(_mm512_maskz_loadu_ps(mask, tf + 2 * i), b);
        _mm512_mask_storeu_ps(d + 2 * i, mask, cmul_avx512(_mm512_maskz_loadu_ps(mask, xf + 2 * i), r));
    }
}
#endif

// e^{jδ} for the small Wiener increments of the phase noise (Taylor series, error < 1e-15 for |δ| < 0.05).
inline void small_rotation(double d, double& c, double& s) {
    if (std::fabs(d) >= 0.05) {
        c = std::cos(d);
        s = std::sin(d);
        return;
    }
    constexpr double c2 = 1.0 / 2.0, c4 = 1.0 / 24.0, c6 = 1.0 / 720.0;
    constexpr double s3 = 1.0 / 6.0, s5 = 1.0 / 120.0, s7 = 1.0 / 5040.0;
    const double d2 = d * d;
    c = 1.0 - d2 * (c2 - d2 * (c4 - d2 * c6));
    s = d * (1.0 - d2 * (s3 - d2 * (s5 - d2 * s7)));
}

inline cf64 cis_cycles(double cycles) {
    const double f = cycles - std::floor(cycles);
    return {std::cos(kTwoPi * f), std::sin(kTwoPi * f)};
}

constexpr std::uint64_t kDopplerResync = 1024;   // exact re-evaluation of the sinusoids every 1024 updates
constexpr std::uint64_t kPhaseNoiseResync = 256;  // exact e^{jθ} every 256 samples

}  // namespace

// ----------------------------------------------------------------------------------------------------------------
// Profiles and validation
// ----------------------------------------------------------------------------------------------------------------

std::vector<PdpPath> power_delay_profile(const std::string& name, double rms_delay_spread_s, double sample_rate) {
    const std::string n = lower(name);
    std::vector<PdpPath> paths;
    if (n == "flat") {
        paths.push_back({0.0, 1.0});
    } else if (n == "exponential") {
        if (!(sample_rate > 0.0))
            bad("sample_rate", sample_rate, "must be positive");
        const double a = rms_delay_spread_s * sample_rate;  // rms delay spread in samples
        if (!(a > 0.0) || !std::isfinite(a))
            bad("rms_delay_spread_s", rms_delay_spread_s, "must be positive for the exponential profile");
        // Discrete profile q^l has rms delay spread sqrt(q)/(1-q) samples; solve for sqrt(q).
        const double s = (-1.0 + std::sqrt(1.0 + 4.0 * a * a)) / (2.0 * a);
        const double q = s * s;
        const auto n_taps = static_cast<std::size_t>(1.0 + std::floor(std::log(1e-4) / std::log(q)));
        if (static_cast<double>(n_taps) > kMaxPathDelaySamples)
            bad("rms_delay_spread_s", rms_delay_spread_s,
                "gives more than " + fmt(kMaxPathDelaySamples) + " taps at sample_rate " + fmt(sample_rate));
        double p = 1.0;
        for (std::size_t l = 0; l < n_taps; ++l, p *= q)
            paths.push_back({static_cast<double>(l) / sample_rate, p});
    } else {
        for (const auto& t : tables_36104()) {
            if (n == t.name) {
                for (std::size_t i = 0; i < t.delay_ns.size(); ++i)
                    paths.push_back({t.delay_ns[i] * 1e-9, std::pow(10.0, t.power_db[i] / 10.0)});
            }
        }
        if (paths.empty())
            bad("profile", "\"" + name + "\"", "is not one of flat, exponential, EPA, EVA, ETU");
    }
    double total = 0.0;
    for (const auto& p : paths)
        total += p.power;
    for (auto& p : paths)
        p.power /= total;
    return paths;
}

void ChannelSimConfig::validate() const {
    if (devices.empty() || devices.size() > 4096)
        bad("devices.size()", static_cast<double>(devices.size()), "must be in [1, 4096]");
    if (n_tx < 1 || n_tx > 64)
        bad("n_tx", n_tx, "must be in [1, 64]");
    if (n_rx < 1 || n_rx > 64)
        bad("n_rx", n_rx, "must be in [1, 64]");
    if (!(sample_rate > 0.0) || !std::isfinite(sample_rate))
        bad("sample_rate", sample_rate, "must be positive and finite");
    if (tap_interpolation != "nearest" && tap_interpolation != "sinc")
        bad("tap_interpolation", "\"" + tap_interpolation + "\"", "is not one of nearest, sinc");
    if (sinc_half_length < 1 || sinc_half_length > 64)
        bad("sinc_half_length", sinc_half_length, "must be in [1, 64]");
    if (fd_half_length < 1 || fd_half_length > 64)
        bad("fd_half_length", fd_half_length, "must be in [1, 64]");
    if (!(kaiser_beta >= 0.0 && kaiser_beta <= 50.0))
        bad("kaiser_beta", kaiser_beta, "must be in [0, 50]");
    if (doppler_sinusoids < 1 || doppler_sinusoids > 1024)
        bad("doppler_sinusoids", doppler_sinusoids, "must be in [1, 1024]");
    if (segment_size < 32 || segment_size > (std::size_t{1} << 20))
        bad("segment_size", static_cast<double>(segment_size), "must be in [32, 1048576]");
    if (doppler_update_interval > segment_size)
        bad("doppler_update_interval", static_cast<double>(doppler_update_interval),
            "must not exceed segment_size = " + fmt(static_cast<double>(segment_size)));
    if (!(noise_variance >= 0.0) || !std::isfinite(noise_variance))
        bad("noise_variance", noise_variance, "must be finite and >= 0");
    if (!(phase_noise_linewidth_hz >= 0.0) || !(phase_noise_linewidth_hz < sample_rate))
        bad("phase_noise_linewidth_hz", phase_noise_linewidth_hz, "must be in [0, sample_rate)");
    if (!std::isfinite(dc_offset.real()) || !std::isfinite(dc_offset.imag()))
        bad("dc_offset", "(" + fmt(dc_offset.real()) + ", " + fmt(dc_offset.imag()) + ")", "must be finite");
    if (fir_kernel != "auto" && fir_kernel != "volk" && fir_kernel != "avx2" && fir_kernel != "avx512")
        bad("fir_kernel", "\"" + fir_kernel + "\"", "is not one of auto, volk, avx2, avx512");
    if (!kernel_supported(fir_kernel))
        bad("fir_kernel", "\"" + fir_kernel + "\"", "is not supported by this CPU");

    for (std::size_t k = 0; k < devices.size(); ++k) {
        const auto& d = devices[k];
        const std::string p = "devices[" + std::to_string(k) + "].";
        if (d.snr_db) {
            if (!std::isfinite(*d.snr_db) || std::fabs(*d.snr_db) > 300.0)
                bad(p + "snr_db", *d.snr_db, "must be finite, |snr_db| <= 300");
            if (!(noise_variance > 0.0))
                bad(p + "snr_db", *d.snr_db, "needs noise_variance > 0 (the SNR is relative to it)");
        }
        if (!std::isfinite(d.path_loss_db) || std::fabs(d.path_loss_db) > 300.0)
            bad(p + "path_loss_db", d.path_loss_db, "must be finite, |path_loss_db| <= 300");
        const std::string prof = lower(d.profile);
        if (prof != "flat" && prof != "exponential" && prof != "epa" && prof != "eva" && prof != "etu")
            bad(p + "profile", "\"" + d.profile + "\"", "is not one of flat, exponential, EPA, EVA, ETU");
        if (!(d.rms_delay_spread_s >= 0.0) || !std::isfinite(d.rms_delay_spread_s))
            bad(p + "rms_delay_spread_s", d.rms_delay_spread_s, "must be finite and >= 0");
        if (prof == "exponential") {
            if (!(d.rms_delay_spread_s > 0.0))
                bad(p + "rms_delay_spread_s", d.rms_delay_spread_s, "must be positive for the exponential profile");
            if (d.rms_delay_spread_s * sample_rate > 1000.0)
                bad(p + "rms_delay_spread_s", d.rms_delay_spread_s,
                    "is more than 1000 samples at sample_rate " + fmt(sample_rate));
        } else {
            const auto paths = power_delay_profile(prof, 0.0, sample_rate);
            if (paths.back().delay_s * sample_rate > kMaxPathDelaySamples)
                bad(p + "profile", "\"" + d.profile + "\"",
                    "spans more than " + fmt(kMaxPathDelaySamples) + " samples at sample_rate " + fmt(sample_rate));
        }
        if (d.fading != "none" && d.fading != "rayleigh" && d.fading != "rician")
            bad(p + "fading", "\"" + d.fading + "\"", "is not one of none, rayleigh, rician");
        if (!(d.rician_k >= 0.0) || !std::isfinite(d.rician_k))
            bad(p + "rician_k", d.rician_k, "must be finite and >= 0");
        if (!(d.doppler_hz >= 0.0) || !(d.doppler_hz < sample_rate / 2.0))
            bad(p + "doppler_hz", d.doppler_hz, "must be in [0, sample_rate/2)");
        if (!std::isfinite(d.cfo_hz) || !(std::fabs(d.cfo_hz) < sample_rate / 2.0))
            bad(p + "cfo_hz", d.cfo_hz, "must satisfy |cfo_hz| < sample_rate/2");
        if (!(d.timing_offset_samples >= 0.0 && d.timing_offset_samples <= 4096.0))
            bad(p + "timing_offset_samples", d.timing_offset_samples, "must be in [0, 4096]");
        if (!std::isfinite(d.gain_error_db) || std::fabs(d.gain_error_db) > 40.0)
            bad(p + "gain_error_db", d.gain_error_db, "must satisfy |gain_error_db| <= 40");
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Implementation
// ----------------------------------------------------------------------------------------------------------------

namespace {

struct Link {                      // one (device, rx, tx) channel
    std::vector<cf64> gain;        // current gains g_p of the (effective) paths
    cf64 los{0.0, 0.0};            // line-of-sight term of path 0 (rician)
    // Doppler sum of sinusoids, P×M each, structure of arrays so that the update loop vectorises:
    std::vector<double> pr, pi;    // current e^{j2π(ν t + φ)}
    std::vector<double> sr, si;    // e^{j2π ν U}
    std::vector<double> nu;        // cycles per sample
    std::vector<double> phi;       // initial phase in cycles
    std::vector<PackedTap> taps;   // combined FIR (what the kernel runs)
};

struct Device {
    DeviceChannelConfig cfg;
    bool fading_random = true;
    bool rician = false;
    double mean_gain = 1.0;
    // Effective paths: with nearest-sample placement the profile's paths that land on the same sample are one
    // fading process with their summed power (the same distribution and Doppler spectrum, fewer sinusoids).
    std::vector<double> amp;       // sqrt(G P_p): deterministic gain ("none")
    std::vector<double> diffuse;   // amplitude of the scattered part
    double los_amp = 0.0;          // line-of-sight amplitude of path 0 ("rician")
    int n_paths = 1;
    int n_mp = 1;                  // multipath taps on the sample grid
    std::vector<double> placement;  // n_mp × n_paths (row-major by lag)
    std::vector<int> lags;         // nonzero lags of the combined FIR (placement ⊛ fractional delay)
    std::vector<double> fd;        // fractional-delay filter, taps at lags fd_first + i
    int fd_first = 0;
    std::vector<cf64> mp_buf;      // scratch: multipath taps (n_mp)
    std::vector<cf64> full_buf;    // scratch: combined taps on every lag
    cf64 rot{1.0, 0.0};            // a e^{jφ}
    double amp_error = 1.0;
    double phase = 0.0;
    std::size_t update = 0;        // Doppler update interval U (0: block fading)
    std::uint64_t dop_block = 0;   // update block the Doppler phasors currently describe
    double cfo_cycles = 0.0;       // cfo / fs
    std::vector<cf32> cfo_table;   // e^{j2π cfo i / fs}, i < segment_size
    std::uint64_t cfo_block = ~std::uint64_t{0};  // segment-size block whose base phasor is cached
    cf32 cfo_base{1.0f, 0.0f};     // e^{j2π cfo (block · S) / fs}
    int history = 0;               // max lag
    std::vector<std::vector<cf32>> hist;  // per tx: history + segment
    std::vector<Link> links;       // r·n_tx + t
    Rng rng;
};

}  // namespace

struct MultiUserChannel::Impl {
    ChannelSimConfig cfg;
    int K = 1, nt = 1, nr = 1, M = 16;
    std::size_t S = 1024;
    int bulk = 0;
    FirKernel fir = fir_volk;
    RotKernel rotate = rotate_generic;
    const char* fir_name = "volk";
    std::vector<Device> dev;
    std::uint64_t pos = 0;
    // server
    std::vector<std::vector<cf32>> acc;  // per rx, S
    std::vector<cf32> pn;                // phase-noise phasors of the segment
    std::vector<cf32> scratch;           // rotation / VOLK scratch
    std::vector<cf32> scratch2;
    std::vector<Rng> noise_rng;          // per rx
    Rng pn_rng;
    double pn_sigma = 0.0, noise_sigma = 0.0;
    double theta = 0.0;
    double pn_re = 1.0, pn_im = 0.0;  // e^{jθ}

    explicit Impl(const ChannelSimConfig& c);
    void build_device(int k);
    void realise(int k);
    void eval_doppler(Device& d, Link& l, bool exact);
    void update_taps(Device& d, Link& l);
    void segment(const cf32* const* in, cf32* const* out, std::size_t done, std::size_t s);
    void after_segment();
};

MultiUserChannel::Impl::Impl(const ChannelSimConfig& c) : cfg(c) {
    cfg.validate();
    (void)ziggurat();  // tables built here, never inside process()
    K = static_cast<int>(cfg.devices.size());
    nt = cfg.n_tx;
    nr = cfg.n_rx;
    M = cfg.doppler_sinusoids;
    S = cfg.segment_size;

    std::string kname = cfg.fir_kernel;
    if (kname == "auto") {
        kname = kernel_supported("avx512") ? "avx512" : kernel_supported("avx2") ? "avx2" : "volk";
    }
#if FEDLORA_CHANNEL_X86
    if (kname == "avx512") {
        fir = fir_avx512;
        fir_name = "avx512";
        rotate = rotate_avx512;
    } else if (kname == "avx2") {
        fir = fir_avx2;
        fir_name = "avx2";
        rotate = rotate_avx2;
    }
#endif

    bool any_fractional = false;
    for (const auto& d : cfg.devices)
        any_fractional |= d.timing_offset_samples != std::floor(d.timing_offset_samples);
    bulk = (cfg.tap_interpolation == "sinc" ? cfg.sinc_half_length : 0) +
           (any_fractional ? cfg.fd_half_length - 1 : 0);

    dev.resize(static_cast<std::size_t>(K));
    for (int k = 0; k < K; ++k)
        build_device(k);

    acc.assign(static_cast<std::size_t>(nr), std::vector<cf32>(S));
    pn.assign(S, cf32{1.0f, 0.0f});
    scratch.assign(S, cf32{});
    scratch2.assign(S, cf32{});
    for (int r = 0; r < nr; ++r)
        noise_rng.emplace_back(cfg.seed, 0x10000u + static_cast<std::uint64_t>(r));
    pn_rng = Rng(cfg.seed, 0x20000u);
    pn_sigma = std::sqrt(kTwoPi * cfg.phase_noise_linewidth_hz / cfg.sample_rate);
    noise_sigma = std::sqrt(cfg.noise_variance / 2.0);

    for (int k = 0; k < K; ++k)
        realise(k);
}

void MultiUserChannel::Impl::build_device(int k) {
    Device& d = dev[static_cast<std::size_t>(k)];
    d.cfg = cfg.devices[static_cast<std::size_t>(k)];
    d.rng = Rng(cfg.seed, static_cast<std::uint64_t>(k));
    d.fading_random = d.cfg.fading != "none";
    d.rician = d.cfg.fading == "rician";
    d.mean_gain = d.cfg.snr_db ? cfg.noise_variance * std::pow(10.0, *d.cfg.snr_db / 10.0)
                               : std::pow(10.0, -d.cfg.path_loss_db / 10.0);
    d.amp_error = std::pow(10.0, d.cfg.gain_error_db / 20.0);

    const auto paths = power_delay_profile(d.cfg.profile, d.cfg.rms_delay_spread_s, cfg.sample_rate);
    const bool sinc = cfg.tap_interpolation == "sinc";
    const double K_f = d.rician ? d.cfg.rician_k : 0.0;
    // Effective paths (delay in samples, total power, diffuse power); path 0 (delay 0) is always effective path 0.
    struct Eff {
        double delay, power, diffuse;
    };
    std::vector<Eff> eff;
    for (std::size_t p = 0; p < paths.size(); ++p) {
        const double dl = paths[p].delay_s * cfg.sample_rate;
        const double pw = d.mean_gain * paths[p].power;
        const double df = p == 0 ? pw / (K_f + 1.0) : pw;
        if (!sinc) {
            const double bin = static_cast<double>(std::lround(dl));
            auto it = std::find_if(eff.begin(), eff.end(), [&](const Eff& e) { return e.delay == bin; });
            if (it != eff.end()) {
                it->power += pw;
                it->diffuse += df;
                continue;
            }
            eff.push_back({bin, pw, df});
        } else {
            eff.push_back({dl, pw, df});
        }
    }
    d.n_paths = static_cast<int>(eff.size());
    const auto P = eff.size();
    d.amp.resize(P);
    d.diffuse.resize(P);
    for (std::size_t p = 0; p < P; ++p) {
        d.amp[p] = std::sqrt(eff[p].power);
        d.diffuse[p] = std::sqrt(eff[p].diffuse);
    }
    d.los_amp = std::sqrt(d.mean_gain * paths[0].power * K_f / (K_f + 1.0));

    // Placement of the paths on the sample grid.
    const int Ds = cfg.sinc_half_length;
    double dmax = 0.0;
    for (const auto& e : eff)
        dmax = std::max(dmax, e.delay);
    d.n_mp = sinc ? static_cast<int>(std::ceil(dmax)) + 2 * Ds + 2 : static_cast<int>(dmax) + 1;
    d.placement.assign(static_cast<std::size_t>(d.n_mp) * P, 0.0);
    for (std::size_t p = 0; p < P; ++p) {
        const double dl = eff[p].delay;
        if (!sinc) {
            d.placement[static_cast<std::size_t>(dl) * P + p] = 1.0;
            continue;
        }
        double sum = 0.0;
        for (int l = 0; l < d.n_mp; ++l)
            sum += windowed_sinc(l - Ds - dl, Ds + 1.0, cfg.kaiser_beta);
        for (int l = 0; l < d.n_mp; ++l)
            d.placement[static_cast<std::size_t>(l) * P + p] = windowed_sinc(l - Ds - dl, Ds + 1.0, cfg.kaiser_beta) / sum;
    }

    // Fractional-delay filter of the timing offset (delay ε + fd bulk), taps at lags fd_first + i.
    const double eps = d.cfg.timing_offset_samples;
    const double fl = std::floor(eps);
    const double mu = eps - fl;
    const int fd_bulk = bulk - (sinc ? Ds : 0);
    std::vector<double>& fd = d.fd;
    int& fd_first = d.fd_first;
    if (mu == 0.0) {
        fd = {1.0};
        fd_first = static_cast<int>(fl) + fd_bulk;
    } else {
        const int W = cfg.fd_half_length;
        fd.resize(static_cast<std::size_t>(2 * W));
        double sum = 0.0;
        for (int i = 0; i < 2 * W; ++i)
            sum += fd[static_cast<std::size_t>(i)] = windowed_sinc(i - (W - 1) - mu, W, cfg.kaiser_beta);
        for (auto& v : fd)
            v /= sum;
        fd_first = static_cast<int>(fl);  // fd_bulk = W - 1 is inside the filter's centre
    }

    // Combined static filter, then keep the nonzero lags.
    const int n_full = d.n_mp + static_cast<int>(fd.size()) - 1 + fd_first;
    std::vector<double> full(static_cast<std::size_t>(n_full) * P, 0.0);
    for (int l = 0; l < d.n_mp; ++l)
        for (std::size_t i = 0; i < fd.size(); ++i)
            for (std::size_t p = 0; p < P; ++p)
                full[static_cast<std::size_t>(l + fd_first + static_cast<int>(i)) * P + p] +=
                    d.placement[static_cast<std::size_t>(l) * P + p] * fd[i];
    d.lags.clear();
    for (int l = 0; l < n_full; ++l) {
        bool nz = false;
        for (std::size_t p = 0; p < P; ++p)
            nz |= full[static_cast<std::size_t>(l) * P + p] != 0.0;
        if (nz)
            d.lags.push_back(l);
    }
    d.mp_buf.assign(static_cast<std::size_t>(d.n_mp), cf64{});
    d.full_buf.assign(static_cast<std::size_t>(n_full), cf64{});
    d.history = d.lags.empty() ? 0 : d.lags.back();

    // Doppler
    d.update = 0;
    if (d.fading_random && d.cfg.doppler_hz > 0.0) {
        if (cfg.doppler_update_interval > 0) {
            d.update = cfg.doppler_update_interval;
        } else {
            d.update = 1;
            while (d.update * 2 <= std::min<std::size_t>(1024, S) &&
                   d.cfg.doppler_hz * static_cast<double>(d.update * 2) / cfg.sample_rate <= 1e-3)
                d.update *= 2;
        }
    }

    // CFO table
    d.cfo_cycles = d.cfg.cfo_hz / cfg.sample_rate;
    if (d.cfg.cfo_hz != 0.0) {
        d.cfo_table.resize(S);
        for (std::size_t i = 0; i < S; ++i) {
            const cf64 v = cis_cycles(d.cfo_cycles * static_cast<double>(i));
            d.cfo_table[i] = cf32(static_cast<float>(v.real()), static_cast<float>(v.imag()));
        }
    }

    d.hist.assign(static_cast<std::size_t>(nt), std::vector<cf32>(static_cast<std::size_t>(d.history) + S));
    d.links.assign(static_cast<std::size_t>(nr * nt), Link{});
    const std::size_t PM = P * static_cast<std::size_t>(M);
    for (auto& l : d.links) {
        l.gain.assign(P, cf64{});
        l.taps.assign(d.lags.size(), PackedTap{});
        for (std::size_t i = 0; i < d.lags.size(); ++i)
            l.taps[i].lag = d.lags[i];
        if (d.update) {
            for (auto* v : {&l.pr, &l.pi, &l.sr, &l.si, &l.nu, &l.phi})
                v->assign(PM, 0.0);
        }
    }
}

// New independent realisation of device k (random phase, every link's fading), effective at sample pos.
void MultiUserChannel::Impl::realise(int k) {
    Device& d = dev[static_cast<std::size_t>(k)];
    const auto P = static_cast<std::size_t>(d.n_paths);
    d.phase = d.cfg.random_phase ? kTwoPi * d.rng.uniform() : 0.0;
    d.rot = std::polar(d.amp_error, d.phase);

    for (auto& l : d.links) {
        if (!d.fading_random) {
            for (std::size_t p = 0; p < P; ++p)
                l.gain[p] = d.amp[p];
        } else if (d.update) {
            // Sum of sinusoids: stratified arrival angles α_m = 2π(m + u)/M, uniform phases.
            const double fd_norm = d.cfg.doppler_hz / cfg.sample_rate;
            for (std::size_t p = 0; p < P; ++p)
                for (int m = 0; m < M; ++m) {
                    const std::size_t i = p * static_cast<std::size_t>(M) + static_cast<std::size_t>(m);
                    const double alpha = kTwoPi * (m + d.rng.uniform()) / M;
                    l.nu[i] = fd_norm * std::cos(alpha);
                    l.phi[i] = d.rng.uniform();
                    const cf64 st = cis_cycles(l.nu[i] * static_cast<double>(d.update));
                    l.sr[i] = st.real();
                    l.si[i] = st.imag();
                }
        } else {
            for (std::size_t p = 0; p < P; ++p)
                l.gain[p] = d.diffuse[p] * d.rng.cnormal();
        }
        l.los = {0.0, 0.0};
        if (d.rician && d.fading_random) {
            l.los = std::polar(d.los_amp, kTwoPi * d.rng.uniform());
            if (!d.update)
                l.gain[0] += l.los;
        }
    }
    if (d.update)
        d.dop_block = pos / d.update;
    for (auto& l : d.links) {
        if (d.update)
            eval_doppler(d, l, true);
        update_taps(d, l);
    }
}

// Path gains of a Doppler link at the centre of update block d.dop_block.
void MultiUserChannel::Impl::eval_doppler(Device& d, Link& l, bool exact) {
    const auto P = static_cast<std::size_t>(d.n_paths);
    const auto Mz = static_cast<std::size_t>(M);
    if (exact) {
        const double t = static_cast<double>(d.dop_block) * static_cast<double>(d.update) +
                         0.5 * static_cast<double>(d.update - 1);
        for (std::size_t i = 0; i < P * Mz; ++i) {
            // fractional cycles of ν t + φ without losing precision for large t
            const double c = l.nu[i] * t;
            const cf64 v = cis_cycles((c - std::floor(c)) + l.phi[i]);
            l.pr[i] = v.real();
            l.pi[i] = v.imag();
        }
    } else {
        double* __restrict pr = l.pr.data();
        double* __restrict pi = l.pi.data();
        const double* __restrict sr = l.sr.data();
        const double* __restrict si = l.si.data();
        for (std::size_t i = 0; i < P * Mz; ++i) {
            const double a = pr[i], b = pi[i];
            pr[i] = a * sr[i] - b * si[i];
            pi[i] = a * si[i] + b * sr[i];
        }
    }
    const double norm = 1.0 / std::sqrt(static_cast<double>(M));
    for (std::size_t p = 0; p < P; ++p) {
        double re = 0.0, im = 0.0;
        for (std::size_t m = 0; m < Mz; ++m) {
            re += l.pr[p * Mz + m];
            im += l.pi[p * Mz + m];
        }
        l.gain[p] = cf64(re * norm * d.diffuse[p], im * norm * d.diffuse[p]);
    }
    if (d.rician)
        l.gain[0] += l.los;
}

// Combined FIR of a link from its path gains: c = a e^{jφ} · (d_ε ⊛ Σ_p g_p q_p).
void MultiUserChannel::Impl::update_taps(Device& d, Link& l) {
    const auto P = static_cast<std::size_t>(d.n_paths);
    const cf64 rg = d.rot;
    for (std::size_t m = 0; m < d.mp_buf.size(); ++m) {
        double re = 0.0, im = 0.0;
        const double* q = d.placement.data() + m * P;
        for (std::size_t p = 0; p < P; ++p) {
            re += q[p] * l.gain[p].real();
            im += q[p] * l.gain[p].imag();
        }
        d.mp_buf[m] = cf64(re * rg.real() - im * rg.imag(), re * rg.imag() + im * rg.real());
    }
    std::fill(d.full_buf.begin(), d.full_buf.end(), cf64{});
    double* full = reinterpret_cast<double*>(d.full_buf.data());
    const std::size_t nfd = d.fd.size();
    for (std::size_t m = 0; m < d.mp_buf.size(); ++m) {
        const double re = d.mp_buf[m].real(), im = d.mp_buf[m].imag();
        if (re == 0.0 && im == 0.0)
            continue;
        double* f = full + 2 * (m + static_cast<std::size_t>(d.fd_first));
        for (std::size_t i = 0; i < nfd; ++i) {
            f[2 * i] += d.fd[i] * re;
            f[2 * i + 1] += d.fd[i] * im;
        }
    }
    for (std::size_t i = 0; i < d.lags.size(); ++i) {
        const cf64 v = d.full_buf[static_cast<std::size_t>(d.lags[i])];
        l.taps[i].re = static_cast<float>(v.real());
        l.taps[i].im = static_cast<float>(v.imag());
        l.taps[i].nim = -l.taps[i].im;
    }
}

void MultiUserChannel::Impl::segment(const cf32* const* in, cf32* const* out, std::size_t done, std::size_t s) {
    // 1. device inputs (CFO applied) into the histories
    for (int k = 0; k < K; ++k) {
        Device& d = dev[static_cast<std::size_t>(k)];
        for (int t = 0; t < nt; ++t) {
            cf32* dst = d.hist[static_cast<std::size_t>(t)].data() + d.history;
            const cf32* src = in[k * nt + t];
            if (!src) {
                std::fill(dst, dst + s, cf32{});
            } else if (d.cfg.cfo_hz == 0.0) {
                std::memcpy(dst, src + done, s * sizeof(cf32));
            } else {
                // e^{j2π Δf n/fs} = table[n mod S] · e^{j2π Δf (n - n mod S)/fs}: a function of n alone (segments
                // never cross a multiple of S), so the rotation does not depend on how the stream is chunked.
                const std::size_t off = static_cast<std::size_t>(pos % S);
                if (d.cfo_block != pos / S) {
                    d.cfo_block = pos / S;
                    const double c = d.cfo_cycles * static_cast<double>(pos - off);
                    const cf64 b = cis_cycles(c - std::floor(c));
                    d.cfo_base = cf32(static_cast<float>(b.real()), static_cast<float>(b.imag()));
                }
                rotate(dst, src + done, d.cfo_table.data() + off, d.cfo_base, s);
            }
        }
    }
    // 2. superposition through every link
    for (int r = 0; r < nr; ++r) {
        cf32* a = acc[static_cast<std::size_t>(r)].data();
        std::fill(a, a + s, cf32{});
        for (int k = 0; k < K; ++k) {
            Device& d = dev[static_cast<std::size_t>(k)];
            for (int t = 0; t < nt; ++t) {
                const Link& l = d.links[static_cast<std::size_t>(r * nt + t)];
                fir(a, d.hist[static_cast<std::size_t>(t)].data() + d.history, l.taps.data(),
                    static_cast<int>(l.taps.size()), s, scratch2.data());
            }
        }
    }
    // 3. server: phase noise, DC, AWGN
    const bool has_pn = pn_sigma > 0.0;
    if (has_pn) {
        Rng g = pn_rng;  // local copy: the generator state stays in registers
        for (std::size_t i = 0; i < s; ++i) {
            const double delta = pn_sigma * g.normal();
            theta += delta;
            if ((pos + i) % kPhaseNoiseResync == 0) {
                theta = std::remainder(theta, kTwoPi);
                pn_re = std::cos(theta);
                pn_im = std::sin(theta);
            } else {
                double er, ei;
                small_rotation(delta, er, ei);
                const double r = pn_re * er - pn_im * ei;
                pn_im = pn_re * ei + pn_im * er;
                pn_re = r;
            }
            pn[i] = cf32(static_cast<float>(pn_re), static_cast<float>(pn_im));
        }
        pn_rng = g;
    }
    const float dcr = static_cast<float>(cfg.dc_offset.real());
    const float dci = static_cast<float>(cfg.dc_offset.imag());
    const bool has_noise = noise_sigma > 0.0;
    for (int r = 0; r < nr; ++r) {
        const cf32* a = acc[static_cast<std::size_t>(r)].data();
        cf32* y = out[r] + done;
        Rng g = noise_rng[static_cast<std::size_t>(r)];
        for (std::size_t i = 0; i < s; ++i) {
            float re = a[i].real(), im = a[i].imag();
            if (has_pn) {
                const float pr = pn[i].real(), pi = pn[i].imag();
                const float tr = re * pr - im * pi;
                im = re * pi + im * pr;
                re = tr;
            }
            re += dcr;
            im += dci;
            if (has_noise) {
                re += static_cast<float>(noise_sigma * g.normal());
                im += static_cast<float>(noise_sigma * g.normal());
            }
            y[i] = cf32(re, im);
        }
        noise_rng[static_cast<std::size_t>(r)] = g;
    }
    // 4. keep the last `history` samples of every device stream
    for (auto& d : dev)
        if (d.history > 0)
            for (auto& h : d.hist)
                std::memmove(h.data(), h.data() + s, static_cast<std::size_t>(d.history) * sizeof(cf32));
    pos += s;
}

// Fading events at the sample that follows a segment (block fading realisations, Doppler updates).
void MultiUserChannel::Impl::after_segment() {
    for (int k = 0; k < K; ++k) {
        Device& d = dev[static_cast<std::size_t>(k)];
        if (d.fading_random && d.cfg.block_length > 0 && pos % d.cfg.block_length == 0) {
            realise(k);
        } else if (d.update && pos % d.update == 0) {
            d.dop_block = pos / d.update;
            const bool exact = d.dop_block % kDopplerResync == 0;
            for (auto& l : d.links) {
                eval_doppler(d, l, exact);
                update_taps(d, l);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Public interface
// ----------------------------------------------------------------------------------------------------------------

MultiUserChannel::MultiUserChannel(const ChannelSimConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {}
MultiUserChannel::~MultiUserChannel() = default;
MultiUserChannel::MultiUserChannel(MultiUserChannel&&) noexcept = default;
MultiUserChannel& MultiUserChannel::operator=(MultiUserChannel&&) noexcept = default;

const ChannelSimConfig& MultiUserChannel::config() const { return impl_->cfg; }
int MultiUserChannel::n_devices() const { return impl_->K; }
int MultiUserChannel::n_tx() const { return impl_->nt; }
int MultiUserChannel::n_rx() const { return impl_->nr; }
std::uint64_t MultiUserChannel::position() const { return impl_->pos; }
int MultiUserChannel::bulk_delay() const { return impl_->bulk; }
const char* MultiUserChannel::kernel_name() const { return impl_->fir_name; }

namespace {
void check_index(const char* what, int v, int n) {
    if (v < 0 || v >= n)
        throw std::out_of_range(std::string("channel simulator: ") + what + " = " + std::to_string(v) +
                                " is outside [0, " + std::to_string(n) + ")");
}
}  // namespace

std::size_t MultiUserChannel::update_interval(int device) const {
    check_index("device", device, impl_->K);
    return impl_->dev[static_cast<std::size_t>(device)].update;
}

double MultiUserChannel::mean_gain(int device) const {
    check_index("device", device, impl_->K);
    return impl_->dev[static_cast<std::size_t>(device)].mean_gain;
}

void MultiUserChannel::process(const cf32* const* in, cf32* const* out, std::size_t n) {
    if (n == 0)
        return;
    if (!in || !out)
        throw std::invalid_argument("channel simulator: process() needs non-null in and out pointer arrays");
    for (int r = 0; r < impl_->nr; ++r)
        if (!out[r])
            throw std::invalid_argument("channel simulator: process() out[" + std::to_string(r) + "] is null");
    auto& I = *impl_;
    std::size_t done = 0;
    while (done < n) {
        std::size_t s = std::min(n - done, I.S - static_cast<std::size_t>(I.pos % I.S));
        for (const auto& d : I.dev) {
            if (d.update)
                s = std::min<std::size_t>(s, d.update - I.pos % d.update);
            if (d.fading_random && d.cfg.block_length > 0)
                s = std::min<std::size_t>(s, d.cfg.block_length - I.pos % d.cfg.block_length);
        }
        I.segment(in, out, done, s);
        I.after_segment();
        done += s;
    }
}

void MultiUserChannel::new_realisation() {
    for (int k = 0; k < impl_->K; ++k)
        impl_->realise(k);
}

std::vector<cf32> MultiUserChannel::taps(int device, int rx, int tx) const {
    check_index("device", device, impl_->K);
    check_index("rx", rx, impl_->nr);
    check_index("tx", tx, impl_->nt);
    const Device& d = impl_->dev[static_cast<std::size_t>(device)];
    const Link& l = d.links[static_cast<std::size_t>(rx * impl_->nt + tx)];
    const auto P = static_cast<std::size_t>(d.n_paths);
    std::vector<cf32> h(static_cast<std::size_t>(d.n_mp));
    for (std::size_t i = 0; i < h.size(); ++i) {
        cf64 v{};
        for (std::size_t p = 0; p < P; ++p)
            v += d.placement[i * P + p] * l.gain[p];
        h[i] = cf32(static_cast<float>(v.real()), static_cast<float>(v.imag()));
    }
    return h;
}

MultiUserChannel::ImpulseResponse MultiUserChannel::impulse_response(int device, int rx, int tx) const {
    check_index("device", device, impl_->K);
    check_index("rx", rx, impl_->nr);
    check_index("tx", tx, impl_->nt);
    const Device& d = impl_->dev[static_cast<std::size_t>(device)];
    const Link& l = d.links[static_cast<std::size_t>(rx * impl_->nt + tx)];
    ImpulseResponse ir;
    for (const auto& t : l.taps) {
        ir.lags.push_back(t.lag);
        ir.taps.emplace_back(t.re, t.im);
    }
    return ir;
}

void MultiUserChannel::frequency_response(const Numerology& num, int device, int rx, int tx, cf32* out,
                                          double reference_delay) const {
    num.validate();
    if (std::fabs(num.sample_rate - impl_->cfg.sample_rate) > 1e-9 * impl_->cfg.sample_rate)
        throw std::invalid_argument("channel simulator: frequency_response() numerology sample_rate = " +
                                    fmt(num.sample_rate) + " differs from the channel's sample_rate = " +
                                    fmt(impl_->cfg.sample_rate));
    check_index("device", device, impl_->K);
    check_index("rx", rx, impl_->nr);
    check_index("tx", tx, impl_->nt);
    const Device& d = impl_->dev[static_cast<std::size_t>(device)];
    const Link& l = d.links[static_cast<std::size_t>(rx * impl_->nt + tx)];
    const int N = num.fft_size;
    int idx = 0;
    for (int k = -num.n_occupied / 2; k <= num.n_occupied / 2; ++k) {
        if (k == 0)
            continue;
        cf64 h{};
        for (const auto& t : l.taps) {
            const double ph = -kTwoPi * k * (t.lag - reference_delay) / N;
            h += cf64(t.re, t.im) * cf64(std::cos(ph), std::sin(ph));
        }
        out[idx++] = cf32(static_cast<float>(h.real()), static_cast<float>(h.imag()));
    }
}

std::vector<cf32> MultiUserChannel::frequency_response(const Numerology& num, int device, int rx, int tx,
                                                       double reference_delay) const {
    std::vector<cf32> h(static_cast<std::size_t>(std::max(num.n_occupied, 0)));
    frequency_response(num, device, rx, tx, h.data(), reference_delay);
    return h;
}

}  // namespace fedlora::phy
