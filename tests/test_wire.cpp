// Wire format: round trip, an independent Python decoder, CRC-32 against zlib, every malformed input rejected,
// and a framed message across ZeroMQ on 127.0.0.1.
#include <gtest/gtest.h>

#include <complex>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "fedlora/wire/endpoint.h"
#include "fedlora/wire/message.h"

using namespace fedlora::wire;

namespace {

Message sample_message() {
    Message m;
    m.type = MessageType::Update;
    m.run_id = 0x1122334455667788ull;
    m.round = 17;
    m.client_id = 4;
    m.seq = 99;
    std::vector<float> v(300);
    std::iota(v.begin(), v.end(), -10.0f);
    m.tensors.push_back(make_f32("update", v, {3, 100}));
    Tensor s;
    s.name = "scale";
    s.dtype = DType::F64;
    double scale = 0.25;
    s.data.resize(8);
    std::memcpy(s.data.data(), &scale, 8);
    m.tensors.push_back(s);
    return m;
}

std::string run(const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p)
        return out;
    char buf[512];
    while (fgets(buf, sizeof buf, p))
        out += buf;
    pclose(p);
    return out;
}

}  // namespace

TEST(Wire, RoundTripPreservesEverything) {
    const auto m = sample_message();
    const auto bytes = encode(m);
    const auto d = decode(bytes);
    EXPECT_EQ(d.type, m.type);
    EXPECT_EQ(d.run_id, m.run_id);
    EXPECT_EQ(d.round, m.round);
    EXPECT_EQ(d.client_id, m.client_id);
    EXPECT_EQ(d.seq, m.seq);
    ASSERT_EQ(d.tensors.size(), 2u);
    EXPECT_EQ(d.tensors[0].name, "update");
    EXPECT_EQ(d.tensors[0].shape, (std::vector<std::uint64_t>{3, 100}));
    EXPECT_EQ(as_f32(d.tensors[0]), as_f32(m.tensors[0]));
    EXPECT_EQ(d.tensors[1].data, m.tensors[1].data);
    EXPECT_TRUE(d.tensors[1].shape.empty());
    ASSERT_NE(d.find("scale"), nullptr);
    EXPECT_EQ(d.find("missing"), nullptr);
}

TEST(Wire, Complex128RoundTripsAndMatchesThePythonDecoder) {
    // A power plan's precoders: complex double, interleaved (real, imaginary), 16 bytes per element.
    Message m;
    m.type = MessageType::PowerPlan;
    m.round = 3;
    Tensor t;
    t.name = "precoders";
    t.dtype = DType::C128;
    t.shape = {2, 3};
    std::vector<std::complex<double>> v;
    for (int i = 0; i < 6; ++i)
        v.emplace_back(0.5 * i - 1.0, 1.0 / (i + 1));
    t.data.resize(v.size() * 16);
    std::memcpy(t.data.data(), v.data(), t.data.size());
    m.tensors.push_back(t);
    EXPECT_EQ(dtype_size(DType::C128), 16u);
    EXPECT_STREQ(to_string(DType::C128), "c128");
    const auto bytes = encode(m);
    const auto d = decode(bytes);
    ASSERT_EQ(d.tensors.size(), 1u);
    EXPECT_EQ(d.tensors[0].dtype, DType::C128);
    EXPECT_EQ(d.tensors[0].data, t.data);
    const std::string path = ::testing::TempDir() + "message_c128.bin";
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
    const auto out = run(std::string("/usr/bin/python3 ") + FEDLORA_TESTS_DIR + "/wire_reference.py " + path);
    double sum = 0.0;  // of every real and imaginary part
    for (const auto& c : v)
        sum += c.real() + c.imag();
    char line[128];
    std::snprintf(line, sizeof line, "tensor precoders c128 2x3 sum=%.6f\n", sum);
    EXPECT_EQ(out, "version=1 type=5 run=0 round=3 client=0 seq=0 n=1\n" + std::string(line));
}

TEST(Wire, Crc32MatchesZlib) {
    const std::string check = "123456789";
    // The CRC-32 check value of the IEEE polynomial.
    EXPECT_EQ(crc32(reinterpret_cast<const std::uint8_t*>(check.data()), check.size()), 0xCBF43926u);
    std::vector<std::uint8_t> data(1000);
    std::mt19937 rng(1);
    for (auto& b : data)
        b = static_cast<std::uint8_t>(rng());
    const std::string path = ::testing::TempDir() + "crc_input.bin";
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), 1000);
    const auto py = run("/usr/bin/python3 -c \"import zlib,sys; print(zlib.crc32(open('" + path +
                        "','rb').read()))\"");
    ASSERT_FALSE(py.empty());
    EXPECT_EQ(crc32(data.data(), data.size()), std::stoul(py));
}

