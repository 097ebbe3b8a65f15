// Multi-user channel simulator throughput: K = 20 single-antenna devices into one server antenna (N_r = 1), EPA,
// Doppler fading and every impairment on (CFO, timing offset, random phase, gain error, AWGN, phase noise, DC).
// Two ways of counting, both reported for every run:
//   output_samples/s   server (output) samples per second; this is also items_per_second
//   device_samples/s   device input samples per second = K × output_samples/s
// Arguments: FIR kernel (0 auto = the best this CPU has, 1 volk, 2 avx2), sample rate in kHz (sets how many taps
// EPA spans: 410 ns is 13 samples at 30.72 MHz, 1 at 1.92 MHz), Doppler in Hz (sets the update interval of the
// fading coefficients, U = f_s/(1000 f_d) rounded down to a power of two, <= 1024), and frac: 1 gives every device a
// fractional timing offset in [0, 3) (the signal goes through the 16-tap fractional-delay filter before its
// multipath taps), 0 rounds the same offsets down to whole samples (multipath taps only: 6 lags for EPA at
// 30.72 MHz). taps_per_device is the length of the combined FIR (impulse_response()); the simulator runs it as the
// two sparse stages.
// Run: build/bench/fedlora_bench_phy --benchmark_filter=Channel --benchmark_min_time=1 --benchmark_repetitions=3
// Measured on the 2-core AMD EPYC (Zen 5, AVX-512) dev VM, Release, medians of 3, chunks of 4096, shared with other
// agents' builds (docs/math.md, "Multi-user channel simulator", has the full table and the profile):
//   30.72 MHz, f_d 100 Hz (U = 256): avx512 fractional 52.6 M output samples/s = 1.05 G device samples/s,
//     whole-sample offsets 73 M = 1.46 G; avx2 24.7 M / 42.7 M; volk 10.8 M / 19.4 M (output samples/s).
//   The previous single-FIR implementation: avx512 14.1 M fractional (282 M device samples/s), 25.8 M whole samples.
#include <benchmark/benchmark.h>

#include <cmath>
#include <complex>
#include <exception>
#include <random>
#include <vector>

#include "fedlora/phy/channel.h"

namespace {

using cf32 = std::complex<float>;
constexpr int kDevices = 20;
constexpr std::size_t kChunk = 4096;

fedlora::phy::ChannelSimConfig k20_config(const char* kernel, double fs, double doppler, bool fractional) {
    fedlora::phy::ChannelSimConfig c;
    c.sample_rate = fs;
    c.fir_kernel = kernel;
    c.noise_variance = 0.01;
    c.phase_noise_linewidth_hz = 100.0;
    c.dc_offset = {1e-3, -2e-3};
    c.seed = 2024;
    std::mt19937 g(5);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    c.devices.resize(kDevices);
    for (auto& d : c.devices) {
        d.profile = "EPA";
        d.fading = "rayleigh";
        d.doppler_hz = doppler;
        d.cfo_hz = 1000.0 * (u(g) - 0.5);
        const double eps = 3.0 * u(g);
        d.timing_offset_samples = fractional ? eps : std::floor(eps);
        d.gain_error_db = 2.0 * (u(g) - 0.5);
        d.snr_db = 10.0 + 10.0 * u(g);
        d.random_phase = true;
    }
    return c;
}

void BM_ChannelK20Epa(benchmark::State& state) {
    const char* kernels[] = {"auto", "volk", "avx2"};
    const char* kernel = kernels[state.range(0)];
    const double fs = static_cast<double>(state.range(1)) * 1e3;
    const auto cfg = k20_config(kernel, fs, static_cast<double>(state.range(2)), state.range(3) != 0);
    try {
        cfg.validate();
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
        return;
    }
    fedlora::phy::MultiUserChannel ch(cfg);
    std::mt19937 g(1);
    std::normal_distribution<float> n01(0.0f, 0.70710678f);
    std::vector<std::vector<cf32>> in(kDevices, std::vector<cf32>(kChunk));
    for (auto& v : in)
        for (auto& x : v)
            x = {n01(g), n01(g)};
    std::vector<const cf32*> ip;
    for (auto& v : in)
        ip.push_back(v.data());
    std::vector<cf32> out(kChunk);
    cf32* op[1] = {out.data()};
    std::size_t taps = 0;
    for (int k = 0; k < kDevices; ++k)
        taps += ch.impulse_response(k, 0, 0).taps.size();
    for (auto _ : state) {
        ch.process(ip.data(), op, kChunk);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    const double outputs = static_cast<double>(state.iterations()) * static_cast<double>(kChunk);
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kChunk));
    state.counters["output_samples/s"] = benchmark::Counter(outputs, benchmark::Counter::kIsRate);
    state.counters["device_samples/s"] = benchmark::Counter(outputs * kDevices, benchmark::Counter::kIsRate);
    state.counters["taps_per_device"] = static_cast<double>(taps) / kDevices;
    state.counters["update_interval"] = static_cast<double>(ch.update_interval(0));
    state.SetLabel(ch.kernel_name());
}

}  // namespace

// {kernel, sample rate kHz, Doppler Hz, fractional timing offsets}
BENCHMARK(BM_ChannelK20Epa)
    ->ArgNames({"kernel", "fs_kHz", "fd_Hz", "frac"})
    ->Args({0, 30720, 100, 1})
    ->Args({0, 30720, 100, 0})
    ->Args({2, 30720, 100, 1})
    ->Args({2, 30720, 100, 0})
    ->Args({1, 30720, 100, 1})
    ->Args({1, 30720, 100, 0})
    ->Args({0, 30720, 5, 1})
    ->Args({0, 30720, 5, 0})
    ->Args({0, 1920, 100, 1})
    ->Args({0, 1920, 100, 0})
    ->Args({2, 1920, 100, 1})
    ->Args({1, 1920, 100, 1})
    ->Unit(benchmark::kMicrosecond);
