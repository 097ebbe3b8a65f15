/* SPDX-License-Identifier: GPL-3.0-or-later */
// The calibration kernels of fedlora_phy (calibration.h) and the calibration file (fedlora_calib) on numpy arrays:
// the transmit correction the aircomp_transmitter applies, the calibration burst a device sends, the alignment
// estimator the server runs, and the file's lookups and alignment records. The calibration blocks
// (gnuradio.fedlora.calibration) and QA call these; so can a lab notebook.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "fedlora/calib/file.h"
#include "fedlora/phy/calibration.h"
#include "fedlora/phy/channel.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;
namespace phy = fedlora::phy;
using cf32 = std::complex<float>;
using carray = py::array_t<cf32, py::array::c_style | py::array::forcecast>;

namespace {

phy::Numerology burst_numerology(int fft_size, int cp_len, int n_occupied, double sample_rate)
{
    phy::Numerology n;
    n.fft_size = fft_size;
    n.cp_len = cp_len;
    n.n_occupied = n_occupied;
    n.pilot_spacing = 0;
    n.sample_rate = sample_rate;
    n.validate();
    return n;
}

phy::CalibrationBurstConfig burst_config(int n_devices,
                                         int pilot_repeats,
                                         int guard,
                                         int fft_size,
                                         int cp_len,
                                         int n_occupied,
                                         double sample_rate,
                                         const char* what)
{
    if (n_devices < 1 || pilot_repeats < 0 || guard < 0)
        throw std::invalid_argument(std::string(what) + ": n_devices must be >= 1, pilot_repeats and guard >= 0");
    phy::CalibrationBurstConfig c;
    c.numerology = burst_numerology(fft_size, cp_len, n_occupied, sample_rate);
    c.n_devices = static_cast<std::size_t>(n_devices);
    c.pilot_repeats = static_cast<std::size_t>(pilot_repeats);
    c.guard = static_cast<std::size_t>(guard);
    c.validate();
    return c;
}

py::dict layout_dict(const phy::CalibrationBurstLayout& l)
{
    py::dict d;
    d["length"] = l.length();
    d["slot_len"] = l.slot_len();
    d["guard"] = l.guard();
    d["symbol_len"] = l.symbol_len();
    std::vector<std::size_t> slots;
    for (std::size_t k = 0; k < l.config().n_devices; ++k)
        slots.push_back(l.slot_offset(k));
    d["slot_offset"] = slots;
    return d;
}

py::dict correction_dict(const phy::TransmitCorrection& c, double sample_rate)
{
    const phy::TransmitCorrector t(c, sample_rate);
    py::dict d;
    d["gain_db"] = c.gain_db;
    d["advance_samples"] = c.advance_samples;
    d["phase_rad"] = c.phase_rad;
    d["cfo_hz"] = c.cfo_hz;
    d["reference_sample"] = c.reference_sample;
    d["lead"] = t.lead();
    d["tail"] = t.tail();
    return d;
}

double number(const py::dict& d, const char* key, const char* what)
{
    if (!d.contains(key))
        throw std::invalid_argument(std::string(what) + ": entry lacks '" + key + "'");
    return py::cast<double>(d[key]);
}

} // namespace

