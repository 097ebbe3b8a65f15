/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <pybind11/pybind11.h>

#include <gnuradio/fedlora/ofdm_modulator.h>

namespace py = pybind11;

void bind_ofdm_modulator(py::module& m)
{
    using gr::fedlora::ofdm_modulator;
    py::class_<ofdm_modulator,
               gr::sync_block,
               gr::block,
               gr::basic_block,
               std::shared_ptr<ofdm_modulator>>(
        m,
        "ofdm_modulator",
        "OFDM modulator: vectors of n_occupied subcarrier values in, OFDM symbols with "
        "cyclic prefix (fft_size + cp_len samples) out. Wraps fedlora::phy::OfdmModulator.")
        .def(py::init(&ofdm_modulator::make),
             py::arg("fft_size") = 64,
             py::arg("cp_len") = 16,
             py::arg("n_occupied") = 48);
}
