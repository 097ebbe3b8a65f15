// The framed binary message format of the control and data planes (docs/wire.md).
//
// A message is a fixed 52-byte header (magic, version, type, run id, round, client id, sequence, tensor count,
// reserved flags, body length, header CRC-32), a body (tensor table, then the tensors' bytes in table order) and a trailing
// CRC-32 of the body. All integers are little-endian. Every size is checked against Limits before anything is
// allocated; no field carries code. (run_id, round, client_id, seq) identifies a message, so a receiver can drop
// duplicates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fedlora::wire {

inline constexpr std::uint32_t kMagic = 0x57524C46;  // "FLRW" in little-endian byte order
inline constexpr std::uint16_t kVersion = 1;
inline constexpr std::size_t kHeaderSize = 52;
inline constexpr std::size_t kTrailerSize = 4;

enum class MessageType : std::uint16_t {
    Hello = 1,         // client -> server: join
    Heartbeat = 2,     // either direction: liveness
    RoundStart = 3,    // server -> clients: round id, global adapter, rank, sparsity, support, scale
    UpdateRms = 4,     // client -> server: RMS of the local update
    PowerPlan = 5,     // server -> client: common scale and power plan
    Update = 6,        // client -> radio: the update vector to transmit
    Aggregate = 7,     // radio -> server: the received (estimated) sum
    CsiReport = 8,     // radio -> controller: per device, per subcarrier channel and SNR
    RoundEnd = 9,      // server -> clients: round result
    Error = 10,        // either direction: a refused message, with a reason
    Bye = 11,          // either direction: leaving
};
const char* to_string(MessageType t);
bool is_known(std::uint16_t type);
// Inverse of to_string ("UPDATE" -> MessageType::Update); throws WireError naming the unknown name.
MessageType message_type_from_string(const std::string& name);

// C64: interleaved f32 (real, imaginary); C128: interleaved f64 (real, imaginary).
enum class DType : std::uint8_t { F32 = 1, F64 = 2, I32 = 3, I64 = 4, U8 = 5, C64 = 6, C128 = 7 };
std::size_t dtype_size(DType d);
const char* to_string(DType d);

struct Tensor {
    std::string name;
    DType dtype = DType::F32;
    std::vector<std::uint64_t> shape;  // empty: a scalar
    std::vector<std::uint8_t> data;    // little-endian element bytes, row-major

    std::uint64_t numel() const;
};

struct Message {
    MessageType type = MessageType::Heartbeat;
    std::uint64_t run_id = 0;
    std::uint32_t round = 0;
    std::uint32_t client_id = 0;
    std::uint64_t seq = 0;
    std::vector<Tensor> tensors;

    const Tensor* find(const std::string& name) const;
};

// Bounds a decoder enforces before allocating.
struct Limits {
    std::size_t max_message_bytes = 512u << 20;  // 512 MiB
    std::size_t max_tensors = 4096;
    std::size_t max_name_len = 256;
    std::size_t max_ndim = 8;
};

// Every decoding failure: names the field and the bad value.
class WireError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

std::vector<std::uint8_t> encode(const Message& msg);
Message decode(const std::uint8_t* data, std::size_t size, const Limits& limits = {});
inline Message decode(const std::vector<std::uint8_t>& buf, const Limits& limits = {}) {
    return decode(buf.data(), buf.size(), limits);
}

// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), the checksum zlib.crc32 computes.
std::uint32_t crc32(const std::uint8_t* data, std::size_t size, std::uint32_t crc = 0);

// Helpers to build and read float tensors.
Tensor make_f32(std::string name, const std::vector<float>& values, std::vector<std::uint64_t> shape = {});
std::vector<float> as_f32(const Tensor& t);

}  // namespace fedlora::wire
