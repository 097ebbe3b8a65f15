// CURVE security for the control and data planes (docs/wire.md, "Transport security"): key pairs and their files,
// the allow-list of client keys, the ZAP authenticator that enforces it, and socket configuration.
//
// Keys are ZeroMQ CURVE keys (Curve25519) in Z85 text: 40 characters each. A key pair lives in two files:
// NAME.key (public + secret key; mode 0600, refused when group or others can access it) and NAME.pub (the public
// key alone, for the peers). A server admits only the client keys its allow-list names.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include <zmq.hpp>

namespace fedlora::wire {

inline constexpr std::size_t kZ85KeyLength = 40;

// Every key, key-file and allow-list failure: names the file (when there is one) and the problem.
class CurveError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};
// write_keypair found a file it must not overwrite.
class KeyFileExists : public CurveError {
public:
    using CurveError::CurveError;
};

struct KeyPair {
    std::string public_key;  // Z85, 40 characters
    std::string secret_key;  // Z85, 40 characters
};

// True if libzmq was built with CURVE (Debian's is).
bool curve_available();

// A fresh key pair from libzmq's generator. Throws CurveError if libzmq lacks CURVE.
KeyPair generate_keypair();

// Why `key` is not a Z85 CURVE key (length, the first character outside the Z85 alphabet, a 5-character group
// that overflows 32 bits), or an empty string if it is one.
std::string z85_key_problem(const std::string& key);
inline bool is_z85_key(const std::string& key) { return z85_key_problem(key).empty(); }

// The public key that belongs to a Z85 secret key. Throws CurveError if `secret_key` is not a key.
std::string public_key_of(const std::string& secret_key);

// Why `name` cannot name a key pair (it becomes a file name: letters, digits, '.', '_', '-', at most 64, not
// starting with '.' or '-'), or an empty string if it can.
std::string key_name_problem(const std::string& name);

struct KeyFiles {
    std::string secret_file;  // DIR/NAME.key
    std::string public_file;  // DIR/NAME.pub
};

// Writes DIR/NAME.key (mode 0600) and DIR/NAME.pub (mode 0644), each atomically (a temporary file in DIR, then
// a rename). `dir` must exist. Without `overwrite`, throws KeyFileExists naming the file if either one exists.
KeyFiles write_keypair(const std::string& dir, const std::string& name, const KeyPair& pair, bool overwrite = false);

// Reads NAME.key: refuses a file that group or others can access, checks both keys and that they belong together.
KeyPair load_keypair(const std::string& key_file);

// Reads NAME.pub (or any file holding exactly one key line).
std::string load_public_key(const std::string& pub_file);

// The client keys a CURVE server admits, each with a label that becomes the ZeroMQ User-Id of the peer's messages.
class AllowList {
public:
    AllowList() = default;

    // `path` is either a directory, whose *.pub files each give one key (label: the file name without .pub), or
    // a file with one key per line, optionally followed by a label ('#' starts a comment line). An allow-list
    // that admits nobody is refused as a mistake.
    static AllowList load(const std::string& path);

    // Throws CurveError if `key` is not a Z85 key.
    void add(const std::string& key, const std::string& label);
    bool contains(const std::string& key) const { return keys_.count(key) != 0; }
    // The label of an admitted key; empty if the key is not admitted.
    std::string label(const std::string& key) const;
    std::size_t size() const { return keys_.size(); }
    // Where the keys came from (the loaded path; empty for a list built in memory), for log lines.
    const std::string& source() const { return source_; }

private:
    std::map<std::string, std::string> keys_;
    std::string source_;
};

// The ZAP handler (ZeroMQ RFC 27) of one ZeroMQ context: every CURVE handshake on a server socket of that
// context asks it, and it admits only the client keys in its allow-list. It runs on its own thread from
// construction to destruction. A rejected client never gets a message through; each rejected key is logged once
// (one line naming the key and the peer address, written before the refusal is sent; the client's automatic
// reconnects are not logged again; the memory of logged keys is cleared after 4096 distinct keys).
//
// Only one authenticator can exist per context (constructing a second throws CurveError). Destroy it after the
// sockets it guards and before the context. Without a ZAP handler libzmq admits every CURVE client, which is why
// make_curve_server asks for one (and also sets ZMQ_ZAP_ENFORCE_DOMAIN where libzmq offers it, so that a server
// whose authenticator is gone refuses clients).
class Authenticator {
public:
    // Called on the authenticator's thread.
    using Log = std::function<void(const std::string&)>;

    Authenticator(zmq::context_t& ctx, AllowList allowed, Log log = {});
    ~Authenticator();
    Authenticator(const Authenticator&) = delete;
    Authenticator& operator=(const Authenticator&) = delete;

    const AllowList& allowed() const { return allowed_; }
    // Handshakes admitted and refused so far (a client that reconnects counts each attempt).
    std::size_t admitted() const { return admitted_.load(); }
    std::size_t rejected() const { return rejected_.load(); }

private:
    void run();
    void handle_request();

    AllowList allowed_;
    Log log_;
    zmq::socket_t zap_;
    zmq::socket_t stop_rx_;
    zmq::socket_t stop_tx_;
    std::string stop_endpoint_;
    std::set<std::string> logged_;  // rejected keys already logged (owned by the thread)
    std::atomic<std::size_t> admitted_{0};
    std::atomic<std::size_t> rejected_{0};
    std::thread thread_;
};

// Makes `socket` a CURVE server with `keys` (only the secret key is used on the wire). `auth` must run in the
// socket's context. Call before bind.
void make_curve_server(zmq::socket_t& socket, const KeyPair& keys, const Authenticator& auth);

// Makes `socket` a CURVE client with its own key pair, trusting the server whose public key is
// `server_public_key`. Call before connect.
void make_curve_client(zmq::socket_t& socket, const KeyPair& keys, const std::string& server_public_key);

// True if `socket` is configured for CURVE: a server, or a client that knows its server's key.
bool uses_curve(zmq::socket_t& socket);

}  // namespace fedlora::wire
