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
#include <type_traits>

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
// Processing kernels. For each device and transmit antenna, every segment of S = segment_size samples goes through
//   s = x ⊙ T                          CFO rotation by the table T[n mod S] (the block phasor B[n div S] is folded
//                                      into the multipath taps, see Impl::segment)
//   u = d ⊛ s                          fractional-delay filter, real taps (only devices with a fractional offset)
//   A += Σ_j Re(h_j) u[· − l_j],  B += Σ_j Im(h_j) u[· − l_j]     the sparse multipath taps h_j at lags l_j
// and the server antenna outputs y = e^{jθ} (A + jB) + dc + w. Since h u = Re(h) u + j Im(h) u, the tap loop needs
// no shuffles (two FMAs per tap and vector); jB is formed once per output sample by swapping B's parts.
// Every kernel performs the same per-lane operations in the same order wherever a sample sits (full, masked or
// padded vector), so the output does not depend on how the stream is cut into calls.
// The work buffers (s, u, A, B) have their current region 64-byte aligned, history in front of it and padding
// after it; the AVX-512 kernels read whole aligned vectors and shift them in registers (valignd) instead of
// issuing one unaligned load per tap.
// ------------------------------------------------------------------------------------------------------------

// Lag of a multipath tap; its complex value is in a separate interleaved float array (h[2j], h[2j+1]).
struct MpLag {
    std::int32_t lag = 0;  // samples
    std::int32_t q = 0;    // ceil(lag / 8)
    std::int32_t r = 0;    // 8 q - lag, in [0, 8)
};

// One stream of Gaussian deviates: 16 independent xoshiro128** generators (one per lane, seeded by splitmix64),
// consumed in blocks of 16 lanes, two 32-bit words per lane and block, turned into normals by Box-Muller. The
// scalar and SIMD implementations below compute the same integer streams and the same formulas.
struct alignas(64) Lanes16 {
    std::uint32_t s[4][16];
};

Lanes16 seed_lanes(std::uint64_t seed, std::uint64_t stream) {
    Lanes16 g{};
    std::uint64_t st = seed ^ (0xd1b54a32d192ed03ULL * (stream + 1));
    for (int l = 0; l < 16; ++l) {
        const std::uint64_t a = splitmix64(st), b = splitmix64(st);
        g.s[0][l] = static_cast<std::uint32_t>(a);
        g.s[1][l] = static_cast<std::uint32_t>(a >> 32);
        g.s[2][l] = static_cast<std::uint32_t>(b);
        g.s[3][l] = static_cast<std::uint32_t>(b >> 32);
        if ((g.s[0][l] | g.s[1][l] | g.s[2][l] | g.s[3][l]) == 0)
            g.s[0][l] = 1;
    }
    return g;
}

inline std::uint32_t rotl32(std::uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

void lanes_next(Lanes16& g, std::uint32_t* out) {
    for (int l = 0; l < 16; ++l) {
        std::uint32_t s0 = g.s[0][l], s1 = g.s[1][l], s2 = g.s[2][l], s3 = g.s[3][l];
        out[l] = rotl32(s1 * 5u, 7) * 9u;
        const std::uint32_t t = s1 << 9;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = rotl32(s3, 11);
        g.s[0][l] = s0, g.s[1][l] = s1, g.s[2][l] = s2, g.s[3][l] = s3;
    }
}

// Constants of the Box-Muller transform and of the polynomial log / sin / cos (Taylor coefficients; the log uses
// log m = 2 atanh((m − 1)/(m + 1)) on m ∈ (√½, √2], where |(m − 1)/(m + 1)| < 0.172).
constexpr float kSqrt2f = 1.41421356f;
constexpr float kLn2Hi = 0.693145751953125f;       // ln 2 to 16 bits: e · kLn2Hi is exact
constexpr float kLn2Lo = 1.42860682030941723e-6f;  // ln 2 − kLn2Hi
constexpr float kPhiStep = static_cast<float>(1.5707963267948966 / 16777216.0);  // (π/2) / 2^24
constexpr float kFracMid = 8388607.5f;                                            // (2^24 − 1) / 2
constexpr double kS3 = -1.0 / 6.0, kS5 = 1.0 / 120.0, kS7 = -1.0 / 5040.0, kS9 = 1.0 / 362880.0;
constexpr double kC2 = -0.5, kC4 = 1.0 / 24.0, kC6 = -1.0 / 720.0, kC8 = 1.0 / 40320.0, kC10 = -1.0 / 3628800.0;
constexpr double kHalfPi = 1.5707963267948966192;
constexpr double kTwoOverPi = 0.63661977236758134308;

// Box-Muller for the 16 lanes of a block: two independent N(0, scale²) deviates per lane from two 32-bit words a, b.
// Radius sqrt(−2 ln u1), u1 ∈ (0, 1] from a's top 31 bits (ln by 2 atanh((m − 1)/(m + 1)) on the mantissa
// m ∈ (√½, √2]); angle uniform: quadrant from b's top two bits, offset φ ∈ (−π/4, π/4) from the next 24. Written
// without branches so that the compiler vectorises it for any target; the SIMD kernels do the same per lane.
void box_muller16(const std::uint32_t* a, const std::uint32_t* b, float scale, float* re, float* im) {
    float u[16], m[16], rad[16], c[16], sn[16];
    std::uint32_t ub[16];
    std::int32_t e[16];
    for (int l = 0; l < 16; ++l)
        u[l] = (static_cast<float>(static_cast<std::int32_t>(a[l] >> 1)) + 0.5f) * 0x1p-31f;
    std::memcpy(ub, u, sizeof(ub));
    for (int l = 0; l < 16; ++l) {
        e[l] = static_cast<std::int32_t>(ub[l] >> 23) - 127;
        ub[l] = (ub[l] & 0x7FFFFFu) | 0x3F800000u;
    }
    std::memcpy(m, ub, sizeof(m));
    for (int l = 0; l < 16; ++l) {
        const bool big = m[l] > kSqrt2f;
        const float mm = big ? m[l] * 0.5f : m[l];
        const float ef = static_cast<float>(big ? e[l] + 1 : e[l]);
        const float s = (mm - 1.0f) / (mm + 1.0f);
        const float s2 = s * s;
        float p = s2 * (1.0f / 9.0f) + (1.0f / 7.0f);
        p = p * s2 + 0.2f;
        p = p * s2 + (1.0f / 3.0f);
        p = p * s2;
        const float ts = s + s;
        const float lm = ts * p + ts;
        rad[l] = std::sqrt((ef * kLn2Hi + (ef * kLn2Lo + lm)) * -2.0f) * scale;
    }
    for (int l = 0; l < 16; ++l) {
        const float f = static_cast<float>(static_cast<std::int32_t>((b[l] >> 6) & 0xFFFFFFu));
        const float phi = (f - kFracMid) * kPhiStep;
        const float p2 = phi * phi;
        float ts = p2 * static_cast<float>(kS9) + static_cast<float>(kS7);
        ts = ts * p2 + static_cast<float>(kS5);
        ts = ts * p2 + static_cast<float>(kS3);
        const float s = (phi * p2) * ts + phi;
        float tc = p2 * static_cast<float>(kC10) + static_cast<float>(kC8);
        tc = tc * p2 + static_cast<float>(kC6);
        tc = tc * p2 + static_cast<float>(kC4);
        tc = tc * p2 + static_cast<float>(kC2);
        const float cc = tc * p2 + 1.0f;
        const bool swap = (b[l] & 0x40000000u) != 0;
        c[l] = swap ? s : cc;
        sn[l] = swap ? cc : s;
    }
    std::uint32_t cb[16], sb[16];
    std::memcpy(cb, c, sizeof(cb));
    std::memcpy(sb, sn, sizeof(sb));
    for (int l = 0; l < 16; ++l) {
        cb[l] ^= ((b[l] << 1) ^ b[l]) & 0x80000000u;  // quadrant 1, 2: negate the real part
        sb[l] ^= b[l] & 0x80000000u;                  // quadrant 2, 3: negate the imaginary part
    }
    std::memcpy(c, cb, sizeof(c));
    std::memcpy(sn, sb, sizeof(sn));
    for (int l = 0; l < 16; ++l) {
        re[l] = c[l] * rad[l];
        im[l] = sn[l] * rad[l];
    }
}

// e^{jθ} in single precision for n values of θ (double): quadrant reduction x = θ − q π/2 in double (q rounded to
// nearest, ties to even, by adding and subtracting 1.5·2^52; |θ| is small), then Taylor polynomials in single
// precision on |x| <= π/4 (truncation below 2e-9). Branch-free, so that the compiler vectorises it.
void phasors(const double* th, cf32* out, std::size_t n) {
    constexpr double kRound = 6755399441055744.0;  // 1.5 · 2^52
    for (std::size_t j = 0; j < n; ++j) {
        const double qd = (th[j] * kTwoOverPi + kRound) - kRound;
        const auto x = static_cast<float>(th[j] - qd * kHalfPi);
        const auto q = static_cast<std::int32_t>(qd);
        const float x2 = x * x;
        float t = x2 * static_cast<float>(kS9) + static_cast<float>(kS7);
        t = t * x2 + static_cast<float>(kS5);
        t = t * x2 + static_cast<float>(kS3);
        const float sv = (x * x2) * t + x;
        float tc = x2 * static_cast<float>(kC10) + static_cast<float>(kC8);
        tc = tc * x2 + static_cast<float>(kC6);
        tc = tc * x2 + static_cast<float>(kC4);
        tc = tc * x2 + static_cast<float>(kC2);
        const float cv = tc * x2 + 1.0f;
        const bool swap = (q & 1) != 0;
        const float re = swap ? sv : cv, im = swap ? cv : sv;
        out[j] = cf32(((q ^ (q >> 1)) & 1) ? -re : re, (q & 2) ? -im : im);
    }
}

inline double wrap_phase(double th) { return th - kTwoPi * std::nearbyint(th * (1.0 / kTwoPi)); }

// AWGN: sample j of a 16-sample block comes from lane kAwgnLane[j] (the order an unpack of the lanes gives).
constexpr int kAwgnLane[16] = {0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15};

struct Kernels {
    const char* name = "volk";
    void (*rotate)(cf32* dst, const cf32* x, const cf32* tab, std::size_t n) = nullptr;
    // u[i] = Σ_j taps[j] s[i − j], i < n (n_taps a multiple of 8; s and u at the aligned current region)
    void (*fd)(cf32* u, const cf32* s, const float* taps, int n_taps, std::size_t n, cf32* scratch) = nullptr;
    // Optional fusion of the two: s[i] = x[i] tab[i] (x[i] if tab is null), stored, and filtered in the same pass.
    // Returns false (having done nothing) when it does not handle the filter length.
    bool (*fd_rot)(cf32* u, cf32* s, const cf32* x, const cf32* tab, const float* taps, int n_taps,
                   std::size_t n) = nullptr;
    // A[i] += Σ_j h[2j] u[i − lag_j], B[i] += Σ_j h[2j+1] u[i − lag_j], lo <= i < hi
    void (*mp)(cf32* A, cf32* B, const cf32* u, const MpLag* lags, const float* h, int n_taps, std::size_t lo,
               std::size_t hi, cf32* scratch) = nullptr;
    // y[i] = pn[i] (A[i] + j B[i]) + dc + nz[i], i < n (pn, nz may be null)
    void (*combine)(cf32* y, const cf32* A, const cf32* B, const cf32* pn, const cf32* nz, cf32 dc,
                    std::size_t n) = nullptr;
    void (*awgn)(Lanes16& g, float scale, cf32* out, std::size_t blocks) = nullptr;  // 16 samples per block
    // phase noise, 32 samples per block; block0 = index of the first block (θ is wrapped after every 8th)
    void (*pn)(Lanes16& g, double sigma, double& theta, std::uint64_t block0, cf32* out, std::size_t blocks) = nullptr;
    // Doppler update of a link (state layout: see kDopBlock): phasors ← phasors · steps (if advance), then path
    // gains g_p = scale2[2p] Σ phasors of path p (+ los for p = 0), written interleaved to gains; if taps is not
    // null (placement row j is path j), also taps[2j], taps[2j+1] = rot · g_j in single precision. gains, scale2
    // and taps have room for P rounded up to a multiple of 4.
    void (*doppler)(double* st, int P, int MB, const double* scale2, cf64 los, cf64 rot, double* gains, float* taps,
                    bool advance) = nullptr;
    // Optional: four consecutive (advancing) updates at once, taps of update u at taps + u·stride, placement row j =
    // path j only; must give exactly the taps of four doppler() calls.
    void (*doppler4)(double* st, int P, int MB, const double* scale2, cf64 los, cf64 rot, double* gains, float* taps,
                     std::size_t stride) = nullptr;
};

// ---------------------------------------------- portable / VOLK ----------------------------------------------

void rotate_volk(cf32* dst, const cf32* x, const cf32* tab, std::size_t n) {
    volk_32fc_x2_multiply_32fc(dst, x, tab, static_cast<unsigned int>(n));
}

void fd_volk(cf32* u, const cf32* s, const float* taps, int n_taps, std::size_t n, cf32* scratch) {
    const auto n2 = static_cast<unsigned int>(2 * n);
    std::fill(u, u + n, cf32{});
    for (int j = 0; j < n_taps; ++j) {
        if (taps[j] == 0.0f)
            continue;
        volk_32f_s32f_multiply_32f(reinterpret_cast<float*>(scratch), reinterpret_cast<const float*>(s - j), taps[j],
                                   n2);
        volk_32f_x2_add_32f(reinterpret_cast<float*>(u), reinterpret_cast<const float*>(u),
                            reinterpret_cast<const float*>(scratch), n2);
    }
}

// VOLK multiplies by the complex tap directly and accumulates into A only (B stays zero).
void mp_volk(cf32* A, cf32*, const cf32* u, const MpLag* lags, const float* h, int n_taps, std::size_t lo,
             std::size_t hi, cf32* scratch) {
    const auto n = static_cast<unsigned int>(hi - lo);
    for (int j = 0; j < n_taps; ++j) {
        const lv_32fc_t hj{h[2 * j], h[2 * j + 1]};
        volk_32fc_s32fc_multiply_32fc(scratch, u + lo - lags[j].lag, hj, n);
        volk_32f_x2_add_32f(reinterpret_cast<float*>(A + lo), reinterpret_cast<const float*>(A + lo),
                            reinterpret_cast<const float*>(scratch), 2 * n);
    }
}

void combine_generic(cf32* y, const cf32* A, const cf32* B, const cf32* pn, const cf32* nz, cf32 dc, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        float re = A[i].real() - B[i].imag();
        float im = A[i].imag() + B[i].real();
        if (pn) {
            const float pr = pn[i].real(), pi = pn[i].imag();
            const float t = re * pr - im * pi;
            im = re * pi + im * pr;
            re = t;
        }
        re += dc.real();
        im += dc.imag();
        if (nz) {
            re += nz[i].real();
            im += nz[i].imag();
        }
        y[i] = cf32(re, im);
    }
}

