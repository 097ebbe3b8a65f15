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

// True for endpoints that never leave this host: tcp:// to 127.0.0.0/8 (dotted quad), localhost, [::1] (or the
// IPv4-mapped [::ffff:127.x.y.z]); ipc://; inproc://. Anything else (another address, a host or interface name,
// '*', other transports) is not loopback.
bool is_loopback_endpoint(const std::string& endpoint);

// The transport-security policy: every non-loopback endpoint uses CURVE. Throws std::runtime_error naming the
// endpoint and how to give the socket keys if `endpoint` is not loopback and `socket` has no CURVE configured.
// `action` ("bind" or "connect") goes into the message.
void require_secure_endpoint(zmq::socket_t& socket, const std::string& endpoint, const char* action);

// Binds `socket` to `endpoint` (e.g. "tcp://127.0.0.1:*") and returns the endpoint actually bound, with the port
// the system chose. Enforces require_secure_endpoint first. Throws std::runtime_error naming the endpoint on failure.
std::string bind(zmq::socket_t& socket, const std::string& endpoint);

// Connects `socket` to `endpoint`, enforcing require_secure_endpoint first. Throws std::runtime_error naming the
// endpoint on failure.
void connect(zmq::socket_t& socket, const std::string& endpoint);

}  // namespace fedlora::wire
