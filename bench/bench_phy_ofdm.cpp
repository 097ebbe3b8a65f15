// OFDM modulator/demodulator throughput next to a bare FFTW transform of the same size, in one run.
// Run: build/bench/fedlora_bench_phy --benchmark_min_time=1
#include <benchmark/benchmark.h>
#include <fftw3.h>

#include <random>
#include <vector>

#include "fedlora/phy/ofdm.h"

using fedlora::phy::cf32;

namespace {

fedlora::phy::Numerology numerology(int fft) {
    fedlora::phy::Numerology n;
    n.fft_size = fft;
    n.cp_len = fft / 8;
    n.n_occupied = fft * 3 / 4;
    return n;
}

std::vector<cf32> noise(std::size_t n) {
    std::mt19937 rng(1);
    std::normal_distribution<float> g;
    std::vector<cf32> v(n);
    for (auto& x : v)
        x = {g(rng), g(rng)};
    return v;
}

constexpr std::size_t kSymbols = 64;

// FFTW alone, as the receiver uses it: one out-of-place forward FFT per OFDM symbol between aligned buffers,
// planned with FFTW_MEASURE (BM_FftwAlone), and the same in place, FFTW's slower mode at these sizes
// (BM_FftwAloneInPlace). Items: fft_size + cp_len samples per transform, as the receiver counts them.
void fftw_alone(benchmark::State& state, bool in_place) {
    const int n = static_cast<int>(state.range(0));
    auto* in = fftwf_alloc_complex(static_cast<std::size_t>(n));
    auto* out = in_place ? in : fftwf_alloc_complex(static_cast<std::size_t>(n));
    fftwf_plan p = fftwf_plan_dft_1d(n, in, out, FFTW_FORWARD, FFTW_MEASURE);
    const auto x = noise(static_cast<std::size_t>(n));
    std::copy(x.begin(), x.end(), reinterpret_cast<cf32*>(in));
    for (auto _ : state) {
        for (std::size_t s = 0; s < kSymbols; ++s)
            fftwf_execute(p);
        benchmark::ClobberMemory();
    }
    const auto num = numerology(n);
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kSymbols) * num.symbol_len());
    fftwf_destroy_plan(p);
    if (!in_place)
        fftwf_free(out);
    fftwf_free(in);
}

void BM_FftwAlone(benchmark::State& state) { fftw_alone(state, false); }
void BM_FftwAloneInPlace(benchmark::State& state) { fftw_alone(state, true); }

void BM_OfdmModulate(benchmark::State& state) {
    const auto num = numerology(static_cast<int>(state.range(0)));
    fedlora::phy::OfdmModulator mod(num);
    auto in = noise(kSymbols * static_cast<std::size_t>(num.n_occupied));
    std::vector<cf32> out(kSymbols * static_cast<std::size_t>(num.symbol_len()));
    for (auto _ : state) {
        mod.modulate(in.data(), out.data(), kSymbols);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kSymbols) * num.symbol_len());
}

void BM_OfdmDemodulate(benchmark::State& state) {
    const auto num = numerology(static_cast<int>(state.range(0)));
    fedlora::phy::OfdmDemodulator demod(num);
    auto in = noise(kSymbols * static_cast<std::size_t>(num.symbol_len()));
    std::vector<cf32> out(kSymbols * static_cast<std::size_t>(num.n_occupied));
    for (auto _ : state) {
        demod.demodulate(in.data(), out.data(), kSymbols);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kSymbols) * num.symbol_len());
}

}  // namespace

BENCHMARK(BM_FftwAlone)->Arg(64)->Arg(256)->Arg(1024);
BENCHMARK(BM_FftwAloneInPlace)->Arg(256)->Arg(1024);
BENCHMARK(BM_OfdmModulate)->Arg(64)->Arg(256)->Arg(1024);
BENCHMARK(BM_OfdmDemodulate)->Arg(64)->Arg(256)->Arg(1024);
