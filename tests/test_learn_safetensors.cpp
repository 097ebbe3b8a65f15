// Safetensors: round trips, byte-exact agreement with an independent Python implementation
// (tests/safetensors_reference.py) in both directions, atomic writes, and a corruption suite in which every case
// must end in a SafetensorsError that names the problem (never a crash or another exception type).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <sys/stat.h>

#include "support/scratch_dir.h"
#include "fedlora/learn/safetensors.h"

using namespace fedlora::learn;
namespace fs = std::filesystem;

namespace {

using fedlora::test::ScratchDir;

std::string read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string hex_of(const at::Tensor& t) {
    static const char* d = "0123456789abcdef";
    const auto c = t.contiguous();
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    std::string s;
    for (std::size_t i = 0; i < static_cast<std::size_t>(c.nbytes()); ++i) {
        s += d[p[i] >> 4];
        s += d[p[i] & 15];
    }
    return s;
}

std::string le64(std::uint64_t n) {
    std::string b(8, '\0');
    for (int i = 0; i < 8; ++i)
        b[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return b;
}

std::uint64_t header_length(const std::string& file_image) {
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i)
        n = (n << 8) | static_cast<unsigned char>(file_image[static_cast<std::size_t>(i)]);
    return n;
}

// A file image from a header text and a data buffer.
std::string image(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

// Runs fn, which must throw SafetensorsError whose message contains every one of `parts`; returns the message.
std::string expect_error(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
    try {
        fn();
    } catch (const SafetensorsError& e) {
        const std::string msg = e.what();
        for (const auto& p : parts)
            EXPECT_NE(msg.find(p), std::string::npos) << "message '" << msg << "' lacks '" << p << "'";
        return msg;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected SafetensorsError, got another exception: " << e.what();
        return {};
    }
    ADD_FAILURE() << "expected SafetensorsError, nothing was thrown";
    return {};
}

void expect_bytes_error(const std::string& bytes, std::initializer_list<std::string> parts) {
    expect_error([&] { load_safetensors_bytes(bytes); }, parts);
}

int run_python(const std::string& args) {
    const std::string cmd =
        std::string(FEDLORA_PYTHON) + " -B " + FEDLORA_TESTS_DIR + "/safetensors_reference.py " + args;
    return std::system(cmd.c_str());
}

nlohmann::json read_json(const std::string& path) {
    std::ifstream f(path);
    return nlohmann::json::parse(f);
}

// One tensor of every supported dtype, with edge values; a non-contiguous one, a scalar and an empty one.
NamedTensors sample_tensors() {
    at::manual_seed(7);
    const double inf = std::numeric_limits<double>::infinity();
    NamedTensors t;
    t.emplace_back("transformer.h.0.attn.c_attn.weight", at::randn({4, 6}));
    t.emplace_back("f64", at::randn({3}, at::kDouble));
    t.emplace_back("f16", at::tensor({1.0, -0.0, inf, -inf, 65504.0, 6e-8, 0.1, -3.5}).to(at::kHalf));
    t.emplace_back("bf16", at::tensor({1.0, -2.5, 0.0, inf, 3.0e38, 1e-39, 0.15625}).to(at::kBFloat16));
    t.emplace_back("i64", at::tensor({std::numeric_limits<std::int64_t>::min(), std::int64_t{-1},
                                      std::numeric_limits<std::int64_t>::max()}));
    t.emplace_back("i32", at::tensor({-7, 0, 2147483647}, at::kInt));
    t.emplace_back("i16", at::tensor({-32768, 1, 32767}, at::kShort));
    t.emplace_back("i8", at::tensor({-128, 0, 127}, at::kChar));
    t.emplace_back("u8", at::arange(250, 256, at::kInt).to(at::kByte));
    t.emplace_back("mask", at::tensor({1, 0, 0, 1, 1}, at::kInt).to(at::kBool));
    t.emplace_back("transposed", at::arange(12, at::kFloat).reshape({3, 4}).t());  // not contiguous
    t.emplace_back("scalar", at::tensor(2.5f).reshape({}));
    t.emplace_back("empty", at::zeros({0, 5}));
    return t;
}

}  // namespace

TEST(Safetensors, DtypeTable) {
    for (const char* n : {"BOOL", "U8", "I8", "I16", "I32", "I64", "F16", "BF16", "F32", "F64"}) {
        const auto d = parse_safetensors_dtype(n);
        ASSERT_TRUE(d.has_value()) << n;
        EXPECT_STREQ(to_string(*d), n);
    }
    EXPECT_FALSE(parse_safetensors_dtype("F8").has_value());
    EXPECT_EQ(element_size(SafetensorsDtype::BF16), 2u);
    EXPECT_EQ(element_size(SafetensorsDtype::I64), 8u);
}

TEST(Safetensors, RoundTripEveryDtype) {
    ScratchDir dir;
    const auto tensors = sample_tensors();
    const TensorMetadata meta = {{"format", "pt"}, {"rank", "8"}, {"note", "caf\xc3\xa9"}};
    const auto path = dir.file("model.safetensors");
    save_safetensors(path, tensors, meta);

    // The header keeps the given order in the buffer and pads to 8 bytes.
    const auto h = read_safetensors_header(path);
    ASSERT_EQ(h.tensors.size(), tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i)
        EXPECT_EQ(h.tensors[i].name, tensors[i].first);
    EXPECT_EQ((8 + h.header_bytes) % 8, 0u);
    EXPECT_EQ(h.metadata, meta);
    EXPECT_EQ(fs::file_size(path), 8 + h.header_bytes + h.data_bytes);

    SafetensorsLoadOptions raw;
    raw.half_to_float = false;
    const auto exact = load_safetensors(path, raw);
    EXPECT_EQ(exact.metadata, meta);
    ASSERT_EQ(exact.tensors.size(), tensors.size());
    for (const auto& [name, t] : tensors) {
        SCOPED_TRACE(name);
        const auto& got = exact.tensors.at(name);
        EXPECT_EQ(got.scalar_type(), t.scalar_type());
        EXPECT_EQ(got.sizes(), t.sizes());
        EXPECT_TRUE(got.is_contiguous());
        EXPECT_TRUE(got.device().is_cpu());
        EXPECT_FALSE(got.requires_grad());
        EXPECT_EQ(hex_of(got), hex_of(t));  // bit-identical, including -0, inf and subnormals
    }
    // Default: F16 and BF16 arrive as float32 holding exactly the same values.
    const auto upcast = load_safetensors(path);
    for (const char* name : {"f16", "bf16"}) {
        const auto& got = upcast.tensors.at(name);
        EXPECT_EQ(got.scalar_type(), at::kFloat) << name;
        const auto& src = std::find_if(tensors.begin(), tensors.end(), [&](auto& p) { return p.first == name; });
        EXPECT_EQ(hex_of(got), hex_of(src->second.to(at::kFloat))) << name;
    }
    EXPECT_EQ(upcast.tensors.at("scalar").dim(), 0);
    EXPECT_EQ(upcast.tensors.at("scalar").item<float>(), 2.5f);
    EXPECT_EQ(upcast.tensors.at("empty").numel(), 0);

    // In memory, the same bytes as the file.
    EXPECT_EQ(serialize_safetensors(tensors, meta), read_bytes(path));
    const auto mem = load_safetensors_bytes(read_bytes(path), raw);
    EXPECT_EQ(hex_of(mem.tensors.at("transposed")), hex_of(tensors[10].second));
}

TEST(Safetensors, MapWritesInNameOrderAndNoMetadataBlockWhenEmpty) {
    ScratchDir dir;
    std::map<std::string, at::Tensor> m = {{"b", at::ones({2})}, {"a", at::zeros({3}, at::kLong)}};
    save_safetensors(dir.file("m.safetensors"), m);
    const auto h = read_safetensors_header(dir.file("m.safetensors"));
    ASSERT_EQ(h.tensors.size(), 2u);
    EXPECT_EQ(h.tensors[0].name, "a");
    EXPECT_EQ(h.tensors[1].name, "b");
    EXPECT_TRUE(h.metadata.empty());
    EXPECT_EQ(read_bytes(dir.file("m.safetensors")).find("__metadata__"), std::string::npos);
    ASSERT_NE(h.find("b"), nullptr);
    EXPECT_EQ(h.find("b")->numel(), 2u);
    EXPECT_EQ(h.find("zz"), nullptr);
}

TEST(Safetensors, AtomicWriteReplacesAndLeavesNothingBehind) {
    ScratchDir dir;
    const auto path = dir.file("ckpt.safetensors");
    save_safetensors(path, NamedTensors{{"w", at::ones({3})}});
    save_safetensors(path, NamedTensors{{"w", at::full({5}, 2.0)}});
    EXPECT_EQ(load_safetensors(path).tensors.at("w").numel(), 5);
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0644u);

