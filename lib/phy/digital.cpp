#include "fedlora/phy/digital.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace fedlora::phy {

Quantized quantize_stochastic(const std::vector<float>& x, int bits, std::mt19937_64& rng) {
    if (bits < 1 || bits > 24)
        throw std::invalid_argument("quantize_stochastic: bits = " + std::to_string(bits) + " must be in [1, 24]");
    Quantized q;
    q.bits = bits;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (!std::isfinite(x[i]))
            throw std::invalid_argument("quantize_stochastic: entry " + std::to_string(i) + " is not finite");
        q.range = std::max(q.range, std::abs(x[i]));
    }
    const std::uint32_t top = (1u << bits) - 1u;
    q.levels.resize(x.size());
    if (q.range == 0.0f) {
        std::fill(q.levels.begin(), q.levels.end(), top / 2);  // any level decodes near 0; see dequantize
        return q;
    }
    std::uniform_real_distribution<double> u(0.0, 1.0);
    const double step = 2.0 * q.range / top;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double pos = (static_cast<double>(x[i]) + q.range) / step;  // in [0, top]
        const double lo = std::floor(pos);
        auto level = static_cast<std::uint32_t>(lo) + (u(rng) < pos - lo ? 1u : 0u);
        q.levels[i] = std::min(level, top);
    }
    return q;
}

std::vector<float> dequantize(const Quantized& q) {
    std::vector<float> x(q.levels.size(), 0.0f);
    if (q.range == 0.0f)
        return x;
    const std::uint32_t top = (1u << q.bits) - 1u;
    const double step = 2.0 * q.range / top;
    for (std::size_t i = 0; i < x.size(); ++i)
        x[i] = static_cast<float>(q.levels[i] * step - q.range);
    return x;
}

RateModel rate_model_from_name(const std::string& name) {
    if (name == "shannon")
        return RateModel::Shannon;
    if (name == "mcs")
        return RateModel::Mcs;
    throw std::invalid_argument("rate model '" + name + "' is unknown (choose shannon or mcs)");
}

const std::vector<McsEntry>& mcs_table() {
    // SNR thresholds for ~10% BLER with LTE-like turbo codes, rounded; order × rate = information bits per symbol.
    static const std::vector<McsEntry> table = {
        {"QPSK 1/8", -5.0, 0.25},  {"QPSK 1/4", -2.0, 0.5},    {"QPSK 1/2", 2.0, 1.0},
        {"QPSK 3/4", 5.0, 1.5},    {"16QAM 1/2", 8.0, 2.0},    {"16QAM 3/4", 11.5, 3.0},
        {"64QAM 2/3", 15.0, 4.0},  {"64QAM 5/6", 18.5, 5.0},   {"256QAM 3/4", 22.0, 6.0},
        {"256QAM 7/8", 25.5, 7.0},
    };
    return table;
}

double spectral_efficiency(RateModel model, double snr_linear) {
    if (!(snr_linear >= 0.0))
        throw std::invalid_argument("spectral_efficiency: snr = " + std::to_string(snr_linear) + " must be >= 0");
    if (model == RateModel::Shannon)
        return std::log2(1.0 + snr_linear);
    const double snr_db = 10.0 * std::log10(std::max(snr_linear, 1e-30));
    double best = 0.0;
    for (const auto& e : mcs_table())
        if (snr_db >= e.min_snr_db)
            best = e.bits_per_symbol;
    return best;
}

void OfdmaConfig::validate() const {
    if (n_carriers == 0)
        throw std::invalid_argument("OFDMA: n_carriers = 0");
    if (!(symbol_rate > 0.0))
        throw std::invalid_argument("OFDMA: symbol_rate = " + std::to_string(symbol_rate) + " must be > 0");
}

OfdmaAirtime ofdma_airtime(const std::vector<double>& bits, const std::vector<double>& snr_linear,
                           const std::vector<double>& shares, const OfdmaConfig& cfg) {
    cfg.validate();
    const std::size_t K = bits.size();
    if (snr_linear.size() != K || shares.size() != K)
        throw std::invalid_argument("OFDMA: " + std::to_string(K) + " payloads, " + std::to_string(snr_linear.size()) +
                                    " SNRs, " + std::to_string(shares.size()) + " shares");
    double total = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
        if (!(shares[k] >= 0.0) || !std::isfinite(shares[k]))
            throw std::invalid_argument("OFDMA: share[" + std::to_string(k) + "] = " + std::to_string(shares[k]) +
                                        " must be >= 0");
        total += shares[k];
    }
    if (total > 1.0 + 1e-9)
        throw std::invalid_argument("OFDMA: bandwidth shares sum to " + std::to_string(total) + " > 1");
    OfdmaAirtime a;
    a.carriers.resize(K);
    a.ofdm_symbols.resize(K);
    for (std::size_t k = 0; k < K; ++k) {
        if (bits[k] <= 0.0)
            continue;
        if (shares[k] == 0.0)
            throw std::invalid_argument("OFDMA: device " + std::to_string(k) + " has data but no bandwidth share");
        a.carriers[k] = std::max<std::size_t>(1, static_cast<std::size_t>(std::floor(shares[k] * cfg.n_carriers)));
        const double se = spectral_efficiency(cfg.rate, snr_linear[k]);
        if (se <= 0.0)
            throw std::invalid_argument("OFDMA: device " + std::to_string(k) + " at SNR " +
                                        std::to_string(10 * std::log10(std::max(snr_linear[k], 1e-30))) +
                                        " dB is below the lowest MCS: it cannot send");
        a.ofdm_symbols[k] = static_cast<std::size_t>(std::ceil(bits[k] / (se * a.carriers[k])));
        a.round_ofdm_symbols = std::max(a.round_ofdm_symbols, a.ofdm_symbols[k]);
    }
    a.channel_uses = a.round_ofdm_symbols * cfg.n_carriers;
    a.airtime_s = static_cast<double>(a.round_ofdm_symbols) / cfg.symbol_rate;
    return a;
}

}  // namespace fedlora::phy
