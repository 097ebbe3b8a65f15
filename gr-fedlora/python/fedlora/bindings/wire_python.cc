/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <gnuradio/fedlora/pdu_to_wire.h>
#include <gnuradio/fedlora/wire_to_pdu.h>

#include "fedlora/wire/endpoint.h"
#include "fedlora/wire/message.h"

#include <complex>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace py = pybind11;
namespace wire = ::fedlora::wire;

namespace {

// A numpy array (or anything numpy turns into one) as a wire tensor: its dtype picks the wire dtype, its shape is
// kept (a 0-d array is a scalar).
wire::Tensor tensor_of(const std::string& name, const py::handle& value)
{
    const auto any = py::array::ensure(value);
    if (!any)
        throw py::type_error("wire_encode: tensor '" + name + "' is not an array");
    wire::Tensor t;
    t.name = name;
    const auto dt = any.dtype();
    std::size_t item = 0;
    if (dt.is(py::dtype::of<float>())) {
        t.dtype = wire::DType::F32;
        item = 4;
    } else if (dt.is(py::dtype::of<double>())) {
        t.dtype = wire::DType::F64;
        item = 8;
    } else if (dt.is(py::dtype::of<std::int32_t>())) {
        t.dtype = wire::DType::I32;
        item = 4;
    } else if (dt.is(py::dtype::of<std::int64_t>())) {
        t.dtype = wire::DType::I64;
        item = 8;
    } else if (dt.is(py::dtype::of<std::uint8_t>())) {
        t.dtype = wire::DType::U8;
        item = 1;
    } else if (dt.is(py::dtype::of<std::complex<float>>())) {
        t.dtype = wire::DType::C64;
        item = 8;
    } else if (dt.is(py::dtype::of<std::complex<double>>())) {
        t.dtype = wire::DType::C128;
        item = 16;
    } else {
        throw py::type_error("wire_encode: tensor '" + name + "' has dtype " + py::repr(static_cast<py::handle>(dt)).cast<std::string>() +
                             " (the wire carries float32, float64, int32, int64, uint8, complex64 and complex128)");
    }
    // A C-contiguous copy if needed (same dtype).
    const auto a = py::array::ensure(any, py::array::c_style);
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        t.shape.push_back(static_cast<std::uint64_t>(a.shape(i)));
    t.data.resize(static_cast<std::size_t>(a.size()) * item);
    if (!t.data.empty())
        std::memcpy(t.data.data(), a.data(), t.data.size());
    return t;
}

py::array array_of(const wire::Tensor& t)
{
    std::vector<py::ssize_t> shape(t.shape.begin(), t.shape.end());
    auto make = [&](auto tag) {
        using T = decltype(tag);
        py::array_t<T> a(shape);
        if (!t.data.empty())
            std::memcpy(a.mutable_data(), t.data.data(), t.data.size());
        return py::array(a);
    };
    switch (t.dtype) {
    case wire::DType::F32:
        return make(float{});
    case wire::DType::F64:
        return make(double{});
    case wire::DType::I32:
        return make(std::int32_t{});
    case wire::DType::I64:
        return make(std::int64_t{});
    case wire::DType::U8:
        return make(std::uint8_t{});
    case wire::DType::C64:
        return make(std::complex<float>{});
    case wire::DType::C128:
        return make(std::complex<double>{});
    }
    throw std::invalid_argument("tensor '" + t.name + "' has an unknown dtype");
}

} // namespace

void bind_wire_blocks(py::module& m)
{
    using gr::fedlora::pdu_to_wire;
    using gr::fedlora::wire_to_pdu;
    py::class_<pdu_to_wire, gr::block, gr::basic_block, std::shared_ptr<pdu_to_wire>>(
        m, "pdu_to_wire", "Sends PDUs as fedlora wire messages over a ZeroMQ PUSH socket.")
        .def(py::init(&pdu_to_wire::make),
             py::arg("endpoint"),
             py::arg("bind") = true,
             py::arg("default_type") = "UPDATE")
        .def("last_endpoint", &pdu_to_wire::last_endpoint);
    py::class_<wire_to_pdu, gr::block, gr::basic_block, std::shared_ptr<wire_to_pdu>>(
        m, "wire_to_pdu", "Receives fedlora wire messages from a ZeroMQ PULL socket as PDUs.")
        .def(py::init(&wire_to_pdu::make),
             py::arg("endpoint"),
             py::arg("bind") = false,
             py::arg("max_message_bytes") = 64 << 20,
             py::arg("as_dict") = false)
        .def("last_endpoint", &wire_to_pdu::last_endpoint)
        .def("dropped", &wire_to_pdu::dropped);

    // The fedlora_wire codec itself (docs/wire.md), for Python programs that speak the wire format over their own
    // sockets (the radio process of the flowgraph transport).
    m.def(
        "wire_encode",
        [](const std::string& type,
           const py::dict& tensors,
           std::uint64_t run_id,
           std::uint32_t round,
           std::uint32_t client_id,
           std::uint64_t seq) {
            wire::Message msg;
            try {
                msg.type = wire::message_type_from_string(type);
            } catch (const wire::WireError& e) {
                throw std::invalid_argument(std::string("wire_encode: ") + e.what());
            }
            msg.run_id = run_id;
            msg.round = round;
            msg.client_id = client_id;
            msg.seq = seq;
            for (const auto& kv : tensors)
                msg.tensors.push_back(tensor_of(py::str(kv.first).cast<std::string>(), kv.second));
            const auto bytes = wire::encode(msg);
            return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        },
        py::arg("type"),
        py::arg("tensors") = py::dict(),
        py::arg("run_id") = 0,
        py::arg("round") = 0,
        py::arg("client_id") = 0,
        py::arg("seq") = 0,
        "One framed wire message (bytes) of the given type name (e.g. 'AGGREGATE') whose tensors are the dict's "
        "numpy arrays, in the dict's order, with their shapes (0-d arrays are scalars).");
    m.def(
        "wire_decode",
        [](const py::bytes& data, std::size_t max_message_bytes) {
            const std::string buf = data;
            wire::Limits limits;
            limits.max_message_bytes = max_message_bytes;
            wire::Message msg;
            try {
                msg = wire::decode(reinterpret_cast<const std::uint8_t*>(buf.data()), buf.size(), limits);
            } catch (const wire::WireError& e) {
                throw std::invalid_argument(e.what());
            }
            py::dict tensors;
            for (const auto& t : msg.tensors)
                tensors[py::str(t.name)] = array_of(t);
            py::dict d;
            d["type"] = std::string(wire::to_string(msg.type));
            d["run_id"] = msg.run_id;
            d["round"] = msg.round;
            d["client_id"] = msg.client_id;
            d["seq"] = msg.seq;
            d["tensors"] = tensors;
            return d;
        },
        py::arg("data"),
        py::arg("max_message_bytes") = std::size_t{ 512 } << 20,
        "Decodes and validates one framed wire message (fedlora::wire::decode): a dict with type (name), run_id, "
        "round, client_id, seq and tensors (name -> numpy array of its shape). Raises ValueError naming the field "
        "for a malformed frame.");
    m.def("wire_is_loopback",
          &wire::is_loopback_endpoint,
          py::arg("endpoint"),
          "True for an endpoint that never leaves this host (fedlora::wire::is_loopback_endpoint).");
}
