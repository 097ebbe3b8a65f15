/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_PDU_WIRE_H
#define INCLUDED_FEDLORA_PDU_WIRE_H

#include <pmt/pmt.h>

#include "fedlora/wire/message.h"

namespace gr {
namespace fedlora {

// A PDU (meta . vector) <-> a framed wire message.
//   meta keys "type" (symbol, e.g. UPDATE, or integer code), "run_id", "round", "client_id", "seq" (integers) map to
//   the header; "name" (symbol) names the PDU's vector (default "data"), which becomes the first tensor; every other
//   meta entry whose value is a uniform vector (f32, f64, s32, s64, u8, c32) becomes one more tensor of that name.
// Throws std::invalid_argument naming the problem for a PDU that cannot be encoded.
::fedlora::wire::Message pdu_to_message(const pmt::pmt_t& pdu);
// The inverse: the first tensor is the vector (its name in meta "name"), the others go into meta.
pmt::pmt_t message_to_pdu(const ::fedlora::wire::Message& msg);

} // namespace fedlora
} // namespace gr

#endif
