// CURVE keys, key files, allow-lists and socket configuration (the ZAP handler is in zap.cpp).
#include "fedlora/wire/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

namespace fedlora::wire {

namespace {

namespace fs = std::filesystem;

constexpr const char* kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
constexpr std::size_t kMaxKeyFileBytes = 64 * 1024;   // far above any key file; bounds what a load reads
constexpr std::size_t kMaxAllowListBytes = 16 << 20;  // a list of ~300k keys

std::string errno_text(int err) { return std::strerror(err); }

// `show_char` is false for secret keys: an error message never repeats any part of a secret.
std::string key_problem(const std::string& key, bool show_char) {
    if (key.size() != kZ85KeyLength)
        return "has " + std::to_string(key.size()) + " characters, a Z85 CURVE key has " +
               std::to_string(kZ85KeyLength);
    for (std::size_t g = 0; g < kZ85KeyLength; g += 5) {
        std::uint64_t value = 0;
        for (std::size_t i = g; i < g + 5; ++i) {
            const char* at = std::strchr(kZ85Alphabet, key[i]);
            if (key[i] == '\0' || at == nullptr) {
                std::string what = "character";
                if (show_char) {
                    const auto c = static_cast<unsigned char>(key[i]);
                    char buf[16];
                    if (c >= 0x21 && c < 0x7f)
                        std::snprintf(buf, sizeof buf, " '%c'", c);
                    else
                        std::snprintf(buf, sizeof buf, " 0x%02x", c);
                    what += buf;
                }
                return what + " at position " + std::to_string(i + 1) + " is not in the Z85 alphabet";
            }
            value = value * 85 + static_cast<std::uint64_t>(at - kZ85Alphabet);
        }
        if (value > 0xFFFFFFFFull)
            return "characters " + std::to_string(g + 1) + "-" + std::to_string(g + 5) +
                   " do not encode a 32-bit group (not a Z85 key)";
    }
    return {};
}

std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos)
        return {};
    const auto e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start <= text.size()) {
        const auto nl = text.find('\n', start);
        if (nl == std::string::npos) {
            if (start < text.size())
                lines.push_back(text.substr(start));
            break;
        }
        lines.push_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    return lines;
}

// A key file line "public-key = KEY" or "secret-key = KEY" (the Z85 alphabet holds '=', so a bare key may too):
// true and the parts if `line` starts with one of the two field names followed by '='.
bool parse_field(const std::string& line, std::string& field, std::string& value) {
    for (const char* name : {"public-key", "secret-key"}) {
        if (line.rfind(name, 0) != 0)
            continue;
        const auto rest = trim(line.substr(std::strlen(name)));
        if (rest.empty() || rest[0] != '=')
            return false;
        field = name;
        value = trim(rest.substr(1));
        return true;
    }
    return false;
}

// A comment line starts with '#'. No key can: a Z85 key's first character encodes a value below 83, and '#' is
// digit 84.
bool is_blank_or_comment(const std::string& trimmed) { return trimmed.empty() || trimmed[0] == '#'; }

std::string octal_mode(mode_t m) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
    return buf;
}

// Reads a small regular file. `what` names it in errors ("CURVE key file"). With `secret`, refuses a file that
// group or others can access, checked on the opened file itself.
std::string read_file(const std::string& path, const std::string& what, bool secret, std::size_t max_bytes) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw CurveError("cannot read " + what + " '" + path + "': " + errno_text(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st{};
    if (::fstat(fd, &st) != 0)
        throw CurveError("cannot stat " + what + " '" + path + "': " + errno_text(errno));
    if (!S_ISREG(st.st_mode))
        throw CurveError(what + " '" + path + "' is not a regular file");
    if (secret && (st.st_mode & 077) != 0)
        throw CurveError("permissions " + octal_mode(st.st_mode) + " of " + what + " '" + path +
                         "' are too open: group or others can access the secret key. A secret key file must be "
                         "accessible by its owner only: chmod 600 '" + path + "'");
    if (static_cast<std::uint64_t>(st.st_size) > max_bytes)
        throw CurveError(what + " '" + path + "' is " + std::to_string(st.st_size) + " bytes, more than the " +
                         std::to_string(max_bytes) + " a " + what + " may have");
    std::string text;
    char buf[4096];
    while (true) {
        const auto n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw CurveError("cannot read " + what + " '" + path + "': " + errno_text(errno));
        }
        if (n == 0)
            break;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > max_bytes)
            throw CurveError(what + " '" + path + "' is larger than the " + std::to_string(max_bytes) +
                             " bytes a " + what + " may have");
    }
    return text;
}

