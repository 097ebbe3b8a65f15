/* SPDX-License-Identifier: GPL-3.0-or-later */
// The fedlora_phy AirComp round and its pieces on numpy arrays: what QA compares the AirComp blocks and the
// loopback flowgraph with, and what lab notebooks call directly.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "aircomp_config.h"
#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/aircomp_round.h"
#include "fedlora/phy/aircomp_waveform.h"
#include "fedlora/phy/channel.h"
#include "fedlora/phy/fft.h"

#include <stdexcept>
#include <string>

namespace py = pybind11;
namespace phy = fedlora::phy;
using cf32 = std::complex<float>;
using cf64 = std::complex<double>;
using farray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using carray = py::array_t<cf32, py::array::c_style | py::array::forcecast>;
using zarray = py::array_t<cf64, py::array::c_style | py::array::forcecast>;

namespace {

gr::fedlora::frame_params frame_args(int n_devices,
                                     int n_tx,
                                     int fft_size,
                                     int cp_len,
                                     int n_occupied,
                                     int pilot_spacing,
                                     double sample_rate,
                                     int gap,
                                     int pilot_repeats,
                                     int reference_interval)
{
    return gr::fedlora::frame_params{ n_devices,     n_tx,        fft_size, cp_len,        n_occupied,
                                      pilot_spacing, sample_rate, gap,      pilot_repeats, reference_interval };
}

std::vector<std::uint32_t> indices(const std::vector<long long>& v, const char* what)
{
    std::vector<std::uint32_t> out;
    for (auto x : v) {
        if (x < 0 || x > 0xFFFFFFFFll)
            throw std::invalid_argument(std::string(what) + ": support index " + std::to_string(x) +
                                        " is out of range");
        out.push_back(static_cast<std::uint32_t>(x));
    }
    return out;
}

py::list arrays(const std::vector<std::vector<cf32>>& v, std::size_t n)
{
    py::list out;
    for (const auto& a : v)
        out.append(carray(static_cast<py::ssize_t>(n), a.data()));
    return out;
}

std::vector<cf64> to_vector(const zarray& x) { return std::vector<cf64>(x.data(), x.data() + x.size()); }

phy::LinkChannels link_channels(const zarray& h, int n_devices, int n_rx, int n_tx, int n_carriers)
{
    phy::LinkChannels c;
    c.resize(static_cast<std::size_t>(n_devices),
             static_cast<std::size_t>(n_rx),
             static_cast<std::size_t>(n_tx),
             static_cast<std::size_t>(n_carriers));
    if (static_cast<std::size_t>(h.size()) != c.h.size())
        throw std::invalid_argument("channels: " + std::to_string(h.size()) + " values, expected " +
                                    std::to_string(c.h.size()));
    c.h.assign(h.data(), h.data() + h.size());
    return c;
}

// AircompReceiver on numpy arrays (the aircomp_receiver block's kernel).
class receiver_kernel
{
public:
    explicit receiver_kernel(const phy::AircompReceiverConfig& cfg) : d_rx(cfg) {}

    std::size_t consume(const std::vector<carray>& in)
    {
        if (in.size() != d_rx.config().n_rx)
            throw std::invalid_argument("receiver_kernel.consume: " + std::to_string(in.size()) +
                                        " streams for " + std::to_string(d_rx.config().n_rx) + " antennas");
        std::vector<const cf32*> p;
        const auto n = static_cast<std::size_t>(in.at(0).size());
        for (const auto& a : in) {
            if (static_cast<std::size_t>(a.size()) != n)
                throw std::invalid_argument("receiver_kernel.consume: streams differ in length");
            p.push_back(a.data());
        }
        py::gil_scoped_release release;
        return d_rx.consume(p.data(), n);
    }

    phy::AircompReceiver d_rx;
};

} // namespace