void bind_calibration(py::module& m)
{
    py::class_<phy::TransmitCorrector>(
        m,
        "transmit_corrector_kernel",
        "fedlora::phy::TransmitCorrector on numpy arrays: out[m] = 10^(gain_db/20) e^{-j(phase + w (m - "
        "reference_sample))} x(m + advance), sample indices absolute on the transmit timeline (the "
        "aircomp_transmitter's calibration).")
        .def(py::init([](double advance_samples,
                         double phase_rad,
                         double cfo_hz,
                         long long reference_sample,
                         double gain_db,
                         double sample_rate) {
                 phy::TransmitCorrection c;
                 c.gain_db = gain_db;
                 c.advance_samples = advance_samples;
                 c.phase_rad = phase_rad;
                 c.cfo_hz = cfo_hz;
                 c.reference_sample = reference_sample;
                 return std::make_unique<phy::TransmitCorrector>(c, sample_rate);
             }),
             py::arg("advance_samples") = 0.0,
             py::arg("phase_rad") = 0.0,
             py::arg("cfo_hz") = 0.0,
             py::arg("reference_sample") = 0,
             py::arg("gain_db") = 0.0,
             py::arg("sample_rate") = 15.36e6)
        .def_property_readonly("lead", &phy::TransmitCorrector::lead)
        .def_property_readonly("tail", &phy::TransmitCorrector::tail)
        .def(
            "apply",
            [](const phy::TransmitCorrector& t, carray x, long long in_start, std::size_t n_out, long long out_start) {
                carray out(static_cast<py::ssize_t>(n_out));
                t.apply(x.data(),
                        static_cast<std::size_t>(x.size()),
                        in_start,
                        out.mutable_data(),
                        n_out,
                        out_start);
                return out;
            },
            py::arg("x"),
            py::arg("in_start"),
            py::arg("n_out"),
            py::arg("out_start"),
            "The corrected samples at absolute indices [out_start, out_start + n_out) of x, whose first sample is "
            "at in_start (zero outside x).");

    m.def(
        "calibration_correction",
        [](const std::string& file, const std::string& serial, int channel, double frequency, double sample_rate) {
            const auto set = fedlora::calib::load_calibration(file);
            return correction_dict(set.correction(serial, channel, frequency, sample_rate), sample_rate);
        },
        py::arg("file"),
        py::arg("serial"),
        py::arg("channel") = 0,
        py::arg("frequency") = 2.45e9,
        py::arg("sample_rate") = 15.36e6,
        "The transmit correction of a device in a calibration file (CalibrationSet::correction): a dict of "
        "gain_db, advance_samples, phase_rad, cfo_hz, reference_sample and the corrector's lead and tail.");

    m.def(
        "calibration_tx_power",
        [](const std::string& file,
           const std::string& serial,
           int channel,
           double frequency,
           double budget_dbm,
           double tx_gain) {
            const auto set = fedlora::calib::load_calibration(file);
            py::dict d;
            if (tx_gain < 0.0) {
                const auto s = phy::tx_power_setting(set, serial, channel, frequency, budget_dbm);
                d["gain_db"] = s.gain_db;
                d["linear_budget"] = s.linear_budget;
                d["output_dbm"] = s.output_dbm;
            } else {
                d["gain_db"] = tx_gain;
                d["linear_budget"] = phy::linear_budget(set, serial, channel, frequency, tx_gain, budget_dbm);
                d["output_dbm"] = set.tx_power_dbm(serial, channel, frequency, tx_gain);
            }
            return d;
        },
        py::arg("file"),
        py::arg("serial"),
        py::arg("channel") = 0,
        py::arg("frequency") = 2.45e9,
        py::arg("budget_dbm") = 0.0,
        py::arg("tx_gain") = -1.0,
        "A power budget in dBm through a calibration file's TX power table (tx_power_setting, or linear_budget at "
        "a given tx_gain >= 0): a dict of gain_db, linear_budget (phy units) and output_dbm (at phy power 1).");

    py::class_<phy::CalibrationTransmitter>(
        m,
        "calibration_burst_kernel",
        "fedlora::phy::CalibrationTransmitter: device k's calibration burst (its slot: Schmidl & Cox preamble and "
        "R Zadoff-Chu pilot symbols; zeros elsewhere).")
        .def(py::init([](int n_devices,
                         int device,
                         int pilot_repeats,
                         int guard,
                         int fft_size,
                         int cp_len,
                         int n_occupied,
                         double sample_rate,
                         double power) {
                 const auto c = burst_config(n_devices,
                                             pilot_repeats,
                                             guard,
                                             fft_size,
                                             cp_len,
                                             n_occupied,
                                             sample_rate,
                                             "calibration_burst_kernel");
                 if (device < 0)
                     throw std::invalid_argument("calibration_burst_kernel: device must be >= 0");
                 return std::make_unique<phy::CalibrationTransmitter>(c, static_cast<std::size_t>(device), power);
             }),
             py::arg("n_devices") = 1,
             py::arg("device") = 0,
             py::arg("pilot_repeats") = 16,
             py::arg("guard") = 0,
             py::arg("fft_size") = 256,
             py::arg("cp_len") = 32,
             py::arg("n_occupied") = 200,
             py::arg("sample_rate") = 15.36e6,
             py::arg("power") = 1.0)
        .def("burst",
             [](phy::CalibrationTransmitter& t) {
                 std::vector<cf32> b;
                 t.burst(b);
                 return carray(static_cast<py::ssize_t>(b.size()), b.data());
             })
        .def_property_readonly(
            "layout",
            [](const phy::CalibrationTransmitter& t) { return layout_dict(t.layout()); },
            "length, slot_len, guard, symbol_len and every device's slot_offset (samples from the burst start).");

    py::class_<phy::AlignmentEstimator>(
        m,
        "alignment_kernel",
        "fedlora::phy::AlignmentEstimator: every device's link gain, timing offset, phase and CFO from the "
        "received calibration burst (docs/math.md, \"Calibration\").")
        .def(py::init([](int n_devices,
                         int pilot_repeats,
                         int guard,
                         int fft_size,
                         int cp_len,
                         int n_occupied,
                         double sample_rate,
                         const std::vector<double>& pilot_power,
                         const std::vector<double>& expected_gain_db,
                         double system_delay,
                         int timing_backoff) {
                 phy::AlignmentConfig a;
                 a.burst = burst_config(n_devices,
                                        pilot_repeats,
                                        guard,
                                        fft_size,
                                        cp_len,
                                        n_occupied,
                                        sample_rate,
                                        "alignment_kernel");
                 a.pilot_power = pilot_power;
                 a.expected_gain_db = expected_gain_db;
                 a.system_delay = system_delay;
                 a.timing_backoff = timing_backoff;
                 return std::make_unique<phy::AlignmentEstimator>(a);
             }),
             py::arg("n_devices") = 1,
             py::arg("pilot_repeats") = 16,
             py::arg("guard") = 0,
             py::arg("fft_size") = 256,
             py::arg("cp_len") = 32,
             py::arg("n_occupied") = 200,
             py::arg("sample_rate") = 15.36e6,
             py::arg("pilot_power") = std::vector<double>{},
             py::arg("expected_gain_db") = std::vector<double>{},
             py::arg("system_delay") = 0.0,
             py::arg("timing_backoff") = -1)
        .def_property_readonly(
            "layout", [](const phy::AlignmentEstimator& e) { return layout_dict(e.layout()); })
        .def_property_readonly("tail", &phy::AlignmentEstimator::tail, "samples needed after the burst's end")
        .def(
            "estimate",
            [](phy::AlignmentEstimator& e, carray rx, long long rx_first, long long burst_start) {
                std::vector<phy::DeviceAlignment> est;
                {
                    py::gil_scoped_release release;
                    est = e.estimate(rx.data(), static_cast<std::size_t>(rx.size()), rx_first, burst_start);
                }
                py::list out;
                for (const auto& a : est) {
                    py::dict d;
                    d["gain_db"] = a.gain_db;
                    d["gain_error_db"] = a.gain_error_db;
                    d["timing_offset_samples"] = a.timing_offset_samples;
                    d["phase_rad"] = a.phase_rad;
                    d["reference_sample"] = a.reference_sample;
                    d["cfo_hz"] = a.cfo_hz;
                    d["snr_db"] = a.snr_db;
                    d["noise_var"] = a.noise_var;
                    d["gain_std_db"] = a.gain_std_db;
                    d["timing_std_samples"] = a.timing_std_samples;
                    d["phase_std_rad"] = a.phase_std_rad;
                    d["cfo_std_hz"] = a.cfo_std_hz;
                    out.append(d);
                }
                return out;
            },
            py::arg("rx"),
            py::arg("rx_first"),
            py::arg("burst_start"),
            "One dict per device from the received samples rx (rx[0] at absolute index rx_first) of the burst "
            "the devices started at transmit-timeline index burst_start. Raises RuntimeError naming the device "
            "whose slot is not found.");

    m.def(
        "kernel_link_phase",
        [](const phy::MultiUserChannel& ch, int device, long long reference_sample) {
            if (device < 0 || device >= ch.n_devices())
                throw std::invalid_argument("kernel_link_phase: device " + std::to_string(device) + " of " +
                                            std::to_string(ch.n_devices()));
            const auto ir = ch.impulse_response(device, 0, 0);
            std::complex<double> s = 0.0;
            for (const auto& t : ir.taps)
                s += std::complex<double>(t);
            const double w = 2.0 * M_PI * ch.config().devices[static_cast<std::size_t>(device)].cfo_hz /
                             ch.config().sample_rate;
            return std::remainder(std::arg(s) + w * static_cast<double>(reference_sample), 2.0 * M_PI);
        },
        py::arg("channel"),
        py::arg("device"),
        py::arg("reference_sample"),
        "The phase a channel_kernel's link (device, antenna 0 to antenna 0) has at transmit-timeline sample "
        "reference_sample: what the alignment estimator's phase_rad measures (its truth, for tests).");

    m.def(
        "calibration_write_alignment",
        [](const std::string& path,
           const std::vector<py::dict>& entries,
           const std::string& reference,
           const std::string& conditions) {
            const char* me = "calibration_write_alignment";
            phy::CalibrationSet set;
            if (std::filesystem::exists(path)) {
                set = fedlora::calib::load_calibration(path);
            } else {
                set.reference = reference;
            }
            set.source = path;
            set.date = fedlora::calib::utc_now();
            if (!reference.empty())
                set.reference = reference;
            if (!conditions.empty())
                set.conditions = conditions;
            for (const auto& e : entries) {
                if (!e.contains("serial"))
                    throw std::invalid_argument(std::string(me) + ": entry lacks 'serial'");
                const auto serial = py::cast<std::string>(e["serial"]);
                const auto product = e.contains("product") ? py::cast<std::string>(e["product"]) : std::string();
                const int channel = e.contains("channel") ? py::cast<int>(e["channel"]) : 0;
                phy::AlignmentRecord a;
                a.frequency_hz = number(e, "frequency_hz", me);
                a.sample_rate_hz = number(e, "sample_rate_hz", me);
                a.timing_offset_samples = number(e, "timing_offset_samples", me);
                a.phase_rad = number(e, "phase_rad", me);
                a.reference_time_s = number(e, "reference_time_s", me);
                a.cfo_hz = number(e, "cfo_hz", me);
                a.tx_gain_db = e.contains("tx_gain_db") ? py::cast<double>(e["tx_gain_db"]) : 0.0;
                set.set_alignment(serial, product, channel, a);
            }
            fedlora::calib::save_calibration(set, path);
        },
        py::arg("path"),
        py::arg("entries"),
        py::arg("reference") = "",
        py::arg("conditions") = "",
        "Writes alignment records (dicts: serial, product, channel, frequency_hz, sample_rate_hz, "
        "timing_offset_samples, phase_rad, reference_time_s, cfo_hz, tx_gain_db) into a calibration file: an "
        "existing file keeps everything else (its TX power tables, noise floors, other alignments); a new one "
        "holds only these. The date becomes now; validated and written atomically.");
}
