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
 * Message port "pdus" in. The PDU's vector becomes the first tensor (named by meta "name", default "data"); meta
 * "type" (symbol such as UPDATE, AGGREGATE, CSI_REPORT), "run_id", "round", "client_id", "seq" fill the header; every
 * other meta entry holding a uniform vector becomes another tensor. A PDU that cannot be encoded is dropped with
 * one log line. See docs/wire.md.
 */
class FEDLORA_API pdu_to_wire : virtual public gr::block
{
public:
    typedef std::shared_ptr<pdu_to_wire> sptr;

    /*!
     * \param endpoint ZeroMQ endpoint, e.g. "tcp://127.0.0.1:5555"
     * \param bind bind the endpoint (true) or connect to it (false)
     */
    static sptr make(const std::string& endpoint, bool bind = true);

    //! The endpoint actually bound or connected (with the port the system chose for "tcp://127.0.0.1:*").
    virtual std::string last_endpoint() const = 0;
};

} // namespace fedlora
} // namespace gr

#endif
