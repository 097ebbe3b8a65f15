// Digital baseline: OFDMA uplink where each device gets a share of the subcarriers, quantises its update to q bits
// per entry (stochastic rounding, unbiased) and sends it at a rate set by its measured SNR.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace fedlora::phy {

// Stochastic q-bit quantiser on [−r, r] with r = max |x|: 2^q − 1 uniform steps; each value rounds up with
// probability equal to its fractional position, so E[Q(x)] = x and Var ≤ Δ²/4, Δ = 2r / (2^q − 1).
struct Quantized {
    std::vector<std::uint32_t> levels;
    float range = 0.0f;  // r
    int bits = 0;
    std::size_t payload_bits() const { return levels.size() * static_cast<std::size_t>(bits) + 32; }  // + range
};
Quantized quantize_stochastic(const std::vector<float>& x, int bits, std::mt19937_64& rng);
std::vector<float> dequantize(const Quantized& q);

// Spectral efficiency (bit/s/Hz per subcarrier) at a given SNR.
enum class RateModel { Shannon, Mcs };
RateModel rate_model_from_name(const std::string& name);  // "shannon" | "mcs"
// Shannon: log2(1 + snr). MCS: the highest entry of a practical table (QPSK to 256-QAM, LTE-like code rates)
// whose SNR threshold the link meets; 0 below the lowest (the device cannot send).
double spectral_efficiency(RateModel model, double snr_linear);

struct McsEntry {
    const char* name;
    double min_snr_db;
    double bits_per_symbol;  // modulation order × code rate
};
const std::vector<McsEntry>& mcs_table();

struct OfdmaConfig {
    std::size_t n_carriers = 0;      // occupied subcarriers shared by all devices
    double symbol_rate = 0.0;        // OFDM symbols per second (sample_rate / (fft + cp))
    RateModel rate = RateModel::Shannon;
    void validate() const;
};

// Airtime of one OFDMA upload: device k gets n_k = round(β_k · n_carriers) carriers (at least one if β_k > 0) and
// sends `bits[k]` at `spectral_efficiency(snr[k])` per carrier per OFDM symbol. The round takes as long as the
// slowest device. β must be non-negative with Σβ ≤ 1.
struct OfdmaAirtime {
    std::vector<std::size_t> carriers;     // n_k
    std::vector<std::size_t> ofdm_symbols; // per device
    std::size_t round_ofdm_symbols = 0;    // max over devices
    std::size_t channel_uses = 0;          // round_ofdm_symbols × n_carriers (the band is occupied this long)
    double airtime_s = 0.0;
};
OfdmaAirtime ofdma_airtime(const std::vector<double>& bits, const std::vector<double>& snr_linear,
                           const std::vector<double>& shares, const OfdmaConfig& cfg);

}  // namespace fedlora::phy
