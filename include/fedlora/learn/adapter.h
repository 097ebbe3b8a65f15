// LoRA adapters as plain data, for the parts of the learning layer that need no LibTorch: aggregation rules
// (aggregate.h), SOFT's rank selection and error figures (soft.h), checkpoints (checkpoint.h) and whatever carries
// an update to the radio (the phy codec sums float vectors).
//
// An adapted layer holds A (rank × in) and B (out × rank), both float32 and row-major, i.e. exactly the tensors
// "<layer>.lora_A" and "<layer>.lora_B" of models.h (the PEFT convention in both weight layouts). ΔW = scaling·BA;
// the figures in this layer are on the factor product BA (scaling = alpha / rank is not applied).
// An Adapter lists its layers in model order; the same type holds an update (after − before) of an adapter.
//
// Conversions to and from a model live in train.h, to and from tensors in checkpoint.h.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fedlora::learn {

enum class LoraFactor { A, B };
const char* to_string(LoraFactor f);  // "lora_A", "lora_B"

struct LoraLayerFactors {
    std::string layer;  // dotted layer name, e.g. "blocks.0.attn.qkv"
    std::int64_t rank = 0;
    std::int64_t in = 0;
    std::int64_t out = 0;
    std::vector<float> A;  // rank × in, row-major: A[i·in + j]
    std::vector<float> B;  // out × rank, row-major: B[o·rank + i]

    // Zero-filled factors of the given shape.
    static LoraLayerFactors zeros(std::string layer, std::int64_t rank, std::int64_t in, std::int64_t out);

    std::vector<float>& factor(LoraFactor f) { return f == LoraFactor::A ? A : B; }
    const std::vector<float>& factor(LoraFactor f) const { return f == LoraFactor::A ? A : B; }
    std::string tensor_name(LoraFactor f) const { return layer + "." + to_string(f); }  // "<layer>.lora_A"
    // Throws std::invalid_argument unless rank, in, out >= 1 and the vectors have rank·in and out·rank elements.
    void check() const;
};

struct Adapter {
    std::vector<LoraLayerFactors> layers;  // model order

    bool empty() const { return layers.empty(); }
    std::int64_t numel() const;  // Σ (rank·in + out·rank)
    // Same layer names, ranks, in and out, in the same order.
    bool same_shape(const Adapter& other) const;
    // Throws std::invalid_argument naming `what` and the first difference unless same_shape(other).
    void check_same_shape(const Adapter& other, const std::string& what) const;
    // Index of a layer by name, -1 when absent.
    std::int64_t find(const std::string& layer) const;
    Adapter zeros_like() const;
};

// after − before (same shapes; throws std::invalid_argument otherwise).
Adapter adapter_difference(const Adapter& after, const Adapter& before);
// dst += weight · src (same shapes), accumulated in double per element and rounded once.
void adapter_add_scaled(Adapter& dst, const Adapter& src, double weight);

// The rank components kept per layer (SOFT): kept[l] lists, ascending and without duplicates, the indices i of
// the columns b_i of B and rows a_i of A of layer l that are transmitted. A support is COMMON to every client of
// a round, so that all of them put the same coordinates on the same subcarriers.
struct RankSupport {
    std::vector<std::vector<std::int64_t>> kept;
    // Throws std::invalid_argument unless there is one list per layer of `shape`, ascending, in [0, rank).
    void check(const Adapter& shape) const;
    std::int64_t kept_count() const;  // Σ |kept[l]|
};
// Every rank component of every layer.
RankSupport full_support(const Adapter& shape);

// Deterministic seed derivation (splitmix64 finaliser chained over the parts): different (base, parts) give
// unrelated seeds. Used for per-client, per-round mini-batch and dropout seeds, FFA's shared A and seeded supports.
std::uint64_t mix_seed(std::uint64_t base, std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0);

}  // namespace fedlora::learn
