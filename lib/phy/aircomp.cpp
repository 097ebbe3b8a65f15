#include "fedlora/phy/aircomp.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "fedlora/phy/codec.h"

namespace fedlora::phy {

void ResourceGrid::validate() const {
    if (n_carriers == 0)
        throw std::invalid_argument("resource grid: n_carriers = 0");
    if (n_streams == 0)
        throw std::invalid_argument("resource grid: n_streams = 0");
}

void AircompCodec::validate() const {
    if (dim == 0)
        throw std::invalid_argument("AirComp codec: dim = 0");
    if (!(scale > 0.0) || !std::isfinite(scale))
        throw std::invalid_argument("AirComp codec: scale = " + std::to_string(scale) + " must be finite and > 0");
    for (std::size_t i = 0; i < support.size(); ++i) {
        if (support[i] >= dim)
            throw std::invalid_argument("AirComp codec: support[" + std::to_string(i) + "] = " +
                                        std::to_string(support[i]) + " is outside [0, " + std::to_string(dim) + ")");
        if (i > 0 && support[i] <= support[i - 1])
            throw std::invalid_argument("AirComp codec: support must be strictly ascending (support[" +
                                        std::to_string(i) + "] = " + std::to_string(support[i]) + ")");
    }
}

void AircompCodec::encode(const float* x, double weight, std::complex<float>* out) const {
    const double g = weight / scale;
    const std::size_t n = n_values();
    const std::size_t pairs = n / 2;
    auto at = [&](std::size_t i) { return static_cast<float>(g * (support.empty() ? x[i] : x[support[i]])); };
    for (std::size_t i = 0; i < pairs; ++i)
        out[i] = {at(2 * i), at(2 * i + 1)};
    if (n % 2)
        out[pairs] = {at(n - 1), 0.0f};
}

void AircompCodec::decode(const std::complex<float>* in, float* x) const {
    const std::size_t n = n_values();
    const auto c = static_cast<float>(scale);
    if (support.empty()) {
        unpack_reals(in, n, x);
        for (std::size_t i = 0; i < n; ++i)
            x[i] *= c;
        return;
    }
    std::fill(x, x + dim, 0.0f);
    for (std::size_t i = 0; i < n; ++i) {
        const auto s = in[i / 2];
        x[support[i]] = c * ((i % 2) ? s.imag() : s.real());
    }
}

double common_scale(const std::vector<double>& rms, const std::vector<double>& weights) {
    if (rms.empty() || rms.size() != weights.size())
        throw std::invalid_argument("common_scale: " + std::to_string(rms.size()) + " RMS values for " +
                                    std::to_string(weights.size()) + " weights");
    double m = 0.0;
    for (std::size_t k = 0; k < rms.size(); ++k) {
        if (!std::isfinite(rms[k]) || rms[k] < 0.0)
            throw std::invalid_argument("common_scale: rms[" + std::to_string(k) + "] = " + std::to_string(rms[k]) +
                                        " is not a finite non-negative number");
        if (!std::isfinite(weights[k]))
            throw std::invalid_argument("common_scale: weight[" + std::to_string(k) + "] is not finite");
        m = std::max(m, std::abs(weights[k]) * rms[k]);
    }
    if (m == 0.0)
        throw std::invalid_argument("common_scale: every weighted update is zero");
    return std::sqrt(2.0) * m;
}

double update_rms(const float* x, std::size_t dim, const std::vector<std::uint32_t>& support) {
    const std::size_t n = support.empty() ? dim : support.size();
    if (n == 0)
        return 0.0;
    double acc = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t j = support.empty() ? i : support[i];
        if (j >= dim)
            throw std::invalid_argument("update_rms: support index " + std::to_string(j) + " >= dim " +
                                        std::to_string(dim));
        if (!std::isfinite(x[j]))
            throw std::invalid_argument("update_rms: entry " + std::to_string(j) + " is not finite");
        acc += static_cast<double>(x[j]) * x[j];
    }
    return std::sqrt(acc / static_cast<double>(n));
}

std::vector<double> symbol_powers(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                  const AircompCodec& codec) {
    std::vector<double> v(updates.size());
    for (std::size_t k = 0; k < updates.size(); ++k)
        v[k] = symbol_power(weights[k], update_rms(updates[k].data(), codec.dim, codec.support), codec.scale);
    return v;
}