void awgn_generic(Lanes16& g, float scale, cf32* out, std::size_t blocks) {
    std::uint32_t a[16], b[16];
    float re[16], im[16];
    for (std::size_t k = 0; k < blocks; ++k, out += 16) {
        lanes_next(g, a);
        lanes_next(g, b);
        box_muller16(a, b, scale, re, im);
        for (int j = 0; j < 16; ++j)
            out[j] = cf32(re[kAwgnLane[j]], im[kAwgnLane[j]]);
    }
}

// Wiener phase noise: θ[n] = θ[n−1] + σ z_n, z_n the 16 real then the 16 imaginary parts of a block's normals;
// θ (double) is wrapped to [−π, π] after every 8th block of 32 samples (a function of the sample index, so
// chunk-invariant). The SIMD versions form the running sums as in-register prefix sums.
void pn_generic(Lanes16& g, double sigma, double& theta, std::uint64_t block0, cf32* out, std::size_t blocks) {
    std::uint32_t a[16], b[16];
    float z[32];
    for (std::size_t k = 0; k < blocks; ++k, out += 32) {
        lanes_next(g, a);
        lanes_next(g, b);
        box_muller16(a, b, 1.0f, z, z + 16);
        double th[32];
        for (int j = 0; j < 32; ++j)
            th[j] = theta += sigma * static_cast<double>(z[j]);
        phasors(th, out, 32);
        if ((block0 + k) % 8 == 7)
            theta = wrap_phase(theta);
    }
}

// Doppler state of a link, one contiguous 64-byte aligned stream (it is evicted between updates, so it should come
// back from L2 in one sequential sweep): path p's sinusoids in MB blocks of 8, each block holding the real parts of
// the current phasors e^{j2π(ν t + φ)}, their imaginary parts, and the real and imaginary parts of the per-update
// steps e^{j2π ν U}. Blocks are zero-padded beyond M (a zero phasor stays zero and adds nothing).
constexpr int kDopBlock = 32;

void doppler_generic(double* st, int P, int MB, const double* scale2, cf64 los, cf64 rot, double* gains, float* taps,
                     bool advance) {
    for (int p = 0; p < P; ++p) {
        double re = 0.0, im = 0.0;
        for (int b = 0; b < MB; ++b) {
            double* q = st + static_cast<std::size_t>(p * MB + b) * kDopBlock;
            for (int i = 0; i < 8; ++i) {
                if (advance) {
                    const double a = q[i], c = q[8 + i], sr = q[16 + i], si = q[24 + i];
                    q[i] = a * sr - c * si;
                    q[8 + i] = a * si + c * sr;
                }
                re += q[i];
                im += q[8 + i];
            }
        }
        re *= scale2[2 * p];
        im *= scale2[2 * p];
        if (p == 0) {
            re += los.real();
            im += los.imag();
        }
        gains[2 * p] = re;
        gains[2 * p + 1] = im;
        if (taps) {
            taps[2 * p] = static_cast<float>(re * rot.real() - im * rot.imag());
            taps[2 * p + 1] = static_cast<float>(re * rot.imag() + im * rot.real());
        }
    }
}

#if FEDLORA_CHANNEL_X86
#define FL_AVX2 __attribute__((target("avx2,fma")))
#define FL_AVX512 __attribute__((target("avx512f,fma")))
#define FL_INLINE inline __attribute__((always_inline))

// ------------------------------------------------------- AVX2 -------------------------------------------------

FL_AVX2 FL_INLINE __m256 cmul_avx2(__m256 a, __m256 b) {
    const __m256 t = _mm256_mul_ps(_mm256_movehdup_ps(a), _mm256_permute_ps(b, 0xB1));
    return _mm256_fmaddsub_ps(_mm256_moveldup_ps(a), b, t);
}

FL_AVX2 FL_INLINE __m256i mask_avx2(std::size_t lo, std::size_t hi) {  // complex lanes [lo, hi) of 4
    alignas(32) std::int32_t m[8];
    for (std::size_t q = 0; q < 8; ++q)
        m[q] = (q >= 2 * lo && q < 2 * hi) ? -1 : 0;
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
}

FL_AVX2 void rotate_avx2(cf32* dst, const cf32* x, const cf32* tab, std::size_t n) {
    float* d = reinterpret_cast<float*>(dst);
    const float* xf = reinterpret_cast<const float*>(x);
    const float* tf = reinterpret_cast<const float*>(tab);
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_ps(d + 2 * i, cmul_avx2(_mm256_loadu_ps(tf + 2 * i), _mm256_loadu_ps(xf + 2 * i)));
    if (i < n) {
        const __m256i mask = mask_avx2(0, n - i);
        _mm256_maskstore_ps(d + 2 * i, mask,
                            cmul_avx2(_mm256_maskload_ps(tf + 2 * i, mask), _mm256_maskload_ps(xf + 2 * i, mask)));
    }
}

template <int NB>
FL_AVX2 FL_INLINE void fd_block_avx2(float* uf, const float* sf, std::ptrdiff_t i0, const float* taps, int n_taps) {
    __m256 acc[NB];
    for (int b = 0; b < NB; ++b)
        acc[b] = _mm256_setzero_ps();
    for (int j = 0; j < n_taps; ++j) {
        const __m256 t = _mm256_broadcast_ss(taps + j);
        const float* p = sf + 2 * (i0 - j);
        for (int b = 0; b < NB; ++b)
            acc[b] = _mm256_fmadd_ps(t, _mm256_loadu_ps(p + 8 * b), acc[b]);
    }
    for (int b = 0; b < NB; ++b)
        _mm256_store_ps(uf + 2 * i0 + 8 * b, acc[b]);
}

FL_AVX2 void fd_avx2(cf32* u, const cf32* s, const float* taps, int n_taps, std::size_t n, cf32*) {
    float* uf = reinterpret_cast<float*>(u);
    const float* sf = reinterpret_cast<const float*>(s);
    const auto ni = static_cast<std::ptrdiff_t>(n);
    std::ptrdiff_t i = 0;
    for (; i + 16 <= ni; i += 16)
        fd_block_avx2<4>(uf, sf, i, taps, n_taps);
    for (; i < ni; i += 4)
        fd_block_avx2<1>(uf, sf, i, taps, n_taps);
}

template <int NB>
FL_AVX2 FL_INLINE void mp_block_avx2(float* Af, float* Bf, const float* uf, std::ptrdiff_t i0, const MpLag* lags,
                                     const float* h, int n_taps, const __m256i* mask) {
    __m256 a[NB], b[NB];
    for (int q = 0; q < NB; ++q) {
        a[q] = _mm256_load_ps(Af + 2 * i0 + 8 * q);
        b[q] = _mm256_load_ps(Bf + 2 * i0 + 8 * q);
    }
    for (int j = 0; j < n_taps; ++j) {
        const __m256 hr = _mm256_broadcast_ss(h + 2 * j);
        const __m256 hi = _mm256_broadcast_ss(h + 2 * j + 1);
        const float* p = uf + 2 * (i0 - lags[j].lag);
        for (int q = 0; q < NB; ++q) {
            const __m256 x = _mm256_loadu_ps(p + 8 * q);
            a[q] = _mm256_fmadd_ps(hr, x, a[q]);
            b[q] = _mm256_fmadd_ps(hi, x, b[q]);
        }
    }
    for (int q = 0; q < NB; ++q) {
        if (mask) {
            _mm256_maskstore_ps(Af + 2 * i0 + 8 * q, *mask, a[q]);
            _mm256_maskstore_ps(Bf + 2 * i0 + 8 * q, *mask, b[q]);
        } else {
            _mm256_store_ps(Af + 2 * i0 + 8 * q, a[q]);
            _mm256_store_ps(Bf + 2 * i0 + 8 * q, b[q]);
        }
    }
}

FL_AVX2 void mp_avx2(cf32* A, cf32* B, const cf32* u, const MpLag* lags, const float* h, int n_taps, std::size_t lo,
                     std::size_t hi, cf32*) {
    float* Af = reinterpret_cast<float*>(A);
    float* Bf = reinterpret_cast<float*>(B);
    const float* uf = reinterpret_cast<const float*>(u);
    std::size_t v = lo >> 2;
    const std::size_t vfull = hi >> 2;
    if (lo & 3) {
        const __m256i m = mask_avx2(lo - 4 * v, std::min<std::size_t>(hi, 4 * v + 4) - 4 * v);
        mp_block_avx2<1>(Af, Bf, uf, static_cast<std::ptrdiff_t>(4 * v), lags, h, n_taps, &m);
        ++v;
    }
    for (; v + 4 <= vfull; v += 4)
        mp_block_avx2<4>(Af, Bf, uf, static_cast<std::ptrdiff_t>(4 * v), lags, h, n_taps, nullptr);
    for (; v < vfull; ++v)
        mp_block_avx2<1>(Af, Bf, uf, static_cast<std::ptrdiff_t>(4 * v), lags, h, n_taps, nullptr);
    if ((hi & 3) && v == vfull) {
        const __m256i m = mask_avx2(0, hi & 3);
        mp_block_avx2<1>(Af, Bf, uf, static_cast<std::ptrdiff_t>(4 * v), lags, h, n_taps, &m);
    }
}

template <bool PN, bool NZ>
FL_AVX2 void combine_avx2_t(cf32* y, const cf32* A, const cf32* B, const cf32* pn, const cf32* nz, cf32 dc,
                            std::size_t n) {
    float* yf = reinterpret_cast<float*>(y);
    const float* Af = reinterpret_cast<const float*>(A);
    const float* Bf = reinterpret_cast<const float*>(B);
    const float* pf = reinterpret_cast<const float*>(pn);
    const float* nf = reinterpret_cast<const float*>(nz);
    double dpair;
    std::memcpy(&dpair, &dc, sizeof(dpair));
    const __m256 dcv = _mm256_castpd_ps(_mm256_set1_pd(dpair));
    const __m256 ones = _mm256_set1_ps(1.0f);
    for (std::size_t i = 0; i < n; i += 4) {
        __m256 v = _mm256_fmaddsub_ps(_mm256_load_ps(Af + 2 * i), ones,
                                      _mm256_permute_ps(_mm256_load_ps(Bf + 2 * i), 0xB1));
        if (PN)
            v = cmul_avx2(_mm256_loadu_ps(pf + 2 * i), v);
        v = _mm256_add_ps(v, dcv);
        if (NZ)
            v = _mm256_add_ps(v, _mm256_loadu_ps(nf + 2 * i));
        if (i + 4 <= n)
            _mm256_storeu_ps(yf + 2 * i, v);
        else
            _mm256_maskstore_ps(yf + 2 * i, mask_avx2(0, n - i), v);
    }
}

FL_AVX2 void combine_avx2(cf32* y, const cf32* A, const cf32* B, const cf32* pn, const cf32* nz, cf32 dc,
                          std::size_t n) {
    if (pn)
        nz ? combine_avx2_t<true, true>(y, A, B, pn, nz, dc, n) : combine_avx2_t<true, false>(y, A, B, pn, nz, dc, n);
    else
        nz ? combine_avx2_t<false, true>(y, A, B, pn, nz, dc, n)
           : combine_avx2_t<false, false>(y, A, B, pn, nz, dc, n);
}

