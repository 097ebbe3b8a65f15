/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <pybind11/pybind11.h>

#include <gnuradio/fedlora/ofdm_demodulator.h>

namespace py = pybind11;

void bind_ofdm_demodulator(py::module& m)
{
    using gr::fedlora::ofdm_demodulator;
    py::class_<ofdm_demodulator,
               gr::sync_block,
               gr::block,
               gr::basic_block,
               std::shared_ptr<ofdm_demodulator>>(
        m,
        "ofdm_demodulator",
        "OFDM demodulator: symbol-aligned OFDM symbols (cyclic prefix first) in, vectors of "
        "n_occupied subcarrier values out. Wraps fedlora::phy::OfdmDemodulator.")
        .def(py::init(&ofdm_demodulator::make),
             py::arg("fft_size") = 64,
             py::arg("cp_len") = 16,
             py::arg("n_occupied") = 48);
}
