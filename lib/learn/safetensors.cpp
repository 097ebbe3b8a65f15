#include "fedlora/learn/safetensors.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; this implementation copies tensor bytes as they are");

namespace fedlora::learn {
namespace {

struct DtypeEntry {
    SafetensorsDtype dtype;
    const char* name;
    std::size_t size;
    at::ScalarType scalar;
};

constexpr DtypeEntry kDtypes[] = {
    {SafetensorsDtype::BOOL, "BOOL", 1, at::kBool},    {SafetensorsDtype::U8, "U8", 1, at::kByte},
    {SafetensorsDtype::I8, "I8", 1, at::kChar},        {SafetensorsDtype::I16, "I16", 2, at::kShort},
    {SafetensorsDtype::I32, "I32", 4, at::kInt},       {SafetensorsDtype::I64, "I64", 8, at::kLong},
    {SafetensorsDtype::F16, "F16", 2, at::kHalf},      {SafetensorsDtype::BF16, "BF16", 2, at::kBFloat16},
    {SafetensorsDtype::F32, "F32", 4, at::kFloat},     {SafetensorsDtype::F64, "F64", 8, at::kDouble},
};

const DtypeEntry& entry(SafetensorsDtype d) {
    for (const auto& e : kDtypes)
        if (e.dtype == d)
            return e;
    throw SafetensorsError("safetensors: invalid dtype enumerator");
}

// A name as it appears in messages: quoted, control and non-ASCII bytes escaped, long names shortened.
std::string name_text(std::string_view s) {
    static const char* hex = "0123456789abcdef";
    std::string out = "'";
    const std::size_t limit = 120;
    for (std::size_t i = 0; i < s.size() && i < limit; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    if (s.size() > limit)
        out += "...";
    return out + "'";
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

std::string range_text(std::uint64_t b, std::uint64_t e) {
    return "[" + std::to_string(b) + ", " + std::to_string(e) + "]";
}

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
    throw SafetensorsError(origin + ": " + what);
}

std::string errno_text(int err) { return std::strerror(err); }

// ---- header parsing ---------------------------------------------------------------------------------------

std::uint64_t json_uint(const nlohmann::json& v, const std::string& origin, const std::string& what) {
    if (!v.is_number_unsigned())
        fail(origin, what + " is " + v.dump() + ", not a non-negative integer");
    return v.get<std::uint64_t>();
}

SafetensorsTensorInfo parse_tensor_entry(const std::string& name, const nlohmann::json& v, std::uint64_t data_bytes,
                                         const std::string& origin) {
    const std::string who = "tensor " + name_text(name);
    if (name.empty())
        fail(origin, "a tensor has an empty name");
    if (!v.is_object())
        fail(origin, who + ": entry is " + std::string(v.type_name()) + ", not a JSON object");
    for (const auto& [field, value] : v.items()) {
        (void)value;
        if (field != "dtype" && field != "shape" && field != "data_offsets")
            fail(origin, who + ": unknown field " + name_text(field));
    }
    for (const char* field : {"dtype", "shape", "data_offsets"})
        if (!v.contains(field))
            fail(origin, who + ": missing field '" + field + "'");

    SafetensorsTensorInfo info;
    info.name = name;
    const auto& dt = v.at("dtype");
    if (!dt.is_string())
        fail(origin, who + ": dtype is " + dt.dump() + ", not a string");
    const auto parsed = parse_safetensors_dtype(dt.get<std::string>());
    if (!parsed)
        fail(origin, who + ": unknown dtype " + name_text(dt.get<std::string>()) +
                         " (supported: BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64)");
    info.dtype = *parsed;

    const auto& sh = v.at("shape");
    if (!sh.is_array())
        fail(origin, who + ": shape is " + sh.dump() + ", not an array");
    std::uint64_t numel = 1;
    bool overflow = false;
    for (std::size_t i = 0; i < sh.size(); ++i) {
        const std::uint64_t d = json_uint(sh[i], origin, who + ": shape[" + std::to_string(i) + "]");
        if (d > static_cast<std::uint64_t>(INT64_MAX))
            fail(origin, who + ": shape[" + std::to_string(i) + "] = " + std::to_string(d) + " is too large");
        info.shape.push_back(static_cast<std::int64_t>(d));
        overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
    }
    std::uint64_t need = 0;
    overflow = overflow || __builtin_mul_overflow(numel, element_size(info.dtype), &need);

    const auto& off = v.at("data_offsets");
    if (!off.is_array() || off.size() != 2)
        fail(origin, who + ": data_offsets is " + off.dump() + ", not an array [begin, end]");
    info.begin = json_uint(off[0], origin, who + ": data_offsets[0]");
    info.end = json_uint(off[1], origin, who + ": data_offsets[1]");
    const std::string offsets = "data_offsets " + range_text(info.begin, info.end);
    if (info.end < info.begin)
        fail(origin, who + ": " + offsets + " end before they begin");
    if (info.end > data_bytes)
        fail(origin, who + ": " + offsets + " are out of range: the data buffer has " + std::to_string(data_bytes) +
                         " bytes");
    if (overflow || need != info.end - info.begin)
        fail(origin, who + ": shape " + shape_text(info.shape) + " of " + to_string(info.dtype) + " needs " +
                         (overflow ? std::string("more than 2^64") : std::to_string(need)) + " bytes but " +
                         offsets + " span " + std::to_string(info.end - info.begin) + " bytes");
    return info;
}

// ---- byte sources -----------------------------------------------------------------------------------------

class ByteSource {
public:
    virtual ~ByteSource() = default;
    virtual std::uint64_t size() const = 0;
    virtual void read(std::uint64_t offset, void* dst, std::size_t n) const = 0;
};

class MemorySource final : public ByteSource {
public:
    explicit MemorySource(std::string_view b) : bytes_(b) {}
    std::uint64_t size() const override { return bytes_.size(); }
    void read(std::uint64_t offset, void* dst, std::size_t n) const override {
        if (n)
            std::memcpy(dst, bytes_.data() + offset, n);  // callers stay inside size() (validated)
    }

private:
    std::string_view bytes_;
};

class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    void reset() {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = -1;
    }
    int release() {
        const int f = fd_;
        fd_ = -1;
        return f;
    }

private:
    int fd_;
};

class FileSource final : public ByteSource {
public:
    explicit FileSource(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
        if (fd_.get() < 0) {
            const int err = errno;
            if (err == ENOENT)
                fail(path, "file not found");
            fail(path, "cannot open: " + errno_text(err));
        }
        struct stat st {};
        if (::fstat(fd_.get(), &st) != 0)
            fail(path, "cannot stat: " + errno_text(errno));
        if (!S_ISREG(st.st_mode))
            fail(path, "is not a regular file");
        size_ = static_cast<std::uint64_t>(st.st_size);
    }
    std::uint64_t size() const override { return size_; }
    void read(std::uint64_t offset, void* dst, std::size_t n) const override {
        auto* p = static_cast<char*>(dst);
        while (n > 0) {
            const ssize_t got = ::pread(fd_.get(), p, n, static_cast<off_t>(offset));
            if (got < 0) {
                if (errno == EINTR)
                    continue;
                fail(path_, "read error at byte " + std::to_string(offset) + ": " + errno_text(errno));
            }
            if (got == 0)
                fail(path_, "unexpected end of file at byte " + std::to_string(offset) +
                                " (the file shrank while being read)");
            p += got;
            n -= static_cast<std::size_t>(got);
            offset += static_cast<std::uint64_t>(got);
        }
    }

private:
    std::string path_;
    Fd fd_;
    std::uint64_t size_ = 0;
};

SafetensorsHeader read_header(const ByteSource& src, const std::string& origin) {
    const std::uint64_t size = src.size();
    if (size < 8)
        fail(origin, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length field");
    unsigned char len[8];
    src.read(0, len, 8);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i)
        n = (n << 8) | len[i];
    if (n > kSafetensorsMaxHeaderBytes)
        fail(origin, "header length " + std::to_string(n) + " bytes exceeds the limit of " +
                         std::to_string(kSafetensorsMaxHeaderBytes) + " bytes (100 MiB)");
    if (n > size - 8)
        fail(origin, "header length " + std::to_string(n) + " bytes is larger than the file allows (" +
                         std::to_string(size) + " bytes in all, so at most " + std::to_string(size - 8) +
                         " bytes of header): the file is truncated or the length is corrupt");
    std::string json(static_cast<std::size_t>(n), '\0');
    src.read(8, json.data(), json.size());
    SafetensorsHeader h = parse_safetensors_header(json, size - 8 - n, origin);
    h.header_bytes = n;
    return h;
}

SafetensorsContents materialise(const SafetensorsHeader& h, const ByteSource& src,
                                const SafetensorsLoadOptions& options, const std::string& origin) {
    SafetensorsContents out;
    out.metadata = h.metadata;
    const std::uint64_t base = 8 + h.header_bytes;
    for (const auto& info : h.tensors) {
        const auto& e = entry(info.dtype);
        at::Tensor t = at::empty(at::IntArrayRef(info.shape), at::TensorOptions().dtype(e.scalar));
        const std::size_t n = static_cast<std::size_t>(info.end - info.begin);
        if (n != static_cast<std::size_t>(t.nbytes()))
            fail(origin, "tensor " + name_text(info.name) + ": internal size mismatch");
        if (n > 0)
            src.read(base + info.begin, t.data_ptr(), n);
        if (info.dtype == SafetensorsDtype::BOOL) {
            const auto* b = static_cast<const unsigned char*>(t.data_ptr());
            for (std::size_t i = 0; i < n; ++i)
                if (b[i] > 1)
                    fail(origin, "tensor " + name_text(info.name) + ": BOOL element " + std::to_string(i) +
                                     " has byte value " + std::to_string(b[i]) + ", not 0 or 1");
        }
        if (options.half_to_float &&
            (info.dtype == SafetensorsDtype::F16 || info.dtype == SafetensorsDtype::BF16))
            t = t.to(at::kFloat);
        out.tensors.emplace(info.name, std::move(t));
    }
    return out;
}

// ---- writing ----------------------------------------------------------------------------------------------

struct Prepared {
    std::string name;
    SafetensorsDtype dtype;
    at::Tensor data;  // contiguous, CPU
    std::uint64_t nbytes;
};

std::vector<Prepared> prepare(const NamedTensors& tensors, const TensorMetadata& metadata) {
    const std::string origin = "save_safetensors";
    std::vector<Prepared> out;
    out.reserve(tensors.size());
    std::set<std::string> names;
    auto utf8_ok = [](const std::string& s) {
        try {
            (void)nlohmann::json(s).dump();
            return true;
        } catch (const nlohmann::json::exception&) {
            return false;
        }
    };
    for (const auto& [name, t] : tensors) {
        const std::string who = "tensor " + name_text(name);
        if (name.empty())
            fail(origin, "a tensor has an empty name");
        if (name == "__metadata__")
            fail(origin, "'__metadata__' is reserved and cannot name a tensor");
        if (!names.insert(name).second)
            fail(origin, "duplicate tensor name " + name_text(name));
        if (!utf8_ok(name))
            fail(origin, who + ": name is not valid UTF-8");
        if (!t.defined())
            fail(origin, who + " is undefined");
        if (t.layout() != at::kStrided)
            fail(origin, who + ": only dense (strided) tensors can be saved");
        std::optional<SafetensorsDtype> dt;
        for (const auto& e : kDtypes)
            if (e.scalar == t.scalar_type())
                dt = e.dtype;
        if (!dt)
            fail(origin, who + ": dtype " + std::string(c10::toString(t.scalar_type())) +
                             " has no safetensors equivalent here");
        at::Tensor c = t.detach().cpu().contiguous();
        out.push_back({name, *dt, c, static_cast<std::uint64_t>(c.nbytes())});
    }
    for (const auto& [k, v] : metadata)
        if (!utf8_ok(k) || !utf8_ok(v))
            fail(origin, "metadata entry " + name_text(k) + " is not valid UTF-8");
    return out;
}

std::string build_header(const std::vector<Prepared>& ts, const TensorMetadata& metadata) {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
        nlohmann::ordered_json m = nlohmann::ordered_json::object();
        for (const auto& [k, v] : metadata)
            m[k] = v;
        h["__metadata__"] = std::move(m);
    }
    std::uint64_t off = 0;
    for (const auto& p : ts) {
        nlohmann::ordered_json e = nlohmann::ordered_json::object();
        e["dtype"] = to_string(p.dtype);
        e["shape"] = p.data.sizes().vec();
        e["data_offsets"] = {off, off + p.nbytes};
        off += p.nbytes;
        h[p.name] = std::move(e);
    }
    std::string s = h.dump();
    s.append((8 - s.size() % 8) % 8, ' ');  // 8 + N is a multiple of 8: data starts aligned
    return s;
}

std::string length_field(std::uint64_t n) {
    std::string b(8, '\0');
    for (int i = 0; i < 8; ++i)
        b[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return b;
}

void write_all(int fd, const void* data, std::size_t n, const std::string& origin) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fail(origin, "write failed: " + errno_text(errno));
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------------------

const char* to_string(SafetensorsDtype d) { return entry(d).name; }

std::size_t element_size(SafetensorsDtype d) { return entry(d).size; }

std::optional<SafetensorsDtype> parse_safetensors_dtype(std::string_view s) {
    for (const auto& e : kDtypes)
        if (s == e.name)
            return e.dtype;
    return std::nullopt;
}

std::uint64_t SafetensorsTensorInfo::numel() const {
    std::uint64_t n = 1;
    for (auto d : shape)
        n *= static_cast<std::uint64_t>(d);
    return n;
}

const SafetensorsTensorInfo* SafetensorsHeader::find(std::string_view name) const {
    for (const auto& t : tensors)
        if (t.name == name)
            return &t;
    return nullptr;
}

SafetensorsHeader parse_safetensors_header(std::string_view text, std::uint64_t data_bytes,
                                           const std::string& origin) {
    if (text.size() > kSafetensorsMaxHeaderBytes)
        fail(origin, "header of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                         std::to_string(kSafetensorsMaxHeaderBytes) + " bytes (100 MiB)");
    // Duplicate top-level keys are an error (nlohmann would silently keep the last one).
    std::set<std::string> seen;
    std::string duplicate;
    nlohmann::json::parser_callback_t cb = [&](int depth, nlohmann::json::parse_event_t ev,
                                               nlohmann::json& parsed) {
        if (ev == nlohmann::json::parse_event_t::key && depth == 1 && duplicate.empty()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (!seen.insert(k).second)
                duplicate = k;
        }
        return true;
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
    } catch (const nlohmann::json::exception& e) {
        fail(origin, std::string("header is not valid JSON: ") + e.what());
    }
    if (!j.is_object())
        fail(origin, "header is JSON " + std::string(j.type_name()) + ", not an object");
    if (!duplicate.empty())
        fail(origin, "duplicate entry " + name_text(duplicate) + " in the header");

    SafetensorsHeader h;
    h.header_bytes = text.size();
    h.data_bytes = data_bytes;
    for (const auto& [key, value] : j.items()) {
        if (key == "__metadata__") {
            if (!value.is_object())
                fail(origin, "__metadata__ is " + std::string(value.type_name()) + ", not an object");
            for (const auto& [mk, mv] : value.items()) {
                if (!mv.is_string())
                    fail(origin, "__metadata__ entry " + name_text(mk) + " is " + std::string(mv.type_name()) +
                                     ", not a string");
                h.metadata.emplace(mk, mv.get<std::string>());
            }
            continue;
        }
        h.tensors.push_back(parse_tensor_entry(key, value, data_bytes, origin));
    }
    std::sort(h.tensors.begin(), h.tensors.end(), [](const auto& a, const auto& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : a.name < b.name;
    });
    // The ranges must tile the buffer exactly: no overlap, no gap, nothing after the last tensor.
    std::uint64_t expect = 0;
    const SafetensorsTensorInfo* prev = nullptr;
    for (const auto& t : h.tensors) {
        const std::string who = "tensor " + name_text(t.name) + " (data_offsets " + range_text(t.begin, t.end) + ")";
        if (t.begin < expect)
            fail(origin, who + " overlaps tensor " + name_text(prev->name) + " (data_offsets " +
                             range_text(prev->begin, prev->end) + ")");
        if (t.begin > expect)
            fail(origin, who + " is not contiguous: bytes " + range_text(expect, t.begin) +
                             " of the data buffer belong to no tensor");
        expect = t.end;
        prev = &t;
    }
    if (expect != data_bytes)
        fail(origin, "trailing bytes: the data buffer has " + std::to_string(data_bytes) +
                         " bytes but the tensors cover only " + std::to_string(expect));
    return h;
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
    FileSource src(path);
    return read_header(src, path);
}

SafetensorsContents load_safetensors(const std::string& path, const SafetensorsLoadOptions& options) {
    FileSource src(path);
    const auto h = read_header(src, path);
    return materialise(h, src, options, path);
}

SafetensorsContents load_safetensors_bytes(std::string_view bytes, const SafetensorsLoadOptions& options,
                                           const std::string& origin) {
    MemorySource src(bytes);
    const auto h = read_header(src, origin);
    return materialise(h, src, options, origin);
}

std::string serialize_safetensors(const NamedTensors& tensors, const TensorMetadata& metadata) {
    const auto prepared = prepare(tensors, metadata);
    const std::string header = build_header(prepared, metadata);
    std::string out = length_field(header.size()) + header;
    for (const auto& p : prepared)
        out.append(static_cast<const char*>(p.data.data_ptr()), static_cast<std::size_t>(p.nbytes));
    return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const TensorMetadata& metadata) {
    save_safetensors(path, NamedTensors(tensors.begin(), tensors.end()), metadata);
}

void save_safetensors(const std::string& path, const NamedTensors& tensors, const TensorMetadata& metadata) {
    const auto prepared = prepare(tensors, metadata);
    const std::string header = build_header(prepared, metadata);

    if (path.empty() || path.back() == '/')
        fail(path, "not a file path");
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    std::string tmp = (dir == "/" ? "" : dir) + "/." + base + ".tmp-XXXXXX";

    Fd fd(::mkstemp(tmp.data()));
    if (fd.get() < 0)
        fail(path, "cannot create a temporary file in directory '" + dir + "': " + errno_text(errno));
    try {
        if (::fchmod(fd.get(), 0644) != 0)
            fail(tmp, "chmod failed: " + errno_text(errno));
        const std::string len = length_field(header.size());
        write_all(fd.get(), len.data(), len.size(), tmp);
        write_all(fd.get(), header.data(), header.size(), tmp);
        for (const auto& p : prepared)
            write_all(fd.get(), p.data.data_ptr(), static_cast<std::size_t>(p.nbytes), tmp);
        if (::fsync(fd.get()) != 0)
            fail(tmp, "fsync failed: " + errno_text(errno));
        if (::close(fd.release()) != 0)
            fail(tmp, "close failed: " + errno_text(errno));
        if (::rename(tmp.c_str(), path.c_str()) != 0)
            fail(path, "cannot rename the temporary file into place: " + errno_text(errno));
    } catch (...) {
        fd.reset();
        ::unlink(tmp.c_str());
        throw;
    }
    // Make the rename itself durable.
    Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd.get() < 0)
        fail(path, "cannot open directory '" + dir + "' to sync it: " + errno_text(errno));
    if (::fsync(dfd.get()) != 0 && errno != EINVAL)
        fail(path, "fsync of directory '" + dir + "' failed: " + errno_text(errno));
}

}  // namespace fedlora::learn