struct X8 {
    __m256i s0, s1, s2, s3;
};

FL_AVX2 FL_INLINE __m256i rotl_avx2(__m256i x, int k) {
    return _mm256_or_si256(_mm256_slli_epi32(x, k), _mm256_srli_epi32(x, 32 - k));
}

FL_AVX2 FL_INLINE __m256i x8_next(X8& g) {
    __m256i r = _mm256_add_epi32(g.s1, _mm256_slli_epi32(g.s1, 2));
    r = rotl_avx2(r, 7);
    r = _mm256_add_epi32(r, _mm256_slli_epi32(r, 3));
    const __m256i t = _mm256_slli_epi32(g.s1, 9);
    g.s2 = _mm256_xor_si256(g.s2, g.s0);
    g.s3 = _mm256_xor_si256(g.s3, g.s1);
    g.s1 = _mm256_xor_si256(g.s1, g.s2);
    g.s0 = _mm256_xor_si256(g.s0, g.s3);
    g.s2 = _mm256_xor_si256(g.s2, t);
    g.s3 = rotl_avx2(g.s3, 11);
    return r;
}

FL_AVX2 FL_INLINE __m256i ld8(const std::uint32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }

FL_AVX2 FL_INLINE X8 x8_load(const Lanes16& g, int half) {
    return {ld8(g.s[0] + 8 * half), ld8(g.s[1] + 8 * half), ld8(g.s[2] + 8 * half), ld8(g.s[3] + 8 * half)};
}

FL_AVX2 FL_INLINE void st8(std::uint32_t* p, __m256i v) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }

FL_AVX2 FL_INLINE void x8_store(Lanes16& g, int half, const X8& x) {
    st8(g.s[0] + 8 * half, x.s0);
    st8(g.s[1] + 8 * half, x.s1);
    st8(g.s[2] + 8 * half, x.s2);
    st8(g.s[3] + 8 * half, x.s3);
}

FL_AVX2 FL_INLINE void box_muller_avx2(__m256i a, __m256i b, __m256 scale, __m256& re, __m256& im) {
    const __m256 u1 = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(a, 1)), _mm256_set1_ps(0.5f)),
                                    _mm256_set1_ps(0x1p-31f));
    const __m256i bits = _mm256_castps_si256(u1);
    __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFF)),
                                                   _mm256_set1_epi32(0x3F800000)));
    const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(kSqrt2f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    e = _mm256_add_epi32(e, _mm256_and_si256(_mm256_castps_si256(big), _mm256_set1_epi32(1)));
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 s = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
    const __m256 s2 = _mm256_mul_ps(s, s);
    __m256 p = _mm256_fmadd_ps(s2, _mm256_set1_ps(1.0f / 9.0f), _mm256_set1_ps(1.0f / 7.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(0.2f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 3.0f));
    p = _mm256_mul_ps(p, s2);
    const __m256 ts = _mm256_add_ps(s, s);
    const __m256 lm = _mm256_fmadd_ps(ts, p, ts);
    const __m256 ef = _mm256_cvtepi32_ps(e);
    const __m256 l = _mm256_fmadd_ps(ef, _mm256_set1_ps(kLn2Hi), _mm256_fmadd_ps(ef, _mm256_set1_ps(kLn2Lo), lm));
    const __m256 rad = _mm256_mul_ps(_mm256_sqrt_ps(_mm256_mul_ps(l, _mm256_set1_ps(-2.0f))), scale);

    const __m256 f = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(b, 6), _mm256_set1_epi32(0xFFFFFF)));
    const __m256 phi = _mm256_mul_ps(_mm256_sub_ps(f, _mm256_set1_ps(kFracMid)), _mm256_set1_ps(kPhiStep));
    const __m256 p2 = _mm256_mul_ps(phi, phi);
    __m256 t = _mm256_fmadd_ps(p2, _mm256_set1_ps(static_cast<float>(kS9)), _mm256_set1_ps(static_cast<float>(kS7)));
    t = _mm256_fmadd_ps(t, p2, _mm256_set1_ps(static_cast<float>(kS5)));
    t = _mm256_fmadd_ps(t, p2, _mm256_set1_ps(static_cast<float>(kS3)));
    const __m256 sn = _mm256_fmadd_ps(_mm256_mul_ps(phi, p2), t, phi);
    __m256 tc = _mm256_fmadd_ps(p2, _mm256_set1_ps(static_cast<float>(kC10)), _mm256_set1_ps(static_cast<float>(kC8)));
    tc = _mm256_fmadd_ps(tc, p2, _mm256_set1_ps(static_cast<float>(kC6)));
    tc = _mm256_fmadd_ps(tc, p2, _mm256_set1_ps(static_cast<float>(kC4)));
    tc = _mm256_fmadd_ps(tc, p2, _mm256_set1_ps(static_cast<float>(kC2)));
    const __m256 c = _mm256_fmadd_ps(tc, p2, one);
    const __m256i b1 = _mm256_slli_epi32(b, 1);
    const __m256 swap = _mm256_castsi256_ps(b1);  // sign bit = bit 30 of b
    __m256 x = _mm256_blendv_ps(c, sn, swap);
    __m256 y = _mm256_blendv_ps(sn, c, swap);
    const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    x = _mm256_xor_ps(x, _mm256_castsi256_ps(_mm256_and_si256(_mm256_xor_si256(b1, b), sign)));
    y = _mm256_xor_ps(y, _mm256_castsi256_ps(_mm256_and_si256(b, sign)));
    re = _mm256_mul_ps(x, rad);
    im = _mm256_mul_ps(y, rad);
}

FL_AVX2 void awgn_avx2(Lanes16& g, float scale, cf32* out, std::size_t blocks) {
    X8 g0 = x8_load(g, 0), g1 = x8_load(g, 1);
    const __m256 sc = _mm256_set1_ps(scale);
    float* o = reinterpret_cast<float*>(out);
    for (std::size_t k = 0; k < blocks; ++k, o += 32) {
        const __m256i a0 = x8_next(g0), b0 = x8_next(g0);
        const __m256i a1 = x8_next(g1), b1 = x8_next(g1);
        __m256 re0, im0, re1, im1;
        box_muller_avx2(a0, b0, sc, re0, im0);
        box_muller_avx2(a1, b1, sc, re1, im1);
        _mm256_storeu_ps(o, _mm256_unpacklo_ps(re0, im0));
        _mm256_storeu_ps(o + 8, _mm256_unpacklo_ps(re1, im1));
        _mm256_storeu_ps(o + 16, _mm256_unpackhi_ps(re0, im0));
        _mm256_storeu_ps(o + 24, _mm256_unpackhi_ps(re1, im1));
    }
    x8_store(g, 0, g0);
    x8_store(g, 1, g1);
}

