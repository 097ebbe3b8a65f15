// The server's receive chain on a continuous stream, one core: Schmidl & Cox synchronisation of every sample, CFO
// correction of every sample, an FFT per OFDM symbol, channel estimation of every pilot symbol and combining of every
// payload carrier (scaling and common-phase removal). Items are input samples. Compare with BM_FftwAlone (same
// binary, same run) for the FFT-alone throughput at the same size.
//   build/bench/fedlora_bench_phy --benchmark_filter='Receiver|FftwAlone' --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "fedlora/phy/chanest.h"
#include "fedlora/phy/frame.h"
#include "fedlora/phy/ofdm.h"
#include "fedlora/phy/sync.h"

using namespace fedlora::phy;

namespace {

struct Stream {
    FrameConfig frame;
    std::vector<cf32> samples;
    std::size_t frame_len = 0, n_payload = 0;
};

// A stream of back-to-back frames (K = 4 devices' pilots, 40 payload symbols) through a flat channel, with noise.
Stream make_stream(int fft) {
    Stream s;
    auto& num = s.frame.numerology;
    num.fft_size = fft;
    num.cp_len = fft / 8;
    num.n_occupied = fft * 3 / 4;
    num.pilot_spacing = 16;
    s.frame.n_devices = 4;
    s.n_payload = 40;
    const FrameLayout layout(s.frame);
    s.frame_len = layout.frame_len(s.n_payload);
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.0f, 0.05f);
    std::vector<std::vector<cf32>> one(1, std::vector<cf32>(layout.pilots_end()));
    std::vector<cf32> frame(s.frame_len, cf32{});
    for (std::size_t k = 0; k < s.frame.n_devices; ++k) {
        DeviceTransmitter dev(s.frame, k, 1.0);
        dev.pilot_burst(one);
        for (std::size_t i = 0; i < one[0].size(); ++i)
            frame[i] += one[0][i];
    }
    OfdmModulator mod(num);
    std::vector<cf32> grid(static_cast<std::size_t>(num.n_occupied));
    for (std::size_t i = 0; i < s.n_payload; ++i) {
        for (auto& v : grid)
            v = {g(rng) * 20.0f, g(rng) * 20.0f};
        mod.modulate(grid.data(), frame.data() + layout.payload_offset(i), 1);
    }
    for (int rep = 0; rep < 8; ++rep)
        for (const auto& v : frame)
            s.samples.push_back(v + cf32{g(rng), g(rng)});
    return s;
}

void BM_Receiver(benchmark::State& state) {
    const auto st = make_stream(static_cast<int>(state.range(0)));
    const auto& num = st.frame.numerology;
    const FrameLayout layout(st.frame);
    SyncConfig sc;
    sc.numerology = num;
    Synchronizer sync(sc);
    CfoCorrector cfo;
    ChannelEstimatorConfig ec;
    ec.name = "dft";
    FrameReceiver receiver(st.frame, ec, num.cp_len / 8);
    const auto M = static_cast<std::size_t>(num.n_occupied);
    const std::vector<double> pilot_power(st.frame.n_devices, 1.0);
    const std::vector<std::complex<double>> combiner(M, 0.5), expected(M, 0.5);
    std::vector<std::vector<cf32>> rx(1, std::vector<cf32>(st.samples.size()));
    std::vector<ChannelEstimate> est;
    std::vector<cf32> out;
    std::vector<SyncDetection> det;
    det.reserve(sync.max_detections(st.samples.size()));
    std::size_t frames = 0;
    for (auto _ : state) {
        det.clear();
        sync.reset();
        // Synchronisation and CFO correction of every sample, in chunks as a stream arrives.
        for (std::size_t at = 0; at < st.samples.size(); at += 4096) {
            const std::size_t n = std::min<std::size_t>(4096, st.samples.size() - at);
            sync.process(st.samples.data() + at, n, det);
            cfo.apply(st.samples.data() + at, rx[0].data() + at, n);
        }
        // Per detected frame, the library's receiver: every pilot slot estimated, every payload symbol combined
        // with common-phase removal.
        for (const auto& d : det) {
            const auto start = static_cast<std::size_t>(d.start);
            if (start < static_cast<std::size_t>(receiver.timing_backoff()) ||
                start - receiver.timing_backoff() + st.frame_len > rx[0].size())
                continue;
            receiver.estimate_channels(rx[0], start, pilot_power, est);
            receiver.payload(rx, start, st.n_payload, 1, combiner, expected, out);
            ++frames;
        }
        benchmark::DoNotOptimize(out.data());
    }
    state.counters["frames_per_pass"] = static_cast<double>(frames) / static_cast<double>(state.iterations());
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(st.samples.size()));
}

}  // namespace

BENCHMARK(BM_Receiver)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);
