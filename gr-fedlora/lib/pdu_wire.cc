/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include "pdu_wire.h"

#include <complex>
#include <cstdint>
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
    } else if (pmt::is_c64vector(v)) {
        t.dtype = wire::DType::C128;
        data = pmt::c64vector_elements(v, n);
        item = 16;
    } else {
        throw std::invalid_argument("PDU entry '" + name +
                                    "' is not a uniform vector of f32, f64, s32, s64, u8, c32 or c64");
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
    case wire::DType::C128:
        return pmt::init_c64vector(n, reinterpret_cast<const std::complex<double>*>(t.data.data()));
    }
    throw std::invalid_argument("tensor '" + t.name + "' has an unknown dtype");
}

// A scalar (0-d) tensor of one value.
template <typename T>
wire::Tensor scalar_tensor(const std::string& name, wire::DType dtype, T value)
{
    wire::Tensor t;
    t.name = name;
    t.dtype = dtype;
    t.data.resize(sizeof(T));
    std::memcpy(t.data.data(), &value, sizeof(T));
    return t;
}

// A 0-d tensor back to a PMT scalar.
pmt::pmt_t scalar_from(const wire::Tensor& t)
{
    auto get = [&](auto tag) {
        decltype(tag) v;
        std::memcpy(&v, t.data.data(), sizeof v);
        return v;
    };
    switch (t.dtype) {
    case wire::DType::F32:
        return pmt::from_double(get(float{}));
    case wire::DType::F64:
        return pmt::from_double(get(double{}));
    case wire::DType::I32:
        return pmt::from_long(get(std::int32_t{}));
    case wire::DType::I64:
        return pmt::from_long(static_cast<long>(get(std::int64_t{})));
    case wire::DType::U8:
        return pmt::from_long(get(std::uint8_t{}));
    case wire::DType::C64:
        return pmt::from_complex(std::complex<double>(get(std::complex<float>{})));
    case wire::DType::C128:
        return pmt::from_complex(get(std::complex<double>{}));
    }
    throw std::invalid_argument("tensor '" + t.name + "' has an unknown dtype");
}