// e^{jθ} of 8 samples (th0: samples 0-3, th1: 4-7), interleaved to out[0 .. 16)
FL_AVX2 FL_INLINE void phasor8_avx2(__m256d th0, __m256d th1, float* out) {
    const __m256d k2pi = _mm256_set1_pd(kTwoOverPi), hpi = _mm256_set1_pd(kHalfPi);
    const __m256d q0 = _mm256_round_pd(_mm256_mul_pd(th0, k2pi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256d q1 = _mm256_round_pd(_mm256_mul_pd(th1, k2pi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 x = _mm256_set_m128(_mm256_cvtpd_ps(_mm256_fnmadd_pd(q1, hpi, th1)),
                                     _mm256_cvtpd_ps(_mm256_fnmadd_pd(q0, hpi, th0)));
    const __m256i q = _mm256_set_m128i(_mm256_cvtpd_epi32(q1), _mm256_cvtpd_epi32(q0));
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 t = _mm256_fmadd_ps(x2, _mm256_set1_ps(static_cast<float>(kS9)), _mm256_set1_ps(static_cast<float>(kS7)));
    t = _mm256_fmadd_ps(t, x2, _mm256_set1_ps(static_cast<float>(kS5)));
    t = _mm256_fmadd_ps(t, x2, _mm256_set1_ps(static_cast<float>(kS3)));
    const __m256 s = _mm256_fmadd_ps(_mm256_mul_ps(x, x2), t, x);
    __m256 tc = _mm256_fmadd_ps(x2, _mm256_set1_ps(static_cast<float>(kC10)), _mm256_set1_ps(static_cast<float>(kC8)));
    tc = _mm256_fmadd_ps(tc, x2, _mm256_set1_ps(static_cast<float>(kC6)));
    tc = _mm256_fmadd_ps(tc, x2, _mm256_set1_ps(static_cast<float>(kC4)));
    tc = _mm256_fmadd_ps(tc, x2, _mm256_set1_ps(static_cast<float>(kC2)));
    const __m256 c = _mm256_fmadd_ps(tc, x2, _mm256_set1_ps(1.0f));
    // quadrant q mod 4: bit 0 swaps (c, s); the sign bits follow from bits 0 and 1
    const __m256 swap = _mm256_castsi256_ps(_mm256_slli_epi32(q, 31));
    const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    const __m256i reneg = _mm256_and_si256(_mm256_slli_epi32(_mm256_xor_si256(q, _mm256_srli_epi32(q, 1)), 31), sign);
    const __m256i imneg = _mm256_and_si256(_mm256_slli_epi32(q, 30), sign);
    const __m256 re = _mm256_xor_ps(_mm256_blendv_ps(c, s, swap), _mm256_castsi256_ps(reneg));
    const __m256 im = _mm256_xor_ps(_mm256_blendv_ps(s, c, swap), _mm256_castsi256_ps(imneg));
    const __m256 lo = _mm256_unpacklo_ps(re, im), hi = _mm256_unpackhi_ps(re, im);  // (0 1 | 4 5), (2 3 | 6 7)
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

FL_AVX2 FL_INLINE __m256d prefix4_avx2(__m256d x) {
    const __m256d z = _mm256_setzero_pd();
    x = _mm256_add_pd(x, _mm256_blend_pd(_mm256_permute4x64_pd(x, _MM_SHUFFLE(2, 1, 0, 0)), z, 0x1));
    x = _mm256_add_pd(x, _mm256_permute2f128_pd(x, x, 0x08));
    return x;
}

FL_AVX2 void pn_avx2(Lanes16& g, double sigma, double& theta, std::uint64_t block0, cf32* out, std::size_t blocks) {
    X8 g0 = x8_load(g, 0), g1 = x8_load(g, 1);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256d sg = _mm256_set1_pd(sigma);
    float* o = reinterpret_cast<float*>(out);
    __m256d carry = _mm256_set1_pd(theta);
    for (std::size_t k = 0; k < blocks; ++k, o += 64) {
        const __m256i a0 = x8_next(g0), b0 = x8_next(g0);
        const __m256i a1 = x8_next(g1), b1 = x8_next(g1);
        __m256 z[4];  // samples 0-7, 8-15 (real parts), 16-23, 24-31 (imaginary parts)
        box_muller_avx2(a0, b0, one, z[0], z[2]);
        box_muller_avx2(a1, b1, one, z[1], z[3]);
        __m256d d[8];
        for (int h = 0; h < 8; ++h) {
            const __m128 zf = (h & 1) ? _mm256_extractf128_ps(z[h >> 1], 1) : _mm256_castps256_ps128(z[h >> 1]);
            d[h] = prefix4_avx2(_mm256_mul_pd(_mm256_cvtps_pd(zf), sg));
        }
        for (int h = 0; h < 8; ++h) {
            const __m256d tot = _mm256_permute4x64_pd(d[h], 0xFF);
            d[h] = _mm256_add_pd(d[h], carry);
            carry = _mm256_add_pd(carry, tot);
        }
        for (int h = 0; h < 8; h += 2)
            phasor8_avx2(d[h], d[h + 1], o + 8 * h);
        if ((block0 + k) % 8 == 7)
            carry = _mm256_set1_pd(wrap_phase(_mm256_cvtsd_f64(carry)));
    }
    theta = _mm256_cvtsd_f64(carry);
    x8_store(g, 0, g0);
    x8_store(g, 1, g1);
}

FL_AVX2 void doppler_avx2(double* st, int P, int MB, const double* scale2, cf64 los, cf64 rot, double* gains,
                          float* taps, bool advance) {
    for (int p = 0; p < P; ++p) {
        __m256d ar = _mm256_setzero_pd(), ai = _mm256_setzero_pd();
        for (int b = 0; b < MB; ++b) {
            double* q = st + static_cast<std::size_t>(p * MB + b) * kDopBlock;
            for (int h = 0; h < 8; h += 4) {
                __m256d a = _mm256_load_pd(q + h), c = _mm256_load_pd(q + 8 + h);
                if (advance) {
                    const __m256d sr = _mm256_load_pd(q + 16 + h), si = _mm256_load_pd(q + 24 + h);
                    const __m256d na = _mm256_fmsub_pd(a, sr, _mm256_mul_pd(c, si));
                    c = _mm256_fmadd_pd(a, si, _mm256_mul_pd(c, sr));
                    a = na;
                    _mm256_store_pd(q + h, a);
                    _mm256_store_pd(q + 8 + h, c);
                }
                ar = _mm256_add_pd(ar, a);
                ai = _mm256_add_pd(ai, c);
            }
        }
        alignas(32) double r[4], q2[4];
        _mm256_store_pd(r, ar);
        _mm256_store_pd(q2, ai);
        double re = ((r[0] + r[1]) + (r[2] + r[3])) * scale2[2 * p];
        double im = ((q2[0] + q2[1]) + (q2[2] + q2[3])) * scale2[2 * p];
        if (p == 0) {
            re += los.real();
            im += los.imag();
        }
        gains[2 * p] = re;
        gains[2 * p + 1] = im;
        if (taps) {
            taps[2 * p] = static_cast<float>(re * rot.real() - im * rot.imag());
            taps[2 * p + 1] = static_cast<float>(re * rot.imag() + im * rot.real());
        }
    }
}

// ----------------------------------------------------- AVX-512 ------------------------------------------------
// GCC 12's AVX-512 intrinsics pass an "undefined" operand that trips -Wmaybe-uninitialized once inlined (fixed in
// GCC 13); the warning is about the header's idiom, not about this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

FL_AVX512 FL_INLINE __m512 cmul_avx512(__m512 a, __m512 b) {
    const __m512 t = _mm512_mul_ps(_mm512_movehdup_ps(a), _mm512_permute_ps(b, 0xB1));
    return _mm512_fmaddsub_ps(_mm512_moveldup_ps(a), b, t);
}

inline __mmask16 mask16(std::size_t lo, std::size_t hi) {  // complex lanes [lo, hi) of 8
    return static_cast<__mmask16>(((1u << (2 * hi)) - 1u) & ~((1u << (2 * lo)) - 1u));
}

// x ⊙ tab into the aligned work buffer (the table is 64-byte aligned whenever the segment starts on a multiple of 8).
// A 512-bit load of x that is not 64-byte aligned straddles two cache lines, which costs as much as two loads: such
// input is read as two 256-bit halves instead.
template <bool Aligned>
FL_AVX512 FL_INLINE void rotate_loop_avx512(float* d, const float* xf, const float* tf, std::size_t n8) {
    for (std::size_t i = 0; i < n8; i += 8) {
        const __m512 xv = Aligned ? _mm512_loadu_ps(xf + 2 * i)
                                  : _mm512_castpd_ps(_mm512_insertf64x4(
                                        _mm512_castpd256_pd512(_mm256_loadu_pd(reinterpret_cast<const double*>(xf + 2 * i))),
                                        _mm256_loadu_pd(reinterpret_cast<const double*>(xf + 2 * i + 8)), 1));
        _mm512_store_ps(d + 2 * i, cmul_avx512(_mm512_loadu_ps(tf + 2 * i), xv));
    }
}

FL_AVX512 void rotate_avx512(cf32* dst, const cf32* x, const cf32* tab, std::size_t n) {
    float* d = reinterpret_cast<float*>(dst);
    const float* xf = reinterpret_cast<const float*>(x);
    const float* tf = reinterpret_cast<const float*>(tab);
    const std::size_t n8 = n / 8 * 8;
    if ((reinterpret_cast<std::uintptr_t>(x) & 63) == 0)
        rotate_loop_avx512<true>(d, xf, tf, n8);
    else
        rotate_loop_avx512<false>(d, xf, tf, n8);
    if (n8 < n) {
        const __mmask16 m = mask16(0, n - n8);
        _mm512_mask_storeu_ps(d + 2 * n8, m,
                              cmul_avx512(_mm512_maskz_loadu_ps(m, tf + 2 * n8), _mm512_maskz_loadu_ps(m, xf + 2 * n8)));
    }
}

FL_AVX512 FL_INLINE __m512 shift_pair(__m512 lo, __m512 hi, std::integral_constant<int, 0>) {
    (void)hi;
    return lo;
}
template <int R>
FL_AVX512 FL_INLINE __m512 shift_pair(__m512 lo, __m512 hi, std::integral_constant<int, R>) {
    // complex elements R .. R+7 of the pair (lo, hi)
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), 2 * R));
}

// Fractional delay, taps 8g + rp (rp = RP .. 7) of group g: w[m] = s vector (v0 + m − g − 1), m = 0 .. NB.
template <int RP, int NB>
FL_AVX512 FL_INLINE void fd_steps_avx512(__m512* acc, const __m512* w, const float* tp) {
    const __m512 t = _mm512_set1_ps(tp[RP]);
    for (int b = 0; b < NB; ++b) {
        const __m512 x = RP == 0 ? w[b + 1] : shift_pair(w[b], w[b + 1], std::integral_constant<int, (8 - RP) % 8>{});
        acc[b] = _mm512_fmadd_ps(t, x, acc[b]);
    }
    if constexpr (RP < 7)
        fd_steps_avx512<RP + 1, NB>(acc, w, tp);
}

template <int NB>
FL_AVX512 FL_INLINE void fd_block_avx512(float* uf, const float* sf, std::ptrdiff_t v0, const float* taps, int G) {
    __m512 acc[NB];
    for (int b = 0; b < NB; ++b)
        acc[b] = _mm512_setzero_ps();
    for (int g = 0; g < G; ++g) {
        __m512 w[NB + 1];
        for (int m = 0; m <= NB; ++m)
            w[m] = _mm512_load_ps(sf + 16 * (v0 + m - g - 1));
        fd_steps_avx512<0, NB>(acc, w, taps + 8 * g);
    }
    for (int b = 0; b < NB; ++b)
        _mm512_store_ps(uf + 16 * (v0 + b), acc[b]);
}

// Two tap groups (2W <= 16, the default W = 8): the shifted vector for tap 8g + rp of output vector b depends on
// b − g only, so each shift feeds both groups. Per lane the taps are applied in the order 0, 8, 1, 9, ..., 7, 15.
// v[m + 1] = s vector (v0 + m − 1), m = −1 .. NB − 1.
template <int RP, int NB>
FL_AVX512 FL_INLINE void fd2_steps_avx512(__m512* acc, const __m512* v, const float* tp) {
    const __m512 t0 = _mm512_set1_ps(tp[RP]), t1 = _mm512_set1_ps(tp[8 + RP]);
    for (int m = -1; m < NB; ++m) {  // m = b − g
        const __m512 x =
            RP == 0 ? v[m + 2] : shift_pair(v[m + 1], v[m + 2], std::integral_constant<int, (8 - RP) % 8>{});
        if (m >= 0)
            acc[m] = _mm512_fmadd_ps(t0, x, acc[m]);
        if (m + 1 < NB)
            acc[m + 1] = _mm512_fmadd_ps(t1, x, acc[m + 1]);
    }
    if constexpr (RP < 7)
        fd2_steps_avx512<RP + 1, NB>(acc, v, tp);
}

template <int NB>
FL_AVX512 FL_INLINE void fd2_block_avx512(float* uf, const float* sf, std::ptrdiff_t v0, const float* taps) {
    __m512 acc[NB];
    for (int b = 0; b < NB; ++b)
        acc[b] = _mm512_setzero_ps();
    __m512 v[NB + 2];
    for (int m = 0; m < NB + 2; ++m)
        v[m] = _mm512_load_ps(sf + 16 * (v0 + m - 2));
    fd2_steps_avx512<0, NB>(acc, v, taps);
    for (int b = 0; b < NB; ++b)
        _mm512_store_ps(uf + 16 * (v0 + b), acc[b]);
}

// The same with the new s vectors made from the input in the block itself (rotated by the CFO table if ROT), stored
// for the history and used from registers. Lane count of the last vector: n − 8 (v0 + i).
template <int NB, bool ROT, bool XAL>
FL_AVX512 FL_INLINE void fd2rot_block_avx512(float* uf, float* sf, const float* xf, const float* tf, std::ptrdiff_t v0,
                                             const float* taps, std::size_t n) {
    __m512 v[NB + 2];
    v[0] = _mm512_load_ps(sf + 16 * (v0 - 2));
    v[1] = _mm512_load_ps(sf + 16 * (v0 - 1));
    for (int m = 0; m < NB; ++m) {
        const auto i = static_cast<std::size_t>(8 * (v0 + m));
        __m512 x, t = _mm512_setzero_ps();
        if (NB == 1 && i + 8 > n) {
            const __mmask16 k = mask16(0, n - i);
            x = _mm512_maskz_loadu_ps(k, xf + 2 * i);
            if (ROT)
                t = _mm512_maskz_loadu_ps(k, tf + 2 * i);
        } else {
            x = XAL ? _mm512_loadu_ps(xf + 2 * i)
                    : _mm512_castpd_ps(_mm512_insertf64x4(
                          _mm512_castpd256_pd512(_mm256_loadu_pd(reinterpret_cast<const double*>(xf + 2 * i))),
                          _mm256_loadu_pd(reinterpret_cast<const double*>(xf + 2 * i + 8)), 1));
            if (ROT)
                t = _mm512_loadu_ps(tf + 2 * i);
        }
        if (ROT)
            x = cmul_avx512(t, x);
        _mm512_store_ps(sf + 2 * i, x);
        v[m + 2] = x;
    }
    __m512 acc[NB];
    for (int b = 0; b < NB; ++b)
        acc[b] = _mm512_setzero_ps();
    fd2_steps_avx512<0, NB>(acc, v, taps);
    for (int b = 0; b < NB; ++b)
        _mm512_store_ps(uf + 16 * (v0 + b), acc[b]);
}

template <bool ROT, bool XAL>
FL_AVX512 void fd2rot_avx512(float* uf, float* sf, const float* xf, const float* tf, const float* taps, std::size_t n) {
    const auto nfull = static_cast<std::ptrdiff_t>(n / 8), nv = static_cast<std::ptrdiff_t>((n + 7) / 8);
    std::ptrdiff_t v = 0;
    for (; v + 8 <= nfull; v += 8)
        fd2rot_block_avx512<8, ROT, XAL>(uf, sf, xf, tf, v, taps, n);
    for (; v < nv; ++v)
        fd2rot_block_avx512<1, ROT, XAL>(uf, sf, xf, tf, v, taps, n);
}

FL_AVX512 bool fd_rot_avx512(cf32* u, cf32* s, const cf32* x, const cf32* tab, const float* taps, int n_taps,
                             std::size_t n) {
    if (n_taps != 16)
        return false;
    float* uf = reinterpret_cast<float*>(u);
    float* sf = reinterpret_cast<float*>(s);
    const float* xf = reinterpret_cast<const float*>(x);
    const float* tf = reinterpret_cast<const float*>(tab);
    const bool xal = (reinterpret_cast<std::uintptr_t>(x) & 63) == 0;
    if (tab)
        xal ? fd2rot_avx512<true, true>(uf, sf, xf, tf, taps, n) : fd2rot_avx512<true, false>(uf, sf, xf, tf, taps, n);
    else
        xal ? fd2rot_avx512<false, true>(uf, sf, xf, tf, taps, n) : fd2rot_avx512<false, false>(uf, sf, xf, tf, taps, n);
    return true;
}

FL_AVX512 void fd_avx512(cf32* u, const cf32* s, const float* taps, int n_taps, std::size_t n, cf32*) {
    float* uf = reinterpret_cast<float*>(u);
    const float* sf = reinterpret_cast<const float*>(s);
    const int G = n_taps / 8;
    const auto nv = static_cast<std::ptrdiff_t>((n + 7) / 8);
    std::ptrdiff_t v = 0;
    if (G == 2) {
        for (; v + 8 <= nv; v += 8)
            fd2_block_avx512<8>(uf, sf, v, taps);
        for (; v < nv; ++v)
            fd2_block_avx512<1>(uf, sf, v, taps);
        return;
    }
    for (; v + 8 <= nv; v += 8)
        fd_block_avx512<8>(uf, sf, v, taps, G);
    for (; v < nv; ++v)
        fd_block_avx512<1>(uf, sf, v, taps, G);
}

// Multipath tap with shift R: output vector v0 + q reads u vectors (v0 − tap.q + q) and (+1); p points at the first.
// (Loading per tap is deliberate: keeping a q-group's vectors in registers across the shift dispatch makes GCC
// spill them.)
template <int R, int NB>
FL_AVX512 FL_INLINE void mp_tap_avx512(__m512* a, __m512* b, const float* p, __m512 hr, __m512 hi) {
    if constexpr (R == 0) {
        for (int q = 0; q < NB; ++q) {
            const __m512 x = _mm512_load_ps(p + 16 * q);
            a[q] = _mm512_fmadd_ps(hr, x, a[q]);
            b[q] = _mm512_fmadd_ps(hi, x, b[q]);
        }
    } else {
        __m512 v0 = _mm512_load_ps(p);
        for (int q = 0; q < NB; ++q) {
            const __m512 v1 = _mm512_load_ps(p + 16 * (q + 1));
            const __m512 x = shift_pair(v0, v1, std::integral_constant<int, R>{});
            v0 = v1;
            a[q] = _mm512_fmadd_ps(hr, x, a[q]);
            b[q] = _mm512_fmadd_ps(hi, x, b[q]);
        }
    }
}

template <int NB>
FL_AVX512 FL_INLINE void mp_block_avx512(float* Af, float* Bf, const float* uf, std::ptrdiff_t v0, const MpLag* lags,
                                         const float* h, int n_taps, __mmask16 mask) {
    __m512 a[NB], b[NB];
    for (int q = 0; q < NB; ++q) {
        a[q] = _mm512_load_ps(Af + 16 * (v0 + q));
        b[q] = _mm512_load_ps(Bf + 16 * (v0 + q));
    }
    for (int j = 0; j < n_taps; ++j) {
        const float* p = uf + 16 * (v0 - lags[j].q);
        const __m512 hr = _mm512_set1_ps(h[2 * j]);
        const __m512 hi = _mm512_set1_ps(h[2 * j + 1]);
        switch (lags[j].r) {
            case 0: mp_tap_avx512<0, NB>(a, b, p, hr, hi); break;
            case 1: mp_tap_avx512<1, NB>(a, b, p, hr, hi); break;
            case 2: mp_tap_avx512<2, NB>(a, b, p, hr, hi); break;
            case 3: mp_tap_avx512<3, NB>(a, b, p, hr, hi); break;
            case 4: mp_tap_avx512<4, NB>(a, b, p, hr, hi); break;
            case 5: mp_tap_avx512<5, NB>(a, b, p, hr, hi); break;
            case 6: mp_tap_avx512<6, NB>(a, b, p, hr, hi); break;
            default: mp_tap_avx512<7, NB>(a, b, p, hr, hi); break;
        }
    }
    for (int q = 0; q < NB; ++q) {
        _mm512_mask_store_ps(Af + 16 * (v0 + q), mask, a[q]);
        _mm512_mask_store_ps(Bf + 16 * (v0 + q), mask, b[q]);
    }
}

FL_AVX512 void mp_avx512(cf32* A, cf32* B, const cf32* u, const MpLag* lags, const float* h, int n_taps,
                         std::size_t lo, std::size_t hi, cf32*) {
    float* Af = reinterpret_cast<float*>(A);
    float* Bf = reinterpret_cast<float*>(B);
    const float* uf = reinterpret_cast<const float*>(u);
    std::size_t v = lo >> 3;
    const std::size_t vfull = hi >> 3;
    if (lo & 7) {
        mp_block_avx512<1>(Af, Bf, uf, static_cast<std::ptrdiff_t>(v), lags, h, n_taps,
                           mask16(lo - 8 * v, std::min<std::size_t>(hi, 8 * v + 8) - 8 * v));
        ++v;
    }
    for (; v + 8 <= vfull; v += 8)
        mp_block_avx512<8>(Af, Bf, uf, static_cast<std::ptrdiff_t>(v), lags, h, n_taps, 0xFFFF);
    for (; v < vfull; ++v)
        mp_block_avx512<1>(Af, Bf, uf, static_cast<std::ptrdiff_t>(v), lags, h, n_taps, 0xFFFF);
    if ((hi & 7) && v == vfull)
        mp_block_avx512<1>(Af, Bf, uf, static_cast<std::ptrdiff_t>(v), lags, h, n_taps, mask16(0, hi & 7));
}

template <bool PN, bool NZ>
FL_AVX512 void combine_avx512_t(cf32* y, const cf32* A, const cf32* B, const cf32* pn, const cf32* nz, cf32 dc,
                                std::size_t n) {
    float* yf = reinterpret_cast<float*>(y);
    const float* Af = reinterpret_cast<const float*>(A);
    const float* Bf = reinterpret_cast<const float*>(B);
    const float* pf = reinterpret_cast<const float*>(pn);
    const float* nf = reinterpret_cast<const float*>(nz);
    double dpair;
    std::memcpy(&dpair, &dc, sizeof(dpair));
    const __m512 dcv = _mm512_castpd_ps(_mm512_set1_pd(dpair));
    const __m512 ones = _mm512_set1_ps(1.0f);
    for (std::size_t i = 0; i < n; i += 8) {
        __m512 v = _mm512_fmaddsub_ps(_mm512_load_ps(Af + 2 * i), ones,
                                      _mm512_permute_ps(_mm512_load_ps(Bf + 2 * i), 0xB1));
        if (PN)
            v = cmul_avx512(_mm512_loadu_ps(pf + 2 * i), v);
        v = _mm512_add_ps(v, dcv);
        if (NZ)
            v = _mm512_add_ps(v, _mm512_loadu_ps(nf + 2 * i));
        if (i + 8 <= n)
            _mm512_storeu_ps(yf + 2 * i, v);
        else
            _mm512_mask_storeu_ps(yf + 2 * i, mask16(0, n - i), v);
    }
}

FL_AVX512 void combine_avx512(cf32* y, const cf32* A, const cf32* B, const cf32* pn, const cf32* nz, cf32 dc,
                              std::size_t n) {
    if (pn)
        nz ? combine_avx512_t<true, true>(y, A, B, pn, nz, dc, n)
           : combine_avx512_t<true, false>(y, A, B, pn, nz, dc, n);
    else
        nz ? combine_avx512_t<false, true>(y, A, B, pn, nz, dc, n)
           : combine_avx512_t<false, false>(y, A, B, pn, nz, dc, n);
}

struct X16 {
    __m512i s0, s1, s2, s3;
};

FL_AVX512 FL_INLINE X16 x16_load(const Lanes16& g) {
    return {_mm512_load_si512(g.s[0]), _mm512_load_si512(g.s[1]), _mm512_load_si512(g.s[2]),
            _mm512_load_si512(g.s[3])};
}

FL_AVX512 FL_INLINE void x16_store(Lanes16& g, const X16& x) {
    _mm512_store_si512(g.s[0], x.s0);
    _mm512_store_si512(g.s[1], x.s1);
    _mm512_store_si512(g.s[2], x.s2);
    _mm512_store_si512(g.s[3], x.s3);
}

FL_AVX512 FL_INLINE __m512i x16_next(X16& g) {
    __m512i r = _mm512_add_epi32(g.s1, _mm512_slli_epi32(g.s1, 2));
    r = _mm512_rol_epi32(r, 7);
    r = _mm512_add_epi32(r, _mm512_slli_epi32(r, 3));
    const __m512i t = _mm512_slli_epi32(g.s1, 9);
    g.s2 = _mm512_xor_si512(g.s2, g.s0);
    g.s3 = _mm512_xor_si512(g.s3, g.s1);
    g.s1 = _mm512_xor_si512(g.s1, g.s2);
    g.s0 = _mm512_xor_si512(g.s0, g.s3);
    g.s2 = _mm512_xor_si512(g.s2, t);
    g.s3 = _mm512_rol_epi32(g.s3, 11);
    return r;
}

FL_AVX512 FL_INLINE void box_muller_avx512(__m512i a, __m512i b, __m512 scale, __m512& re, __m512& im) {
    const __m512 u1 = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(a, 1)), _mm512_set1_ps(0.5f)),
                                    _mm512_set1_ps(0x1p-31f));
    const __m512i bits = _mm512_castps_si512(u1);
    __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(127));
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFF)),
                                                   _mm512_set1_epi32(0x3F800000)));
    const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(kSqrt2f), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
    e = _mm512_mask_add_epi32(e, big, e, _mm512_set1_epi32(1));
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 s = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
    const __m512 s2 = _mm512_mul_ps(s, s);
    __m512 p = _mm512_fmadd_ps(s2, _mm512_set1_ps(1.0f / 9.0f), _mm512_set1_ps(1.0f / 7.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(0.2f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 3.0f));
    p = _mm512_mul_ps(p, s2);
    const __m512 ts = _mm512_add_ps(s, s);
    const __m512 lm = _mm512_fmadd_ps(ts, p, ts);
    const __m512 ef = _mm512_cvtepi32_ps(e);
    const __m512 l = _mm512_fmadd_ps(ef, _mm512_set1_ps(kLn2Hi), _mm512_fmadd_ps(ef, _mm512_set1_ps(kLn2Lo), lm));
    const __m512 rad = _mm512_mul_ps(_mm512_sqrt_ps(_mm512_mul_ps(l, _mm512_set1_ps(-2.0f))), scale);

    const __m512 f = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(b, 6), _mm512_set1_epi32(0xFFFFFF)));
    const __m512 phi = _mm512_mul_ps(_mm512_sub_ps(f, _mm512_set1_ps(kFracMid)), _mm512_set1_ps(kPhiStep));
    const __m512 p2 = _mm512_mul_ps(phi, phi);
    __m512 t = _mm512_fmadd_ps(p2, _mm512_set1_ps(static_cast<float>(kS9)), _mm512_set1_ps(static_cast<float>(kS7)));
    t = _mm512_fmadd_ps(t, p2, _mm512_set1_ps(static_cast<float>(kS5)));
    t = _mm512_fmadd_ps(t, p2, _mm512_set1_ps(static_cast<float>(kS3)));
    const __m512 sn = _mm512_fmadd_ps(_mm512_mul_ps(phi, p2), t, phi);
    __m512 tc = _mm512_fmadd_ps(p2, _mm512_set1_ps(static_cast<float>(kC10)), _mm512_set1_ps(static_cast<float>(kC8)));
    tc = _mm512_fmadd_ps(tc, p2, _mm512_set1_ps(static_cast<float>(kC6)));
    tc = _mm512_fmadd_ps(tc, p2, _mm512_set1_ps(static_cast<float>(kC4)));
    tc = _mm512_fmadd_ps(tc, p2, _mm512_set1_ps(static_cast<float>(kC2)));
    const __m512 c = _mm512_fmadd_ps(tc, p2, one);
    const __mmask16 swap = _mm512_test_epi32_mask(b, _mm512_set1_epi32(0x40000000));
    const __m512i b1 = _mm512_slli_epi32(b, 1);
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i x = _mm512_xor_si512(_mm512_castps_si512(_mm512_mask_blend_ps(swap, c, sn)),
                                       _mm512_and_si512(_mm512_xor_si512(b1, b), sign));
    const __m512i y = _mm512_xor_si512(_mm512_castps_si512(_mm512_mask_blend_ps(swap, sn, c)),
                                       _mm512_and_si512(b, sign));
    re = _mm512_mul_ps(_mm512_castsi512_ps(x), rad);
    im = _mm512_mul_ps(_mm512_castsi512_ps(y), rad);
}

