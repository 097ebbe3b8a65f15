/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_PDU_TO_WIRE_H
#define INCLUDED_FEDLORA_PDU_TO_WIRE_H

#include <gnuradio/block.h>
#include <gnuradio/fedlora/api.h>

#include <string>

namespace gr {
namespace fedlora {

/*!
 * \brief Sends PDUs as fedlora wire messages over a ZeroMQ PUSH socket.
 * \ingroup fedlora
 *
 * Message port "pdus" in: PDUs or dicts. A PDU's vector becomes the first tensor (named by meta "name", default
 * "data"); meta "type" (symbol such as UPDATE, AGGREGATE, CSI_REPORT, POWER_PLAN), "run_id", "round", "client_id",
 * "seq" fill the header; every other meta entry holding a uniform vector becomes another tensor. A dict (e.g. the
 * AirComp receiver's plan) has the same header keys, and every other entry becomes a tensor: uniform vectors
 * (c64 as the wire's c128), numbers as 0-d tensors, symbols as u8 text. A message without "type" is sent as
 * default_type. One that cannot be encoded is dropped with one log line. See docs/wire.md.
 */
class FEDLORA_API pdu_to_wire : virtual public gr::block
{
public:
    typedef std::shared_ptr<pdu_to_wire> sptr;

    /*!
     * \param endpoint ZeroMQ endpoint, e.g. "tcp://127.0.0.1:5555"
     * \param bind bind the endpoint (true) or connect to it (false)
     * \param default_type message type (UPDATE, POWER_PLAN, CSI_REPORT, ...) of messages without meta "type"
     */
    static sptr make(const std::string& endpoint, bool bind = true, const std::string& default_type = "UPDATE");

    //! The endpoint actually bound or connected (with the port the system chose for "tcp://127.0.0.1:*").
    virtual std::string last_endpoint() const = 0;
};

} // namespace fedlora
} // namespace gr

#endif
