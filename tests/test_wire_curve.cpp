// Transport security: CURVE keys and key files, allow-lists, the ZAP authenticator (an allowed client talks, an
// unknown key, a plaintext client and a client trusting the wrong server get nothing through), and the rule that
// a non-loopback endpoint needs CURVE. Servers bind to 127.0.0.1 only; waits are poll timeouts, never sleeps.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "fedlora/wire/curve.h"
#include "fedlora/wire/endpoint.h"
#include "fedlora/wire/message.h"
#include "support/scratch_dir.h"

using namespace fedlora::wire;
using fedlora::test::ScratchDir;
using namespace std::chrono_literals;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no error)";
}

void write_text(const std::string& path, const std::string& text, mode_t mode) {
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
}

mode_t mode_of(const std::string& path) {
    struct stat st{};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
}

// Log lines of an Authenticator, collected on its thread; wait_for blocks on a condition variable.
class LogSink {
public:
    Authenticator::Log callback() {
        return [this](const std::string& line) {
            std::lock_guard<std::mutex> lock(mu_);
            lines_.push_back(line);
            cv_.notify_all();
        };
    }
    bool wait_for(const std::string& needle, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mu_);
        return cv_.wait_for(lock, timeout, [&] { return count_locked(needle) > 0; });
    }
    std::size_t count(const std::string& needle) {
        std::lock_guard<std::mutex> lock(mu_);
        return count_locked(needle);
    }
    std::vector<std::string> lines() {
        std::lock_guard<std::mutex> lock(mu_);
        return lines_;
    }

private:
    std::size_t count_locked(const std::string& needle) const {
        std::size_t n = 0;
        for (const auto& l : lines_)
            n += l.find(needle) != std::string::npos;
        return n;
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::string> lines_;
};

// The socket monitor of one socket: waits for handshake events with a poll timeout.
class Monitor {
public:
    Monitor(zmq::context_t& ctx, zmq::socket_t& socket) : sub_(ctx, zmq::socket_type::pair) {
        static std::atomic<int> counter{0};
        const std::string endpoint = "inproc://test.monitor." + std::to_string(counter++);
        if (zmq_socket_monitor(socket.handle(), endpoint.c_str(), ZMQ_EVENT_ALL) != 0)
            throw std::runtime_error("zmq_socket_monitor failed");
        sub_.set(zmq::sockopt::linger, 0);
        sub_.connect(endpoint);
    }
    // Waits until `n` events in `mask` have been seen (counting from construction); false on timeout.
    bool wait(int mask, int n, std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (seen(mask) < n) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0)
                return false;
            zmq::pollitem_t item{sub_.handle(), 0, ZMQ_POLLIN, 0};
            if (zmq::poll(&item, 1, left) == 0)
                return false;
            zmq::message_t event, address;
            if (!sub_.recv(event) || !sub_.recv(address))
                return false;
            std::uint16_t id = 0;
            std::memcpy(&id, event.data(), sizeof id);
            events_.push_back(id);
        }
        return true;
    }

private:
    int seen(int mask) const {
        int n = 0;
        for (auto e : events_)
            n += (e & mask) != 0;
        return n;
    }
    zmq::socket_t sub_;
    std::vector<std::uint16_t> events_;
};

constexpr int kHandshakeFailed = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;

Message hello(std::uint32_t client_id) {
    Message m;
    m.type = MessageType::Hello;
    m.run_id = 7;
    m.client_id = client_id;
    m.tensors.push_back(make_f32("x", {1.0f, 2.0f, 3.0f}));
    return m;
}

zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type) {
    zmq::socket_t s(ctx, type);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::sndtimeo, 5000);  // a send never blocks a test forever
    return s;
}

}  // namespace

// ---- keys -----------------------------------------------------------------------------------------------------