void write_all(int fd, const std::string& text, const std::string& path) {
    std::size_t done = 0;
    while (done < text.size()) {
        const auto n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw CurveError("cannot write '" + path + "': " + errno_text(errno));
        }
        done += static_cast<std::size_t>(n);
    }
}

// Writes `text` to `path` with exactly `mode`: a temporary file in the same directory, flushed, then renamed over
// `path` (replace) or hard-linked to it (no replace: fails atomically if `path` appeared meanwhile).
void write_file_atomic(const std::string& path, const std::string& text, mode_t mode, bool replace) {
    const fs::path target(path);
    std::string tmpl = (target.parent_path() / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
    std::vector<char> name(tmpl.begin(), tmpl.end());
    name.push_back('\0');
    const int fd = ::mkstemp(name.data());  // created 0600
    if (fd < 0)
        throw CurveError("cannot create a temporary file next to '" + path + "': " + errno_text(errno));
    const std::string tmp(name.data());
    try {
        if (::fchmod(fd, mode) != 0)
            throw CurveError("cannot set mode " + octal_mode(mode) + " on '" + tmp + "': " + errno_text(errno));
        write_all(fd, text, tmp);
        if (::fsync(fd) != 0)
            throw CurveError("cannot flush '" + tmp + "': " + errno_text(errno));
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    if (::close(fd) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw CurveError("cannot write '" + tmp + "': " + errno_text(err));
    }
    if (replace) {
        if (::rename(tmp.c_str(), path.c_str()) != 0) {
            const int err = errno;
            ::unlink(tmp.c_str());
            throw CurveError("cannot write '" + path + "': " + errno_text(err));
        }
    } else {
        if (::link(tmp.c_str(), path.c_str()) != 0) {
            const int err = errno;
            ::unlink(tmp.c_str());
            if (err == EEXIST)
                throw KeyFileExists("'" + path + "' already exists; refusing to overwrite a key");
            throw CurveError("cannot write '" + path + "': " + errno_text(err));
        }
        ::unlink(tmp.c_str());
    }
}

void sync_directory(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        ::fsync(fd);  // best effort: the files themselves are already complete
        ::close(fd);
    }
}

void require_curve() {
    if (!curve_available())
        throw CurveError("this libzmq was built without CURVE support (zmq_has(\"curve\") is false); "
                         "install Debian's libzmq5, which has it");
}

void check_pair(const KeyPair& keys, const std::string& whose) {
    auto p = key_problem(keys.public_key, true);
    if (!p.empty())
        throw CurveError(whose + " public key " + p);
    p = key_problem(keys.secret_key, false);
    if (!p.empty())
        throw CurveError(whose + " secret key " + p);
    if (public_key_of(keys.secret_key) != keys.public_key)
        throw CurveError(whose + " public key " + keys.public_key + " does not belong to its secret key");
}

}  // namespace

bool curve_available() { return zmq_has("curve") != 0; }

KeyPair generate_keypair() {
    require_curve();
    std::array<char, kZ85KeyLength + 1> pub{}, sec{};
    if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
        throw CurveError(std::string("zmq_curve_keypair failed: ") + zmq_strerror(zmq_errno()));
    return KeyPair{std::string(pub.data()), std::string(sec.data())};
}

std::string z85_key_problem(const std::string& key) { return key_problem(key, true); }

std::string public_key_of(const std::string& secret_key) {
    require_curve();
    const auto p = key_problem(secret_key, false);
    if (!p.empty())
        throw CurveError("secret key " + p);
    std::array<char, kZ85KeyLength + 1> pub{};
    if (zmq_curve_public(pub.data(), secret_key.c_str()) != 0)
        throw CurveError(std::string("zmq_curve_public failed: ") + zmq_strerror(zmq_errno()));
    return std::string(pub.data());
}

std::string key_name_problem(const std::string& name) {
    if (name.empty())
        return "a key name must not be empty";
    if (name.size() > 64)
        return "key name '" + name + "' has " + std::to_string(name.size()) + " characters, at most 64 are allowed";
    if (name[0] == '.' || name[0] == '-')
        return "key name '" + name + "' must not start with '" + name[0] + "'";
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                        c == '_' || c == '-';
        if (!ok)
            return "key name '" + name + "' may hold only letters, digits, '.', '_' and '-' (it becomes a file name)";
    }
    return {};
}

