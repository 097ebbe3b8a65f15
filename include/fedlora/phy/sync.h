// Streaming burst synchronisation on the Schmidl & Cox preamble (preamble.h), and CFO correction.
//
// Pipeline, per input sample (derivation and thresholds in docs/math.md, "Synchronisation"):
//  1. Schmidl & Cox metric: with L = fft_size/2 and the window of 2L samples starting at d,
//       P(d) = sum_{m<L} conj(r[d+m]) r[d+m+L] - conj(S1) S2 / L,
//       R(d) = (E1 + E2) / 2 with E_i = sum |r|^2 - |S_i|^2 / L over half i,  S_i = sum of r over half i,
//       M(d) = |P|^2 / R^2  in [0, 1].
//     The half-means are removed ("centred" sums), which makes P, R and M exactly invariant to a constant (DC)
//     offset in the input: a DC offset alone never raises the metric. Sums are sliding-window sums in double
//     precision (products of float samples are exact in double) without add-and-subtract drift. The synchroniser
//     evaluates them a group of L samples at a time with a vectorised kernel (AVX-512 when the CPU has it, else
//     portable code), testing |P|^2 >= g R^2 without a division; SchmidlCoxMetric below is the per-sample form.
//  2. Coarse detection: the first d with M(d) >= threshold opens a search over the next fft_size + cp_len values of
//     d; its argmax d* gives the coarse CFO angle(P(d*)) / pi (subcarrier spacings, |cfo| < 1).
//  3. Fine timing and confirmation: the samples around d* are DC-removed (window mean), derotated by the coarse
//     CFO and cross-correlated with the known symbol 2 (with its CP) for every start t in
//     [d* - cp - m, d* + m], m = min(L/2, L/4 + 8) (all starts at once, by FFT); the argmax is the reported start.
//     The detection is kept only if the normalised cross-correlation with the whole preamble,
//     rho = |c|^2 / (E_ref E_rx), reaches xcorr_threshold (a second, independent false-alarm defence).
//  4. Fine CFO: the phase advance between the correlations of the two preamble symbols (fft_size + cp_len samples
//     apart) measures the residual CFO, which is added to the coarse one.
// Every decision is taken at a fixed absolute sample index, so the detections do not depend on how the stream is
// cut into chunks. Preambles closer together than Preamble::length() samples are reported once.
//
// Reference: T. M. Schmidl, D. C. Cox, "Robust Frequency and Timing Synchronization for OFDM",
// IEEE Trans. Commun. 45(12), 1997. The centred metric, the symmetric normaliser and the cross-correlation stage are
// this project's additions (docs/math.md).
#pragma once

#include <array>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "fedlora/phy/numerology.h"
#include "fedlora/phy/preamble.h"

namespace fedlora::phy {

struct SyncConfig {
    Numerology numerology;
    // Threshold on the Schmidl & Cox metric M, in (0, 1); 0 selects it from false_alarm_rate (see below).
    double threshold = 0.0;
    // Per-sample probability that complex white Gaussian noise (with any DC offset) crosses the automatic threshold.
    // On such noise M is dominated by a Beta(1, L-2) variable, so P(M >= g) <= (1 - g)^(L-2); the automatic
    // threshold is g = 1 - false_alarm_rate^(1/(L-2)), clamped to [0.05, 0.95]. Must be in (0, 0.1].
    double false_alarm_rate = 1e-6;
    // Threshold on the normalised cross-correlation rho in (0, 1); 0 uses the metric threshold (on a true preamble
    // rho ~ sqrt(M) >= M, so this never rejects what the metric found; on noise rho's tail is (1-g)^(2(N+cp)-1)).
    double xcorr_threshold = 0.0;
    std::uint32_t preamble_seed = Preamble::kDefaultSeed;
    // Metric kernel: "auto" (the fastest this CPU runs), "avx512", "avx2" (portable code compiled for AVX2 + FMA) or
    // "generic" (portable code, any CPU). All compute the same quantities; they may differ in the last bits.
    // "avx512" needs fft_size >= 128 (smaller sizes run the portable code).
    std::string kernel = "auto";