FL_AVX512 void awgn_avx512(Lanes16& g, float scale, cf32* out, std::size_t blocks) {
    X16 x = x16_load(g);
    const __m512 sc = _mm512_set1_ps(scale);
    float* o = reinterpret_cast<float*>(out);
    for (std::size_t k = 0; k < blocks; ++k, o += 32) {
        const __m512i a = x16_next(x), b = x16_next(x);
        __m512 re, im;
        box_muller_avx512(a, b, sc, re, im);
        _mm512_storeu_ps(o, _mm512_unpacklo_ps(re, im));
        _mm512_storeu_ps(o + 16, _mm512_unpackhi_ps(re, im));
    }
    x16_store(g, x);
}

// e^{jθ} of 16 samples (th0: samples 0-7, th1: 8-15), interleaved to out[0 .. 32)
FL_AVX512 FL_INLINE void phasor16_avx512(__m512d th0, __m512d th1, float* out) {
    const __m512d k2pi = _mm512_set1_pd(kTwoOverPi), hpi = _mm512_set1_pd(kHalfPi);
    const __m512d q0 = _mm512_roundscale_pd(_mm512_mul_pd(th0, k2pi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512d q1 = _mm512_roundscale_pd(_mm512_mul_pd(th1, k2pi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 x = _mm512_castpd_ps(_mm512_insertf64x4(
        _mm512_castpd256_pd512(_mm256_castps_pd(_mm512_cvtpd_ps(_mm512_fnmadd_pd(q0, hpi, th0)))),
        _mm256_castps_pd(_mm512_cvtpd_ps(_mm512_fnmadd_pd(q1, hpi, th1))), 1));
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtpd_epi32(q0)), _mm512_cvtpd_epi32(q1), 1);
    const __m512 x2 = _mm512_mul_ps(x, x);
    __m512 t = _mm512_fmadd_ps(x2, _mm512_set1_ps(static_cast<float>(kS9)), _mm512_set1_ps(static_cast<float>(kS7)));
    t = _mm512_fmadd_ps(t, x2, _mm512_set1_ps(static_cast<float>(kS5)));
    t = _mm512_fmadd_ps(t, x2, _mm512_set1_ps(static_cast<float>(kS3)));
    const __m512 s = _mm512_fmadd_ps(_mm512_mul_ps(x, x2), t, x);
    __m512 tc = _mm512_fmadd_ps(x2, _mm512_set1_ps(static_cast<float>(kC10)), _mm512_set1_ps(static_cast<float>(kC8)));
    tc = _mm512_fmadd_ps(tc, x2, _mm512_set1_ps(static_cast<float>(kC6)));
    tc = _mm512_fmadd_ps(tc, x2, _mm512_set1_ps(static_cast<float>(kC4)));
    tc = _mm512_fmadd_ps(tc, x2, _mm512_set1_ps(static_cast<float>(kC2)));
    const __m512 c = _mm512_fmadd_ps(tc, x2, _mm512_set1_ps(1.0f));
    const __mmask16 swap = _mm512_test_epi32_mask(q, _mm512_set1_epi32(1));
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i reneg =
        _mm512_and_si512(_mm512_slli_epi32(_mm512_xor_si512(q, _mm512_srli_epi32(q, 1)), 31), sign);
    const __m512i imneg = _mm512_and_si512(_mm512_slli_epi32(q, 30), sign);
    const __m512 re = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_mask_blend_ps(swap, c, s)), reneg));
    const __m512 im = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_mask_blend_ps(swap, s, c)), imneg));
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_storeu_ps(out, _mm512_permutex2var_ps(re, lo, im));
    _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(re, hi, im));
}