KeyFiles write_keypair(const std::string& dir, const std::string& name, const KeyPair& pair, bool overwrite) {
    const auto bad_name = key_name_problem(name);
    if (!bad_name.empty())
        throw CurveError(bad_name);
    check_pair(pair, "key pair '" + name + "':");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw CurveError("key directory '" + dir + "' does not exist or is not a directory");
    KeyFiles files;
    files.secret_file = (fs::path(dir) / (name + ".key")).string();
    files.public_file = (fs::path(dir) / (name + ".pub")).string();
    if (!overwrite) {
        for (const auto* f : {&files.secret_file, &files.public_file})
            if (fs::symlink_status(*f, ec).type() != fs::file_type::not_found)
                throw KeyFileExists("'" + *f + "' already exists; refusing to overwrite a key");
    }
    const std::string secret_text = "# fedlora CURVE key pair '" + name +
                                    "'. SECRET: keep this file on this host, mode 0600.\n"
                                    "# Give peers " + name + ".pub, never this file.\n"
                                    "public-key = " + pair.public_key + "\n"
                                    "secret-key = " + pair.secret_key + "\n";
    const std::string public_text = "# fedlora CURVE public key '" + name +
                                    "': give this file to the peers that must trust it.\n" + pair.public_key + "\n";
    write_file_atomic(files.secret_file, secret_text, 0600, overwrite);
    try {
        write_file_atomic(files.public_file, public_text, 0644, overwrite);
    } catch (...) {
        if (!overwrite)
            ::unlink(files.secret_file.c_str());  // do not leave half a pair behind
        throw;
    }
    sync_directory(dir);
    return files;
}

KeyPair load_keypair(const std::string& key_file) {
    const std::string what = "CURVE key file";
    const auto text = read_file(key_file, what, true, kMaxKeyFileBytes);
    const std::string where = what + " '" + key_file + "': ";
    KeyPair pair;
    bool have_public = false, have_secret = false;
    const auto lines = split_lines(text);
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto line = trim(lines[i]);
        if (is_blank_or_comment(line))
            continue;
        const std::string at = where + "line " + std::to_string(i + 1) + ": ";
        std::string field, value;
        if (!parse_field(line, field, value))
            throw CurveError(at + "expected 'public-key = KEY' or 'secret-key = KEY'" +
                             (is_z85_key(line) ? std::string(" (this looks like a public key file, NAME.pub; a key "
                                                             "pair file is NAME.key)")
                                               : std::string()));
        if (field == "public-key") {
            if (have_public)
                throw CurveError(at + "public-key given twice");
            const auto p = key_problem(value, true);
            if (!p.empty())
                throw CurveError(at + "public-key " + p);
            pair.public_key = value;
            have_public = true;
        } else if (field == "secret-key") {
            if (have_secret)
                throw CurveError(at + "secret-key given twice");
            const auto p = key_problem(value, false);
            if (!p.empty())
                throw CurveError(at + "secret-key " + p);
            pair.secret_key = value;
            have_secret = true;
        }
    }
    if (!have_secret)
        throw CurveError(where + "no 'secret-key = KEY' line");
    if (!have_public)
        throw CurveError(where + "no 'public-key = KEY' line");
    if (public_key_of(pair.secret_key) != pair.public_key)
        throw CurveError(where + "public-key " + pair.public_key +
                         " does not belong to the secret key in the same file");
    return pair;
}

std::string load_public_key(const std::string& pub_file) {
    const std::string what = "CURVE public key file";
    const auto text = read_file(pub_file, what, false, kMaxKeyFileBytes);
    const std::string where = what + " '" + pub_file + "': ";
    std::string key;
    const auto lines = split_lines(text);
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto line = trim(lines[i]);
        if (is_blank_or_comment(line))
            continue;
        const std::string at = where + "line " + std::to_string(i + 1) + ": ";
        std::string field, value;
        if (parse_field(line, field, value))
            throw CurveError(at + "expected a bare Z85 key; this looks like a key pair file (NAME.key), give the "
                                  "public key file NAME.pub instead");
        if (!key.empty())
            throw CurveError(at + "a second key; a public key file holds exactly one");
        const auto p = key_problem(line, true);
        if (!p.empty())
            throw CurveError(at + "public key " + p);
        key = line;
    }
    if (key.empty())
        throw CurveError(where + "holds no key");
    return key;
}

void AllowList::add(const std::string& key, const std::string& label) {
    const auto p = key_problem(key, true);
    if (!p.empty())
        throw CurveError("allow-list key " + p);
    keys_.emplace(key, label);
}

