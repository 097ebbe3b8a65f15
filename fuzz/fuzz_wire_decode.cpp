// libFuzzer target: fedlora::wire::decode on arbitrary bytes.
//
// Properties checked on every input, besides the sanitizers' (no out-of-bounds access, no undefined behaviour, no
// leak, no runaway allocation):
//   1. decode either returns a message or throws WireError; any other exception is a finding;
//   2. a message decode accepts re-encodes to exactly the input bytes (the format has one encoding per message);
//   3. the same holds under tight Limits, which must reject, never misparse, and with no limits at all, where
//      every size must still be bounded by the input (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch a
//      runaway allocation).
// Random bytes rarely carry two valid CRC-32s, so each input is also decoded a second time with body_len and both
// checksums rewritten to match: that copy reaches the tensor table parser at every mutation.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fedlora/wire/message.h"

using namespace fedlora::wire;

namespace {

[[noreturn]] void finding(const char* what, std::size_t size) {
    std::fprintf(stderr, "fuzz_wire_decode: %s (input of %zu bytes)\n", what, size);
    std::abort();
}

void check(const std::uint8_t* data, std::size_t size, const Limits& limits) {
    Message m;
    try {
        m = decode(data, size, limits);
    } catch (const WireError&) {
        return;  // a refusal with a reason: the expected outcome for most inputs
    }
    // Outside the try: encode must not throw for a message decode produced.
    const auto again = encode(m);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0)
        finding("an accepted message does not re-encode to its input bytes", size);
    if (size > limits.max_message_bytes || m.tensors.size() > limits.max_tensors)
        finding("a message beyond the limits was accepted", size);
    for (const auto& t : m.tensors) {
        if (t.name.size() > limits.max_name_len || t.shape.size() > limits.max_ndim)
            finding("an accepted tensor breaks the limits", size);
        // The element count times the element size, without wrapping around (a zero dimension makes it 0):
        // equal to the bytes the tensor carries.
        std::uint64_t bytes = dtype_size(t.dtype);
        bool empty = false;
        for (auto d : t.shape)
            empty = empty || d == 0;
        for (auto d : t.shape)
            if (!empty && __builtin_mul_overflow(bytes, d, &bytes))
                finding("an accepted tensor's shape overflows 64 bits", size);
        if (empty)
            bytes = 0;
        if (bytes != t.data.size())
            finding("an accepted tensor's data does not match its shape", size);
    }
}

void check_with_limits(const std::uint8_t* data, std::size_t size) {
    check(data, size, Limits{});
    Limits tight;
    tight.max_message_bytes = 1024;
    tight.max_tensors = 3;
    tight.max_name_len = 8;
    tight.max_ndim = 2;
    check(data, size, tight);
    // A caller may lift the limits altogether; allocation must still be bounded by the input.
    Limits none;
    none.max_message_bytes = SIZE_MAX;
    none.max_tensors = SIZE_MAX;
    none.max_name_len = SIZE_MAX;
    none.max_ndim = SIZE_MAX;
    check(data, size, none);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    check_with_limits(data, size);
    if (size < kHeaderSize + kTrailerSize)
        return 0;
    // The same bytes with body_len and both checksums made consistent.
    std::vector<std::uint8_t> fixed(data, data + size);
    const std::uint64_t body_len = size - kHeaderSize - kTrailerSize;
    std::memcpy(fixed.data() + 40, &body_len, sizeof body_len);
    const std::uint32_t header_crc = crc32(fixed.data(), kHeaderSize - 4);
    std::memcpy(fixed.data() + kHeaderSize - 4, &header_crc, sizeof header_crc);
    const std::uint32_t body_crc = crc32(fixed.data() + kHeaderSize, body_len);
    std::memcpy(fixed.data() + size - kTrailerSize, &body_crc, sizeof body_crc);
    check_with_limits(fixed.data(), fixed.size());
    return 0;
}
