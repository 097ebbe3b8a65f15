/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <pybind11/complex.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <gnuradio/fedlora/channel_model.h>

namespace py = pybind11;

void bind_channel_model(py::module& m)
{
    using gr::fedlora::channel_model;
    py::class_<channel_model,
               gr::block,
               gr::basic_block,
               std::shared_ptr<channel_model>>(
        m,
        "channel_model",
        "Multi-user AirComp channel: K devices x N_t antennas in, N_r server antennas out; bursts are "
        "placed on the common timeline by their tx_time tags. Wraps fedlora::phy::MultiUserChannel.")
        .def(py::init(&channel_model::make),
             py::arg("n_devices") = 2,
             py::arg("n_tx") = 1,
             py::arg("n_rx") = 1,
             py::arg("sample_rate") = 1e6,
             py::arg("snr_db") = std::vector<double>{ 20.0 },
             py::arg("profile") = "EPA",
             py::arg("fading") = "rayleigh",
             py::arg("rician_k") = 0.0,
             py::arg("doppler_hz") = 0.0,
             py::arg("cfo_hz") = std::vector<double>{ 0.0 },
             py::arg("timing_offset") = std::vector<double>{ 0.0 },
             py::arg("noise_variance") = 1e-3,
             py::arg("phase_noise_hz") = 0.0,
             py::arg("dc_offset") = gr_complex(0.0f, 0.0f),
             py::arg("seed") = 1ULL)
        .def("new_realisation", &channel_model::new_realisation);
}