    // A failing save (duplicate name) leaves the previous file untouched and no temporary file.
    const auto before = read_bytes(path);
    expect_error([&] { save_safetensors(path, NamedTensors{{"x", at::ones({1})}, {"x", at::ones({1})}}); },
                 {"duplicate tensor name 'x'"});
    EXPECT_EQ(read_bytes(path), before);
    int entries = 0;
    for (const auto& e : fs::directory_iterator(dir.path())) {
        ++entries;
        EXPECT_EQ(e.path().filename(), "ckpt.safetensors");
    }
    EXPECT_EQ(entries, 1);

    // Unwritable destinations are reported with the path.
    expect_error([&] { save_safetensors(dir.file("no/such/dir/x.safetensors"), NamedTensors{{"w", at::ones({1})}}); },
                 {"cannot create a temporary file", "no/such/dir"});
    expect_error([&] { save_safetensors(dir.path().string(), NamedTensors{{"w", at::ones({1})}}); }, {"rename"});
    // A relative path without a directory part goes to the working directory.
    const auto cwd = fs::current_path();
    fs::current_path(dir.path());
    save_safetensors("rel.safetensors", NamedTensors{{"w", at::ones({2})}});
    fs::current_path(cwd);
    EXPECT_TRUE(fs::exists(dir.file("rel.safetensors")));
}