std::string AllowList::label(const std::string& key) const {
    const auto it = keys_.find(key);
    return it == keys_.end() ? std::string() : it->second;
}

AllowList AllowList::load(const std::string& path) {
    AllowList list;
    list.source_ = path;
    std::error_code ec;
    const auto st = fs::status(path, ec);
    if (ec || st.type() == fs::file_type::not_found)
        throw CurveError("allow-list '" + path + "' does not exist (give a directory of client .pub files or a "
                         "file with one client public key per line)");
    if (fs::is_directory(st)) {
        std::vector<fs::path> files;
        for (const auto& entry : fs::directory_iterator(path, ec)) {
            std::error_code type_ec;
            if (entry.path().extension() == ".pub" && entry.is_regular_file(type_ec))
                files.push_back(entry.path());
        }
        if (ec)
            throw CurveError("cannot list allow-list directory '" + path + "': " + ec.message());
        std::sort(files.begin(), files.end());
        for (const auto& f : files)
            list.keys_.emplace(load_public_key(f.string()), f.stem().string());
        if (list.keys_.empty())
            throw CurveError("allow-list directory '" + path +
                             "' holds no .pub files, so it would admit no client; copy the clients' NAME.pub "
                             "files into it");
        return list;
    }
    const std::string what = "allow-list";
    const auto text = read_file(path, what, false, kMaxAllowListBytes);
    const auto lines = split_lines(text);
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto line = trim(lines[i]);
        if (is_blank_or_comment(line))
            continue;
        const std::string at = what + " '" + path + "': line " + std::to_string(i + 1) + ": ";
        std::string field, value;
        if (parse_field(line, field, value))
            throw CurveError(at + "expected a Z85 public key, optionally followed by a label; this looks like a "
                                  "key pair file (NAME.key), which must never leave its host");
        const auto space = line.find_first_of(" \t");
        const auto key = line.substr(0, space);
        const auto given = space == std::string::npos ? std::string() : trim(line.substr(space));
        const auto p = key_problem(key, true);
        if (!p.empty())
            throw CurveError(at + "key " + p);
        list.keys_.emplace(key, given.empty() ? path + ":" + std::to_string(i + 1) : given);
    }
    if (list.keys_.empty())
        throw CurveError("allow-list '" + path + "' lists no keys, so it would admit no client");
    return list;
}

void make_curve_server(zmq::socket_t& socket, const KeyPair& keys, const Authenticator& auth) {
    // `auth` is not used here: asking for it makes sure a ZAP handler exists. Without one libzmq would complete
    // every CURVE handshake, whatever the client's key.
    static_cast<void>(auth);
    require_curve();
    check_pair(keys, "server");
    socket.set(zmq::sockopt::curve_server, true);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
    socket.set(zmq::sockopt::curve_publickey, keys.public_key);
    socket.set(zmq::sockopt::zap_domain, "fedlora");
    // Defence in depth: with ZMQ_ZAP_ENFORCE_DOMAIN a handshake that finds no ZAP handler (an Authenticator
    // destroyed too early) fails instead of admitting the client. It is a draft option of libzmq 4.3 (Debian's
    // build has it, its header hides it); a build without it refuses the option and keeps the default.
    constexpr int kZapEnforceDomain = 93;
    const int on = 1;
    zmq_setsockopt(socket.handle(), kZapEnforceDomain, &on, sizeof on);
}

void make_curve_client(zmq::socket_t& socket, const KeyPair& keys, const std::string& server_public_key) {
    require_curve();
    check_pair(keys, "client");
    const auto p = key_problem(server_public_key, true);
    if (!p.empty())
        throw CurveError("server public key " + p);
    socket.set(zmq::sockopt::curve_serverkey, server_public_key);
    socket.set(zmq::sockopt::curve_publickey, keys.public_key);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

bool uses_curve(zmq::socket_t& socket) {
    if (socket.get(zmq::sockopt::mechanism) != ZMQ_CURVE)
        return false;
    if (socket.get(zmq::sockopt::curve_server))
        return true;
    std::array<std::uint8_t, 32> server_key{};
    std::size_t len = server_key.size();
    if (zmq_getsockopt(socket.handle(), ZMQ_CURVE_SERVERKEY, server_key.data(), &len) != 0)
        return false;
    return std::any_of(server_key.begin(), server_key.end(), [](std::uint8_t b) { return b != 0; });
}

}  // namespace fedlora::wire
