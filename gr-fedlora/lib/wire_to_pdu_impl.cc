/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <gnuradio/fedlora/wire_to_pdu.h>
#include <gnuradio/io_signature.h>

#include "fedlora/wire/endpoint.h"
#include "pdu_wire.h"

#include <zmq.hpp>

#include <atomic>
#include <thread>

namespace gr {
namespace fedlora {

class wire_to_pdu_impl : public wire_to_pdu
{
public:
    wire_to_pdu_impl(const std::string& endpoint, bool bind, int max_message_bytes, bool as_dict)
        : gr::block("wire_to_pdu", gr::io_signature::make(0, 0, 0), gr::io_signature::make(0, 0, 0)),
          d_context(1),
          d_socket(d_context, zmq::socket_type::pull),
          d_as_dict(as_dict)
    {
        if (max_message_bytes < 64)
            throw std::invalid_argument("wire_to_pdu: max_message_bytes = " +
                                        std::to_string(max_message_bytes) + " must be >= 64");
        d_limits.max_message_bytes = static_cast<std::size_t>(max_message_bytes);
        d_socket.set(zmq::sockopt::linger, 0);
        // Frames over the limit are refused by ZeroMQ itself, before they are received.
        d_socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(max_message_bytes));
        // The bridges' sockets have no CURVE keys: by the project's transport policy (docs/wire.md, "Transport
        // security") they carry plaintext on this host only.
        if (!::fedlora::wire::is_loopback_endpoint(endpoint))
            throw std::invalid_argument(
                "wire_to_pdu: endpoint '" + endpoint +
                "' is not a loopback endpoint; the bridges have no CURVE keys, so they bind and connect on this host "
                "only (tcp://127.0.0.1:PORT, ipc://, inproc://). Across hosts, run the bridge next to the process it "
                "serves, or use the fedlora server/client link, which has CURVE (docs/wire.md)");
        if (bind) {
            d_endpoint = ::fedlora::wire::bind(d_socket, endpoint);
        } else {
            try {
                d_socket.connect(endpoint);
            } catch (const zmq::error_t& e) {
                throw std::invalid_argument("wire_to_pdu: cannot connect to '" + endpoint + "': " + e.what());
            }
            d_endpoint = endpoint;
        }
        message_port_register_out(pmt::mp("pdus"));
    }

    ~wire_to_pdu_impl() override { stop(); }

    bool start() override
    {
        d_running = true;
        d_thread = std::thread([this] { loop(); });
        return block::start();
    }

    bool stop() override
    {
        d_running = false;
        if (d_thread.joinable())
            d_thread.join();
        return block::stop();
    }

    std::string last_endpoint() const override { return d_endpoint; }
    unsigned long dropped() const override { return d_dropped.load(); }

private:
    void loop()
    {
        while (d_running) {
            try {
                auto msg = ::fedlora::wire::receive(d_socket, std::chrono::milliseconds(100), d_limits);
                if (msg)
                    message_port_pub(pmt::mp("pdus"), d_as_dict ? message_to_dict(*msg) : message_to_pdu(*msg));
            } catch (const std::exception& e) {
                ++d_dropped;
                d_logger->warn("message dropped: {}", e.what());
            }
        }
    }

    zmq::context_t d_context;
    zmq::socket_t d_socket;
    std::string d_endpoint;
    const bool d_as_dict;
    ::fedlora::wire::Limits d_limits;
    std::atomic<bool> d_running{ false };
    std::atomic<unsigned long> d_dropped{ 0 };
    std::thread d_thread;
};

wire_to_pdu::sptr wire_to_pdu::make(const std::string& endpoint, bool bind, int max_message_bytes, bool as_dict)
{
    return gnuradio::make_block_sptr<wire_to_pdu_impl>(endpoint, bind, max_message_bytes, as_dict);
}

} // namespace fedlora
} // namespace gr