TEST(Safetensors, WriterRejectsBadInput) {
    expect_error([] { serialize_safetensors({{"", at::ones({1})}}); }, {"empty name"});
    expect_error([] { serialize_safetensors({{"__metadata__", at::ones({1})}}); }, {"reserved"});
    expect_error([] { serialize_safetensors({{"c", at::ones({2}, at::kComplexFloat)}}); }, {"tensor 'c'", "dtype"});
    expect_error([] { serialize_safetensors({{"u", at::Tensor()}}); }, {"tensor 'u'", "undefined"});
    expect_error([] { serialize_safetensors({{"bad\xff", at::ones({1})}}); }, {"not valid UTF-8"});
    expect_error([] { serialize_safetensors({{"w", at::ones({1})}}, {{"k", "\xfe"}}); }, {"metadata entry 'k'"});
}

TEST(Safetensors, ReadsWhatPythonWrote) {
    ScratchDir dir;
    const auto file = dir.file("py.safetensors"), manifest = dir.file("py.json");
    ASSERT_EQ(run_python("write " + file + " " + manifest), 0);
    const auto m = read_json(manifest);

    SafetensorsLoadOptions raw;
    raw.half_to_float = false;
    const auto exact = load_safetensors(file, raw);
    const auto upcast = load_safetensors(file);
    EXPECT_EQ(exact.metadata.at("format"), "pt");
    EXPECT_EQ(exact.metadata.at("note"), m["metadata"]["note"].get<std::string>());
    ASSERT_EQ(exact.tensors.size(), m["tensors"].size());
    for (const auto& [name, e] : m["tensors"].items()) {
        SCOPED_TRACE(name);
        ASSERT_TRUE(exact.tensors.count(name));
        const auto& t = exact.tensors.at(name);
        EXPECT_EQ(t.sizes().vec(), e["shape"].get<std::vector<std::int64_t>>());
        EXPECT_EQ(hex_of(t), e["hex"].get<std::string>());
        if (e.contains("f32_hex")) {
            EXPECT_EQ(upcast.tensors.at(name).scalar_type(), at::kFloat);
            EXPECT_EQ(hex_of(upcast.tensors.at(name)), e["f32_hex"].get<std::string>());
        } else {
            EXPECT_EQ(hex_of(upcast.tensors.at(name)), e["hex"].get<std::string>());
        }
    }
    // Python wrote the data in an order different from its header's key order; the header lists buffer order.
    const auto h = read_safetensors_header(file);
    EXPECT_EQ(h.tensors.front().name, "empty");
    EXPECT_EQ(h.tensors.back().name, "model.embed.weight");
}

