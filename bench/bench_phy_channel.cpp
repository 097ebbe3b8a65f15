// Multi-user channel simulator throughput: K = 20 single-antenna devices into one server antenna, EPA, Doppler
// fading and every impairment on (CFO, fractional timing offset, random phase, gain error, AWGN, phase noise, DC).
// Two rates are reported for every run:
//   items_per_second       output (server) samples per second
//   device_samples/s       device input samples per second = K × output samples per second
// Arguments: FIR kernel (0 auto = the best this CPU has, 1 volk, 2 avx2), sample rate in kHz (sets how many taps
// EPA spans: 410 ns is 13 samples at 30.72 MHz, 1 at 1.92 MHz; the fractional-delay filter adds 15), Doppler in Hz
// (sets the update interval of the fading coefficients, U = f_s/(1000 f_d) rounded down to a power of two, <= 1024).
// Run: build/bench/fedlora_bench_phy --benchmark_filter=Channel --benchmark_min_time=2
// Measured on the 2-core AMD EPYC (Zen 5, 2.6 GHz, AVX-512) dev VM, Release, medians of 3, chunks of 4096:
//   30.72 MHz, f_d 100 Hz (29 taps/device, U = 256): avx512 286 M device samples/s = 14.3 M output samples/s;
//     avx2 209 M = 10.4 M; volk 115 M = 5.8 M.   f_d 5 Hz (U = 1024): avx512 347 M = 17.4 M.
//   1.92 MHz, f_d 100 Hz (17 taps, U = 16: coefficient updates dominate): avx512 115 M = 5.8 M; volk 30 M = 1.5 M.
// The 50 MS/s at K = 20 is met counted as device samples (K × n), not as output samples.
#include <benchmark/benchmark.h>

#include <complex>
#include <exception>
#include <random>
#include <vector>

#include "fedlora/phy/channel.h"

namespace {

using cf32 = std::complex<float>;
constexpr int kDevices = 20;
constexpr std::size_t kChunk = 4096;

fedlora::phy::ChannelSimConfig k20_config(const char* kernel, double fs, double doppler) {
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
        d.timing_offset_samples = 3.0 * u(g);
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
    const auto cfg = k20_config(kernel, fs, static_cast<double>(state.range(2)));
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
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kChunk));
    state.counters["device_samples/s"] = benchmark::Counter(
        static_cast<double>(state.iterations()) * kDevices * static_cast<double>(kChunk), benchmark::Counter::kIsRate);
    state.counters["taps_per_device"] = static_cast<double>(taps) / kDevices;
    state.counters["update_interval"] = static_cast<double>(ch.update_interval(0));
    state.SetLabel(ch.kernel_name());
}

}  // namespace

// {kernel, sample rate kHz, Doppler Hz}
BENCHMARK(BM_ChannelK20Epa)
    ->ArgNames({"kernel", "fs_kHz", "fd_Hz"})
    ->Args({0, 30720, 100})
    ->Args({2, 30720, 100})
    ->Args({1, 30720, 100})
    ->Args({0, 30720, 5})
    ->Args({0, 1920, 100})
    ->Args({2, 1920, 100})
    ->Args({1, 1920, 100})
    ->Unit(benchmark::kMicrosecond);