FL_AVX512 FL_INLINE __m512d prefix8_avx512(__m512d x) {
    const __m512i z = _mm512_setzero_si512();
    x = _mm512_add_pd(x, _mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512(x), z, 7)));
    x = _mm512_add_pd(x, _mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512(x), z, 6)));
    x = _mm512_add_pd(x, _mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512(x), z, 4)));
    return x;
}

FL_AVX512 void pn_avx512(Lanes16& g, double sigma, double& theta, std::uint64_t block0, cf32* out,
                         std::size_t blocks) {
    X16 x = x16_load(g);
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512d sg = _mm512_set1_pd(sigma);
    const __m512i last = _mm512_set1_epi64(7);
    float* o = reinterpret_cast<float*>(out);
    __m512d carry = _mm512_set1_pd(theta);
    // Up to 8 blocks at a time: first all the normals (independent), then the running sums and phasors, so that
    // the long per-block dependency chains of the two halves overlap.
    alignas(64) float z[8][32];
    for (std::size_t k0 = 0; k0 < blocks; k0 += 8) {
        const std::size_t nb = std::min<std::size_t>(8, blocks - k0);
        for (std::size_t k = 0; k < nb; ++k) {
            const __m512i a = x16_next(x), b = x16_next(x);
            __m512 re, im;  // samples 0-15 and 16-31
            box_muller_avx512(a, b, one, re, im);
            _mm512_store_ps(z[k], re);
            _mm512_store_ps(z[k] + 16, im);
        }
        for (std::size_t k = 0; k < nb; ++k, o += 64) {
            __m512d d[4];
            for (int h = 0; h < 4; ++h)
                d[h] = prefix8_avx512(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_load_ps(z[k] + 8 * h)), sg));
            for (int h = 0; h < 4; ++h) {  // only these adds are serial
                const __m512d tot = _mm512_permutexvar_pd(last, d[h]);
                d[h] = _mm512_add_pd(d[h], carry);
                carry = _mm512_add_pd(carry, tot);
            }
            phasor16_avx512(d[0], d[1], o);
            phasor16_avx512(d[2], d[3], o + 32);
            if ((block0 + k0 + k) % 8 == 7)
                carry = _mm512_set1_pd(wrap_phase(_mm512_cvtsd_f64(carry)));
        }
    }
    theta = _mm512_cvtsd_f64(carry);
    x16_store(g, x);
}

