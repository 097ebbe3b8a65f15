#include "fedlora/wire/message.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <limits>

namespace fedlora::wire {

namespace {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559, "IEEE-754 float required");

// The format is little-endian; this build supports little-endian hosts only (checked at compile time).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "fedlora_wire assumes a little-endian host");

std::array<std::uint32_t, 256> make_crc_table() {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k)
            c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
        t[i] = c;
    }
    return t;
}

class Writer {
public:
    explicit Writer(std::vector<std::uint8_t>& out) : out_(out) {}
    template <typename T>
    void put(T v) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
        out_.insert(out_.end(), p, p + sizeof(T));
    }
    void bytes(const void* p, std::size_t n) {
        const auto* b = static_cast<const std::uint8_t*>(p);
        out_.insert(out_.end(), b, b + n);
    }

private:
    std::vector<std::uint8_t>& out_;
};

class Reader {
public:
    Reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
    template <typename T>
    T get(const char* field) {
        need(sizeof(T), field);
        T v;
        std::memcpy(&v, p_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    const std::uint8_t* take(std::size_t n, const char* field) {
        need(n, field);
        const auto* r = p_ + pos_;
        pos_ += n;
        return r;
    }
    std::size_t remaining() const { return n_ - pos_; }

private:
    void need(std::size_t k, const char* field) const {
        if (k > n_ - pos_)
            throw WireError(std::string("truncated message: field '") + field + "' needs " + std::to_string(k) +
                            " bytes, " + std::to_string(n_ - pos_) + " left");
    }
    const std::uint8_t* p_;
    std::size_t n_;
    std::size_t pos_ = 0;
};

bool valid_dtype(std::uint8_t d) { return d >= 1 && d <= 7; }

constexpr std::uint64_t kMinTableEntry = 2 + 1 + 1;  // name_len, dtype, ndim: a scalar with an empty name

}  // namespace

std::uint32_t crc32(const std::uint8_t* data, std::size_t size, std::uint32_t crc) {
    static const auto table = make_crc_table();
    crc = ~crc;
    for (std::size_t i = 0; i < size; ++i)
        crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

const char* to_string(MessageType t) {
    switch (t) {
        case MessageType::Hello: return "HELLO";
        case MessageType::Heartbeat: return "HEARTBEAT";
        case MessageType::RoundStart: return "ROUND_START";
        case MessageType::UpdateRms: return "UPDATE_RMS";
        case MessageType::PowerPlan: return "POWER_PLAN";
        case MessageType::Update: return "UPDATE";
        case MessageType::Aggregate: return "AGGREGATE";
        case MessageType::CsiReport: return "CSI_REPORT";
        case MessageType::RoundEnd: return "ROUND_END";
        case MessageType::Error: return "ERROR";
        case MessageType::Bye: return "BYE";
    }
    return "UNKNOWN";
}

bool is_known(std::uint16_t type) { return type >= 1 && type <= 11; }

MessageType message_type_from_string(const std::string& name) {
    for (std::uint16_t t = 1; t <= 11; ++t)
        if (name == to_string(static_cast<MessageType>(t)))
            return static_cast<MessageType>(t);
    throw WireError("unknown message type name '" + name + "'");
}

std::size_t dtype_size(DType d) {
    switch (d) {
        case DType::F32: return 4;
        case DType::F64: return 8;
        case DType::I32: return 4;
        case DType::I64: return 8;
        case DType::U8: return 1;
        case DType::C64: return 8;
        case DType::C128: return 16;
    }
    throw WireError("unknown dtype code " + std::to_string(static_cast<int>(d)));
}

const char* to_string(DType d) {
    switch (d) {
        case DType::F32: return "f32";
        case DType::F64: return "f64";
        case DType::I32: return "i32";
        case DType::I64: return "i64";
        case DType::U8: return "u8";
        case DType::C64: return "c64";
        case DType::C128: return "c128";
    }
    return "unknown";
}

std::uint64_t Tensor::numel() const {
    std::uint64_t n = 1;
    for (auto d : shape)
        n *= d;
    return n;
}

const Tensor* Message::find(const std::string& name) const {
    for (const auto& t : tensors)
        if (t.name == name)
            return &t;
    return nullptr;
}

std::vector<std::uint8_t> encode(const Message& msg) {
    std::vector<std::uint8_t> body;
    Writer bw(body);
    for (const auto& t : msg.tensors) {
        if (t.name.size() > std::numeric_limits<std::uint16_t>::max())
            throw WireError("tensor name of " + std::to_string(t.name.size()) + " bytes is too long");
        if (t.shape.size() > std::numeric_limits<std::uint8_t>::max())
            throw WireError("tensor '" + t.name + "' has too many dimensions");
        if (t.numel() * dtype_size(t.dtype) != t.data.size())
            throw WireError("tensor '" + t.name + "': " + std::to_string(t.data.size()) +
                            " data bytes do not match its shape and dtype (" +
                            std::to_string(t.numel() * dtype_size(t.dtype)) + " expected)");
        bw.put<std::uint16_t>(static_cast<std::uint16_t>(t.name.size()));
        bw.bytes(t.name.data(), t.name.size());
        bw.put<std::uint8_t>(static_cast<std::uint8_t>(t.dtype));
        bw.put<std::uint8_t>(static_cast<std::uint8_t>(t.shape.size()));
        for (auto d : t.shape)
            bw.put<std::uint64_t>(d);
    }
    for (const auto& t : msg.tensors)
        bw.bytes(t.data.data(), t.data.size());

    std::vector<std::uint8_t> out;
    out.reserve(kHeaderSize + body.size() + kTrailerSize);
    Writer w(out);
    w.put<std::uint32_t>(kMagic);
    w.put<std::uint16_t>(kVersion);
    w.put<std::uint16_t>(static_cast<std::uint16_t>(msg.type));
    w.put<std::uint64_t>(msg.run_id);
    w.put<std::uint32_t>(msg.round);
    w.put<std::uint32_t>(msg.client_id);
    w.put<std::uint64_t>(msg.seq);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(msg.tensors.size()));
    w.put<std::uint32_t>(0);  // flags: reserved
    w.put<std::uint64_t>(body.size());
    w.put<std::uint32_t>(crc32(out.data(), out.size()));
    if (out.size() != kHeaderSize)
        throw std::logic_error("fedlora_wire: header layout is " + std::to_string(out.size()) + " bytes");
    w.bytes(body.data(), body.size());
    w.put<std::uint32_t>(crc32(body.data(), body.size()));
    return out;
}

Message decode(const std::uint8_t* data, std::size_t size, const Limits& limits) {
    if (size > limits.max_message_bytes)
        throw WireError("message of " + std::to_string(size) + " bytes exceeds the limit of " +
                        std::to_string(limits.max_message_bytes));
    if (size < kHeaderSize + kTrailerSize)
        throw WireError("truncated message: " + std::to_string(size) + " bytes, a header alone is " +
                        std::to_string(kHeaderSize + kTrailerSize));
    Reader r(data, size);
    const auto magic = r.get<std::uint32_t>("magic");
    if (magic != kMagic)
        throw WireError("bad magic 0x" + [&] {
            char b[16];
            std::snprintf(b, sizeof b, "%08x", magic);
            return std::string(b);
        }() + " (not a fedlora message)");
    const auto version = r.get<std::uint16_t>("version");
    if (version != kVersion)
        throw WireError("unsupported version " + std::to_string(version) + " (this build speaks " +
                        std::to_string(kVersion) + ")");
    const auto type = r.get<std::uint16_t>("type");
    Message m;
    m.run_id = r.get<std::uint64_t>("run_id");
    m.round = r.get<std::uint32_t>("round");
    m.client_id = r.get<std::uint32_t>("client_id");
    m.seq = r.get<std::uint64_t>("seq");
    const auto n_tensors = r.get<std::uint32_t>("n_tensors");
    const auto flags = r.get<std::uint32_t>("flags");
    const auto body_len = r.get<std::uint64_t>("body_len");
    const auto header_crc = r.get<std::uint32_t>("header_crc");
    if (crc32(data, kHeaderSize - 4) != header_crc)
        throw WireError("header checksum mismatch");
    if (!is_known(type))
        throw WireError("unknown message type " + std::to_string(type));
    m.type = static_cast<MessageType>(type);
    if (flags != 0)
        throw WireError("unknown flags " + std::to_string(flags) + " (reserved, must be 0 in version 1)");
    if (body_len != size - kHeaderSize - kTrailerSize)
        throw WireError("body_len " + std::to_string(body_len) + " does not match the " +
                        std::to_string(size - kHeaderSize - kTrailerSize) + " body bytes received");
    const std::uint8_t* body = data + kHeaderSize;
    std::uint32_t body_crc;
    std::memcpy(&body_crc, data + size - kTrailerSize, 4);
    if (crc32(body, body_len) != body_crc)
        throw WireError("body checksum mismatch");
    if (n_tensors > limits.max_tensors)
        throw WireError("n_tensors " + std::to_string(n_tensors) + " exceeds the limit of " +
                        std::to_string(limits.max_tensors));
    // Whatever the limits, the table cannot hold more entries than the body has room for: this bounds the
    // allocation below by the bytes received.
    if (n_tensors > body_len / kMinTableEntry)
        throw WireError("n_tensors " + std::to_string(n_tensors) + " cannot fit in a body of " +
                        std::to_string(body_len) + " bytes (a table entry takes at least " +
                        std::to_string(kMinTableEntry) + ")");

    // Pass 1: parse the table and check every size, without allocating tensor storage.
    struct Entry {
        const char* name;
        std::size_t name_len;
        DType dtype;
        std::vector<std::uint64_t> shape;
        std::uint64_t nbytes;
    };
    Reader br(body, body_len);
    std::vector<Entry> entries;
    entries.reserve(n_tensors);  // bounded by max_tensors and by the body size, both checked above
    std::uint64_t total = 0;
    for (std::uint32_t i = 0; i < n_tensors; ++i) {
        Entry e;
        e.name_len = br.get<std::uint16_t>("name_len");
        if (e.name_len > limits.max_name_len)
            throw WireError("tensor " + std::to_string(i) + ": name_len " + std::to_string(e.name_len) +
                            " exceeds the limit of " + std::to_string(limits.max_name_len));
        e.name = reinterpret_cast<const char*>(br.take(e.name_len, "name"));
        const auto dt = br.get<std::uint8_t>("dtype");
        if (!valid_dtype(dt))
            throw WireError("tensor " + std::to_string(i) + ": unknown dtype code " + std::to_string(dt));
        e.dtype = static_cast<DType>(dt);
        const auto ndim = br.get<std::uint8_t>("ndim");
        if (ndim > limits.max_ndim)
            throw WireError("tensor " + std::to_string(i) + ": ndim " + std::to_string(ndim) +
                            " exceeds the limit of " + std::to_string(limits.max_ndim));
        bool empty = false;
        for (std::uint8_t k = 0; k < ndim; ++k) {
            e.shape.push_back(br.get<std::uint64_t>("dim"));
            empty = empty || e.shape.back() == 0;
        }
        // A zero dimension makes a tensor without data, whatever the others. Otherwise the element count stays at
        // most body_len, so numel * dtype_size below cannot wrap around.
        std::uint64_t numel = empty ? 0 : 1;
        for (std::size_t k = 0; k < e.shape.size() && !empty; ++k) {
            const auto d = e.shape[k];
            if (numel > body_len / d)
                throw WireError("tensor " + std::to_string(i) + " ('" + std::string(e.name, e.name_len) +
                                "'): dimension " + std::to_string(k) + " = " + std::to_string(d) +
                                " makes the shape larger than the " + std::to_string(body_len) + "-byte body");
            numel *= d;
        }
        e.nbytes = numel * dtype_size(e.dtype);
        if (e.nbytes > body_len || total + e.nbytes > body_len)
            throw WireError("tensor " + std::to_string(i) + " ('" + std::string(e.name, e.name_len) + "'): " +
                            std::to_string(e.nbytes) + " data bytes exceed the body");
        total += e.nbytes;
        entries.push_back(std::move(e));
    }
    if (total != br.remaining())
        throw WireError("tensor data is " + std::to_string(br.remaining()) + " bytes, the table declares " +
                        std::to_string(total));
    // Pass 2: copy.
    m.tensors.reserve(entries.size());
    for (auto& e : entries) {
        Tensor t;
        t.name.assign(e.name, e.name_len);
        t.dtype = e.dtype;
        t.shape = std::move(e.shape);
        const auto* p = br.take(e.nbytes, "tensor data");
        t.data.assign(p, p + e.nbytes);
        m.tensors.push_back(std::move(t));
    }
    return m;
}

Tensor make_f32(std::string name, const std::vector<float>& values, std::vector<std::uint64_t> shape) {
    Tensor t;
    t.name = std::move(name);
    t.dtype = DType::F32;
    t.shape = shape.empty() ? std::vector<std::uint64_t>{values.size()} : std::move(shape);
    if (t.numel() != values.size())
        throw WireError("make_f32('" + t.name + "'): " + std::to_string(values.size()) +
                        " values do not fill the shape");
    t.data.resize(values.size() * sizeof(float));
    std::memcpy(t.data.data(), values.data(), t.data.size());
    return t;
}

std::vector<float> as_f32(const Tensor& t) {
    if (t.dtype != DType::F32)
        throw WireError("tensor '" + t.name + "' is " + to_string(t.dtype) + ", f32 expected");
    std::vector<float> v(t.data.size() / sizeof(float));
    std::memcpy(v.data(), t.data.data(), v.size() * sizeof(float));
    return v;
}

}  // namespace fedlora::wire
