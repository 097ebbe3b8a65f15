/* SPDX-License-Identifier: GPL-3.0-or-later */
// Python module gnuradio.fedlora.fedlora_python: the blocks, plus direct access to the fedlora_phy kernels
// they wrap (for QA and for lab notebooks).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_ofdm_modulator(py::module& m);
void bind_ofdm_demodulator(py::module& m);
void bind_channel_model(py::module& m);
void bind_wire_blocks(py::module& m);
void bind_kernels(py::module& m);
void bind_aircomp_blocks(py::module& m);
void bind_aircomp_kernels(py::module& m);
void bind_calibration(py::module& m);

PYBIND11_MODULE(fedlora_python, m)
{
    // The block base classes (gr::sync_block, ...) are registered by gnuradio.gr.
    py::module::import("gnuradio.gr");

    bind_ofdm_modulator(m);
    bind_ofdm_demodulator(m);
    bind_channel_model(m);
    bind_wire_blocks(m);
    bind_kernels(m);
    bind_aircomp_blocks(m);
    bind_aircomp_kernels(m);
    bind_calibration(m);
}