double symbol_power(double weight, double rms, double scale) {
    const double a = weight * rms / scale;
    return std::max(2.0 * a * a, 1e-30);
}

std::pair<double, double> sum_error(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                    const AircompCodec& codec, const std::vector<float>& estimate) {
    std::vector<double> truth(codec.dim, 0.0);
    for (std::size_t k = 0; k < updates.size(); ++k)
        for (std::size_t j = 0; j < codec.dim; ++j)
            truth[j] += weights[k] * updates[k][j];
    double err = 0.0, ref = 0.0;
    const std::size_t n = codec.n_values();
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t j = codec.support.empty() ? i : codec.support[i];
        err += (estimate[j] - truth[j]) * (estimate[j] - truth[j]);
        ref += truth[j] * truth[j];
    }
    return {err, ref};
}

void add_awgn(std::complex<double>* y, std::size_t n, double noise_var, std::mt19937_64& rng) {
    std::normal_distribution<double> g(0.0, std::sqrt(noise_var / 2.0));
    for (std::size_t i = 0; i < n; ++i) {
        const double re = g(rng);
        const double im = g(rng);
        y[i] += std::complex<double>(re, im);
    }
}

AircompReport aircomp_round_symbols(const std::vector<std::vector<float>>& updates, const std::vector<double>& weights,
                                    const AircompCodec& codec, const std::vector<std::complex<double>>& h,
                                    std::size_t M, const PowerControlConfig& pc, std::mt19937_64& rng,
                                    std::vector<float>& estimate) {
    codec.validate();
    const std::size_t K = updates.size();
    if (K == 0 || weights.size() != K)
        throw std::invalid_argument("aircomp_round_symbols: " + std::to_string(K) + " updates and " +
                                    std::to_string(weights.size()) + " weights");
    for (std::size_t k = 0; k < K; ++k)
        if (updates[k].size() != codec.dim)
            throw std::invalid_argument("aircomp_round_symbols: update " + std::to_string(k) + " has " +
                                        std::to_string(updates[k].size()) + " entries, expected " +
                                        std::to_string(codec.dim));
    PowerControlConfig pcv = pc;
    pcv.signal_var = symbol_powers(updates, weights, codec);
    const auto plan = plan_power(h, K, M, pcv);
    const std::size_t n_sym = codec.n_symbols();

    // Transmit: device k's symbol i rides carrier i % M with precoder b_k[m]; the channel sums.
    std::vector<std::complex<float>> s(n_sym);
    std::vector<std::complex<double>> y(n_sym, {0.0, 0.0});
    for (std::size_t k = 0; k < K; ++k) {
        codec.encode(updates[k].data(), weights[k], s.data());
        for (std::size_t i = 0; i < n_sym; ++i) {
            const std::size_t m = i % M;
            y[i] += h[k * M + m] * plan.b(k, m) * std::complex<double>(s[i]);
        }
    }
    add_awgn(y.data(), n_sym, pc.noise_var, rng);
    std::vector<std::complex<float>> r(n_sym);
    for (std::size_t i = 0; i < n_sym; ++i)
        r[i] = std::complex<float>(y[i] / std::sqrt(plan.eta[i % M]));
    estimate.resize(codec.dim);
    codec.decode(r.data(), estimate.data());

    const auto [err, ref] = sum_error(updates, weights, codec, estimate);
    AircompReport rep;
    rep.nmse_measured = ref > 0.0 ? err / ref : 0.0;
    // Analytic: the plan's MSE per complex symbol (in units of the scaled symbols), times c², over the energy of
    // the sum per symbol. It assumes independent zero-mean updates, as the power plan does.
    rep.nmse_analytic = ref > 0.0 ? plan.mse * codec.scale * codec.scale * static_cast<double>(n_sym) / ref : 0.0;
    rep.truncated_fraction = plan.truncated_fraction;
    rep.device_snr_db.resize(K);
    for (std::size_t k = 0; k < K; ++k) {
        double g = 0.0;
        for (std::size_t m = 0; m < M; ++m)
            g += std::norm(h[k * M + m]);
        rep.device_snr_db[k] = 10.0 * std::log10(g / static_cast<double>(M) * pc.budget[k] / pc.noise_var);
    }
    rep.ofdm_symbols = (n_sym + M - 1) / M;
    rep.channel_uses = rep.ofdm_symbols * M;
    return rep;
}

}  // namespace fedlora::phy
