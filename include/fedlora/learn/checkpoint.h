// Federated checkpoints: everything a run needs to resume bit for bit — the round, the global adapter, every
// client's own adapter and optimiser state, every RNG state (LibTorch's default CPU generator and named
// std::mt19937_64 engines) and an opaque blob for the controller layer.
//
// File format: a safetensors file (safetensors.h), written by save_safetensors, i.e. atomically (temporary file in
// the destination directory, fsync, rename, fsync of the directory): readers and crashes see the previous file or
// the new one, never a mix, and a failed save leaves the previous file untouched. Tensors:
//   global/<layer>.lora_A|lora_B                    the global adapter (F32)
//   client/<i>/<layer>.lora_A|lora_B                client i's own adapter (F32; absent when it has none)
//   client/<i>/opt/<name>                           client i's optimiser state tensors
//   rng/torch                                       the default CPU generator's state (U8)
//   controller                                      the controller blob (U8)
// Metadata: "fedlora.checkpoint.version" (kCheckpointVersion), "fedlora.checksum" ("crc32:<8 hex>" over every
// other metadata entry and every tensor's name, dtype, shape and bytes), "round", "rule", layer orders, client
// ids and optimiser kinds, "engine.<name>" (the standard textual state of each std::mt19937_64) and "info.<key>".
//
// load_checkpoint validates the whole file (safetensors structure, checksum, version, every field and shape) before
// returning; it changes no global state, so a refused file leaves nothing half-loaded. Errors are CheckpointError
// naming the file and the problem (missing file, unsupported version, corrupt contents).
// This header includes only <ATen/core/Tensor.h>.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedlora/learn/adapter.h"
#include "fedlora/learn/safetensors.h"

namespace fedlora::learn {

class CheckpointError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

inline constexpr int kCheckpointVersion = 1;

// An optimiser's per-parameter state, detached from any optimiser object (see train.h, which fills and installs
// it). kind "adamw": "<param>.step" (int64 scalar), "<param>.exp_avg", "<param>.exp_avg_sq"; kind "sgd":
// "<param>.momentum_buffer" (only with momentum). Empty kind: no state yet (a fresh optimiser).
struct OptimizerState {
    std::string kind;
    NamedTensors tensors;
    bool empty() const { return kind.empty(); }
};

struct ClientState {
    std::int64_t id = 0;
    Adapter adapter;           // the client's own adapter (fedsa keeps its B here); may be empty
    OptimizerState optimizer;  // may be empty
};

struct Checkpoint {
    std::int64_t round = 0;  // rounds completed
    std::string rule;        // aggregation rule name
    Adapter global;
    std::vector<ClientState> clients;               // ids unique
    at::Tensor torch_rng;                           // uint8 state of the default CPU generator; undefined: none
    std::map<std::string, std::mt19937_64> engines;  // named engines (names: [A-Za-z0-9_.-]+)
    std::string controller_state;                   // opaque bytes (e.g. a JSON text)
    std::map<std::string, std::string> info;        // free-form strings (keys as engine names)
};

// Throws CheckpointError (nothing written) for an invalid checkpoint (bad adapter shapes, duplicate client ids,
// bad names, a torch_rng that is not a 1-D uint8 tensor), or an I/O failure (the previous file survives).
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);
Checkpoint load_checkpoint(const std::string& path);

// The default CPU generator's state, and its restoration (the state's size is checked first).
at::Tensor torch_rng_state();
void set_torch_rng_state(const at::Tensor& state);

// Adapter <-> tensors "<prefix><layer>.lora_A" / "<prefix><layer>.lora_B" (float32 CPU tensors owning their data).
NamedTensors adapter_to_tensors(const Adapter& adapter, const std::string& prefix = "");
// Rebuilds an adapter from tensors, layers in the given order; every named tensor must exist, be 2-D and agree on
// the rank. Floating tensors of any dtype are converted to float32. Throws std::invalid_argument naming the tensor.
Adapter adapter_from_tensors(const std::map<std::string, at::Tensor>& tensors, const std::vector<std::string>& layers,
                             const std::string& prefix = "");

}  // namespace fedlora::learn