// lane i = Σ lanes of v[i], i < 8 (transposed reduction: 14 shuffles and 7 adds for the eight sums)
FL_AVX512 FL_INLINE __m512d reduce8_avx512(const __m512d* v) {
    __m512d t[4];
    for (int i = 0; i < 4; ++i)
        t[i] = _mm512_add_pd(_mm512_unpacklo_pd(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_pd(v[2 * i], v[2 * i + 1]));
    // t[i] 128-bit lanes: (v2i, v2i+1) partial sums of elements {0,1}, {2,3}, {4,5}, {6,7}
    const __m512d u0 = _mm512_add_pd(_mm512_shuffle_f64x2(t[0], t[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f64x2(t[0], t[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512d u1 = _mm512_add_pd(_mm512_shuffle_f64x2(t[2], t[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f64x2(t[2], t[3], _MM_SHUFFLE(3, 1, 3, 1)));
    // u0 lanes: (v0, v1) {0-3}, (v0, v1) {4-7}, (v2, v3) {0-3}, (v2, v3) {4-7}; u1 likewise for v4 .. v7
    return _mm512_add_pd(_mm512_shuffle_f64x2(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f64x2(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
}

FL_AVX512 void doppler_avx512(double* st, int P, int MB, const double* scale2, cf64 los, cf64 rot, double* gains,
                              float* taps, bool advance) {
    const __m512d rr = _mm512_set1_pd(rot.real()), ri = _mm512_set1_pd(rot.imag());
    for (int p0 = 0; p0 < P; p0 += 4) {
        __m512d v[8];
        for (int q = 0; q < 4; ++q) {
            __m512d ar = _mm512_setzero_pd(), ai = _mm512_setzero_pd();
            const int p = p0 + q;
            for (int b = 0; p < P && b < MB; ++b) {
                double* blk = st + static_cast<std::size_t>(p * MB + b) * kDopBlock;
                __m512d a = _mm512_load_pd(blk), c = _mm512_load_pd(blk + 8);
                if (advance) {
                    const __m512d sr = _mm512_load_pd(blk + 16), si = _mm512_load_pd(blk + 24);
                    const __m512d na = _mm512_fmsub_pd(a, sr, _mm512_mul_pd(c, si));
                    c = _mm512_fmadd_pd(a, si, _mm512_mul_pd(c, sr));
                    a = na;
                    _mm512_store_pd(blk, a);
                    _mm512_store_pd(blk + 8, c);
                }
                ar = _mm512_add_pd(ar, a);
                ai = _mm512_add_pd(ai, c);
            }
            v[2 * q] = ar;
            v[2 * q + 1] = ai;
        }
        // (re, im) of paths p0 .. p0+3, scaled, plus the line of sight of path 0 (the same operations per path as in
        // doppler4_avx512, so that batched and single updates give identical taps)
        __m512d g = _mm512_mul_pd(reduce8_avx512(v), _mm512_loadu_pd(scale2 + 2 * p0));
        if (p0 == 0)
            g = _mm512_mask_add_pd(g, 0x3, g, _mm512_setr_pd(los.real(), los.imag(), 0, 0, 0, 0, 0, 0));
        _mm512_storeu_pd(gains + 2 * p0, g);
        if (taps) {
            const __m512d t = _mm512_fmaddsub_pd(g, rr, _mm512_mul_pd(_mm512_permute_pd(g, 0x55), ri));
            _mm256_storeu_ps(taps + 2 * p0, _mm512_cvtpd_ps(t));
        }
    }
}

// Four consecutive updates of a link with placement row j = path j, in one pass over its state: taps of update u
// to taps + u·stride, gains after the fourth. Per update the operations are exactly those of doppler_avx512.
FL_AVX512 void doppler4_avx512(double* st, int P, int MB, const double* scale2, cf64 los, cf64 rot, double* gains,
                               float* taps, std::size_t stride) {
    const __m512d rr = _mm512_set1_pd(rot.real()), ri = _mm512_set1_pd(rot.imag());
    for (int p = 0; p < P; ++p) {
        __m512d v[8];  // Σ re, Σ im of the path after update 0, 1, 2, 3
        for (int i = 0; i < 8; ++i)
            v[i] = _mm512_setzero_pd();
        for (int b = 0; b < MB; ++b) {
            double* blk = st + static_cast<std::size_t>(p * MB + b) * kDopBlock;
            __m512d a = _mm512_load_pd(blk), c = _mm512_load_pd(blk + 8);
            const __m512d sr = _mm512_load_pd(blk + 16), si = _mm512_load_pd(blk + 24);
            for (int u = 0; u < 4; ++u) {
                const __m512d na = _mm512_fmsub_pd(a, sr, _mm512_mul_pd(c, si));
                c = _mm512_fmadd_pd(a, si, _mm512_mul_pd(c, sr));
                a = na;
                v[2 * u] = _mm512_add_pd(v[2 * u], a);
                v[2 * u + 1] = _mm512_add_pd(v[2 * u + 1], c);
            }
            _mm512_store_pd(blk, a);
            _mm512_store_pd(blk + 8, c);
        }
        __m512d g = _mm512_mul_pd(reduce8_avx512(v), _mm512_set1_pd(scale2[2 * p]));
        if (p == 0)
            g = _mm512_add_pd(g, _mm512_setr_pd(los.real(), los.imag(), los.real(), los.imag(), los.real(), los.imag(),
                                                los.real(), los.imag()));
        alignas(64) double last[8];
        _mm512_store_pd(last, g);
        gains[2 * p] = last[6];
        gains[2 * p + 1] = last[7];
        const __m256 t = _mm512_cvtpd_ps(_mm512_fmaddsub_pd(g, rr, _mm512_mul_pd(_mm512_permute_pd(g, 0x55), ri)));
        const __m128 lo = _mm256_castps256_ps128(t), hi = _mm256_extractf128_ps(t, 1);
        _mm_storel_pi(reinterpret_cast<__m64*>(taps + 2 * p), lo);
        _mm_storeh_pi(reinterpret_cast<__m64*>(taps + stride + 2 * p), lo);
        _mm_storel_pi(reinterpret_cast<__m64*>(taps + 2 * stride + 2 * p), hi);
        _mm_storeh_pi(reinterpret_cast<__m64*>(taps + 3 * stride + 2 * p), hi);
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // FEDLORA_CHANNEL_X86

Kernels make_kernels(const std::string& name) {
    Kernels k;
    k.name = "volk";
    k.rotate = rotate_volk;
    k.fd = fd_volk;
    k.mp = mp_volk;
    k.combine = combine_generic;
    k.awgn = awgn_generic;
    k.pn = pn_generic;
    k.doppler = doppler_generic;
#if FEDLORA_CHANNEL_X86
    if (name == "avx2") {
        k = {"avx2", rotate_avx2, fd_avx2, nullptr, mp_avx2, combine_avx2, awgn_avx2, pn_avx2, doppler_avx2};
    } else if (name == "avx512") {
        k = {"avx512", rotate_avx512, fd_avx512, fd_rot_avx512, mp_avx512, combine_avx512, awgn_avx512, pn_avx512,
             doppler_avx512, doppler4_avx512};
    }
#else
    (void)name;
#endif
    return k;
}

constexpr std::uint64_t kDopplerResync = 1024;  // exact re-evaluation of the sinusoids every 1024 updates

inline cf64 cis_cycles(double cycles) {
    const double f = cycles - std::floor(cycles);
    return {std::cos(kTwoPi * f), std::sin(kTwoPi * f)};
}

template <class T>
T* align64(T* p) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    return reinterpret_cast<T*>((a + 63) & ~static_cast<std::uintptr_t>(63));
}

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
    std::vector<cf64> gain;        // current gains g_p of the (effective) paths (room for P rounded up to 4)
    cf64 los{0.0, 0.0};            // line-of-sight term of path 0 (rician)
    // Doppler sum of sinusoids: phasors and steps in blocks of 8 (kDopBlock doubles per block, see
    // doppler_generic), 64-byte aligned at align64(dop.data()); frequencies and phases P×M
    std::vector<double> dop;
    std::vector<double> nu;        // cycles per sample
    std::vector<double> phi;       // initial phase in cycles
    std::vector<float> h;          // multipath taps the kernels run, a e^{jφ} Σ_p g_p q_p at the device's mp_lags,
                                   // interleaved (re, im) (room for a multiple of 4 taps)
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
    std::vector<double> dop_scale2;  // diffuse / sqrt(M) (sum of M unit sinusoids to path gain), twice per path
    double los_amp = 0.0;          // line-of-sight amplitude of path 0 ("rician")
    int n_paths = 1;
    int n_mp = 1;                  // multipath taps on the sample grid
    std::vector<double> placement;  // n_mp × n_paths (row-major by lag)
    std::vector<int> rows;         // placement rows with a nonzero entry (the multipath's nonzero lags)
    std::vector<int> row_ofs;      // sparse placement: entries row_ofs[j] .. row_ofs[j+1]-1 of rows[j]
    std::vector<int> ent_path;     //   path index
    std::vector<double> ent_w;     //   weight q_p[row]
    int mp_shift = 0;              // lag of placement row 0: integer timing offset (+ bulk delay)
    std::vector<MpLag> mp_lags;    // lags of the multipath taps: rows + mp_shift
    bool identity = false;         // placement row j is exactly path j (nearest-sample placement)
    std::vector<int> lags;         // nonzero lags of the combined FIR (placement ⊛ fractional delay)
    std::vector<double> fd;        // fractional-delay filter, taps at lags fd_first + i
    int fd_first = 0;
    bool frac = false;             // fractional timing offset: the signal goes through the FD filter first
    std::vector<float> fd_taps;    // fd in single precision, zero-padded to a multiple of 8 taps
    int hs = 0;                    // history of the CFO-rotated signal s the FD filter reads
    int hu = 0;                    // history of the multipath input u the taps read (largest lag)
    cf64 rot{1.0, 0.0};            // a e^{jφ}
    double amp_error = 1.0;
    double phase = 0.0;
    std::size_t update = 0;        // Doppler update interval U (0: block fading)
    std::uint64_t dop_block = 0;   // update block the Doppler phasors currently describe
    std::uint64_t next_update = 0;  // absolute sample index of the next Doppler update (update > 0)
    std::uint64_t next_fade = 0;    // absolute sample index of the next block-fading realisation (block_length > 0)
    double cfo_cycles = 0.0;       // cfo / fs
    std::vector<cf32> cfo_table;   // e^{j2π cfo i / fs}, i < segment_size, at align64(cfo_table.data())
    std::uint64_t cfo_block = ~std::uint64_t{0};  // segment-size block whose base phasor is cached
    cf32 cfo_base{1.0f, 0.0f};     // B = e^{j2π cfo (block · S) / fs}
    cf64 cfo_base_d{1.0, 0.0};     // B in double: advanced by cfo_step from block to block, exact every 64 blocks
    cf64 cfo_step{1.0, 0.0};       // e^{j2π cfo S / fs}
    cf32 hist_step{1.0f, 0.0f};    // e^{−j2π cfo S / fs}: re-expresses the histories in the next block
    std::uint64_t hist_block = 0;  // the stored histories are s and u divided by that block's B
    std::vector<std::vector<cf32>> s_hist, u_hist;  // per tx
    std::vector<Link> links;       // r·n_tx + t
    Rng rng;
};

// A stream of Gaussian deviates (AWGN of one server antenna, or the phase noise): generator and current block.
struct NoiseStream {
    Lanes16 gen{};
    std::array<cf32, 32> buf{};
    std::uint64_t buf_block = ~std::uint64_t{0};
};

// Values for samples pos .. pos+s-1 of a stream produced in blocks of bs aligned to the absolute sample index, so
// that each value is a function of its sample index alone.
template <class Gen>
void fill_stream(NoiseStream& st, std::size_t bs, cf32* dst, std::uint64_t pos, std::size_t s, Gen&& gen) {
    std::size_t i = 0;
    while (i < s) {
        const std::uint64_t n = pos + i;
        const std::uint64_t blk = n / bs;
        const auto off = static_cast<std::size_t>(n % bs);
        if (off == 0 && s - i >= bs) {
            const std::size_t cnt = (s - i) / bs;
            gen(dst + i, cnt, blk);
            i += cnt * bs;
            continue;
        }
        if (st.buf_block != blk) {
            gen(st.buf.data(), std::size_t{1}, blk);
            st.buf_block = blk;
        }
        const std::size_t m = std::min(bs - off, s - i);
        std::copy(st.buf.begin() + static_cast<std::ptrdiff_t>(off), st.buf.begin() + static_cast<std::ptrdiff_t>(off + m),
                  dst + i);
        i += m;
    }
}

}  // namespace

struct MultiUserChannel::Impl {
    ChannelSimConfig cfg;
    int K = 1, nt = 1, nr = 1, M = 16;
    int MB = 2;                // blocks of 8 Doppler sinusoids per path
    std::size_t S = 1024;
    std::size_t S_pad = 1024;  // S rounded up to a whole number of 8-sample vectors
    std::size_t pad = 16;      // room for history in front of the work buffers' current region
    int bulk = 0;
    Kernels kern;
    std::vector<Device> dev;
    std::uint64_t pos = 0;
    // work buffers (aligned current region at align64(data()) + pad)
    std::vector<cf32> s_work;
    std::vector<std::vector<cf32>> u_work;  // per tx
    std::vector<std::vector<cf32>> acc_a, acc_b, nz;  // per rx
    std::vector<cf32> pn;
    std::vector<cf32> scratch;
    std::vector<float> h_scratch;   // taps with the CFO block phasor folded in
    std::vector<float> tap_table;   // batched Doppler updates: taps of 4 updates per link
    std::size_t tap_stride = 0;     // floats per update in tap_table
    // server
    std::vector<NoiseStream> noise;  // per rx
    NoiseStream pn_stream;
    double pn_sigma = 0.0, noise_sigma = 0.0;
    double theta = 0.0;  // phase-noise state at the end of the last generated block

    explicit Impl(const ChannelSimConfig& c);
    void build_device(int k);
    void realise(int k, std::uint64_t at);
    void eval_doppler(Device& d, Link& l, bool exact);
    void update_taps(Device& d, Link& l);
    void device_event(int k, std::uint64_t at);
    void segment(const cf32* const* in, cf32* const* out, std::size_t done, std::size_t s);
    cf32* work(std::vector<cf32>& v) const { return align64(v.data()) + pad; }
    cf32* buf(std::vector<cf32>& v) const { return align64(v.data()); }
};

MultiUserChannel::Impl::Impl(const ChannelSimConfig& c) : cfg(c) {
    cfg.validate();
    (void)ziggurat();  // tables built here, never inside process()
    K = static_cast<int>(cfg.devices.size());
    nt = cfg.n_tx;
    nr = cfg.n_rx;
    M = cfg.doppler_sinusoids;
    MB = (M + 7) / 8;
    S = cfg.segment_size;
    S_pad = (S + 7) / 8 * 8;

    std::string kname = cfg.fir_kernel;
    if (kname == "auto") {
        kname = kernel_supported("avx512") ? "avx512" : kernel_supported("avx2") ? "avx2" : "volk";
    }
    kern = make_kernels(kname);

    bool any_fractional = false;
    for (const auto& d : cfg.devices)
        any_fractional |= d.timing_offset_samples != std::floor(d.timing_offset_samples);
    bulk = (cfg.tap_interpolation == "sinc" ? cfg.sinc_half_length : 0) +
           (any_fractional ? cfg.fd_half_length - 1 : 0);

    dev.resize(static_cast<std::size_t>(K));
    for (int k = 0; k < K; ++k)
        build_device(k);

    // Work buffers: history in front of the (64-byte aligned) current region, whole vectors of padding after it.
    int hmax = 0;
    std::size_t max_taps = 0;
    for (const auto& d : dev) {
        hmax = std::max({hmax, d.hs + 1, d.hu});
        max_taps = std::max(max_taps, d.rows.size());
    }
    pad = (static_cast<std::size_t>(hmax) + 15) / 16 * 16 + 16;
    const std::size_t wlen = 8 + pad + S_pad + 32;  // 8: alignment slack
    s_work.assign(wlen, cf32{});
    u_work.assign(static_cast<std::size_t>(nt), std::vector<cf32>(wlen));
    acc_a.assign(static_cast<std::size_t>(nr), std::vector<cf32>(8 + S_pad + 32));
    acc_b.assign(static_cast<std::size_t>(nr), std::vector<cf32>(8 + S_pad + 32));
    nz.assign(static_cast<std::size_t>(nr), std::vector<cf32>(8 + S_pad + 32));
    pn.assign(8 + S_pad + 32, cf32{1.0f, 0.0f});
    scratch.assign(8 + S_pad + 32, cf32{});
    h_scratch.assign(2 * ((max_taps + 3) / 4 * 4), 0.0f);
    tap_stride = 2 * ((max_taps + 3) / 4 * 4);
    tap_table.assign(4 * tap_stride * static_cast<std::size_t>(nr * nt), 0.0f);

    for (int r = 0; r < nr; ++r)
        noise.push_back(NoiseStream{seed_lanes(cfg.seed, 0x10000u + static_cast<std::uint64_t>(r)), {}, ~std::uint64_t{0}});
    pn_stream.gen = seed_lanes(cfg.seed, 0x20000u);
    pn_sigma = std::sqrt(kTwoPi * cfg.phase_noise_linewidth_hz / cfg.sample_rate);
    noise_sigma = std::sqrt(cfg.noise_variance / 2.0);

    for (int k = 0; k < K; ++k)
        realise(k, 0);
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
    const std::size_t P4 = (P + 3) / 4 * 4;
    d.dop_scale2.assign(2 * P4, 0.0);
    for (std::size_t p = 0; p < P; ++p)
        d.dop_scale2[2 * p] = d.dop_scale2[2 * p + 1] = d.diffuse[p] / std::sqrt(static_cast<double>(M));

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
    d.rows.clear();
    d.row_ofs.assign(1, 0);
    d.ent_path.clear();
    d.ent_w.clear();
    for (int l = 0; l < d.n_mp; ++l) {
        bool nz = false;
        for (std::size_t p = 0; p < P; ++p) {
            const double w = d.placement[static_cast<std::size_t>(l) * P + p];
            if (w != 0.0) {
                nz = true;
                d.ent_path.push_back(static_cast<int>(p));
                d.ent_w.push_back(w);
            }
        }
        if (nz) {
            d.rows.push_back(l);
            d.row_ofs.push_back(static_cast<int>(d.ent_path.size()));
        }
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
    // The kernels run u = fd ⊛ s (fractional offsets only; otherwise u = s) and then the multipath rows at lags
    // row + fd_first: the combined FIR fd ⊛ (multipath shifted by fd_first) in two sparse stages.
    d.frac = mu != 0.0;
    d.mp_shift = fd_first;
    d.fd_taps.clear();
    if (d.frac) {
        d.fd_taps.assign((fd.size() + 7) / 8 * 8, 0.0f);
        for (std::size_t i = 0; i < fd.size(); ++i)
            d.fd_taps[i] = static_cast<float>(fd[i]);
    }
    d.hs = d.frac ? static_cast<int>(d.fd_taps.size()) - 1 : 0;
    d.hu = d.rows.back() + d.mp_shift;
    d.mp_lags.assign(d.rows.size(), MpLag{});
    for (std::size_t j = 0; j < d.rows.size(); ++j) {
        MpLag& t = d.mp_lags[j];
        t.lag = d.rows[j] + d.mp_shift;
        t.q = (t.lag + 7) / 8;
        t.r = 8 * t.q - t.lag;
    }
    d.identity = d.rows.size() == P;
    for (std::size_t j = 0; d.identity && j < d.rows.size(); ++j)
        d.identity = d.row_ofs[j + 1] - d.row_ofs[j] == 1 && d.ent_path[static_cast<std::size_t>(d.row_ofs[j])] ==
                     static_cast<int>(j) && d.ent_w[static_cast<std::size_t>(d.row_ofs[j])] == 1.0;

    // Combined static filter, then keep the nonzero lags (ground truth accessors).
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

    d.next_fade = d.cfg.block_length;  // realisations at every multiple of block_length
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
    d.cfo_step = cis_cycles(d.cfo_cycles * static_cast<double>(S));
    d.hist_step = cf32(static_cast<float>(d.cfo_step.real()), static_cast<float>(-d.cfo_step.imag()));
    if (d.cfg.cfo_hz != 0.0) {
        d.cfo_table.assign(S + 8, cf32{});
        cf32* tab = align64(d.cfo_table.data());
        for (std::size_t i = 0; i < S; ++i) {
            const cf64 v = cis_cycles(d.cfo_cycles * static_cast<double>(i));
            tab[i] = cf32(static_cast<float>(v.real()), static_cast<float>(v.imag()));
        }
    }

    d.s_hist.assign(static_cast<std::size_t>(nt), std::vector<cf32>(static_cast<std::size_t>(d.hs)));
    d.u_hist.assign(static_cast<std::size_t>(nt), std::vector<cf32>(static_cast<std::size_t>(d.hu)));
    d.links.assign(static_cast<std::size_t>(nr * nt), Link{});
    const std::size_t PM = P * static_cast<std::size_t>(M);
    for (auto& l : d.links) {
        l.gain.assign(P4, cf64{});
        l.h.assign(2 * ((d.rows.size() + 3) / 4 * 4), 0.0f);
        if (d.update) {
            l.nu.assign(PM, 0.0);
            l.phi.assign(PM, 0.0);
            l.dop.assign(P * static_cast<std::size_t>(MB) * kDopBlock + 8, 0.0);
        }
    }
}

// New independent realisation of device k (random phase, every link's fading), effective at sample `at`.
void MultiUserChannel::Impl::realise(int k, std::uint64_t at) {
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
                    double* q = align64(l.dop.data()) + (p * static_cast<std::size_t>(MB) + static_cast<std::size_t>(m / 8)) * kDopBlock;
                    q[16 + m % 8] = st.real();
                    q[24 + m % 8] = st.imag();
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
    if (d.update) {
        d.dop_block = at / d.update;
        d.next_update = (d.dop_block + 1) * d.update;
    }
    for (auto& l : d.links) {
        if (d.update)
            eval_doppler(d, l, true);
        else
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
            const std::size_t p = i / Mz, m = i % Mz;
            double* q = align64(l.dop.data()) + (p * static_cast<std::size_t>(MB) + m / 8) * kDopBlock;
            q[m % 8] = v.real();
            q[8 + m % 8] = v.imag();
        }
    }
    // advance the sinusoids by one update (unless evaluated exactly); gains, and the taps if row j is path j
    kern.doppler(align64(l.dop.data()), static_cast<int>(P), MB, d.dop_scale2.data(), d.rician ? l.los : cf64{},
                 d.rot, reinterpret_cast<double*>(l.gain.data()), d.identity ? l.h.data() : nullptr, !exact);
    if (!d.identity)
        update_taps(d, l);
}

// Multipath taps of a link from its path gains: a e^{jφ} Σ_p g_p q_p at the nonzero rows.
void MultiUserChannel::Impl::update_taps(Device& d, Link& l) {
    const cf64 rg = d.rot;
    const cf64* g = l.gain.data();
    for (std::size_t j = 0; j < d.rows.size(); ++j) {
        double re = 0.0, im = 0.0;
        for (int e = d.row_ofs[j]; e < d.row_ofs[j + 1]; ++e) {
            const double w = d.ent_w[static_cast<std::size_t>(e)];
            const cf64 v = g[d.ent_path[static_cast<std::size_t>(e)]];
            re += w * v.real();
            im += w * v.imag();
        }
        l.h[2 * j] = static_cast<float>(re * rg.real() - im * rg.imag());
        l.h[2 * j + 1] = static_cast<float>(re * rg.imag() + im * rg.real());
    }
}

// Fading events of device k at sample `at` (block-fading realisations, Doppler updates).
void MultiUserChannel::Impl::device_event(int k, std::uint64_t at) {
    Device& d = dev[static_cast<std::size_t>(k)];
    if (d.fading_random && d.cfg.block_length > 0 && at == d.next_fade) {
        d.next_fade += d.cfg.block_length;
        realise(k, at);
    } else if (d.update && at == d.next_update) {
        ++d.dop_block;  // = at / update
        d.next_update += d.update;
        const bool exact = d.dop_block % kDopplerResync == 0;
        for (auto& l : d.links)
            eval_doppler(d, l, exact);
    }
}

// One segment [pos, pos + s) that does not cross a multiple of S.
void MultiUserChannel::Impl::segment(const cf32* const* in, cf32* const* out, std::size_t done, std::size_t s) {
    const std::uint64_t blk = pos / S;
    const auto off = static_cast<std::size_t>(pos % S);
    const std::size_t s8 = (s + 7) / 8 * 8;
    for (int r = 0; r < nr; ++r) {
        std::fill(buf(acc_a[static_cast<std::size_t>(r)]), buf(acc_a[static_cast<std::size_t>(r)]) + s8, cf32{});
        std::fill(buf(acc_b[static_cast<std::size_t>(r)]), buf(acc_b[static_cast<std::size_t>(r)]) + s8, cf32{});
    }
    for (int k = 0; k < K; ++k) {
        Device& d = dev[static_cast<std::size_t>(k)];
        const bool cfo = d.cfg.cfo_hz != 0.0;
        // CFO: e^{j2π Δf n/fs} = T[n mod S] · B[n div S]. The signal is stored as x·T (s and u divided by the current
        // block's B) and B multiplies the taps; at a new block the stored histories are re-expressed in it. Every
        // step is a function of n alone, so the result does not depend on how the stream is chunked.
        if (cfo) {
            if (d.cfo_block != blk) {
                // B[blk] = B[blk − 1] e^{j2π cfo S/fs} in double (every block is visited in turn, so this is a
                // function of blk), evaluated exactly every 64 blocks
                if (d.cfo_block != ~std::uint64_t{0} && blk == d.cfo_block + 1 && blk % 64 != 0) {
                    d.cfo_base_d *= d.cfo_step;
                } else {
                    const double c = d.cfo_cycles * static_cast<double>(pos - off);
                    d.cfo_base_d = cis_cycles(c - std::floor(c));
                }
                d.cfo_block = blk;
                d.cfo_base = cf32(static_cast<float>(d.cfo_base_d.real()), static_cast<float>(d.cfo_base_d.imag()));
            }
            if (d.hist_block != blk) {
                cf32 wf = d.hist_step;
                if (blk != d.hist_block + 1) {
                    const double c = d.cfo_cycles * static_cast<double>(S) *
                                     (static_cast<double>(d.hist_block) - static_cast<double>(blk));
                    const cf64 w = cis_cycles(c - std::floor(c));
                    wf = cf32(static_cast<float>(w.real()), static_cast<float>(w.imag()));
                }
                for (auto* hs : {&d.s_hist, &d.u_hist})
                    for (auto& h : *hs)
                        for (auto& v : h)
                            v = cf32(v.real() * wf.real() - v.imag() * wf.imag(),
                                     v.real() * wf.imag() + v.imag() * wf.real());
                d.hist_block = blk;
            }
        }
        for (int t = 0; t < nt; ++t) {
            const cf32* src = in[k * nt + t];
            cf32* uw = work(u_work[static_cast<std::size_t>(t)]);
            auto& uh = d.u_hist[static_cast<std::size_t>(t)];
            std::copy(uh.begin(), uh.end(), uw - d.hu);
            cf32* dst = uw;
            cf32* sw = work(s_work);
            auto& sh = d.s_hist[static_cast<std::size_t>(t)];
            if (d.frac) {
                std::copy(sh.begin(), sh.end(), sw - d.hs);
                dst = sw;
            }
            const cf32* tab = cfo ? align64(d.cfo_table.data()) + off : nullptr;
            if (d.frac && src && kern.fd_rot &&
                kern.fd_rot(uw, sw, src + done, tab, d.fd_taps.data(), static_cast<int>(d.fd_taps.size()), s)) {
                std::copy(sw + s - d.hs, sw + s, sh.begin());
            } else {
                if (!src)
                    std::fill(dst, dst + s, cf32{});
                else if (!cfo)
                    std::memcpy(dst, src + done, s * sizeof(cf32));
                else
                    kern.rotate(dst, src + done, tab, s);
                if (d.frac) {
                    std::copy(sw + s - d.hs, sw + s, sh.begin());
                    kern.fd(uw, sw, d.fd_taps.data(), static_cast<int>(d.fd_taps.size()), s, buf(scratch));
                }
            }
            std::copy(uw + s - d.hu, uw + s, uh.begin());
        }
        // multipath, in pieces between the device's fading events
        std::size_t a = 0;
        int batched = 0;  // Doppler updates already computed into tap_table, still to be applied
        while (a < s) {
            std::size_t b = s;
            const bool fades = d.fading_random && d.cfg.block_length > 0;
            if (d.update)
                b = static_cast<std::size_t>(std::min<std::uint64_t>(b, d.next_update - pos));
            if (fades)
                b = static_cast<std::size_t>(std::min<std::uint64_t>(b, d.next_fade - pos));
            for (int r = 0; r < nr; ++r) {
                for (int t = 0; t < nt; ++t) {
                    const Link& l = d.links[static_cast<std::size_t>(r * nt + t)];
                    const float* h = l.h.data();
                    const std::size_t nj = d.mp_lags.size();
                    if (cfo) {
                        const float br = d.cfo_base.real(), bi = d.cfo_base.imag();
                        for (std::size_t j = 0; j < nj; ++j) {
                            h_scratch[2 * j] = h[2 * j] * br - h[2 * j + 1] * bi;
                            h_scratch[2 * j + 1] = h[2 * j] * bi + h[2 * j + 1] * br;
                        }
                        h = h_scratch.data();
                    }
                    kern.mp(buf(acc_a[static_cast<std::size_t>(r)]), buf(acc_b[static_cast<std::size_t>(r)]),
                            work(u_work[static_cast<std::size_t>(t)]), d.mp_lags.data(), h, static_cast<int>(nj), a,
                            b, buf(scratch));
                }
            }
            const std::uint64_t ev = pos + b;
            const bool doppler_event = d.update && ev == d.next_update && !(fades && ev == d.next_fade);
            if (doppler_event && batched == 0 && kern.doppler4 && d.identity && !fades && b + 3 * d.update <= s) {
                // this update and the next three, all inside the segment and none an exact re-evaluation
                const std::uint64_t blk0 = d.dop_block + 1;
                bool ok = true;
                for (std::uint64_t j = 0; j < 4; ++j)
                    ok &= (blk0 + j) % kDopplerResync != 0;
                if (ok) {
                    for (std::size_t li = 0; li < d.links.size(); ++li) {
                        Link& l = d.links[li];
                        kern.doppler4(align64(l.dop.data()), d.n_paths, MB, d.dop_scale2.data(),
                                      d.rician ? l.los : cf64{}, d.rot, reinterpret_cast<double*>(l.gain.data()),
                                      tap_table.data() + li * 4 * tap_stride, tap_stride);
                    }
                    batched = 4;
                }
            }
            if (doppler_event && batched > 0) {
                const std::size_t u = static_cast<std::size_t>(4 - batched);
                for (std::size_t li = 0; li < d.links.size(); ++li)
                    std::copy_n(tap_table.data() + (li * 4 + u) * tap_stride, 2 * d.rows.size(), d.links[li].h.data());
                ++d.dop_block;
                d.next_update += d.update;
                --batched;
            } else {
                device_event(k, ev);
            }
            a = b;
        }
    }
    // server: phase noise, DC, AWGN
    const bool has_pn = pn_sigma > 0.0;
    const bool has_noise = noise_sigma > 0.0;
    if (has_pn)
        fill_stream(pn_stream, 32, buf(pn), pos, s,
                    [&](cf32* o, std::size_t nb, std::uint64_t b0) { kern.pn(pn_stream.gen, pn_sigma, theta, b0, o, nb); });
    const cf32 dc(static_cast<float>(cfg.dc_offset.real()), static_cast<float>(cfg.dc_offset.imag()));
    for (int r = 0; r < nr; ++r) {
        const auto ru = static_cast<std::size_t>(r);
        if (has_noise) {
            NoiseStream& ns = noise[ru];
            const auto sc = static_cast<float>(noise_sigma);
            fill_stream(ns, 16, buf(nz[ru]), pos, s,
                        [&](cf32* o, std::size_t nb, std::uint64_t) { kern.awgn(ns.gen, sc, o, nb); });
        }
        kern.combine(out[r] + done, buf(acc_a[ru]), buf(acc_b[ru]), has_pn ? buf(pn) : nullptr,
                     has_noise ? buf(nz[ru]) : nullptr, dc, s);
    }
    pos += s;
}

namespace {

// The combined FIR c = a e^{jφ} (d_ε ⊛ Σ_p g_p q_p) of a link at its nonzero lags, in double, rounded to float.
void combined_fir(const Device& d, const Link& l, std::vector<cf32>& taps) {
    const auto P = static_cast<std::size_t>(d.n_paths);
    const cf64 rg = d.rot;
    std::vector<cf64> mp(static_cast<std::size_t>(d.n_mp));
    for (std::size_t m = 0; m < mp.size(); ++m) {
        double re = 0.0, im = 0.0;
        const double* q = d.placement.data() + m * P;
        for (std::size_t p = 0; p < P; ++p) {
            re += q[p] * l.gain[p].real();
            im += q[p] * l.gain[p].imag();
        }
        mp[m] = cf64(re * rg.real() - im * rg.imag(), re * rg.imag() + im * rg.real());
    }
    const std::size_t n_full = mp.size() + d.fd.size() - 1 + static_cast<std::size_t>(d.fd_first);
    std::vector<double> full(2 * n_full, 0.0);
    const std::size_t nfd = d.fd.size();
    for (std::size_t m = 0; m < mp.size(); ++m) {
        const double re = mp[m].real(), im = mp[m].imag();
        if (re == 0.0 && im == 0.0)
            continue;
        double* f = full.data() + 2 * (m + static_cast<std::size_t>(d.fd_first));
        for (std::size_t i = 0; i < nfd; ++i) {
            f[2 * i] += d.fd[i] * re;
            f[2 * i + 1] += d.fd[i] * im;
        }
    }
    taps.resize(d.lags.size());
    for (std::size_t i = 0; i < d.lags.size(); ++i) {
        const auto l2 = 2 * static_cast<std::size_t>(d.lags[i]);
        taps[i] = cf32(static_cast<float>(full[l2]), static_cast<float>(full[l2 + 1]));
    }
}

}  // namespace

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
const char* MultiUserChannel::kernel_name() const { return impl_->kern.name; }

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
        // segments never cross a multiple of S (the CFO table's period); fading events are handled per device
        const std::size_t s = std::min(n - done, I.S - static_cast<std::size_t>(I.pos % I.S));
        I.segment(in, out, done, s);
        done += s;
    }
}

void MultiUserChannel::new_realisation() {
    for (int k = 0; k < impl_->K; ++k)
        impl_->realise(k, impl_->pos);
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
    ir.lags = d.lags;
    combined_fir(d, l, ir.taps);
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
    std::vector<cf32> c;
    combined_fir(d, l, c);
    const int N = num.fft_size;
    int idx = 0;
    for (int k = -num.n_occupied / 2; k <= num.n_occupied / 2; ++k) {
        if (k == 0)
            continue;
        cf64 h{};
        for (std::size_t i = 0; i < c.size(); ++i) {
            const double ph = -kTwoPi * k * (d.lags[i] - reference_delay) / N;
            h += cf64(c[i].real(), c[i].imag()) * cf64(std::cos(ph), std::sin(ph));
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