TEST(WireCurve, GeneratedKeysAreZ85AndBelongTogether) {
    ASSERT_TRUE(curve_available());
    const auto a = generate_keypair();
    const auto b = generate_keypair();
    EXPECT_TRUE(is_z85_key(a.public_key)) << z85_key_problem(a.public_key);
    EXPECT_TRUE(is_z85_key(a.secret_key));
    EXPECT_NE(a.public_key, b.public_key);
    EXPECT_EQ(public_key_of(a.secret_key), a.public_key);
}

TEST(WireCurve, Z85ProblemsNameWhatIsWrong) {
    const auto good = generate_keypair().public_key;
    EXPECT_NE(z85_key_problem(good.substr(1)).find("has 39 characters, a Z85 CURVE key has 40"), std::string::npos);
    auto bad = good;
    bad[7] = '~';
    EXPECT_NE(z85_key_problem(bad).find("character '~' at position 8 is not in the Z85 alphabet"), std::string::npos)
        << z85_key_problem(bad);
    bad = good;
    bad[0] = '#';  // digit 84 first: the group exceeds 32 bits
    EXPECT_NE(z85_key_problem(bad).find("characters 1-5 do not encode a 32-bit group"), std::string::npos)
        << z85_key_problem(bad);
    EXPECT_THROW(public_key_of("short"), CurveError);
}

TEST(WireCurve, KeyNamesBecomeSafeFileNames) {
    EXPECT_EQ(key_name_problem("client-01.lab_A"), "");
    EXPECT_NE(key_name_problem(""), "");
    EXPECT_NE(key_name_problem("../escape").find("must not start with '.'"), std::string::npos);
    EXPECT_NE(key_name_problem("a/b").find("only letters, digits"), std::string::npos);
    EXPECT_NE(key_name_problem(std::string(65, 'k')).find("at most 64"), std::string::npos);
}

TEST(WireCurve, KeyFilesRoundTripWithTheirModes) {
    ScratchDir dir;
    const auto pair = generate_keypair();
    const auto files = write_keypair(dir.str(), "server", pair);
    EXPECT_EQ(files.secret_file, dir.file("server.key"));
    EXPECT_EQ(files.public_file, dir.file("server.pub"));
    EXPECT_EQ(mode_of(files.secret_file), 0600u);
    EXPECT_EQ(mode_of(files.public_file), 0644u);
    EXPECT_EQ(dir.entries(), 2u) << "temporary files left behind";
    const auto loaded = load_keypair(files.secret_file);
    EXPECT_EQ(loaded.public_key, pair.public_key);
    EXPECT_EQ(loaded.secret_key, pair.secret_key);
    EXPECT_EQ(load_public_key(files.public_file), pair.public_key);
    // The public file never holds the secret.
    std::ifstream in(files.public_file);
    const std::string pub_text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(pub_text.find(pair.secret_key), std::string::npos);
}

TEST(WireCurve, ExistingKeysAreNotOverwrittenUnlessAsked) {
    ScratchDir dir;
    const auto first = generate_keypair();
    write_keypair(dir.str(), "c1", first);
    const auto second = generate_keypair();
    const auto err = error_of([&] { write_keypair(dir.str(), "c1", second); });
    EXPECT_NE(err.find(dir.file("c1.key")), std::string::npos) << err;
    EXPECT_NE(err.find("refusing to overwrite"), std::string::npos) << err;
    EXPECT_THROW(write_keypair(dir.str(), "c1", second), KeyFileExists);
    EXPECT_EQ(load_keypair(dir.file("c1.key")).secret_key, first.secret_key);
    // Only the .pub exists: still refused, and nothing is written.
    std::filesystem::remove(dir.file("c1.key"));
    EXPECT_THROW(write_keypair(dir.str(), "c1", second), KeyFileExists);
    EXPECT_FALSE(std::filesystem::exists(dir.file("c1.key")));
    write_keypair(dir.str(), "c1", second, /*overwrite=*/true);
    EXPECT_EQ(load_keypair(dir.file("c1.key")).secret_key, second.secret_key);
    EXPECT_EQ(load_public_key(dir.file("c1.pub")), second.public_key);
    EXPECT_EQ(mode_of(dir.file("c1.key")), 0600u);
    EXPECT_EQ(dir.entries(), 2u);
    EXPECT_NE(error_of([&] { write_keypair(dir.file("missing"), "c2", second); }).find(dir.file("missing")),
              std::string::npos);
}

