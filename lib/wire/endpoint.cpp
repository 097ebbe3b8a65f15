#include "fedlora/wire/endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <stdexcept>

#include "fedlora/wire/curve.h"

namespace fedlora::wire {

namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// One tcp:// address ("host:port", "[v6]:port"): is its host on the loopback interface?
bool is_loopback_tcp_address(const std::string& address) {
    std::string host;
    if (starts_with(address, "[")) {
        const auto close = address.find(']');
        if (close == std::string::npos)
            return false;
        host = address.substr(1, close - 1);
        in6_addr a6{};
        if (inet_pton(AF_INET6, host.c_str(), &a6) != 1)
            return false;
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    const auto colon = address.rfind(':');
    host = colon == std::string::npos ? address : address.substr(0, colon);
    std::string lower = host;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower == "localhost")
        return true;
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) != 1)  // strict dotted quad: "127.evil.example" is not an address
        return false;
    return (ntohl(a4.s_addr) >> 24) == 127;
}

}  // namespace

bool send(zmq::socket_t& socket, const Message& msg) {
    const auto bytes = encode(msg);
    auto res = socket.send(zmq::const_buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
    return res.has_value();
}

std::optional<Message> receive(zmq::socket_t& socket, std::chrono::milliseconds timeout, const Limits& limits) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0)
        return std::nullopt;
    zmq::message_t frame;
    if (!socket.recv(frame, zmq::recv_flags::dontwait))
        return std::nullopt;
    return decode(static_cast<const std::uint8_t*>(frame.data()), frame.size(), limits);
}

bool is_loopback_endpoint(const std::string& endpoint) {
    if (starts_with(endpoint, "inproc://") || starts_with(endpoint, "ipc://"))
        return true;
    if (!starts_with(endpoint, "tcp://"))
        return false;
    // A connect endpoint may name a source address first ("tcp://source;destination"): every part must be loopback.
    std::string rest = endpoint.substr(std::strlen("tcp://"));
    if (rest.empty())
        return false;
    std::size_t start = 0;
    while (true) {
        const auto semi = rest.find(';', start);
        const auto part = rest.substr(start, semi == std::string::npos ? std::string::npos : semi - start);
        if (part.empty() || !is_loopback_tcp_address(part))
            return false;
        if (semi == std::string::npos)
            return true;
        start = semi + 1;
    }
}

void require_secure_endpoint(zmq::socket_t& socket, const std::string& endpoint, const char* action) {
    if (is_loopback_endpoint(endpoint) || uses_curve(socket))
        return;
    throw std::runtime_error(
        std::string("refusing to ") + action + " ZeroMQ endpoint '" + endpoint +
        "' without CURVE: only loopback endpoints (tcp://127.x.y.z, tcp://localhost, tcp://[::1], ipc://, "
        "inproc://) may carry plaintext. Give the socket keys first: create them with 'fedlora keys --name NAME', "
        "then a server calls fedlora::wire::make_curve_server with its NAME.key and an Authenticator over the "
        "clients' .pub files, a client calls make_curve_client with its NAME.key and the server's .pub "
        "(see docs/wire.md, \"Transport security\")");
}

std::string bind(zmq::socket_t& socket, const std::string& endpoint) {
    require_secure_endpoint(socket, endpoint, "bind");
    try {
        socket.bind(endpoint);
    } catch (const zmq::error_t& e) {
        throw std::runtime_error("cannot bind ZeroMQ endpoint '" + endpoint + "': " + e.what());
    }
    return socket.get(zmq::sockopt::last_endpoint);
}

void connect(zmq::socket_t& socket, const std::string& endpoint) {
    require_secure_endpoint(socket, endpoint, "connect");
    try {
        socket.connect(endpoint);
    } catch (const zmq::error_t& e) {
        throw std::runtime_error("cannot connect to ZeroMQ endpoint '" + endpoint + "': " + e.what());
    }
}

}  // namespace fedlora::wire