    // Throws std::invalid_argument naming the bad field and its value (numerology fields included).
    void validate() const;
    // The thresholds actually used (automatic values resolved).
    double resolved_threshold() const;
    double resolved_xcorr_threshold() const;
};

struct SyncDetection {
    std::uint64_t start = 0;          // absolute index of the first cyclic-prefix sample of preamble symbol 1
    double cfo = 0.0;                 // carrier frequency offset in subcarrier spacings (coarse + fine)
    double cfo_rad_per_sample = 0.0;  // 2 pi cfo / fft_size; CfoCorrector(cfo_rad_per_sample) removes it
    double cfo_coarse = 0.0;          // Schmidl & Cox estimate angle(P(d*)) / pi alone
    double metric = 0.0;              // M(d*), the peak of the timing metric
    std::uint64_t metric_peak = 0;    // d*, absolute index of the first sample of the peak metric window
    double xcorr = 0.0;               // rho at `start`
};

struct SyncStats {
    std::uint64_t samples = 0;     // samples consumed
    std::uint64_t triggers = 0;    // metric threshold crossings that opened a search
    std::uint64_t detections = 0;  // confirmed by the cross-correlation
    std::uint64_t rejected = 0;    // triggers the cross-correlation rejected
};

// Streaming Schmidl & Cox timing metric (step 1 above), usable on its own (e.g. to output the metric stream).
// After push() of the sample with absolute index n, the values refer to the window that ENDS at n, i.e. starts at
// d = n - 2L + 1 (samples before the stream count as zeros). Does not allocate after construction.
class SchmidlCoxMetric {
public:
    explicit SchmidlCoxMetric(int half_len);  // half_len L: a power of two, >= 4

    void push(std::complex<float> x);
    // Bulk form: metric[i] (and, if cfo is not null, cfo[i] = angle(P)/pi) after pushing in[i].
    void process(const std::complex<float>* in, std::size_t n, float* metric, float* cfo = nullptr);
    void reset();

    int half_len() const { return L_; }
    std::uint64_t samples() const { return count_; }
    // M (0 while the centred energy is zero or only rounding residue of a constant window).
    double metric() const { return valid() ? (p_.real() * p_.real() + p_.imag() * p_.imag()) / (r_ * r_) : 0.0; }
    // metric() >= g, without the division.
    bool exceeds(double g) const { return valid() && p_.real() * p_.real() + p_.imag() * p_.imag() >= g * r_ * r_; }
    std::complex<double> correlation() const { return p_; }  // centred P
    double energy() const { return r_; }                     // R = (E1 + E2) / 2, centred

private:
    inline void update(std::complex<float> x);  // the body of push()

    struct Sums {  // window sums of r, |r|^2 and conj(r[n-L]) r[n]
        double ar = 0, ai = 0, e = 0, pr = 0, pi = 0;
    };
    struct Half {  // sums of r and |r|^2 over one half
        double ar = 0, ai = 0, e = 0;
    };
    int L_;
    double inv_l_;
    std::uint64_t count_ = 0;
    int k_ = 0;                              // samples in the current block of L
    std::vector<std::complex<float>> ring_;  // last 2L samples
    Sums pre_;                               // prefix sums of the current block
    std::vector<Sums> suf_;                  // suffix sums of the previous block, L + 1 entries
    std::vector<Half> hist_;                 // second-half sums of the last L windows (first half = L ago)
    bool valid() const { return r_ > 0.0 && r_ > 1e-9 * raw_; }
    double r_ = 0.0, raw_ = 0.0;  // centred and uncentred (E1 + E2) / 2
    std::complex<double> p_{};
};

class Synchronizer {
public:
    // Throws std::invalid_argument for a bad configuration. Construction makes FFTW plans (fine timing) under the
    // planner lock every fedlora_phy kernel shares, so phy objects may be built on several threads; code outside
    // fedlora_phy that plans FFTW transforms concurrently is not covered by that lock.
    explicit Synchronizer(const SyncConfig& cfg);
    ~Synchronizer();
    Synchronizer(Synchronizer&&) noexcept;
    Synchronizer& operator=(Synchronizer&&) noexcept;

