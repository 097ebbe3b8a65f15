/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <pybind11/pybind11.h>

#include <gnuradio/fedlora/pdu_to_wire.h>
#include <gnuradio/fedlora/wire_to_pdu.h>

namespace py = pybind11;

void bind_wire_blocks(py::module& m)
{
    using gr::fedlora::pdu_to_wire;
    using gr::fedlora::wire_to_pdu;
    py::class_<pdu_to_wire, gr::block, gr::basic_block, std::shared_ptr<pdu_to_wire>>(
        m, "pdu_to_wire", "Sends PDUs as fedlora wire messages over a ZeroMQ PUSH socket.")
        .def(py::init(&pdu_to_wire::make), py::arg("endpoint"), py::arg("bind") = true)
        .def("last_endpoint", &pdu_to_wire::last_endpoint);
    py::class_<wire_to_pdu, gr::block, gr::basic_block, std::shared_ptr<wire_to_pdu>>(
        m, "wire_to_pdu", "Receives fedlora wire messages from a ZeroMQ PULL socket as PDUs.")
        .def(py::init(&wire_to_pdu::make),
             py::arg("endpoint"),
             py::arg("bind") = false,
             py::arg("max_message_bytes") = 64 << 20)
        .def("last_endpoint", &wire_to_pdu::last_endpoint)
        .def("dropped", &wire_to_pdu::dropped);
}
