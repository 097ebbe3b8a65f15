#include "fedlora/learn/adapter.h"

#include <utility>

namespace fedlora::learn {

const char* to_string(LoraFactor f) { return f == LoraFactor::A ? "lora_A" : "lora_B"; }

LoraLayerFactors LoraLayerFactors::zeros(std::string layer, std::int64_t rank, std::int64_t in, std::int64_t out) {
    LoraLayerFactors l;
    l.layer = std::move(layer);
    l.rank = rank;
    l.in = in;
    l.out = out;
    l.check();
    l.A.assign(static_cast<std::size_t>(rank * in), 0.0f);
    l.B.assign(static_cast<std::size_t>(out * rank), 0.0f);
    return l;
}

void LoraLayerFactors::check() const {
    if (rank < 1 || in < 1 || out < 1)
        throw std::invalid_argument("adapter layer '" + layer + "': rank = " + std::to_string(rank) + ", in = " +
                                    std::to_string(in) + ", out = " + std::to_string(out) + " must all be >= 1");
    if (!A.empty() || !B.empty()) {
        if (A.size() != static_cast<std::size_t>(rank * in))
            throw std::invalid_argument("adapter layer '" + layer + "': lora_A has " + std::to_string(A.size()) +
                                        " elements, expected rank·in = " + std::to_string(rank * in));
        if (B.size() != static_cast<std::size_t>(out * rank))
            throw std::invalid_argument("adapter layer '" + layer + "': lora_B has " + std::to_string(B.size()) +
                                        " elements, expected out·rank = " + std::to_string(out * rank));
    }
}

std::int64_t Adapter::numel() const {
    std::int64_t n = 0;
    for (const auto& l : layers)
        n += l.rank * (l.in + l.out);
    return n;
}

bool Adapter::same_shape(const Adapter& other) const {
    if (layers.size() != other.layers.size())
        return false;
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const auto &a = layers[i], &b = other.layers[i];
        if (a.layer != b.layer || a.rank != b.rank || a.in != b.in || a.out != b.out || a.A.size() != b.A.size() ||
            a.B.size() != b.B.size())
            return false;
    }
    return true;
}

void Adapter::check_same_shape(const Adapter& other, const std::string& what) const {
    if (layers.size() != other.layers.size())
        throw std::invalid_argument(what + ": " + std::to_string(other.layers.size()) + " adapted layers, expected " +
                                    std::to_string(layers.size()));
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const auto &a = layers[i], &b = other.layers[i];
        if (a.layer != b.layer)
            throw std::invalid_argument(what + ": layer " + std::to_string(i) + " is '" + b.layer + "', expected '" +
                                        a.layer + "'");
        if (a.rank != b.rank || a.in != b.in || a.out != b.out || a.A.size() != b.A.size() ||
            a.B.size() != b.B.size())
            throw std::invalid_argument(what + ": layer '" + a.layer + "' has rank/in/out " + std::to_string(b.rank) +
                                        "/" + std::to_string(b.in) + "/" + std::to_string(b.out) + ", expected " +
                                        std::to_string(a.rank) + "/" + std::to_string(a.in) + "/" +
                                        std::to_string(a.out));
    }
}

std::int64_t Adapter::find(const std::string& layer) const {
    for (std::size_t i = 0; i < layers.size(); ++i)
        if (layers[i].layer == layer)
            return static_cast<std::int64_t>(i);
    return -1;
}

Adapter Adapter::zeros_like() const {
    Adapter z;
    z.layers.reserve(layers.size());
    for (const auto& l : layers)
        z.layers.push_back(LoraLayerFactors::zeros(l.layer, l.rank, l.in, l.out));
    return z;
}

Adapter adapter_difference(const Adapter& after, const Adapter& before) {
    before.check_same_shape(after, "adapter_difference");
    Adapter d = after;
    for (std::size_t l = 0; l < d.layers.size(); ++l)
        for (auto f : {LoraFactor::A, LoraFactor::B}) {
            auto& x = d.layers[l].factor(f);
            const auto& y = before.layers[l].factor(f);
            for (std::size_t i = 0; i < x.size(); ++i)
                x[i] -= y[i];
        }
    return d;
}

void adapter_add_scaled(Adapter& dst, const Adapter& src, double weight) {
    dst.check_same_shape(src, "adapter_add_scaled");
    for (std::size_t l = 0; l < dst.layers.size(); ++l)
        for (auto f : {LoraFactor::A, LoraFactor::B}) {
            auto& x = dst.layers[l].factor(f);
            const auto& y = src.layers[l].factor(f);
            for (std::size_t i = 0; i < x.size(); ++i)
                x[i] = static_cast<float>(static_cast<double>(x[i]) + weight * static_cast<double>(y[i]));
        }
}

void RankSupport::check(const Adapter& shape) const {
    if (kept.size() != shape.layers.size())
        throw std::invalid_argument("rank support: " + std::to_string(kept.size()) + " kept lists for " +
                                    std::to_string(shape.layers.size()) + " adapted layers");
    for (std::size_t l = 0; l < kept.size(); ++l) {
        const auto& layer = shape.layers[l];
        for (std::size_t j = 0; j < kept[l].size(); ++j) {
            const auto i = kept[l][j];
            if (i < 0 || i >= layer.rank)
                throw std::invalid_argument("rank support: layer '" + layer.layer + "' keeps component " +
                                            std::to_string(i) + ", outside [0, " + std::to_string(layer.rank) + ")");
            if (j > 0 && kept[l][j - 1] >= i)
                throw std::invalid_argument("rank support: layer '" + layer.layer +
                                            "': kept components must be ascending and distinct");
        }
    }
}

std::int64_t RankSupport::kept_count() const {
    std::int64_t n = 0;
    for (const auto& k : kept)
        n += static_cast<std::int64_t>(k.size());
    return n;
}

RankSupport full_support(const Adapter& shape) {
    RankSupport s;
    for (const auto& l : shape.layers) {
        std::vector<std::int64_t> all(static_cast<std::size_t>(l.rank));
        for (std::int64_t i = 0; i < l.rank; ++i)
            all[static_cast<std::size_t>(i)] = i;
        s.kept.push_back(std::move(all));
    }
    return s;
}

namespace {
std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
}  // namespace

std::uint64_t mix_seed(std::uint64_t base, std::uint64_t a, std::uint64_t b, std::uint64_t c) {
    std::uint64_t h = splitmix64(base ^ 0x5fed10a5eedull);
    h = splitmix64(h ^ a);
    h = splitmix64(h ^ b);
    return splitmix64(h ^ c);
}

}  // namespace fedlora::learn