    const SyncConfig& config() const;
    const Preamble& preamble() const;
    double threshold() const;
    double xcorr_threshold() const;

    // Consumes n samples (any n, including 0 and 1). Appends every detection completed inside this call to `out`
    // and returns how many. Does not allocate as long as `out` has capacity for max_detections(n) more entries.
    std::size_t process(const std::complex<float>* in, std::size_t n, std::vector<SyncDetection>& out);
    // Same, calling on_detection(const SyncDetection&) for each detection instead; never allocates.
    template <class F, class = std::enable_if_t<std::is_invocable_v<F&, const SyncDetection&>>>
    std::size_t process(const std::complex<float>* in, std::size_t n, F&& on_detection) {
        using Fn = std::remove_reference_t<F>;
        return process_impl(
            in, n, [](void* ctx, const SyncDetection& d) { (*static_cast<Fn*>(ctx))(d); },
            const_cast<void*>(static_cast<const void*>(std::addressof(on_detection))));
    }

    // Upper bound on the detections one call with n samples can report.
    std::size_t max_detections(std::size_t n) const;
    // A detected preamble whose first sample has absolute index t0 is reported, at the latest, by the call that
    // consumes sample t0 + max_latency() (e.g. append this many samples after a burst to flush it). This includes
    // up to fft_size/2 - 1 samples of buffering: the metric is computed a group of fft_size/2 samples at a time.
    std::size_t max_latency() const;
    // The metric kernel in use ("avx512", "avx2" or "generic").
    const char* kernel_name() const;

    // Back to the state after construction (absolute sample index 0, statistics cleared); does not allocate.
    void reset();
    std::uint64_t samples() const;
    const SyncStats& stats() const;

private:
    using Sink = void (*)(void*, const SyncDetection&);
    std::size_t process_impl(const std::complex<float>* in, std::size_t n, Sink sink, void* ctx);

    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Phase-continuous CFO removal: out[i] = in[i] * exp(-j (phase + i * rad_per_sample)), and the phase advances by
// n * rad_per_sample per call, so consecutive calls behave like one call on the concatenated buffer (the phase is
// kept in double precision and re-anchored every 1024 samples). In between, sample k of each run of 256 is rotated
// by t[k] · s: a table t[k] = exp(-j k ω) made once per frequency, and the run's start phasor s, advanced in double
// precision; there is no serial recurrence per sample, so the loop vectorises, and it has no FMA, so every x86-64
// host computes the same bits. in == out is allowed. A detection's cfo_rad_per_sample, applied from the preamble
// onwards, removes its CFO. Allocation-free.
class CfoCorrector {
public:
    explicit CfoCorrector(double rad_per_sample = 0.0, double phase = 0.0);
    void set_frequency(double rad_per_sample) { omega_ = rad_per_sample; }
    void set_phase(double phase);
    double frequency() const { return omega_; }
    double phase() const { return phase_; }  // wrapped to [-pi, pi)
    void apply(const std::complex<float>* in, std::complex<float>* out, std::size_t n);

    static constexpr std::size_t kRun = 256;

private:
    double omega_;
    double phase_;
    double table_omega_;                       // the frequency table_ and step_ were made for
    std::array<std::complex<float>, kRun> table_{};  // t[k] = exp(-j k ω)
    std::complex<double> step_;                // exp(-j kRun ω)
};

// One-shot form of CfoCorrector; returns the phase after the last sample (wrapped to [-pi, pi)).
double correct_cfo(const std::complex<float>* in, std::complex<float>* out, std::size_t n, double rad_per_sample,
                   double phase = 0.0);

}  // namespace fedlora::phy