TEST(WireCurve, KeyFileErrorsNameTheFileAndTheProblem) {
    ScratchDir dir;
    const auto pair = generate_keypair();
    const auto other = generate_keypair();
    auto expect_error = [](const std::function<void()>& f, const std::string& file, const std::string& problem) {
        const auto err = error_of(f);
        EXPECT_NE(err.find("'" + file + "'"), std::string::npos) << "error does not name " << file << ": " << err;
        EXPECT_NE(err.find(problem), std::string::npos) << "error does not say '" << problem << "': " << err;
    };
    const auto missing = dir.file("nobody.key");
    expect_error([&] { load_keypair(missing); }, missing, "No such file or directory");
    expect_error([&] { load_public_key(dir.file("nobody.pub")); }, dir.file("nobody.pub"), "No such file");

    const auto short_key = dir.file("short.key");
    write_text(short_key, "public-key = " + pair.public_key + "\nsecret-key = " + pair.secret_key.substr(2) + "\n",
               0600);
    expect_error([&] { load_keypair(short_key); }, short_key, "line 2: secret-key has 38 characters");
    // The message never repeats a secret.
    EXPECT_EQ(error_of([&] { load_keypair(short_key); }).find(pair.secret_key.substr(2, 20)), std::string::npos);

    auto bad_chars = pair.public_key;
    bad_chars[3] = '"';
    const auto bad_key = dir.file("badchars.key");
    write_text(bad_key, "public-key = " + bad_chars + "\nsecret-key = " + pair.secret_key + "\n", 0600);
    expect_error([&] { load_keypair(bad_key); }, bad_key, "public-key character '\"' at position 4 is not in the Z85");

    const auto open_key = dir.file("open.key");
    write_text(open_key, "public-key = " + pair.public_key + "\nsecret-key = " + pair.secret_key + "\n", 0644);
    expect_error([&] { load_keypair(open_key); }, open_key, "permissions 0644");
    expect_error([&] { load_keypair(open_key); }, open_key, "too open");
    ::chmod(open_key.c_str(), 0640);
    expect_error([&] { load_keypair(open_key); }, open_key, "chmod 600");
    ::chmod(open_key.c_str(), 0600);
    EXPECT_EQ(load_keypair(open_key).public_key, pair.public_key);

    const auto mixed = dir.file("mixed.key");
    write_text(mixed, "public-key = " + other.public_key + "\nsecret-key = " + pair.secret_key + "\n", 0600);
    expect_error([&] { load_keypair(mixed); }, mixed, "does not belong to the secret key");

    const auto no_secret = dir.file("nosecret.key");
    write_text(no_secret, "public-key = " + pair.public_key + "\n", 0600);
    expect_error([&] { load_keypair(no_secret); }, no_secret, "no 'secret-key = KEY' line");

    const auto pub_as_key = dir.file("swapped.key");
    write_text(pub_as_key, pair.public_key + "\n", 0600);
    expect_error([&] { load_keypair(pub_as_key); }, pub_as_key, "line 1: expected 'public-key = KEY'");
    expect_error([&] { load_keypair(pub_as_key); }, pub_as_key, "looks like a public key file");

    const auto key_as_pub = dir.file("swapped.pub");
    write_text(key_as_pub, "public-key = " + pair.public_key + "\n", 0644);
    expect_error([&] { load_public_key(key_as_pub); }, key_as_pub, "looks like a key pair file");

    const auto two = dir.file("two.pub");
    write_text(two, pair.public_key + "\n" + other.public_key + "\n", 0644);
    expect_error([&] { load_public_key(two); }, two, "line 2: a second key");

    const auto empty = dir.file("empty.pub");
    write_text(empty, "# nothing here\n", 0644);
    expect_error([&] { load_public_key(empty); }, empty, "holds no key");
}

