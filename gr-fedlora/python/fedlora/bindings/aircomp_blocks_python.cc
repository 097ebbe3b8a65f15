/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <gnuradio/fedlora/aircomp_receiver.h>
#include <gnuradio/fedlora/aircomp_transmitter.h>

namespace py = pybind11;

void bind_aircomp_blocks(py::module& m)
{
    using gr::fedlora::aircomp_receiver;
    using gr::fedlora::aircomp_transmitter;
    py::class_<aircomp_transmitter, gr::block, gr::basic_block, std::shared_ptr<aircomp_transmitter>>(
        m,
        "aircomp_transmitter",
        "One device's AirComp transmitter: update PDU ('update') and plan ('plan') in; tagged pilot and payload "
        "bursts out, one output per antenna. Wraps fedlora::phy::DeviceTransmitter and AircompCodec; with a "
        "calibration file, every burst passes through fedlora::phy::TransmitCorrector.")
        .def(py::init(&aircomp_transmitter::make),
             py::arg("n_devices") = 2,
             py::arg("device") = 0,
             py::arg("n_tx") = 1,
             py::arg("fft_size") = 256,
             py::arg("cp_len") = 32,
             py::arg("n_occupied") = 200,
             py::arg("pilot_spacing") = 20,
             py::arg("sample_rate") = 15.36e6,
             py::arg("gap") = 2048,
             py::arg("pilot_repeats") = 2,
             py::arg("reference_interval") = 8,
             py::arg("budget") = 1.0,
             py::arg("max_dim") = 1 << 16,
             py::arg("start_time") = 0.0,
             py::arg("n_rounds") = 0,
             py::arg("calibration") = "",
             py::arg("serial") = "",
             py::arg("channel") = 0,
             py::arg("frequency") = 2.45e9,
             py::arg("budget_unit") = "linear",
             py::arg("tx_gain") = -1.0)
        .def("rounds_sent", &aircomp_transmitter::rounds_sent)
        .def("linear_budget", &aircomp_transmitter::linear_budget)
        .def("tx_gain", &aircomp_transmitter::tx_gain)
        .def("advance", &aircomp_transmitter::advance);
    py::class_<aircomp_receiver,
               gr::sync_block,
               gr::block,
               gr::basic_block,
               std::shared_ptr<aircomp_receiver>>(
        m,
        "aircomp_receiver",
        "The server's AirComp receiver: samples of every antenna in; 'plan', 'csi', 'quality' dicts and the "
        "'aggregate' PDU out. Wraps fedlora::phy::AircompReceiver and plan_round.")
        .def(py::init(&aircomp_receiver::make),
             py::arg("n_devices") = 2,
             py::arg("n_tx") = 1,
             py::arg("n_rx") = 1,
             py::arg("fft_size") = 256,
             py::arg("cp_len") = 32,
             py::arg("n_occupied") = 200,
             py::arg("pilot_spacing") = 20,
             py::arg("sample_rate") = 15.36e6,
             py::arg("gap") = 2048,
             py::arg("pilot_repeats") = 2,
             py::arg("reference_interval") = 8,
             py::arg("n_streams") = 0,
             py::arg("budget") = std::vector<double>{ 1.0 },
             py::arg("policy") = "truncated",
             py::arg("g_th") = 0.1,
             py::arg("estimator") = "sparse",
             py::arg("timing_backoff") = -1,
             py::arg("mimo_iterations") = 60,
             py::arg("max_dim") = 1 << 16)
        .def("frames", &aircomp_receiver::frames)
        .def("stage", &aircomp_receiver::stage);
}
