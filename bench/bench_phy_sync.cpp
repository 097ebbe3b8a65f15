// Synchronizer::process throughput on complex white noise carrying an occasional preamble (10 dB SNR, one every
// 20000 samples, CFO 0.2 spacing), fed in chunks of 4096 samples, with the kernel "auto" picks (label) and with the
// portable kernels; FFTW alone at the same FFT sizes (one forward transform per OFDM symbol of the same kind of
// stream, counted as fft_size + cp_len samples, as a receiver would run it), so that the ratio sync / FFT can be
// read from one run; the per-sample Schmidl & Cox metric class and the CFO corrector. Items are input samples, so
// items_per_second is the sustainable sample rate on one core.
// Run: build/bench/fedlora_bench_phy --benchmark_filter='Sync|Schmidl|Fftw' --benchmark_min_time=1
#include <benchmark/benchmark.h>
#include <fftw3.h>

#include <cmath>
#include <exception>
#include <random>
#include <vector>

#include "fedlora/phy/ofdm.h"
#include "fedlora/phy/sync.h"

using fedlora::phy::cf32;

namespace {

constexpr std::size_t kStream = 1 << 20;  // samples in the looped test stream
constexpr std::size_t kChunk = 4096;
constexpr std::size_t kPreambleEvery = 20000;

fedlora::phy::SyncConfig sync_config(int fft) {
    fedlora::phy::SyncConfig c;
    c.numerology.fft_size = fft;
    c.numerology.cp_len = fft / 8;
    c.numerology.n_occupied = fft * 3 / 4;
    return c;
}

std::vector<cf32> test_stream(const fedlora::phy::Preamble& pre) {
    std::mt19937_64 rng(42);
    const double var = pre.power() / 10.0;
    std::normal_distribution<double> g(0.0, std::sqrt(var / 2.0));
    std::vector<cf32> x(kStream);
    for (auto& v : x)
        v = cf32(static_cast<float>(g(rng)), static_cast<float>(g(rng)));
    const auto& s = pre.samples();
    const double w = 2.0 * 3.14159265358979323846 * 0.2 / pre.numerology().fft_size;
    for (std::size_t at = 1000; at + s.size() < kStream; at += kPreambleEvery)
        for (std::size_t n = 0; n < s.size(); ++n)
            x[at + n] += s[n] * std::polar(1.0f, static_cast<float>(w * static_cast<double>(n)));
    return x;
}

void run_sync(benchmark::State& state, fedlora::phy::SyncConfig cfg) {
    fedlora::phy::Synchronizer sync(cfg);
    state.SetLabel(sync.kernel_name());
    const auto x = test_stream(sync.preamble());
    std::vector<fedlora::phy::SyncDetection> det;
    det.reserve(sync.max_detections(kChunk) + 1);
    std::size_t pos = 0, found = 0;
    for (auto _ : state) {
        det.clear();
        sync.process(x.data() + pos, kChunk, det);
        found += det.size();
        pos = (pos + kChunk) % kStream;
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kChunk));
    state.counters["detections"] = static_cast<double>(found);
    std::size_t in_stream = 0;  // preambles per pass over the looped stream
    for (std::size_t at = 1000; at + static_cast<std::size_t>(sync.preamble().length()) < kStream; at += kPreambleEvery)
        ++in_stream;
    state.counters["expected"] =
        static_cast<double>(state.iterations() * kChunk) * static_cast<double>(in_stream) / kStream;
}

void BM_SyncProcess(benchmark::State& state) {
    run_sync(state, sync_config(static_cast<int>(state.range(0))));
}

// The portable kernels: 0 = "generic" (baseline ISA), 1 = "avx2" (the same code compiled for AVX2 + FMA).
void BM_SyncProcessPortable(benchmark::State& state) {
    auto cfg = sync_config(static_cast<int>(state.range(0)));
    cfg.kernel = state.range(1) == 0 ? "generic" : "avx2";
    try {
        cfg.validate();
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
        return;
    }
    run_sync(state, cfg);
}

// FFTW alone: the forward FFT of every OFDM symbol (FFT window after the CP) of a stream of 64 symbols, out of
// place, one fftwf plan (FFTW_MEASURE) for the batch. Items: fft_size + cp_len per transform.
void BM_SyncFftwAlone(benchmark::State& state) {
    const auto num = sync_config(static_cast<int>(state.range(0))).numerology;
    const int n = num.fft_size, cp = num.cp_len, sym = n + cp;
    constexpr int kSymbols = 64;
    auto* in = fftwf_alloc_complex(static_cast<std::size_t>(kSymbols * sym));
    auto* out = fftwf_alloc_complex(static_cast<std::size_t>(kSymbols * n));
    fftwf_plan p = fftwf_plan_many_dft(1, &n, kSymbols, in + cp, nullptr, 1, sym, out, nullptr, 1, n, FFTW_FORWARD,
                                       FFTW_MEASURE);
    std::mt19937 rng(7);
    std::normal_distribution<float> g;
    for (int i = 0; i < kSymbols * sym; ++i) {
        in[i][0] = g(rng);
        in[i][1] = g(rng);
    }
    for (auto _ : state) {
        fftwf_execute(p);
        benchmark::DoNotOptimize(out);
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kSymbols) * sym);
    fftwf_destroy_plan(p);
    fftwf_free(out);
    fftwf_free(in);
}

void BM_SchmidlCoxMetric(benchmark::State& state) {
    const int fft = static_cast<int>(state.range(0));
    fedlora::phy::SchmidlCoxMetric m(fft / 2);
    const auto x = test_stream(fedlora::phy::Preamble(sync_config(fft).numerology));
    std::vector<float> out(kChunk);
    std::size_t pos = 0;
    for (auto _ : state) {
        m.process(x.data() + pos, kChunk, out.data());
        benchmark::DoNotOptimize(out.data());
        pos = (pos + kChunk) % kStream;
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kChunk));
}

void BM_CfoCorrector(benchmark::State& state) {
    fedlora::phy::CfoCorrector c(0.01);
    std::vector<cf32> x(kChunk, cf32(1.0f, 0.5f)), y(kChunk);
    for (auto _ : state) {
        c.apply(x.data(), y.data(), kChunk);
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kChunk));
}

}  // namespace

BENCHMARK(BM_SyncProcess)->Arg(256)->Arg(1024);
BENCHMARK(BM_SyncProcessPortable)->Args({256, 0})->Args({1024, 0})->Args({256, 1})->Args({1024, 1});
BENCHMARK(BM_SyncFftwAlone)->Arg(256)->Arg(1024);
BENCHMARK(BM_SchmidlCoxMetric)->Arg(256)->Arg(1024);
BENCHMARK(BM_CfoCorrector);