TEST(WireCurve, AllowListFromADirectoryOrAFile) {
    ScratchDir dir;
    const auto keys_dir = dir.file("clients");
    std::filesystem::create_directory(keys_dir);
    const auto a = generate_keypair(), b = generate_keypair(), stranger = generate_keypair();
    write_keypair(keys_dir, "alice", a);
    write_keypair(keys_dir, "bob", b);
    const auto from_dir = AllowList::load(keys_dir);
    EXPECT_EQ(from_dir.size(), 2u);  // the .key files are not read
    EXPECT_TRUE(from_dir.contains(a.public_key));
    EXPECT_EQ(from_dir.label(b.public_key), "bob");
    EXPECT_FALSE(from_dir.contains(stranger.public_key));
    EXPECT_EQ(from_dir.source(), keys_dir);

    const auto list = dir.file("allowed.txt");
    write_text(list, "# lab clients\n\n" + a.public_key + "   device-3\n  " + b.public_key + "\n", 0644);
    const auto from_file = AllowList::load(list);
    EXPECT_EQ(from_file.size(), 2u);
    EXPECT_EQ(from_file.label(a.public_key), "device-3");
    EXPECT_EQ(from_file.label(b.public_key), list + ":4");
    // A .pub file is an allow-list of one.
    EXPECT_EQ(AllowList::load(keys_dir + "/alice.pub").size(), 1u);

    const auto bad = dir.file("bad.txt");
    write_text(bad, a.public_key + "\n" + b.public_key.substr(0, 30) + "\n", 0644);
    const auto err = error_of([&] { AllowList::load(bad); });
    EXPECT_NE(err.find("'" + bad + "': line 2: key has 30 characters"), std::string::npos) << err;
    const auto secret = dir.file("secret.txt");
    write_text(secret, "secret-key = " + a.secret_key + "\n", 0600);
    EXPECT_NE(error_of([&] { AllowList::load(secret); }).find("must never leave its host"), std::string::npos);
    const auto empty_dir = dir.file("empty");
    std::filesystem::create_directory(empty_dir);
    EXPECT_NE(error_of([&] { AllowList::load(empty_dir); }).find("holds no .pub files"), std::string::npos);
    EXPECT_NE(error_of([&] { AllowList::load(dir.file("nope")); }).find("'" + dir.file("nope") + "' does not exist"),
              std::string::npos);
}

// ---- the loopback rule ----------------------------------------------------------------------------------------

TEST(WireCurve, LoopbackEndpoints) {
    for (const char* e : {"tcp://127.0.0.1:5555", "tcp://127.0.0.1:*", "tcp://127.8.9.10:1", "tcp://localhost:5555",
                          "tcp://LocalHost:5555", "tcp://[::1]:5555", "tcp://[::ffff:127.0.0.1]:7",
                          "tcp://127.0.0.1:5000;127.0.0.1:6000", "ipc:///tmp/fedlora.sock", "ipc://@abstract",
                          "inproc://control"})
        EXPECT_TRUE(is_loopback_endpoint(e)) << e;
    for (const char* e : {"tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://192.168.10.2:5555", "tcp://10.0.0.1:*",
                          "tcp://127.evil.example:5555", "tcp://127.0.0.1.example:5555", "tcp://localhost.example:1",
                          "tcp://[::]:5555", "tcp://[fe80::1%eth0]:5555", "tcp://eth0:5555", "tcp://lab-server:5555",
                          "tcp://127.0.0.1:5000;192.168.1.2:6000", "tcp://", "udp://127.0.0.1:5555",
                          "ws://127.0.0.1:5555", "pgm://eth0;239.192.1.1:5555", ""})
        EXPECT_FALSE(is_loopback_endpoint(e)) << e;
}

