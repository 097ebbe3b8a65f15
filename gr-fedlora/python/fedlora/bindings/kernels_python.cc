/* SPDX-License-Identifier: GPL-3.0-or-later */
// The fedlora_phy kernels themselves, callable on numpy arrays: QA compares block output with these.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "channel_config.h"
#include "fedlora/phy/channel.h"
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
    // The simulator itself, for comparison with the channel_model block (same parameters, same seed).
    py::class_<fedlora::phy::MultiUserChannel>(
        m, "channel_kernel", "fedlora::phy::MultiUserChannel on numpy arrays (the channel_model block's DSP).")
        .def(py::init([](int n_devices,
                         int n_tx,
                         int n_rx,
                         double sample_rate,
                         const std::vector<double>& snr_db,
                         const std::string& profile,
                         const std::string& fading,
                         double rician_k,
                         double doppler_hz,
                         const std::vector<double>& cfo_hz,
                         const std::vector<double>& timing_offset,
                         double noise_variance,
                         double phase_noise_hz,
                         std::complex<double> dc_offset,
                         unsigned long long seed) {
                 return std::make_unique<fedlora::phy::MultiUserChannel>(
                     gr::fedlora::make_channel_config(n_devices,
                                                      n_tx,
                                                      n_rx,
                                                      sample_rate,
                                                      snr_db,
                                                      profile,
                                                      fading,
                                                      rician_k,
                                                      doppler_hz,
                                                      cfo_hz,
                                                      timing_offset,
                                                      noise_variance,
                                                      phase_noise_hz,
                                                      dc_offset,
                                                      seed));
             }),
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
             py::arg("dc_offset") = std::complex<double>(0.0, 0.0),
             py::arg("seed") = 1ULL)
        .def(
            "process",
            [](fedlora::phy::MultiUserChannel& ch, const std::vector<carray>& inputs) {
                const auto n_in = static_cast<std::size_t>(ch.n_devices() * ch.n_tx());
                if (inputs.size() != n_in)
                    throw std::invalid_argument("channel_kernel.process: " + std::to_string(inputs.size()) +
                                                " input streams, expected " + std::to_string(n_in));
                const auto n = static_cast<std::size_t>(inputs.at(0).size());
                std::vector<const cf32*> in;
                for (const auto& x : inputs) {
                    if (static_cast<std::size_t>(x.size()) != n)
                        throw std::invalid_argument("channel_kernel.process: input streams differ in length");
                    in.push_back(x.data());
                }
                std::vector<carray> outs;
                std::vector<cf32*> out;
                for (int r = 0; r < ch.n_rx(); ++r) {
                    outs.emplace_back(static_cast<py::ssize_t>(n));
                    out.push_back(outs.back().mutable_data());
                }
                {
                    py::gil_scoped_release release;
                    ch.process(in.data(), out.data(), n);
                }
                return outs;
            },
            py::arg("inputs"),
            "Runs n samples of every device antenna through the channel; returns one array per server antenna.")
        .def("new_realisation", &fedlora::phy::MultiUserChannel::new_realisation)
        .def("bulk_delay",
             &fedlora::phy::MultiUserChannel::bulk_delay,
             "Latency common to every device, in samples (what receiver_min_gap's channel_delay needs).");

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
