/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include "pdu_wire.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace gr {
namespace fedlora {

namespace wire = ::fedlora::wire;

namespace {

// Uniform vector -> tensor (1-D), or throws.
wire::Tensor tensor_from(const std::string& name, const pmt::pmt_t& v)
{
    wire::Tensor t;
    t.name = name;
    std::size_t n = 0;
    const void* data = nullptr;
    std::size_t item = 0;
    if (pmt::is_f32vector(v)) {
        t.dtype = wire::DType::F32;
        data = pmt::f32vector_elements(v, n);
        item = 4;
    } else if (pmt::is_f64vector(v)) {
        t.dtype = wire::DType::F64;
        data = pmt::f64vector_elements(v, n);
        item = 8;
    } else if (pmt::is_s32vector(v)) {
        t.dtype = wire::DType::I32;
        data = pmt::s32vector_elements(v, n);
        item = 4;
    } else if (pmt::is_s64vector(v)) {
        t.dtype = wire::DType::I64;
        data = pmt::s64vector_elements(v, n);
        item = 8;
    } else if (pmt::is_u8vector(v)) {
        t.dtype = wire::DType::U8;
        data = pmt::u8vector_elements(v, n);
        item = 1;
    } else if (pmt::is_c32vector(v)) {
        t.dtype = wire::DType::C64;
        data = pmt::c32vector_elements(v, n);
        item = 8;
    } else {
        throw std::invalid_argument("PDU entry '" + name +
                                    "' is not a uniform vector of f32, f64, s32, s64, u8 or c32");
    }
    t.shape = { static_cast<std::uint64_t>(n) };
    t.data.resize(n * item);
    if (n)
        std::memcpy(t.data.data(), data, n * item);
    return t;
}

pmt::pmt_t vector_from(const wire::Tensor& t)
{
    const std::size_t n = t.shape.empty() ? 1 : static_cast<std::size_t>(t.numel());
    switch (t.dtype) {
    case wire::DType::F32:
        return pmt::init_f32vector(n, reinterpret_cast<const float*>(t.data.data()));
    case wire::DType::F64:
        return pmt::init_f64vector(n, reinterpret_cast<const double*>(t.data.data()));
    case wire::DType::I32:
        return pmt::init_s32vector(n, reinterpret_cast<const int32_t*>(t.data.data()));
    case wire::DType::I64:
        return pmt::init_s64vector(n, reinterpret_cast<const int64_t*>(t.data.data()));
    case wire::DType::U8:
        return pmt::init_u8vector(n, t.data.data());
    case wire::DType::C64:
        return pmt::init_c32vector(n, reinterpret_cast<const std::complex<float>*>(t.data.data()));
    }
    throw std::invalid_argument("tensor '" + t.name + "' has an unknown dtype");
}

std::uint64_t integer(const pmt::pmt_t& meta, const char* key)
{
    const auto v = pmt::dict_ref(meta, pmt::intern(key), pmt::PMT_NIL);
    if (pmt::is_null(v))
        return 0;
    if (!pmt::is_integer(v) && !pmt::is_uint64(v))
        throw std::invalid_argument(std::string("PDU meta '") + key + "' must be an integer");
    return pmt::is_uint64(v) ? pmt::to_uint64(v) : static_cast<std::uint64_t>(pmt::to_long(v));
}

} // namespace

wire::Message pdu_to_message(const pmt::pmt_t& pdu)
{
    if (!pmt::is_pair(pdu))
        throw std::invalid_argument("not a PDU (a pair of a meta dictionary and a vector)");
    const auto meta = pmt::car(pdu);
    if (!pmt::is_dict(meta) && !pmt::is_null(meta))
        throw std::invalid_argument("PDU meta is not a dictionary");
    const auto dict = pmt::is_null(meta) ? pmt::make_dict() : meta;
    wire::Message m;
    const auto type = pmt::dict_ref(dict, pmt::intern("type"), pmt::PMT_NIL);
    if (pmt::is_symbol(type))
        m.type = wire::message_type_from_string(pmt::symbol_to_string(type));
    else if (pmt::is_integer(type) && wire::is_known(static_cast<std::uint16_t>(pmt::to_long(type))))
        m.type = static_cast<wire::MessageType>(pmt::to_long(type));
    else if (pmt::is_null(type))
        m.type = wire::MessageType::Update;
    else
        throw std::invalid_argument("PDU meta 'type' is not a known message type");
    m.run_id = integer(dict, "run_id");
    m.round = static_cast<std::uint32_t>(integer(dict, "round"));
    m.client_id = static_cast<std::uint32_t>(integer(dict, "client_id"));
    m.seq = integer(dict, "seq");
    const auto name = pmt::dict_ref(dict, pmt::intern("name"), pmt::intern("data"));
    if (!pmt::is_symbol(name))
        throw std::invalid_argument("PDU meta 'name' must be a symbol");
    m.tensors.push_back(tensor_from(pmt::symbol_to_string(name), pmt::cdr(pdu)));
    const auto items = pmt::dict_items(dict);
    for (std::size_t i = 0; i < pmt::length(items); ++i) {
        const auto kv = pmt::nth(i, items);
        if (pmt::is_uniform_vector(pmt::cdr(kv)) && pmt::is_symbol(pmt::car(kv)))
            m.tensors.push_back(tensor_from(pmt::symbol_to_string(pmt::car(kv)), pmt::cdr(kv)));
    }
    return m;
}

pmt::pmt_t message_to_pdu(const wire::Message& msg)
{
    if (msg.tensors.empty())
        throw std::invalid_argument("message carries no tensor");
    auto meta = pmt::make_dict();
    meta = pmt::dict_add(meta, pmt::intern("type"), pmt::intern(wire::to_string(msg.type)));
    meta = pmt::dict_add(meta, pmt::intern("run_id"), pmt::from_uint64(msg.run_id));
    meta = pmt::dict_add(meta, pmt::intern("round"), pmt::from_long(msg.round));
    meta = pmt::dict_add(meta, pmt::intern("client_id"), pmt::from_long(msg.client_id));
    meta = pmt::dict_add(meta, pmt::intern("seq"), pmt::from_uint64(msg.seq));
    meta = pmt::dict_add(meta, pmt::intern("name"), pmt::intern(msg.tensors[0].name));
    for (std::size_t i = 1; i < msg.tensors.size(); ++i)
        meta = pmt::dict_add(meta, pmt::intern(msg.tensors[i].name), vector_from(msg.tensors[i]));
    return pmt::cons(meta, vector_from(msg.tensors[0]));
}

} // namespace fedlora
} // namespace gr
