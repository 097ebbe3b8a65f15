// Safetensors reader and writer (the Hugging Face checkpoint format: GPT-2 / ViT tensor names load as they are).
//
// File layout: an 8-byte little-endian unsigned header length N, N bytes of UTF-8 JSON, then the data buffer.
// The JSON is an object {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...} with an
// optional "__metadata__": {"<key>": "<string>", ...}; offsets are relative to the start of the data buffer.
//
// Every file is validated before any tensor is allocated: header length against the file size and a 100 MiB
// limit, JSON syntax and types, duplicate names, dtypes, shape × element size against the offset span, offsets
// inside the buffer, ranges neither overlapping nor leaving gaps, no trailing bytes, BOOL bytes 0 or 1. Every
// failure is a SafetensorsError whose message names the file, the tensor and the problem.
//
// This header includes only <ATen/core/Tensor.h> (about 1 s to compile), not <torch/torch.h>.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fedlora::learn {

class SafetensorsError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class SafetensorsDtype { BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64 };

const char* to_string(SafetensorsDtype d);
std::optional<SafetensorsDtype> parse_safetensors_dtype(std::string_view s);  // "F32" -> F32; unknown -> nullopt
std::size_t element_size(SafetensorsDtype d);

// Largest header accepted (the JSON part), as a guard against hostile length fields.
inline constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100ull << 20;

struct SafetensorsTensorInfo {
    std::string name;
    SafetensorsDtype dtype = SafetensorsDtype::F32;
    std::vector<std::int64_t> shape;  // empty: a scalar (one element)
    std::uint64_t begin = 0;          // byte offsets into the data buffer, [begin, end)
    std::uint64_t end = 0;
    std::uint64_t numel() const;
};

struct SafetensorsHeader {
    std::vector<SafetensorsTensorInfo> tensors;  // in data-buffer order
    std::map<std::string, std::string> metadata;
    std::uint64_t header_bytes = 0;  // N, the JSON length including any padding
    std::uint64_t data_bytes = 0;    // size of the data buffer
    const SafetensorsTensorInfo* find(std::string_view name) const;  // nullptr when absent
};

// Parses and validates a header's JSON text against a data buffer of data_bytes bytes. `origin` (a path or a
// description) starts every error message.
SafetensorsHeader parse_safetensors_header(std::string_view json, std::uint64_t data_bytes,
                                           const std::string& origin = "safetensors");

// Reads and validates only the header of a file (no tensor data is read).
SafetensorsHeader read_safetensors_header(const std::string& path);

struct SafetensorsLoadOptions {
    bool half_to_float = true;  // F16 and BF16 become float32 tensors (exact); false keeps kHalf / kBFloat16
};

struct SafetensorsContents {
    std::map<std::string, at::Tensor> tensors;  // contiguous CPU tensors, requires_grad = false
    std::map<std::string, std::string> metadata;
};

// Loads every tensor of a file. Tensor data is read straight into the tensors' storage.
SafetensorsContents load_safetensors(const std::string& path, const SafetensorsLoadOptions& options = {});
// Same from an in-memory image of a file (e.g. a message payload).
SafetensorsContents load_safetensors_bytes(std::string_view bytes, const SafetensorsLoadOptions& options = {},
                                           const std::string& origin = "safetensors buffer");

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
using TensorMetadata = std::map<std::string, std::string>;

// Writes tensors (in the given order; a std::map writes in name order) and metadata ATOMICALLY: to a temporary
// file in the destination's directory, fsync, rename over `path`, fsync the directory. Readers see the old file
// or the new one, never a partial one; on error the temporary file is removed and `path` is untouched.
// Accepted dtypes: float32/64, float16, bfloat16, int64/32/16/8, uint8, bool; tensors may live on any device and
// be non-contiguous (they are copied to contiguous CPU memory). Names must be unique, non-empty, valid UTF-8 and
// not "__metadata__". The header is padded with spaces to a multiple of 8 bytes so that the data is aligned.
void save_safetensors(const std::string& path, const NamedTensors& tensors, const TensorMetadata& metadata = {});
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const TensorMetadata& metadata = {});
// The bytes save_safetensors would write.
std::string serialize_safetensors(const NamedTensors& tensors, const TensorMetadata& metadata = {});

}  // namespace fedlora::learn
