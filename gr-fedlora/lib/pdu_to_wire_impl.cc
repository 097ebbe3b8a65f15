/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <gnuradio/fedlora/pdu_to_wire.h>
#include <gnuradio/io_signature.h>

#include "fedlora/wire/endpoint.h"
#include "pdu_wire.h"

#include <zmq.hpp>

namespace gr {
namespace fedlora {

class pdu_to_wire_impl : public pdu_to_wire
{
public:
    pdu_to_wire_impl(const std::string& endpoint, bool bind, const std::string& default_type)
        : gr::block("pdu_to_wire", gr::io_signature::make(0, 0, 0), gr::io_signature::make(0, 0, 0)),
          d_context(1),
          d_socket(d_context, zmq::socket_type::push),
          d_default_type(parse_type(default_type))
    {
        d_socket.set(zmq::sockopt::linger, 1000);
        d_socket.set(zmq::sockopt::sndtimeo, 1000);
        // The bridges' sockets have no CURVE keys: by the project's transport policy (docs/wire.md, "Transport
        // security") they carry plaintext on this host only.
        if (!::fedlora::wire::is_loopback_endpoint(endpoint))
            throw std::invalid_argument(
                "pdu_to_wire: endpoint '" + endpoint +
                "' is not a loopback endpoint; the bridges have no CURVE keys, so they bind and connect on this host "
                "only (tcp://127.0.0.1:PORT, ipc://, inproc://). Across hosts, run the bridge next to the process it "
                "serves, or use the fedlora server/client link, which has CURVE (docs/wire.md)");
        if (bind) {
            d_endpoint = ::fedlora::wire::bind(d_socket, endpoint);
        } else {
            try {
                d_socket.connect(endpoint);
            } catch (const zmq::error_t& e) {
                throw std::invalid_argument("pdu_to_wire: cannot connect to '" + endpoint + "': " + e.what());
            }
            d_endpoint = endpoint;
        }
        message_port_register_in(pmt::mp("pdus"));
        set_msg_handler(pmt::mp("pdus"), [this](const pmt::pmt_t& pdu) { handle(pdu); });
    }

    std::string last_endpoint() const override { return d_endpoint; }

private:
    static ::fedlora::wire::MessageType parse_type(const std::string& name)
    {
        try {
            return ::fedlora::wire::message_type_from_string(name);
        } catch (const std::exception& e) {
            throw std::invalid_argument(std::string("pdu_to_wire: default_type: ") + e.what());
        }
    }

    void handle(const pmt::pmt_t& pdu)
    {
        try {
            if (!::fedlora::wire::send(d_socket, pdu_to_message(pdu, d_default_type)))
                d_logger->warn("no receiver took the message within 1 s on {}: dropped", d_endpoint);
        } catch (const std::exception& e) {
            d_logger->warn("message dropped: {}", e.what());
        }
    }

    zmq::context_t d_context;
    zmq::socket_t d_socket;
    std::string d_endpoint;
    const ::fedlora::wire::MessageType d_default_type;
};

pdu_to_wire::sptr pdu_to_wire::make(const std::string& endpoint, bool bind, const std::string& default_type)
{
    return gnuradio::make_block_sptr<pdu_to_wire_impl>(endpoint, bind, default_type);
}

} // namespace fedlora
} // namespace gr