TEST(WireCurve, NonLoopbackEndpointWithoutCurveIsRefused) {
    zmq::context_t ctx(1);
    auto plain = make_socket(ctx, zmq::socket_type::pair);
    // The check comes before ZeroMQ sees the endpoint: nothing is bound or connected here.
    for (const std::string e : {"tcp://192.0.2.7:5555", "tcp://*:5555"}) {
        const auto err = error_of([&] { bind(plain, e); });
        EXPECT_NE(err.find("refusing to bind ZeroMQ endpoint '" + e + "' without CURVE"), std::string::npos) << err;
        EXPECT_NE(err.find("fedlora keys --name"), std::string::npos) << err;
        EXPECT_NE(err.find("make_curve_client"), std::string::npos) << err;
    }
    const auto err = error_of([&] { connect(plain, "tcp://198.51.100.3:5555"); });
    EXPECT_NE(err.find("refusing to connect ZeroMQ endpoint 'tcp://198.51.100.3:5555' without CURVE"),
              std::string::npos)
        << err;
    EXPECT_EQ(plain.get(zmq::sockopt::last_endpoint), "");

    // A CURVE client passes the rule (checked without connecting).
    auto client = make_socket(ctx, zmq::socket_type::pair);
    EXPECT_FALSE(uses_curve(client));
    make_curve_client(client, generate_keypair(), generate_keypair().public_key);
    EXPECT_TRUE(uses_curve(client));
    EXPECT_NO_THROW(require_secure_endpoint(client, "tcp://192.0.2.7:5555", "connect"));
    // Loopback stays open to plaintext.
    EXPECT_NO_THROW(require_secure_endpoint(plain, "tcp://127.0.0.1:5555", "bind"));
}

// ---- the authenticator and CURVE sockets ---------------------------------------------------------------------

TEST(WireCurve, AllowedClientExchangesMessagesWithCurveServer) {
    const auto server_keys = generate_keypair();
    const auto client_keys = generate_keypair();
    AllowList allowed;
    allowed.add(client_keys.public_key, "device-1");
    zmq::context_t ctx(1);
    LogSink log;
    Authenticator auth(ctx, allowed, log.callback());
    auto server = make_socket(ctx, zmq::socket_type::pair);
    make_curve_server(server, server_keys, auth);
    EXPECT_TRUE(uses_curve(server));
    const auto endpoint = bind(server, "tcp://127.0.0.1:*");
    ASSERT_EQ(endpoint.rfind("tcp://127.0.0.1:", 0), 0u) << endpoint;

    auto client = make_socket(ctx, zmq::socket_type::pair);
    make_curve_client(client, client_keys, server_keys.public_key);
    connect(client, endpoint);
    ASSERT_TRUE(send(client, hello(1)));

    // Read the raw frame once to see the User-Id the authenticator gave, then decode it.
    zmq::pollitem_t item{server.handle(), 0, ZMQ_POLLIN, 0};
    ASSERT_EQ(zmq::poll(&item, 1, 10s), 1) << "the allowed client's message did not arrive within 10 s";
    zmq::message_t frame;
    ASSERT_TRUE(server.recv(frame));
    EXPECT_STREQ(frame.gets("User-Id"), "device-1");
    const auto got = decode(static_cast<const std::uint8_t*>(frame.data()), frame.size());
    EXPECT_EQ(got.type, MessageType::Hello);
    EXPECT_EQ(got.client_id, 1u);
    EXPECT_EQ(as_f32(got.tensors.at(0)), (std::vector<float>{1.0f, 2.0f, 3.0f}));

    Message answer;
    answer.type = MessageType::RoundStart;
    answer.round = 3;
    ASSERT_TRUE(send(server, answer));
    const auto reply = receive(client, 10s);
    ASSERT_TRUE(reply.has_value()) << "the server's reply did not arrive within 10 s";
    EXPECT_EQ(reply->type, MessageType::RoundStart);
    EXPECT_EQ(reply->round, 3u);
    EXPECT_GE(auth.admitted(), 1u);
    EXPECT_EQ(auth.rejected(), 0u);
    EXPECT_TRUE(log.lines().empty());
}