TEST(Wire, IndependentPythonDecoderAgrees) {
    const auto bytes = encode(sample_message());
    const std::string path = ::testing::TempDir() + "message.bin";
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
    const auto out = run(std::string("/usr/bin/python3 ") + FEDLORA_TESTS_DIR + "/wire_reference.py " + path);
    // sum(-10..289) = 300 * 139.5
    std::ostringstream expect;
    expect << "version=1 type=6 run=" << 0x1122334455667788ull << " round=17 client=4 seq=99 n=2\n"
           << "tensor update f32 3x100 sum=41850.000000\n"
           << "tensor scale f64 scalar sum=0.250000\n";
    EXPECT_EQ(out, expect.str());
}

TEST(Wire, EveryTruncationIsRejected) {
    const auto bytes = encode(sample_message());
    for (std::size_t n = 0; n < bytes.size(); ++n)
        EXPECT_THROW(decode(bytes.data(), n), WireError) << "length " << n;
}

TEST(Wire, EverySingleBitFlipIsRejected) {
    auto bytes = encode(sample_message());
    for (std::size_t i = 0; i < bytes.size(); i += 7) {
        for (int bit = 0; bit < 8; bit += 3) {
            bytes[i] ^= static_cast<std::uint8_t>(1u << bit);
            EXPECT_THROW(decode(bytes), WireError) << "byte " << i << " bit " << bit;
            bytes[i] ^= static_cast<std::uint8_t>(1u << bit);
        }
    }
    EXPECT_NO_THROW(decode(bytes));
}