TEST(Safetensors, PythonReadsWhatCppWrote) {
    ScratchDir dir;
    const auto file = dir.file("cpp.safetensors"), manifest = dir.file("cpp.json");
    const auto tensors = sample_tensors();
    save_safetensors(file, tensors, {{"format", "pt"}, {"written_by", "fedlora"}});
    ASSERT_EQ(run_python("read " + file + " " + manifest), 0);
    const auto m = read_json(manifest);
    EXPECT_EQ(m["metadata"]["written_by"], "fedlora");
    ASSERT_EQ(m["tensors"].size(), tensors.size());
    for (const auto& [name, t] : tensors) {
        SCOPED_TRACE(name);
        const auto& e = m["tensors"].at(name);
        EXPECT_EQ(e["shape"].get<std::vector<std::int64_t>>(), t.sizes().vec());
        EXPECT_EQ(e["hex"].get<std::string>(), hex_of(t));
        if (e.contains("f32_hex")) {  // numpy's own float16 -> float32 and the bf16 bit shift agree with LibTorch
            EXPECT_EQ(e["f32_hex"].get<std::string>(), hex_of(t.to(at::kFloat)));
        }
    }
    EXPECT_EQ(m["tensors"]["mask"]["dtype"], "BOOL");
    EXPECT_EQ(m["tensors"]["bf16"]["dtype"], "BF16");
    EXPECT_EQ(m["tensors"]["i8"]["dtype"], "I8");
}

TEST(Safetensors, MissingFileAndNotAFile) {
    ScratchDir dir;
    expect_error([&] { load_safetensors(dir.file("absent.safetensors")); }, {"absent.safetensors", "not found"});
    expect_error([&] { load_safetensors(dir.path().string()); }, {"not a regular file"});
}

TEST(Safetensors, TruncationAtEveryStage) {
    ScratchDir dir;
    const auto good = serialize_safetensors(sample_tensors());
    const std::uint64_t n = header_length(good);
    struct Case {
        std::size_t keep;
        const char* expect;
    };
    const Case cases[] = {
        {0, "shorter than the 8-byte header length"},
        {5, "shorter than the 8-byte header length"},
        {8, "larger than the file allows"},
        {8 + static_cast<std::size_t>(n / 2), "larger than the file allows"},
        {8 + static_cast<std::size_t>(n) - 1, "larger than the file allows"},
        {8 + static_cast<std::size_t>(n), "out of range"},        // header intact, no data
        {8 + static_cast<std::size_t>(n) + 40, "out of range"},   // part of the data
        {good.size() - 1, "out of range"},                        // one byte short
    };
    for (const auto& c : cases) {
        SCOPED_TRACE("kept " + std::to_string(c.keep) + " bytes");
        const auto path = dir.file("cut" + std::to_string(c.keep));
        write_bytes(path, good.substr(0, c.keep));
        const auto msg = expect_error([&] { load_safetensors(path); }, {c.expect, path});
        expect_bytes_error(good.substr(0, c.keep), {c.expect});
    }
    // And one byte too many.
    expect_bytes_error(good + "x", {"trailing bytes"});
}