bool is_header_key(const std::string& k)
{
    return k == "type" || k == "run_id" || k == "round" || k == "client_id" || k == "seq";
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

namespace {

// The header fields from a dict's keys "type", "run_id", "round", "client_id", "seq"; a missing "type" is
// default_type.
wire::Message header_from(const pmt::pmt_t& dict, wire::MessageType default_type)
{
    wire::Message m;
    const auto type = pmt::dict_ref(dict, pmt::intern("type"), pmt::PMT_NIL);
    if (pmt::is_symbol(type))
        m.type = wire::message_type_from_string(pmt::symbol_to_string(type));
    else if (pmt::is_integer(type) && wire::is_known(static_cast<std::uint16_t>(pmt::to_long(type))))
        m.type = static_cast<wire::MessageType>(pmt::to_long(type));
    else if (pmt::is_null(type))
        m.type = default_type;
    else
        throw std::invalid_argument("meta 'type' is not a known message type");
    m.run_id = integer(dict, "run_id");
    m.round = static_cast<std::uint32_t>(integer(dict, "round"));
    m.client_id = static_cast<std::uint32_t>(integer(dict, "client_id"));
    m.seq = integer(dict, "seq");
    return m;
}

// A dict message: every entry but the header keys becomes a tensor.
wire::Message dict_to_message(const pmt::pmt_t& dict, wire::MessageType default_type)
{
    auto m = header_from(dict, default_type);
    const auto items = pmt::dict_items(dict);
    for (std::size_t i = 0; i < pmt::length(items); ++i) {
        const auto kv = pmt::nth(i, items);
        if (!pmt::is_symbol(pmt::car(kv)))
            throw std::invalid_argument("a dict message's keys must be symbols");
        const auto key = pmt::symbol_to_string(pmt::car(kv));
        const auto v = pmt::cdr(kv);
        if (is_header_key(key))
            continue;
        if (pmt::is_uniform_vector(v))
            m.tensors.push_back(tensor_from(key, v));
        else if (pmt::is_bool(v))
            m.tensors.push_back(scalar_tensor<std::int64_t>(key, wire::DType::I64, pmt::to_bool(v) ? 1 : 0));
        else if (pmt::is_integer(v))
            m.tensors.push_back(scalar_tensor<std::int64_t>(key, wire::DType::I64, pmt::to_long(v)));
        else if (pmt::is_uint64(v)) {
            const auto u = pmt::to_uint64(v);
            if (u > static_cast<std::uint64_t>(INT64_MAX))
                throw std::invalid_argument("dict entry '" + key + "' = " + std::to_string(u) +
                                            " does not fit the wire's i64");
            m.tensors.push_back(scalar_tensor<std::int64_t>(key, wire::DType::I64, static_cast<std::int64_t>(u)));
        } else if (pmt::is_real(v))
            m.tensors.push_back(scalar_tensor<double>(key, wire::DType::F64, pmt::to_double(v)));
        else if (pmt::is_complex(v))
            m.tensors.push_back(scalar_tensor<std::complex<double>>(key, wire::DType::C128, pmt::to_complex(v)));
        else if (pmt::is_symbol(v)) {
            const auto text = pmt::symbol_to_string(v);
            m.tensors.push_back(tensor_from(
                key, pmt::init_u8vector(text.size(), reinterpret_cast<const std::uint8_t*>(text.data()))));
        } else
            throw std::invalid_argument("dict entry '" + key +
                                        "' is not a number, a symbol or a uniform vector");
    }
    return m;
}

} // namespace

wire::Message pdu_to_message(const pmt::pmt_t& msg, wire::MessageType default_type)
{
    // A PDU is a pair (meta . uniform vector); a dict (itself a list of pairs) is a dict message.
    const bool pdu = pmt::is_pair(msg) && pmt::is_uniform_vector(pmt::cdr(msg));
    if (!pdu) {
        if (pmt::is_dict(msg) && !pmt::is_null(msg))
            return dict_to_message(msg, default_type);
        throw std::invalid_argument("not a PDU (a pair of a meta dictionary and a vector) nor a dictionary");
    }
    const auto meta = pmt::car(msg);
    if (!pmt::is_dict(meta) && !pmt::is_null(meta))
        throw std::invalid_argument("PDU meta is not a dictionary");
    const auto dict = pmt::is_null(meta) ? pmt::make_dict() : meta;
    auto m = header_from(dict, default_type);
    const auto name = pmt::dict_ref(dict, pmt::intern("name"), pmt::intern("data"));
    if (!pmt::is_symbol(name))
        throw std::invalid_argument("PDU meta 'name' must be a symbol");
    m.tensors.push_back(tensor_from(pmt::symbol_to_string(name), pmt::cdr(msg)));
    const auto items = pmt::dict_items(dict);
    for (std::size_t i = 0; i < pmt::length(items); ++i) {
        const auto kv = pmt::nth(i, items);
        if (pmt::is_uniform_vector(pmt::cdr(kv)) && pmt::is_symbol(pmt::car(kv)))
            m.tensors.push_back(tensor_from(pmt::symbol_to_string(pmt::car(kv)), pmt::cdr(kv)));
    }
    return m;
}

namespace {

pmt::pmt_t header_dict(const wire::Message& msg)
{
    auto d = pmt::make_dict();
    d = pmt::dict_add(d, pmt::intern("type"), pmt::intern(wire::to_string(msg.type)));
    d = pmt::dict_add(d, pmt::intern("run_id"), pmt::from_uint64(msg.run_id));
    d = pmt::dict_add(d, pmt::intern("round"), pmt::from_long(msg.round));
    d = pmt::dict_add(d, pmt::intern("client_id"), pmt::from_long(msg.client_id));
    d = pmt::dict_add(d, pmt::intern("seq"), pmt::from_uint64(msg.seq));
    return d;
}

} // namespace

pmt::pmt_t message_to_pdu(const wire::Message& msg)
{
    if (msg.tensors.empty())
        throw std::invalid_argument("message carries no tensor");
    auto meta = header_dict(msg);
    meta = pmt::dict_add(meta, pmt::intern("name"), pmt::intern(msg.tensors[0].name));
    for (std::size_t i = 1; i < msg.tensors.size(); ++i)
        meta = pmt::dict_add(meta, pmt::intern(msg.tensors[i].name), vector_from(msg.tensors[i]));
    return pmt::cons(meta, vector_from(msg.tensors[0]));
}

pmt::pmt_t message_to_dict(const wire::Message& msg)
{
    auto d = header_dict(msg);
    for (const auto& t : msg.tensors)
        d = pmt::dict_add(d, pmt::intern(t.name), t.shape.empty() ? scalar_from(t) : vector_from(t));
    return d;
}

} // namespace fedlora
} // namespace gr
