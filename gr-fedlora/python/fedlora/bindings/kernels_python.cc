/* SPDX-License-Identifier: GPL-3.0-or-later */
// The fedlora_phy kernels themselves, callable on numpy arrays: QA compares block output with these.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "fedlora/phy/ofdm.h"

#include <stdexcept>
#include <string>

namespace py = pybind11;
using cf32 = std::complex<float>;
using carray = py::array_t<cf32, py::array::c_style | py::array::forcecast>;

namespace {

fedlora::phy::Numerology numerology(int fft_size, int cp_len, int n_occupied)
{
    fedlora::phy::Numerology num;
    num.fft_size = fft_size;
    num.cp_len = cp_len;
    num.n_occupied = n_occupied;
    num.validate();
    return num;
}

std::size_t whole_symbols(const carray& x, std::size_t per_symbol, const char* what)
{
    const auto n = static_cast<std::size_t>(x.size());
    if (n % per_symbol != 0)
        throw std::invalid_argument(std::string(what) + ": " + std::to_string(n) +
                                    " samples is not a multiple of " +
                                    std::to_string(per_symbol));
    return n / per_symbol;
}

} // namespace

void bind_kernels(py::module& m)
{
    m.def(
        "kernel_ofdm_modulate",
        [](carray x, int fft_size, int cp_len, int n_occupied) {
            fedlora::phy::OfdmModulator mod(numerology(fft_size, cp_len, n_occupied));
            const auto n_sym = whole_symbols(
                x, static_cast<std::size_t>(n_occupied), "kernel_ofdm_modulate");
            carray y(static_cast<py::ssize_t>(n_sym * mod.numerology().symbol_len()));
            {
                py::gil_scoped_release release;
                mod.modulate(x.data(), y.mutable_data(), n_sym);
            }
            return y;
        },
        py::arg("symbols"),
        py::arg("fft_size") = 64,
        py::arg("cp_len") = 16,
        py::arg("n_occupied") = 48,
        "Run fedlora::phy::OfdmModulator on a flat array of subcarrier values.");
    m.def(
        "kernel_ofdm_demodulate",
        [](carray x, int fft_size, int cp_len, int n_occupied) {
            fedlora::phy::OfdmDemodulator demod(numerology(fft_size, cp_len, n_occupied));
            const auto n_sym = whole_symbols(x,
                                             static_cast<std::size_t>(fft_size + cp_len),
                                             "kernel_ofdm_demodulate");
            carray y(static_cast<py::ssize_t>(n_sym * static_cast<std::size_t>(n_occupied)));
            {
                py::gil_scoped_release release;
                demod.demodulate(x.data(), y.mutable_data(), n_sym);
            }
            return y;
        },
        py::arg("samples"),
        py::arg("fft_size") = 64,
        py::arg("cp_len") = 16,
        py::arg("n_occupied") = 48,
        "Run fedlora::phy::OfdmDemodulator on a flat array of time-domain samples.");
    m.def(
        "occupied_carriers",
        [](int fft_size, int cp_len, int n_occupied) {
            return numerology(fft_size, cp_len, n_occupied).occupied_carriers();
        },
        py::arg("fft_size") = 64,
        py::arg("cp_len") = 16,
        py::arg("n_occupied") = 48,
        "Signed subcarrier offsets, in the order the modulator reads its input.");
}