TEST(WireCurve, UnknownClientKeyGetsNothingThroughAndIsLoggedOnce) {
    const auto server_keys = generate_keypair();
    const auto friend_keys = generate_keypair();
    const auto intruder_keys = generate_keypair();
    AllowList allowed;
    allowed.add(friend_keys.public_key, "friend");
    zmq::context_t ctx(1);
    LogSink log;
    Authenticator auth(ctx, allowed, log.callback());
    auto server = make_socket(ctx, zmq::socket_type::pull);
    make_curve_server(server, server_keys, auth);
    const auto endpoint = bind(server, "tcp://127.0.0.1:*");

    // Two clients with the same unknown key and one with another: three refusals, one line per key.
    auto intruder = make_socket(ctx, zmq::socket_type::push);
    make_curve_client(intruder, intruder_keys, server_keys.public_key);
    Monitor intruder_events(ctx, intruder);
    connect(intruder, endpoint);
    send(intruder, hello(666));  // queued; it must never arrive
    ASSERT_TRUE(log.wait_for(intruder_keys.public_key, 10s)) << "no rejection line naming the intruder's key";
    ASSERT_TRUE(intruder_events.wait(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 1, 10s));

    auto twin = make_socket(ctx, zmq::socket_type::push);
    make_curve_client(twin, intruder_keys, server_keys.public_key);
    Monitor twin_events(ctx, twin);
    connect(twin, endpoint);
    send(twin, hello(667));
    const auto other_keys = generate_keypair();
    auto other = make_socket(ctx, zmq::socket_type::push);
    make_curve_client(other, other_keys, server_keys.public_key);
    Monitor other_events(ctx, other);
    connect(other, endpoint);
    send(other, hello(668));
    // The authenticator logs before it answers: once a client has seen its refusal, any line for it exists.
    ASSERT_TRUE(twin_events.wait(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 1, 10s));
    ASSERT_TRUE(other_events.wait(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 1, 10s));
    EXPECT_EQ(log.count(intruder_keys.public_key), 1u);
    EXPECT_EQ(log.count(other_keys.public_key), 1u);
    EXPECT_GE(auth.rejected(), 3u);
    const auto line = log.lines().at(0);
    EXPECT_NE(line.find("rejected client key " + intruder_keys.public_key + " from 127.0.0.1"), std::string::npos)
        << line;
    EXPECT_NE(line.find("not in the allow-list"), std::string::npos) << line;

    // The server still serves the allowed client, and only its message arrives.
    auto good = make_socket(ctx, zmq::socket_type::push);
    make_curve_client(good, friend_keys, server_keys.public_key);
    connect(good, endpoint);
    ASSERT_TRUE(send(good, hello(1)));
    const auto got = receive(server, 10s);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->client_id, 1u);
    EXPECT_FALSE(receive(server, 300ms).has_value()) << "a message got past the allow-list";
    EXPECT_EQ(log.lines().size(), 2u);
}

TEST(WireCurve, PlaintextClientCannotTalkToCurveServer) {
    const auto server_keys = generate_keypair();
    AllowList allowed;
    allowed.add(generate_keypair().public_key, "someone");
    zmq::context_t ctx(1);
    Authenticator auth(ctx, allowed);
    auto server = make_socket(ctx, zmq::socket_type::pull);
    make_curve_server(server, server_keys, auth);
    Monitor server_events(ctx, server);
    const auto endpoint = bind(server, "tcp://127.0.0.1:*");

    auto plain = make_socket(ctx, zmq::socket_type::push);
    connect(plain, endpoint);  // loopback: allowed without CURVE, but the server wants CURVE
    send(plain, hello(2));
    ASSERT_TRUE(server_events.wait(kHandshakeFailed, 1, 10s)) << "the server saw no failed handshake";
    EXPECT_FALSE(receive(server, 300ms).has_value()) << "a plaintext message reached a CURVE server";
}

