#include "fedlora/phy/preamble.h"

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>

#include "fedlora/phy/ofdm.h"

namespace fedlora::phy {

namespace {

const Numerology& checked(const Numerology& num) {
    num.validate();
    if (num.n_occupied < 4)
        throw std::invalid_argument("Schmidl & Cox preamble: n_occupied = " + std::to_string(num.n_occupied) +
                                    " must be at least 4 (symbol 1 needs an even carrier on each side of DC)");
    return num;
}

// Unit-power QPSK from two raw bits of the generator (no std::distribution: those differ between libraries).
class QpskSource {
public:
    explicit QpskSource(std::uint32_t seed) : rng_(seed) {}
    std::complex<float> next() {
        const std::uint32_t w = static_cast<std::uint32_t>(rng_());
        const float a = 1.0f / std::sqrt(2.0f);
        return {(w & 1u) ? a : -a, (w & 2u) ? a : -a};
    }

private:
    std::mt19937 rng_;
};

}  // namespace

Preamble::Preamble(const Numerology& num, std::uint32_t seed) : num_(checked(num)) {
    const auto carriers = num_.occupied_carriers();
    const std::size_t n_occ = carriers.size();
    for (int c : carriers)
        if (c % 2 == 0)
            ++n_even_;

    // Symbol 1: even carriers only, boosted so the power per sample matches a full data symbol.
    const float boost = std::sqrt(static_cast<float>(n_occ) / static_cast<float>(n_even_));
    QpskSource s1(seed);
    sym1_.assign(n_occ, std::complex<float>{});
    for (std::size_t i = 0; i < n_occ; ++i)
        if (carriers[i] % 2 == 0)
            sym1_[i] = s1.next() * boost;

    // Symbol 2: every occupied carrier, unit magnitude, an independent stream of the same generator family.
    QpskSource s2(seed ^ 0x9E3779B9u);
    sym2_.resize(n_occ);
    for (auto& x : sym2_)
        x = s2.next();

    std::vector<std::complex<float>> freq(sym1_);
    freq.insert(freq.end(), sym2_.begin(), sym2_.end());
    time_.resize(static_cast<std::size_t>(length()));
    OfdmModulator mod(num_);
    mod.modulate(freq.data(), time_.data(), 2);

    double e = 0.0;
    for (const auto& x : time_)
        e += std::norm(std::complex<double>(x));
    power_ = e / static_cast<double>(time_.size());
}

}  // namespace fedlora::phy
