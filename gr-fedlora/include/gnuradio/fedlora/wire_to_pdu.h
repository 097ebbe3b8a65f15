/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_WIRE_TO_PDU_H
#define INCLUDED_FEDLORA_WIRE_TO_PDU_H

#include <gnuradio/block.h>
#include <gnuradio/fedlora/api.h>

#include <string>

namespace gr {
namespace fedlora {

/*!
 * \brief Receives fedlora wire messages from a ZeroMQ PULL socket and publishes them as PDUs.
 * \ingroup fedlora
 *
 * Message port "pdus" out: meta holds "type" (symbol), "run_id", "round", "client_id", "seq", "name" (of the first
 * tensor, which is the PDU's vector) and every further tensor as a uniform vector. With as_dict, each message is
 * published as one dict instead: those header keys and every tensor by name (0-d tensors as scalars), the inverse
 * of pdu_to_wire's dict messages, so a plan dict crosses the wire whole. Malformed, truncated, oversized or
 * wrong-version messages are dropped with one log line naming the problem; the block keeps running.
 */
class FEDLORA_API wire_to_pdu : virtual public gr::block
{
public:
    typedef std::shared_ptr<wire_to_pdu> sptr;

    /*!
     * \param endpoint ZeroMQ endpoint
     * \param bind bind the endpoint (true) or connect to it (false)
     * \param max_message_bytes messages larger than this are refused before any allocation
     * \param as_dict publish dicts (header keys and every tensor) rather than PDUs
     */
    static sptr
    make(const std::string& endpoint, bool bind = false, int max_message_bytes = 64 << 20, bool as_dict = false);

    virtual std::string last_endpoint() const = 0;
    //! Messages refused so far (malformed, oversized, wrong version...).
    virtual unsigned long dropped() const = 0;
};

} // namespace fedlora
} // namespace gr

#endif