TEST(WireCurve, ClientTrustingAnotherServerKeyGetsNothingThrough) {
    const auto server_keys = generate_keypair();
    const auto client_keys = generate_keypair();
    AllowList allowed;
    allowed.add(client_keys.public_key, "device");
    zmq::context_t ctx(1);
    Authenticator auth(ctx, allowed);
    auto server = make_socket(ctx, zmq::socket_type::pull);
    make_curve_server(server, server_keys, auth);
    Monitor server_events(ctx, server);
    const auto endpoint = bind(server, "tcp://127.0.0.1:*");

    auto client = make_socket(ctx, zmq::socket_type::push);
    make_curve_client(client, client_keys, generate_keypair().public_key);  // not this server
    connect(client, endpoint);
    send(client, hello(3));
    ASSERT_TRUE(server_events.wait(kHandshakeFailed, 1, 10s));
    EXPECT_FALSE(receive(server, 300ms).has_value());
    EXPECT_EQ(auth.admitted(), 0u);
}

TEST(WireCurve, OneAuthenticatorPerContextAndItStopsByItself) {
    zmq::context_t ctx(1);
    {
        Authenticator first(ctx, AllowList{});
        const auto err = error_of([&] { Authenticator second(ctx, AllowList{}); });
        EXPECT_NE(err.find("another ZAP handler already serves this ZeroMQ context"), std::string::npos) << err;
    }
    // The first one released the ZAP endpoint when it stopped.
    EXPECT_NO_THROW(Authenticator again(ctx, AllowList{}));
}

TEST(WireCurve, CurveServerFailsClosedWithoutItsAuthenticator) {
    zmq::context_t ctx(1);
    {
        zmq::socket_t probe(ctx, zmq::socket_type::pair);
        const int on = 1;
        if (zmq_setsockopt(probe.handle(), 93 /* ZMQ_ZAP_ENFORCE_DOMAIN */, &on, sizeof on) != 0)
            GTEST_SKIP() << "this libzmq has no ZMQ_ZAP_ENFORCE_DOMAIN";
        probe.set(zmq::sockopt::linger, 0);
    }
    const auto server_keys = generate_keypair();
    const auto client_keys = generate_keypair();
    auto server = make_socket(ctx, zmq::socket_type::pull);
    {
        AllowList allowed;
        allowed.add(client_keys.public_key, "device");
        Authenticator auth(ctx, allowed);
        make_curve_server(server, server_keys, auth);
    }  // destroyed too early: no ZAP handler answers any more
    Monitor server_events(ctx, server);
    const auto endpoint = bind(server, "tcp://127.0.0.1:*");
    auto client = make_socket(ctx, zmq::socket_type::push);
    make_curve_client(client, client_keys, server_keys.public_key);
    connect(client, endpoint);
    send(client, hello(4));
    ASSERT_TRUE(server_events.wait(kHandshakeFailed, 1, 10s));
    EXPECT_FALSE(receive(server, 300ms).has_value()) << "a CURVE server without a ZAP handler admitted a client";
}

TEST(WireCurve, BadKeysAreRefusedWhenConfiguringSockets) {
    zmq::context_t ctx(1);
    auto s = make_socket(ctx, zmq::socket_type::pair);
    auto keys = generate_keypair();
    EXPECT_NE(error_of([&] { make_curve_client(s, keys, "tooshort"); }).find("server public key has 8 characters"),
              std::string::npos);
    auto mismatched = keys;
    mismatched.public_key = generate_keypair().public_key;
    EXPECT_NE(error_of([&] { make_curve_client(s, mismatched, keys.public_key); }).find("does not belong"),
              std::string::npos);
    EXPECT_FALSE(uses_curve(s));
}