TEST(Safetensors, HugeHeaderLength) {
    const std::string body = "{}";
    expect_bytes_error(le64(std::uint64_t{1} << 63) + body, {"exceeds the limit", "100 MiB"});
    expect_bytes_error(le64(~std::uint64_t{0}) + body, {"exceeds the limit"});
    expect_bytes_error(le64(kSafetensorsMaxHeaderBytes + 1) + body, {"exceeds the limit"});
    expect_bytes_error(le64(3) + body, {"larger than the file allows"});
    // Within the limit but beyond the file.
    expect_bytes_error(le64(kSafetensorsMaxHeaderBytes) + body, {"larger than the file allows"});
    // Empty but valid.
    EXPECT_TRUE(load_safetensors_bytes(image("{}", "")).tensors.empty());
    EXPECT_TRUE(load_safetensors_bytes(image("  {}    ", "")).tensors.empty());
}

TEST(Safetensors, MalformedHeaders) {
    const std::string f32x2 = std::string(8, '\0');
    auto one = [](const std::string& entry) { return "{\"w\":" + entry + "}"; };
    struct Case {
        std::string header, data;
        std::vector<std::string> expect;
    };
    const std::vector<Case> cases = {
        {"{\"w\": {\"dtype\": \"F32\"", f32x2, {"not valid JSON"}},
        {"not json at all", "", {"not valid JSON"}},
        {"[1, 2]", "", {"JSON array, not an object"}},
        {"\"str\"", "", {"not an object"}},
        {"{\"w\":{\"dtype\":\"F32\",\"sh\xff\":[2]}}", f32x2, {"not valid JSON"}},  // invalid UTF-8
        {one("{\"dtype\":\"F8\",\"shape\":[2],\"data_offsets\":[0,8]}"), f32x2, {"tensor 'w'", "unknown dtype 'F8'"}},
        {one("{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}"), f32x2, {"tensor 'w'", "dtype", "not a string"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,8]}"), f32x2,
         {"tensor 'w'", "shape [2, 3] of F32 needs 24 bytes", "span 8"}},
        {one("{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}"), f32x2,
         {"tensor 'w'", "shape[0]", "non-negative integer"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}"), f32x2, {"shape[0]", "non-negative"}},
        {one("{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}"), f32x2, {"tensor 'w'", "shape", "not an array"}},
        {one("{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],\"data_offsets\":[0,8]}"),
         f32x2, {"tensor 'w'", "more than 2^64"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}"), f32x2, {"tensor 'w'", "[8, 0]", "before"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}"), f32x2, {"tensor 'w'", "data_offsets"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}"), f32x2, {"data_offsets[1]", "non-negative"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}"), f32x2, {"tensor 'w'", "out of range"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2]}"), f32x2, {"tensor 'w'", "missing field 'data_offsets'"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}"), f32x2,
         {"tensor 'w'", "unknown field 'x'"}},
        {one("[1]"), f32x2, {"tensor 'w'", "not a JSON object"}},
        {"{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32x2, {"empty name"}},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         f32x2, {"duplicate entry 'w'"}},
        // Overlapping, non-contiguous, trailing.
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         std::string(12, '\0'), {"tensor 'b'", "overlaps tensor 'a'"}},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         f32x2, {"overlaps tensor"}},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
         std::string(20, '\0'), {"tensor 'b'", "not contiguous", "[8, 12]"}},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", std::string(12, '\0'),
         {"tensor 'a'", "not contiguous", "[0, 4]"}},
        {one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"), std::string(12, '\0'),
         {"trailing bytes", "12 bytes", "cover only 8"}},
        // Metadata.
        {"{\"__metadata__\":{\"k\":3}}", "", {"__metadata__ entry 'k'", "not a string"}},
        {"{\"__metadata__\":[1]}", "", {"__metadata__", "not an object"}},
        // BOOL bytes other than 0 and 1.
        {one("{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}"), std::string("\x01\x00\x02", 3),
         {"tensor 'w'", "BOOL element 2", "byte value 2"}},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.header);
        try {
            load_safetensors_bytes(image(c.header, c.data));
            ADD_FAILURE() << "no error";
        } catch (const SafetensorsError& e) {
            const std::string msg = e.what();
            for (const auto& p : c.expect)
                EXPECT_NE(msg.find(p), std::string::npos) << "message '" << msg << "' lacks '" << p << "'";
        } catch (const std::exception& e) {
            ADD_FAILURE() << "wrong exception type: " << e.what();
        }
    }
    // Zero-size tensors are fine where they tile: at the running offset.
    const auto ok = load_safetensors_bytes(image("{\"e\":{\"dtype\":\"F64\",\"shape\":[0,4],\"data_offsets\":[0,0]},"
                                                 "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                                                 f32x2));
    EXPECT_EQ(ok.tensors.at("e").sizes(), (std::vector<std::int64_t>{0, 4}));
}

TEST(Safetensors, FlippedHeaderBytes) {
    const auto good = serialize_safetensors(sample_tensors(), {{"format", "pt"}});
    const auto n = static_cast<std::size_t>(header_length(good));
    // Setting the high bit of any header byte makes it invalid UTF-8 or invalid JSON: always an error.
    int high_bit_errors = 0;
    for (std::size_t i = 8; i < 8 + n; ++i) {
        std::string bad = good;
        bad[i] = static_cast<char>(bad[i] ^ 0x80);
        try {
            load_safetensors_bytes(bad);
        } catch (const SafetensorsError&) {
            ++high_bit_errors;
        }
    }
    EXPECT_EQ(high_bit_errors, static_cast<int>(n));
    // Low-bit flips may leave a valid file (a renamed tensor): then it must load; otherwise a SafetensorsError.
    // Any other exception or a crash fails the test.
    int errors = 0, loads = 0;
    for (std::size_t i = 0; i < 8 + n; ++i)
        for (int bit : {0x01, 0x02, 0x10}) {
            std::string bad = good;
            bad[i] = static_cast<char>(bad[i] ^ bit);
            try {
                const auto c = load_safetensors_bytes(bad);
                ++loads;
            } catch (const SafetensorsError& e) {
                ++errors;
                EXPECT_GT(std::string(e.what()).size(), 20u);
            } catch (const std::exception& e) {
                ADD_FAILURE() << "byte " << i << " ^ " << bit << ": wrong exception type: " << e.what();
            }
        }
    EXPECT_GT(errors, loads);
    // Targeted flips: the opening brace, a data_offsets digit, a dtype letter.
    const std::string header = good.substr(8, n);
    auto flip_at = [&](std::size_t pos, char to) {
        std::string bad = good;
        bad[8 + pos] = to;
        return bad;
    };
    expect_bytes_error(flip_at(0, '['), {"not valid JSON"});
    const auto dpos = header.find("\"F64\"");
    ASSERT_NE(dpos, std::string::npos);
    expect_bytes_error(flip_at(dpos + 1, 'G'), {"tensor 'f64'", "unknown dtype 'G64'"});
    const auto opos = header.find("\"data_offsets\":[", header.find("\"i32\""));
    ASSERT_NE(opos, std::string::npos);
    const auto digit = opos + std::string("\"data_offsets\":[").size();
    expect_bytes_error(flip_at(digit, header[digit] == '9' ? '8' : static_cast<char>(header[digit] + 1)),
                       {"tensor 'i32'"});
}
