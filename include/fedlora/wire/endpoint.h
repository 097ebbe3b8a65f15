// ZeroMQ transport for framed messages: one message per ZeroMQ frame.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "fedlora/wire/message.h"

namespace fedlora::wire {

// Sends one encoded message. Returns false if the socket would block past its send timeout.
bool send(zmq::socket_t& socket, const Message& msg);

// Receives one message, waiting at most `timeout`. Returns nullopt on timeout; throws WireError (after consuming
// the frame, so the socket stays usable) if the frame does not decode.
std::optional<Message> receive(zmq::socket_t& socket, std::chrono::milliseconds timeout, const Limits& limits = {});

// Binds `socket` to `endpoint` (e.g. "tcp://127.0.0.1:*") and returns the endpoint actually bound, with the port
// the system chose. Throws std::runtime_error naming the endpoint on failure.
std::string bind(zmq::socket_t& socket, const std::string& endpoint);

}  // namespace fedlora::wire
