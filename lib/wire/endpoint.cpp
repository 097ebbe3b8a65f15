#include "fedlora/wire/endpoint.h"

#include <stdexcept>

namespace fedlora::wire {

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

std::string bind(zmq::socket_t& socket, const std::string& endpoint) {
    try {
        socket.bind(endpoint);
    } catch (const zmq::error_t& e) {
        throw std::runtime_error("cannot bind ZeroMQ endpoint '" + endpoint + "': " + e.what());
    }
    return socket.get(zmq::sockopt::last_endpoint);
}

}  // namespace fedlora::wire
