// fedlora loopback: K devices send real vectors at once as analog OFDM symbols; the receiver demodulates the
// superposition and recovers their sum. Ideal flat channel, perfect synchronisation, AWGN: the measured NMSE of the
// sum is compared with its closed form. (The full impaired-channel round is `fedlora sim`.)
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fedlora/phy/codec.h"
#include "fedlora/phy/ofdm.h"

namespace fedlora::app {

namespace {
struct LoopbackOpts {
    int devices = 10;
    int length = 100000;
    double snr_db = 20.0;
    int fft_size = 256;
    int cp_len = 32;
    int n_occupied = 200;
    unsigned seed = 1;
};

int run_loopback(const LoopbackOpts& o) {
    phy::Numerology num;
    num.fft_size = o.fft_size;
    num.cp_len = o.cp_len;
    num.n_occupied = o.n_occupied;
    num.validate();
    phy::OfdmModulator mod(num);
    phy::OfdmDemodulator demod(num);

    const auto d = static_cast<std::size_t>(o.length);
    const std::size_t n_sc = static_cast<std::size_t>(num.n_occupied);
    const std::size_t n_sym_values = phy::symbols_for(d);
    const std::size_t n_ofdm = (n_sym_values + n_sc - 1) / n_sc;
    const std::size_t n_samples = n_ofdm * static_cast<std::size_t>(num.symbol_len());
    spdlog::info("{} devices x {} reals -> {} OFDM symbols of {} samples (FFT {}, CP {}, {} carriers)", o.devices,
                 d, n_ofdm, num.symbol_len(), num.fft_size, num.cp_len, num.n_occupied);

    std::mt19937_64 rng(o.seed);
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    // Each device's update has unit variance per real entry, so each subcarrier symbol has unit power.
    std::vector<float> x(d), sum(d, 0.0f);
    std::vector<phy::cf32> grid(n_ofdm * n_sc), tx(n_samples), rx(n_samples, phy::cf32{});
    for (int k = 0; k < o.devices; ++k) {
        for (auto& v : x)
            v = gauss(rng) * static_cast<float>(M_SQRT1_2);
        for (std::size_t i = 0; i < d; ++i)
            sum[i] += x[i];
        std::fill(grid.begin(), grid.end(), phy::cf32{});
        phy::pack_reals(x.data(), d, grid.data());
        mod.modulate(grid.data(), tx.data(), n_ofdm);
        for (std::size_t i = 0; i < n_samples; ++i)
            rx[i] += tx[i];  // the channel sums
    }
    // Per-subcarrier SNR of one device's unit-power symbol: noise variance per subcarrier = 10^(-snr/10), which
    // the unitary FFT carries over from the time domain unchanged.
    const double noise_var = std::pow(10.0, -o.snr_db / 10.0);
    std::normal_distribution<float> noise(0.0f, static_cast<float>(std::sqrt(noise_var / 2.0)));
    for (auto& s : rx)
        s += phy::cf32{noise(rng), noise(rng)};

    demod.demodulate(rx.data(), grid.data(), n_ofdm);
    std::vector<float> est(d);
    phy::unpack_reals(grid.data(), d, est.data());

    double err = 0.0, ref = 0.0;
    for (std::size_t i = 0; i < d; ++i) {
        err += (est[i] - sum[i]) * static_cast<double>(est[i] - sum[i]);
        ref += sum[i] * static_cast<double>(sum[i]);
    }
    // E|noise|^2 per real = noise_var / 2; E[sum_i^2] = K / 2.
    const double nmse = err / ref;
    const double nmse_theory = (noise_var / 2.0) / (o.devices / 2.0);
    std::printf("sum of %d updates (%zu reals) over the air at %.1f dB per-device SNR\n", o.devices, d, o.snr_db);
    std::printf("NMSE measured %.2f dB, theory %.2f dB (difference %.2f dB)\n", 10 * std::log10(nmse),
                10 * std::log10(nmse_theory), 10 * std::log10(nmse / nmse_theory));
    std::printf("channel uses: %zu samples for %d devices (%.3f samples per real, independent of the device count)\n",
                n_samples, o.devices, static_cast<double>(n_samples) / static_cast<double>(d));
    return 0;
}
}  // namespace

void add_loopback(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<LoopbackOpts>();
    auto* cmd = app.add_subcommand(
        "loopback",
        "AirComp over an ideal simulated channel: K devices' vectors summed by superposition, NMSE vs theory");
    cmd->add_option("-k,--devices", o->devices, "Number of transmitting devices")
        ->check(CLI::Range(1, 10000))
        ->capture_default_str();
    cmd->add_option("-d,--length", o->length, "Reals per device update")
        ->check(CLI::Range(1, 100000000))
        ->capture_default_str();
    cmd->add_option("--snr-db", o->snr_db, "Per-device, per-subcarrier receive SNR in dB")
        ->check(CLI::Range(-50.0, 100.0))
        ->capture_default_str();
    cmd->add_option("--fft", o->fft_size, "FFT size")->capture_default_str();
    cmd->add_option("--cp", o->cp_len, "Cyclic prefix length")->capture_default_str();
    cmd->add_option("--occupied", o->n_occupied, "Occupied subcarriers")->capture_default_str();
    cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
    cmd->callback([o, &exit_code] { exit_code = run_loopback(*o); });
}

}  // namespace fedlora::app