void bind_aircomp_kernels(py::module& m)
{
    m.def(
        "set_fft_planning",
        [](const std::string& mode) {
            if (mode == "measure")
                phy::set_fft_planning(phy::FftPlanning::Measure);
            else if (mode == "estimate")
                phy::set_fft_planning(phy::FftPlanning::Estimate);
            else
                throw std::invalid_argument("set_fft_planning: mode = '" + mode +
                                            "' must be 'measure' or 'estimate'");
        },
        py::arg("mode"),
        "How fedlora_phy plans FFTs from now on, process-wide: 'measure' (fastest; the last bits may differ "
        "between runs) or 'estimate' (bit-identical results in every run). Kernels built earlier keep theirs.");

    m.def(
        "kernel_update_rms",
        [](farray x, const std::vector<long long>& support) {
            return phy::update_rms(x.data(), static_cast<std::size_t>(x.size()), indices(support, "kernel_update_rms"));
        },
        py::arg("x"),
        py::arg("support") = std::vector<long long>{},
        "RMS of an update on a support (fedlora::phy::update_rms): what a device reports before a round.");
    m.def("kernel_common_scale",
          &phy::common_scale,
          py::arg("rms"),
          py::arg("weights"),
          "Common scale c = sqrt(2) max_k |p_k| rms_k (fedlora::phy::common_scale).");

    m.def(
        "receiver_min_gap",
        [](int fft_size, int cp_len, int n_occupied, int pilot_spacing, double sample_rate, int channel_delay) {
            auto f = gr::fedlora::make_frame_config(
                frame_args(1, 1, fft_size, cp_len, n_occupied, pilot_spacing, sample_rate, 0, 1, 8),
                "receiver_min_gap");
            if (channel_delay < 0)
                throw std::invalid_argument("receiver_min_gap: channel_delay must be >= 0");
            return phy::receiver_min_gap(f, static_cast<std::size_t>(channel_delay));
        },
        py::arg("fft_size") = 256,
        py::arg("cp_len") = 32,
        py::arg("n_occupied") = 200,
        py::arg("pilot_spacing") = 20,
        py::arg("sample_rate") = 15.36e6,
        py::arg("channel_delay") = 0,
        "A gap (samples) with which the receiver always detects a frame and reads its pilots before the payload: "
        "the synchroniser's latency plus channel_delay plus 64 (fedlora::phy::receiver_min_gap).");

    m.def(
        "kernel_frame_layout",
        [](int n_devices,
           int n_tx,
           int fft_size,
           int cp_len,
           int n_occupied,
           int pilot_spacing,
           double sample_rate,
           int gap,
           int pilot_repeats,
           int reference_interval) {
            const phy::FrameLayout l(gr::fedlora::make_frame_config(frame_args(n_devices,
                                                                               n_tx,
                                                                               fft_size,
                                                                               cp_len,
                                                                               n_occupied,
                                                                               pilot_spacing,
                                                                               sample_rate,
                                                                               gap,
                                                                               pilot_repeats,
                                                                               reference_interval),
                                                    "kernel_frame_layout"));
            py::dict d;
            d["symbol_len"] = l.symbol_len();
            d["preamble_len"] = l.preamble_len();
            d["pilots_end"] = l.pilots_end();
            d["payload_offset"] = l.payload_offset(0);
            d["n_data"] = l.config().numerology.n_data();
            return d;
        },
        py::arg("n_devices") = 2,
        py::arg("n_tx") = 1,
        py::arg("fft_size") = 256,
        py::arg("cp_len") = 32,
        py::arg("n_occupied") = 200,
        py::arg("pilot_spacing") = 20,
        py::arg("sample_rate") = 15.36e6,
        py::arg("gap") = 2048,
        py::arg("pilot_repeats") = 2,
        py::arg("reference_interval") = 8,
        "Offsets of the AirComp frame (fedlora::phy::FrameLayout), in samples from the frame start: "
        "symbol_len, preamble_len, pilots_end, payload_offset (first payload symbol), and n_data.");

    m.def(
        "kernel_aircomp_round_waveform",
        [](const std::vector<farray>& updates,
           const std::vector<double>& weights,
           double scale,
           phy::MultiUserChannel& channel,
           const std::vector<long long>& support,
           int n_tx,
           int fft_size,
           int cp_len,
           int n_occupied,
           int pilot_spacing,
           double sample_rate,
           int gap,
           int pilot_repeats,
           int reference_interval,
           int n_streams,
           const std::vector<double>& budget,
           const std::string& policy,
           double g_th,
           const std::string& estimator,
           int timing_backoff,
           int mimo_iterations,
           int lead,
           bool perfect_csi,
           const std::vector<py::dict>& corrections) {
            const char* me = "kernel_aircomp_round_waveform";
            const int K = static_cast<int>(updates.size());
            phy::WaveformRoundConfig c;
            c.frame = gr::fedlora::make_frame_config(frame_args(K,
                                                                n_tx,
                                                                fft_size,
                                                                cp_len,
                                                                n_occupied,
                                                                pilot_spacing,
                                                                sample_rate,
                                                                gap,
                                                                pilot_repeats,
                                                                reference_interval),
                                                     me);
            if (n_streams < 0 || lead < 0)
                throw std::invalid_argument(std::string(me) + ": n_streams and lead must be >= 0");
            c.n_streams = static_cast<std::size_t>(n_streams);
            c.mimo_iterations = mimo_iterations;
            c.power.policy = phy::power_policy_from_name(policy);
            c.power.g_th = g_th;
            c.power.budget = gr::fedlora::make_budgets(budget, K, me);
            c.estimator.name = estimator;
            c.timing_backoff = timing_backoff;
            c.lead = static_cast<std::size_t>(lead);
            c.perfect_csi = perfect_csi;
            for (const auto& d : corrections) {
                phy::TransmitCorrection t;
                auto get = [&d](const char* key, double fallback) {
                    return d.contains(key) ? py::cast<double>(d[key]) : fallback;
                };
                t.gain_db = get("gain_db", 0.0);
                t.advance_samples = get("advance_samples", 0.0);
                t.phase_rad = get("phase_rad", 0.0);
                t.cfo_hz = get("cfo_hz", 0.0);
                t.reference_sample =
                    d.contains("reference_sample") ? py::cast<std::int64_t>(d["reference_sample"]) : 0;
                c.corrections.push_back(t);
            }
            phy::AircompCodec codec;
            codec.dim = updates.empty() ? 0 : static_cast<std::size_t>(updates[0].size());
            codec.scale = scale;
            codec.support = indices(support, me);
            std::vector<std::vector<float>> u;
            for (const auto& x : updates)
                u.emplace_back(x.data(), x.data() + x.size());
            std::vector<float> est;
            phy::WaveformReport rep;
            {
                py::gil_scoped_release release;
                rep = phy::aircomp_round_waveform(u, weights, codec, channel, c, est);
            }
            py::dict r;
            r["nmse_measured"] = rep.nmse_measured;
            r["nmse_analytic"] = rep.nmse_analytic;
            r["nmse_analytic_used_plan"] = rep.nmse_analytic_used_plan;
            r["truncated_fraction"] = rep.truncated_fraction;
            r["device_snr_db"] = rep.device_snr_db;
            r["device_snr_db_estimated"] = rep.device_snr_db_estimated;
            r["channel_uses"] = rep.channel_uses;
            r["ofdm_symbols"] = rep.ofdm_symbols;
            r["detected_start"] = rep.detected_start;
            r["cfo_estimate"] = rep.cfo_estimate;
            r["mean_cpe_rad"] = rep.mean_cpe_rad;
            r["csi_gain"] = rep.csi_gain;
            r["noise_var_estimated"] = rep.noise_var_estimated;
            r["frame_samples"] = rep.frame_samples;
            r["airtime_s"] = rep.airtime_s;
            return py::make_tuple(farray(static_cast<py::ssize_t>(est.size()), est.data()), r);
        },
        py::arg("updates"),
        py::arg("weights"),
        py::arg("scale"),
        py::arg("channel"),
        py::arg("support") = std::vector<long long>{},
        py::arg("n_tx") = 1,
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
        py::arg("lead") = 0,
        py::arg("perfect_csi") = false,
        py::arg("corrections") = std::vector<py::dict>{},
        "One AirComp round at waveform level in one call (fedlora::phy::aircomp_round_waveform) through a "
        "channel_kernel: returns (estimate of sum_k w_k x_k, report dict). The frame is the blocks' frame; the "
        "gap is raised to receiver_min_gap if smaller (report['frame_samples'] tells). corrections: per device "
        "a dict (advance_samples, phase_rad, cfo_hz, reference_sample, gain_db; as calibration_correction "
        "returns) applied as a calibrated aircomp_transmitter applies it.");

    py::class_<phy::DeviceTransmitter>(
        m, "device_kernel", "fedlora::phy::DeviceTransmitter with the AirComp codec (the aircomp_transmitter's DSP).")
        .def(py::init([](int n_devices,
                         int device,
                         int n_tx,
                         int fft_size,
                         int cp_len,
                         int n_occupied,
                         int pilot_spacing,
                         double sample_rate,
                         int gap,
                         int pilot_repeats,
                         int reference_interval,
                         double budget) {
                 auto f = gr::fedlora::make_frame_config(frame_args(n_devices,
                                                                    n_tx,
                                                                    fft_size,
                                                                    cp_len,
                                                                    n_occupied,
                                                                    pilot_spacing,
                                                                    sample_rate,
                                                                    gap,
                                                                    pilot_repeats,
                                                                    reference_interval),
                                                         "device_kernel");
                 if (device < 0)
                     throw std::invalid_argument("device_kernel: device must be >= 0");
                 return std::make_unique<phy::DeviceTransmitter>(
                     f, static_cast<std::size_t>(device), budget / static_cast<double>(n_tx));
             }),
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
             py::arg("budget") = 1.0)
        .def(
            "pilot_burst",
            [](phy::DeviceTransmitter& d, int n_tx, std::size_t length) {
                std::vector<std::vector<cf32>> out(static_cast<std::size_t>(n_tx), std::vector<cf32>(length));
                d.pilot_burst(out);
                return arrays(out, length);
            },
            py::arg("n_tx"),
            py::arg("length"),
            "The preamble and pilot section on each antenna, zero-padded to length samples (>= pilots_end).")
        .def(
            "payload",
            [](phy::DeviceTransmitter& d,
               farray update,
               double weight,
               double scale,
               zarray precoders,
               int n_streams,
               const std::vector<long long>& support,
               int n_data) {
                phy::AircompCodec codec;
                codec.dim = static_cast<std::size_t>(update.size());
                codec.scale = scale;
                codec.support = indices(support, "device_kernel.payload");
                codec.validate();
                const auto L = static_cast<std::size_t>(n_streams);
                const std::size_t per = L * static_cast<std::size_t>(n_data);
                const std::size_t n_ofdm = (codec.n_symbols() + per - 1) / per;
                std::vector<cf32> sym(n_ofdm * per, cf32{});
                codec.encode(update.data(), weight, sym.data());
                std::vector<std::vector<cf32>> out;
                d.payload(sym, L, to_vector(precoders), out);
                return arrays(out, out.empty() ? 0 : out[0].size());
            },
            py::arg("update"),
            py::arg("weight"),
            py::arg("scale"),
            py::arg("precoders"),
            py::arg("n_streams"),
            py::arg("support"),
            py::arg("n_data"),
            "The encoded, precoded payload symbols of an update on each antenna (precoders: this device's "
            "[(m*n_tx + a)*L + l]).");

    py::class_<receiver_kernel>(
        m, "receiver_kernel", "fedlora::phy::AircompReceiver on numpy arrays (the aircomp_receiver's DSP).")
        .def(py::init([](int n_devices,
                         int n_tx,
                         int n_rx,
                         int fft_size,
                         int cp_len,
                         int n_occupied,
                         int pilot_spacing,
                         double sample_rate,
                         int gap,
                         int pilot_repeats,
                         int reference_interval,
                         const std::vector<double>& budget,
                         const std::string& estimator,
                         int timing_backoff) {
                 const char* me = "receiver_kernel";
                 phy::AircompReceiverConfig rc;
                 rc.frame = gr::fedlora::make_frame_config(frame_args(n_devices,
                                                                      n_tx,
                                                                      fft_size,
                                                                      cp_len,
                                                                      n_occupied,
                                                                      pilot_spacing,
                                                                      sample_rate,
                                                                      gap,
                                                                      pilot_repeats,
                                                                      reference_interval),
                                                           me);
                 if (n_rx < 1)
                     throw std::invalid_argument("receiver_kernel: n_rx must be >= 1");
                 rc.n_rx = static_cast<std::size_t>(n_rx);
                 rc.estimator.name = estimator;
                 rc.timing_backoff = timing_backoff;
                 rc.pilot_power =
                     gr::fedlora::pilot_powers(gr::fedlora::make_budgets(budget, n_devices, me), n_tx);
                 return std::make_unique<receiver_kernel>(rc);
             }),
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
             py::arg("budget") = std::vector<double>{ 1.0 },
             py::arg("estimator") = "sparse",
             py::arg("timing_backoff") = -1)
        .def("consume",
             &receiver_kernel::consume,
             py::arg("streams"),
             "Feeds the next samples of every antenna; returns how many were taken (it stops when the stage "
             "becomes need-plan or done).")
        .def_property_readonly("stage", [](const receiver_kernel& k) { return phy::to_string(k.d_rx.stage()); })
        .def_property_readonly("frame_start", [](const receiver_kernel& k) { return k.d_rx.frame_start(); })
        .def_property_readonly("cfo", [](const receiver_kernel& k) { return k.d_rx.cfo(); })
        .def_property_readonly("samples", [](const receiver_kernel& k) { return k.d_rx.samples(); })
        .def(
            "csi",
            [](const receiver_kernel& k) {
                const auto& c = k.d_rx.csi();
                py::dict d;
                d["h"] = zarray(static_cast<py::ssize_t>(c.h.h.size()), c.h.h.data());
                d["gain"] = c.h.gains();
                d["noise_var"] = c.noise_var;
                d["error_var"] = c.error_var;
                d["snr_db"] = c.snr_db;
                return d;
            },
            "Channel estimates h [((k*n_rx + r)*n_tx + a)*M + m], gain [k*M + m], noise_var, and per device "
            "error_var and snr_db.")
        .def(
            "set_plan",
            [](receiver_kernel& k, zarray combiner, zarray expected, int n_streams, int n_ofdm) {
                k.d_rx.set_plan(to_vector(combiner),
                                to_vector(expected),
                                static_cast<std::size_t>(n_streams),
                                static_cast<std::size_t>(n_ofdm));
            },
            py::arg("combiner"),
            py::arg("expected"),
            py::arg("n_streams"),
            py::arg("n_ofdm"))
        .def_property_readonly("data",
                               [](const receiver_kernel& k) {
                                   const auto& d = k.d_rx.data();
                                   return carray(static_cast<py::ssize_t>(d.size()), d.data());
                               })
        .def_property_readonly("mean_cpe_rad", [](const receiver_kernel& k) { return k.d_rx.mean_cpe_rad(); })
        .def_property_readonly("pilot_mse", [](const receiver_kernel& k) { return k.d_rx.pilot_mse(); })
        .def_property_readonly("pilot_nmse", [](const receiver_kernel& k) { return k.d_rx.pilot_nmse(); })
        .def("next_frame", [](receiver_kernel& k) { k.d_rx.next_frame(); });

    m.def(
        "kernel_plan_round",
        [](zarray h,
           int n_devices,
           int n_rx,
           int n_tx,
           int n_carriers,
           int n_streams,
           const std::vector<double>& budget,
           const std::string& policy,
           double g_th,
           const std::vector<double>& signal_var,
           double noise_var,
           const std::vector<double>& csi_error_var,
           int mimo_iterations) {
            const auto ch = link_channels(h, n_devices, n_rx, n_tx, n_carriers);
            phy::PowerControlConfig pc;
            pc.policy = phy::power_policy_from_name(policy);
            pc.g_th = g_th;
            pc.budget = gr::fedlora::make_budgets(budget, n_devices, "kernel_plan_round");
            pc.signal_var = signal_var;
            pc.noise_var = noise_var;
            pc.csi_error_var = csi_error_var;
            const auto plan = phy::plan_round(ch, static_cast<std::size_t>(n_streams), pc, mimo_iterations);
            std::vector<cf64> prec;
            for (const auto& p : plan.precoders)
                prec.insert(prec.end(), p.begin(), p.end());
            const auto g = phy::plan_response(plan, ch);
            py::dict d;
            d["precoders"] = zarray(static_cast<py::ssize_t>(prec.size()), prec.data());
            d["combiner"] = zarray(static_cast<py::ssize_t>(plan.combiner.size()), plan.combiner.data());
            d["expected"] = zarray(static_cast<py::ssize_t>(g.size()), g.data());
            d["eta"] = plan.eta;
            d["truncated_fraction"] = plan.truncated_fraction;
            return d;
        },
        py::arg("h"),
        py::arg("n_devices"),
        py::arg("n_rx"),
        py::arg("n_tx"),
        py::arg("n_carriers"),
        py::arg("n_streams") = 0,
        py::arg("budget") = std::vector<double>{ 1.0 },
        py::arg("policy") = "truncated",
        py::arg("g_th") = 0.1,
        py::arg("signal_var") = std::vector<double>{},
        py::arg("noise_var") = 1.0,
        py::arg("csi_error_var") = std::vector<double>{},
        py::arg("mimo_iterations") = 60,
        "fedlora::phy::plan_round and plan_response: precoders [((k*M + m)*n_tx + a)*L + l], combiner, "
        "expected response, eta per carrier.");
}