TEST(Wire, ErrorsNameTheProblem) {
    auto expect_msg = [](const std::vector<std::uint8_t>& b, const std::string& needle, const Limits& lim = {}) {
        try {
            decode(b, lim);
            FAIL() << "accepted; expected " << needle;
        } catch (const WireError& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    const auto good = encode(sample_message());
    auto b = good;
    b[4] = 2;  // version 2, header crc recomputed below so only the version is wrong
    auto fix_header = [](std::vector<std::uint8_t>& v) {
        const auto c = crc32(v.data(), kHeaderSize - 4);
        std::memcpy(v.data() + kHeaderSize - 4, &c, 4);
    };
    fix_header(b);
    expect_msg(b, "unsupported version 2");
    b = good;
    b[0] = 'X';
    expect_msg(b, "bad magic");
    b = good;
    b[6] = 200;
    fix_header(b);
    expect_msg(b, "unknown message type 200");
    Limits small;
    small.max_message_bytes = 100;
    expect_msg(good, "exceeds the limit of 100", small);
    Limits few;
    few.max_tensors = 1;
    expect_msg(good, "n_tensors 2 exceeds the limit of 1", few);
}

TEST(Wire, HugeDeclaredShapeIsRejectedBeforeAllocation) {
    // A table that declares 2^62 floats must fail on the size check, not on an allocation.
    Message m;
    m.type = MessageType::Update;
    Tensor t;
    t.name = "x";
    t.dtype = DType::U8;
    t.shape = {1};
    t.data = {7};
    m.tensors.push_back(t);
    auto b = encode(m);
    // Overwrite the single dim (after name_len, name, dtype, ndim) with a huge value and fix both CRCs.
    const std::size_t dim_at = kHeaderSize + 2 + 1 + 2;
    const std::uint64_t huge = 1ull << 62;
    std::memcpy(b.data() + dim_at, &huge, 8);
    const std::size_t body_len = b.size() - kHeaderSize - kTrailerSize;
    const auto c = crc32(b.data() + kHeaderSize, body_len);
    std::memcpy(b.data() + b.size() - 4, &c, 4);
    EXPECT_THROW(decode(b), WireError);
}

TEST(Wire, MessageTypeNamesRoundTrip) {
    for (std::uint16_t t = 1; t <= 11; ++t) {
        const auto type = static_cast<MessageType>(t);
        EXPECT_EQ(message_type_from_string(to_string(type)), type);
    }
    EXPECT_THROW(message_type_from_string("GOSSIP"), WireError);
}

TEST(Wire, EncodeRejectsInconsistentTensor) {
    Message m;
    Tensor t;
    t.name = "bad";
    t.shape = {4};
    t.data.resize(3);
    m.tensors.push_back(t);
    EXPECT_THROW(encode(m), WireError);
}

TEST(Wire, ZeroMqRoundTripOnLoopback) {
    zmq::context_t ctx(1);
    zmq::socket_t server(ctx, zmq::socket_type::pair);
    server.set(zmq::sockopt::linger, 0);
    const auto endpoint = bind(server, "tcp://127.0.0.1:*");
    ASSERT_EQ(endpoint.rfind("tcp://127.0.0.1:", 0), 0u) << endpoint;

    std::thread echo([&] {
        auto m = receive(server, std::chrono::seconds(10));
        if (!m)
            return;
        m->seq += 1;
        m->type = MessageType::Aggregate;
        send(server, *m);
    });
    zmq::socket_t client(ctx, zmq::socket_type::pair);
    client.set(zmq::sockopt::linger, 0);
    client.connect(endpoint);
    const auto sent = sample_message();
    ASSERT_TRUE(send(client, sent));
    auto reply = receive(client, std::chrono::seconds(10));
    echo.join();
    ASSERT_TRUE(reply.has_value()) << "no reply within 10 s";
    EXPECT_EQ(reply->type, MessageType::Aggregate);
    EXPECT_EQ(reply->seq, sent.seq + 1);
    EXPECT_EQ(as_f32(reply->tensors[0]), as_f32(sent.tensors[0]));
}

TEST(Wire, MalformedFrameOverZeroMqThrowsAndSocketStaysUsable) {
    zmq::context_t ctx(1);
    zmq::socket_t a(ctx, zmq::socket_type::pair), b(ctx, zmq::socket_type::pair);
    a.set(zmq::sockopt::linger, 0);
    b.set(zmq::sockopt::linger, 0);
    b.connect(bind(a, "tcp://127.0.0.1:*"));
    const std::string junk = "not a fedlora message at all, but long enough to hold a header.........";
    b.send(zmq::buffer(junk), zmq::send_flags::none);
    EXPECT_THROW(receive(a, std::chrono::seconds(10)), WireError);
    send(b, sample_message());
    auto m = receive(a, std::chrono::seconds(10));
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->round, 17u);
    EXPECT_FALSE(receive(a, std::chrono::milliseconds(10)).has_value());
}

// Found by the fuzzer (fuzz/regressions/n-tensors-beyond-body): with the limits lifted, a 56-byte frame declaring
// 2^25 tensors made the decoder reserve a table of 2^25 entries before reading any. The count must fit in the body.
TEST(Wire, TensorCountBeyondTheBodyIsRejectedWhateverTheLimits) {
    Limits none;
    none.max_message_bytes = SIZE_MAX;
    none.max_tensors = SIZE_MAX;
    none.max_name_len = SIZE_MAX;
    none.max_ndim = SIZE_MAX;
    Message m;
    m.tensors.push_back(make_f32("x", {1.0f}));
    auto b = encode(m);
    const std::uint32_t huge = 1u << 25;
    std::memcpy(b.data() + 32, &huge, 4);
    const auto c = crc32(b.data(), kHeaderSize - 4);
    std::memcpy(b.data() + kHeaderSize - 4, &c, 4);
    const auto body_len = b.size() - kHeaderSize - kTrailerSize;
    try {
        decode(b, none);
        FAIL() << "accepted";
    } catch (const WireError& e) {
        EXPECT_NE(std::string(e.what()).find("n_tensors 33554432 cannot fit in a body of " +
                                             std::to_string(body_len) + " bytes"),
                  std::string::npos)
            << e.what();
    }
    // The fuzzer's input itself, byte for byte.
    const std::string path = std::string(FEDLORA_TESTS_DIR) + "/../fuzz/regressions/n-tensors-beyond-body";
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in) << path;
    const std::vector<std::uint8_t> found((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_THROW(decode(found, none), WireError);
}

TEST(Wire, ShapesAreBoundedByTheBodyWhateverTheLimits) {
    Limits none;
    none.max_message_bytes = SIZE_MAX;
    none.max_tensors = SIZE_MAX;
    // 2^62 f32 elements are 2^64 bytes, which a 64-bit product wraps to 0: the shape must be refused, not read
    // as a tensor without data.
    Message m;
    Tensor t;
    t.name = "w";
    t.dtype = DType::F32;
    t.shape = {0};
    m.tensors.push_back(t);
    auto b = encode(m);
    const std::size_t dim_at = kHeaderSize + 2 + 1 + 2;
    const std::uint64_t big = 1ull << 62;
    std::memcpy(b.data() + dim_at, &big, 8);
    const std::size_t body_len = b.size() - kHeaderSize - kTrailerSize;
    const auto c = crc32(b.data() + kHeaderSize, body_len);
    std::memcpy(b.data() + b.size() - 4, &c, 4);
    try {
        decode(b, none);
        FAIL() << "accepted";
    } catch (const WireError& e) {
        EXPECT_NE(std::string(e.what()).find("tensor 0 ('w'): dimension 0 = 4611686018427387904 makes the shape "
                                             "larger than the 13-byte body"),
                  std::string::npos)
            << e.what();
    }
    // A zero dimension makes an empty tensor whatever the other dimensions, in either order.
    for (const auto& shape : {std::vector<std::uint64_t>{1ull << 40, 0}, std::vector<std::uint64_t>{0, 1ull << 40}}) {
        Message e;
        Tensor z;
        z.name = "empty";
        z.shape = shape;
        e.tensors.push_back(z);
        const auto d = decode(encode(e));
        ASSERT_EQ(d.tensors.size(), 1u);
        EXPECT_EQ(d.tensors[0].shape, shape);
        EXPECT_TRUE(d.tensors[0].data.empty());
    }
}
