/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_PDU_WIRE_H
#define INCLUDED_FEDLORA_PDU_WIRE_H

#include <pmt/pmt.h>

#include "fedlora/wire/message.h"

namespace gr {
namespace fedlora {

// A PDU (meta . vector) or a dict <-> a framed wire message.
//   PDU: meta keys "type" (symbol, e.g. UPDATE, or integer code), "run_id", "round", "client_id", "seq" (integers)
//   map to the header; "name" (symbol) names the PDU's vector (default "data"), which becomes the first tensor;
//   every other meta entry whose value is a uniform vector (f32, f64, s32, s64, u8, c32, c64) becomes one more
//   tensor of that name.
//   Dict (a message dict such as the receiver's plan, csi or quality): the same header keys; every other entry
//   becomes a tensor of its name: a uniform vector 1-D, an integer or boolean an i64 scalar (0-d), a real an f64
//   scalar, a complex a c128 scalar, a symbol u8 text.
//   A message without "type" gets default_type.
// Throws std::invalid_argument naming the problem for a message that cannot be encoded.
::fedlora::wire::Message pdu_to_message(const pmt::pmt_t& msg,
                                        ::fedlora::wire::MessageType default_type =
                                            ::fedlora::wire::MessageType::Update);
// The inverse for PDUs: the first tensor is the vector (its name in meta "name"), the others go into meta.
pmt::pmt_t message_to_pdu(const ::fedlora::wire::Message& msg);
// The inverse for dicts: the header keys, and every tensor as an entry (0-d tensors as scalars: integers as
// longs, reals as doubles, complex as complex; u8 text stays a u8 vector).
pmt::pmt_t message_to_dict(const ::fedlora::wire::Message& msg);

} // namespace fedlora
} // namespace gr

#endif
