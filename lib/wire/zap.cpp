// The ZAP handler (ZeroMQ RFC 27, "ZeroMQ Authentication Protocol") behind every CURVE server socket.
//
// libzmq sends one request per handshake to inproc://zeromq.zap.01 of the socket's context: frames version "1.0",
// request id, domain, peer address, routing id, mechanism, then the mechanism's credentials (CURVE: the client's
// 32-byte public key). The handler answers version, request id, status code ("200" admits, "400" refuses), status
// text, user id and metadata. The user id becomes the "User-Id" property of the peer's messages.
#include <array>
#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "fedlora/wire/curve.h"

namespace fedlora::wire {

namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr std::size_t kMaxRememberedKeys = 4096;  // bounds the memory an endless stream of new keys can take
constexpr std::size_t kMaxRequestFrames = 16;

std::string z85_of(const zmq::message_t& key) {
    std::array<char, kZ85KeyLength + 1> text{};
    if (key.size() != 32 || zmq_z85_encode(text.data(), static_cast<const std::uint8_t*>(key.data()), 32) == nullptr)
        return "(malformed key of " + std::to_string(key.size()) + " bytes)";
    return std::string(text.data());
}

}  // namespace

Authenticator::Authenticator(zmq::context_t& ctx, AllowList allowed, Log log)
    : allowed_(std::move(allowed)),
      log_(log ? std::move(log) : Log([](const std::string&) {})),
      zap_(ctx, zmq::socket_type::rep),
      stop_rx_(ctx, zmq::socket_type::pair),
      stop_tx_(ctx, zmq::socket_type::pair) {
    if (!curve_available())
        throw CurveError("this libzmq was built without CURVE support (zmq_has(\"curve\") is false)");
    for (auto* s : {&zap_, &stop_rx_, &stop_tx_})
        s->set(zmq::sockopt::linger, 0);
    try {
        zap_.bind(kZapEndpoint);
    } catch (const zmq::error_t& e) {
        if (e.num() == EADDRINUSE)
            throw CurveError("another ZAP handler already serves this ZeroMQ context (" + std::string(kZapEndpoint) +
                             " is bound); use one fedlora::wire::Authenticator per context");
        throw CurveError(std::string("cannot bind the ZAP handler to ") + kZapEndpoint + ": " + e.what());
    }
    // The stop channel's name is unique in the process (a counter), so it never meets an endpoint that a previous
    // authenticator's socket still holds while libzmq reaps it.
    static std::atomic<unsigned long> instances{0};
    stop_endpoint_ = "inproc://fedlora.zap.stop." + std::to_string(instances++);
    stop_rx_.bind(stop_endpoint_);
    stop_tx_.connect(stop_endpoint_);
    // The sockets move to the thread here; starting a thread is the memory barrier ZeroMQ asks for.
    thread_ = std::thread([this] { run(); });
}

Authenticator::~Authenticator() {
    try {
        stop_tx_.send(zmq::str_buffer("stop"), zmq::send_flags::none);
    } catch (const zmq::error_t&) {
        // Only a terminated context makes this fail, and then the thread's poll has already returned.
    }
    if (thread_.joinable())
        thread_.join();
    // Closing a socket releases its inproc endpoint later, on libzmq's reaper thread; unbinding releases it now,
    // so that a new Authenticator can start in this context as soon as this one is gone.
    try {
        zap_.unbind(kZapEndpoint);
    } catch (const zmq::error_t&) {
        // Already released (a terminated context).
    }
}

void Authenticator::run() {
    try {
        while (true) {
            std::array<zmq::pollitem_t, 2> items{{{zap_.handle(), 0, ZMQ_POLLIN, 0},
                                                  {stop_rx_.handle(), 0, ZMQ_POLLIN, 0}}};
            zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));
            if (items[1].revents & ZMQ_POLLIN)
                return;
            if (items[0].revents & ZMQ_POLLIN)
                handle_request();
        }
    } catch (const zmq::error_t& e) {
        // The handler stays bound but silent: pending handshakes wait and none is admitted (fails closed).
        if (e.num() != ETERM) {
            try {
                log_(std::string("CURVE authenticator stopped on a ZeroMQ error: ") + e.what() +
                     "; no further client is admitted");
            } catch (...) {
            }
        }
    }
}

void Authenticator::handle_request() {
    std::vector<zmq::message_t> frames;
    bool more = true;
    while (more) {
        zmq::message_t frame;
        if (!zap_.recv(frame, zmq::recv_flags::none))
            return;
        more = frame.more();
        if (frames.size() < kMaxRequestFrames)
            frames.push_back(std::move(frame));
    }
    auto reply = [&](const char* code, const std::string& text, const std::string& user_id) {
        const std::string request_id = frames.size() > 1 ? frames[1].to_string() : std::string();
        zap_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
        zap_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
        zap_.send(zmq::buffer(std::string(code)), zmq::send_flags::sndmore);
        zap_.send(zmq::buffer(text), zmq::send_flags::sndmore);
        zap_.send(zmq::buffer(user_id), zmq::send_flags::sndmore);
        zap_.send(zmq::message_t(), zmq::send_flags::none);  // metadata: none
    };
    auto log_once = [&](const std::string& what, const std::string& line) {
        if (logged_.count(what))
            return;
        if (logged_.size() >= kMaxRememberedKeys)
            logged_.clear();
        logged_.insert(what);
        try {
            log_(line);
        } catch (...) {
            // A failing log callback must not take the authenticator down.
        }
    };

    if (frames.size() < 6 || frames[0].to_string() != "1.0") {
        reply("500", "malformed ZAP request", "");
        return;
    }
    const auto address = frames[3].to_string();
    const auto mechanism = frames[5].to_string();
    // A refusal is logged before the reply, so the line exists by the time the peer learns it was refused.
    if (mechanism != "CURVE" || frames.size() < 7) {
        ++rejected_;
        log_once("mechanism:" + mechanism,
                 "CURVE: rejected a " + mechanism + " handshake from " + address + ": only CURVE clients are admitted");
        reply("400", "mechanism " + mechanism + " is not allowed; CURVE is required", "");
        return;
    }
    const auto key = z85_of(frames[6]);
    if (allowed_.contains(key)) {
        ++admitted_;
        reply("200", "OK", allowed_.label(key));
        return;
    }
    ++rejected_;
    const auto& source = allowed_.source();
    log_once(key, "CURVE: rejected client key " + key + " from " + address + ": not in the allow-list" +
                      (source.empty() ? std::string() : " '" + source + "'"));
    reply("400", "client key not in the allow-list", "");
}

}  // namespace fedlora::wire
