// The flowgraph transport's radio (`transport: flowgraph`): every round goes to a radio process — GNU Radio's Python
// running gnuradio.fedlora.radio_server — which runs it through the gr-fedlora AirComp loopback flowgraph (K
// aircomp_transmitter -> channel_model -> aircomp_receiver) and answers with the aggregate and what the receiver
// measured. Request and answer are wire messages over ZeroMQ on 127.0.0.1 (docs/wire.md, "Radio service").
//
// The process is started here (posix_spawn of FEDLORA_PYTHON with PYTHONPATH led by FEDLORA_GR_PYTHONPATH, or the
// directory gr-fedlora installs its Python package to), tells its endpoint on its stdout (no sleeps), forwards its
// log lines through its stderr, and ends with this object: BYE, then end of its stdin (it exits when its stdin
// closes, so it also goes when this process dies), then SIGTERM/SIGKILL if it still runs. The round's
// configuration is built by the functions the in-process radio uses (round_waveform_config, round_channel_config),
// so with FFTW_ESTIMATE plans on both sides the estimate equals aircomp_round_waveform's, bit for bit.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "fedlora/phy/aircomp.h"
#include "fedlora/wire/endpoint.h"
#include "fedlora/wire/message.h"
#include "process.h"
#include "radio.h"

#ifndef FEDLORA_PYTHON
#define FEDLORA_PYTHON "/usr/bin/python3"
#endif
#ifndef FEDLORA_GR_PYTHON_INSTALL_DIR
#define FEDLORA_GR_PYTHON_INSTALL_DIR ""
#endif

namespace fedlora::sim {

namespace {

using Clock = std::chrono::steady_clock;
using wire::DType;
using wire::Message;
using wire::MessageType;
using wire::Tensor;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr const char* kModule = "gnuradio.fedlora.radio_server";
constexpr auto kStartTimeout = std::chrono::seconds(120);  // importing GNU Radio on a busy machine
constexpr double kRoundTimeoutS = 300.0;                   // the radio gives up on a round's flowgraph after this
constexpr auto kReplyMargin = std::chrono::seconds(60);    // ... and we on the radio this much later
constexpr auto kStopTimeout = std::chrono::seconds(10);
constexpr std::size_t kStderrTail = 20;
constexpr const char* kLogPrefix = "fedlora-radio: ";  // the radio's own log lines

template <class T>
Tensor scalar(const std::string& name, DType dtype, T v) {
    Tensor t;
    t.name = name;
    t.dtype = dtype;
    t.data.resize(sizeof v);
    std::memcpy(t.data.data(), &v, sizeof v);
    return t;
}
Tensor i64(const std::string& name, std::int64_t v) { return scalar(name, DType::I64, v); }
Tensor f64(const std::string& name, double v) { return scalar(name, DType::F64, v); }

template <class T>
Tensor vector_of(const std::string& name, DType dtype, const std::vector<T>& v) {
    Tensor t;
    t.name = name;
    t.dtype = dtype;
    t.shape = {v.size()};
    t.data.resize(v.size() * sizeof(T));
    if (!v.empty())
        std::memcpy(t.data.data(), v.data(), t.data.size());
    return t;
}

Tensor text(const std::string& name, const std::string& s) {
    return vector_of(name, DType::U8, std::vector<std::uint8_t>(s.begin(), s.end()));
}

std::string shape_text(const std::vector<std::uint64_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i)
        out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

// A tensor of the radio's answer, checked for dtype and shape.
const Tensor& need(const Message& m, const std::string& name, DType dtype, const std::vector<std::uint64_t>& shape) {
    const Tensor* t = m.find(name);
    if (!t)
        throw std::runtime_error(std::string("the radio's ") + wire::to_string(m.type) + " lacks tensor '" + name +
                                 "'");
    if (t->dtype != dtype || t->shape != shape)
        throw std::runtime_error(std::string("the radio's ") + wire::to_string(m.type) + " tensor '" + name +
                                 "' is " + wire::to_string(t->dtype) + " " + shape_text(t->shape) + ", expected " +
                                 wire::to_string(dtype) + " " + shape_text(shape));
    return *t;
}

template <class T>
T scalar_of(const Message& m, const std::string& name, DType dtype) {
    const auto& t = need(m, name, dtype, {});
    T v;
    std::memcpy(&v, t.data.data(), sizeof v);
    return v;
}

template <class T>
std::vector<T> values_of(const Tensor& t) {
    std::vector<T> v(t.data.size() / sizeof(T));
    if (!v.empty())
        std::memcpy(v.data(), t.data.data(), v.size() * sizeof(T));
    return v;
}

std::string text_of(const Message& m, const std::string& name) {
    const Tensor* t = m.find(name);
    return t ? std::string(t->data.begin(), t->data.end()) : std::string();
}

// What to do about a radio process that could not start, from what it said last.
std::string install_hint(const std::string& said) {
    static const std::regex no_gnuradio(R"(No module named '?gnuradio'?(?![.\w]))");
    if (std::regex_search(said, no_gnuradio))
        return "GNU Radio's Python package 'gnuradio' is not importable by " + std::string(FEDLORA_PYTHON) +
               " (install GNU Radio 3.10: apt-get install gnuradio)";
    if (said.find("gnuradio.fedlora") != std::string::npos || said.find("fedlora_python") != std::string::npos ||
        said.find("radio_server") != std::string::npos)
        return "gr-fedlora's Python package gnuradio.fedlora (with radio_server) is missing or incomplete: build and "
               "install gr-fedlora (cmake --build BUILD && cmake --install BUILD), or point FEDLORA_GR_PYTHONPATH "
               "at a build tree's gr-fedlora/python_test";
    if (said.find("No module named") != std::string::npos)
        return "a Python package the radio needs is missing (apt-get install python3-numpy python3-zmq)";
    return "";
}

class FlowgraphRadio final : public Radio {
public:
    explicit FlowgraphRadio(const SimConfig& cfg)
        : cfg_(cfg), cal_(load_radio_calibration(cfg)), sock_(ctx_, zmq::socket_type::req) {
        (void)round_numerology(cfg, 0);  // fail early on a bad numerology
        start();
    }

    ~FlowgraphRadio() override {
        if (!proc_ || proc_->exited())
            return;
        try {
            if (!broken_) {
                Message bye;
                bye.type = MessageType::Bye;
                (void)exchange(bye, std::chrono::seconds(5), "BYE");
            }
        } catch (const std::exception& e) {
            spdlog::debug("radio process: no answer to BYE: {}", e.what());
        }
        stop();
    }

    std::string mode() const override { return "aircomp"; }

    RadioReport aggregate(const RadioRound& r, std::vector<float>& estimate) override {
        check_radio_round(r);
        if (broken_)
            throw std::runtime_error("flowgraph transport: the radio process failed in an earlier round");
        const auto K = r.payloads.size();
        const auto d = r.payloads[0].size();
        const auto num = round_numerology(cfg_, r.subcarriers);
        const auto M = static_cast<std::size_t>(num.n_occupied);
        RadioReport rep;
        rep.subcarriers = num.n_occupied;

        // Nothing to send (every update zero): the sum is zero and no airtime is spent, as in-process.
        phy::AircompCodec codec;
        codec.dim = d;
        bool all_zero = true;
        for (const auto& p : r.payloads)
            all_zero = all_zero && phy::update_rms(p.data(), d, codec.support) == 0.0;
        if (all_zero) {
            estimate.assign(d, 0.0f);
            rep.nmse = 0.0;
            rep.nmse_analytic = 0.0;
            rep.snr_db = kNaN;
            return rep;
        }

        const Message answer = exchange(request(r, num), round_timeout(), "round " + std::to_string(r.round));
        if (answer.type == MessageType::Error) {
            const std::string code = text_of(answer, "code"), why = text_of(answer, "reason");
            if (code == "no_frame") {
                // The receiver found no frame: the aggregate of this round is lost, the run goes on.
                rep.delivered = false;
                rep.failure = why;
                estimate.assign(d, 0.0f);
                rep.nmse = kNaN;
                rep.nmse_analytic = kNaN;
                rep.snr_db = kNaN;
                return rep;
            }
            throw std::runtime_error("flowgraph transport: round " + std::to_string(r.round) +
                                     ": the radio process refused the round (" + code + "): " + why);
        }
        if (answer.type != MessageType::Aggregate)
            throw std::runtime_error("flowgraph transport: round " + std::to_string(r.round) +
                                     ": the radio process answered " + wire::to_string(answer.type) +
                                     ", expected AGGREGATE");
        const auto u64 = [](std::size_t n) { return static_cast<std::uint64_t>(n); };
        estimate = wire::as_f32(need(answer, "aggregate", DType::F32, {u64(d)}));
        const auto gain = values_of<double>(need(answer, "csi_gain", DType::F64, {u64(K), u64(M)}));
        rep.device_snr_db = values_of<double>(need(answer, "device_snr_db", DType::F64, {u64(K)}));

        // The same figures, by the same arithmetic, as the in-process radio.
        const auto [err, ref] = phy::sum_error(r.payloads, r.weights, codec, estimate);
        rep.nmse = ref > 0.0 ? err / ref : 0.0;
        // The analytic NMSE from the receiver's own prediction (a flowgraph receiver has no true channel): the
        // plan's MSE on the CSI it estimated, which it reports over the expected energy n_sym Σ_k v_k of the sum,
        // here over the energy of the actual sum as in-process (there: the plan for the true channel, on it).
        std::vector<double> rms(K);
        for (std::size_t k = 0; k < K; ++k)
            rms[k] = phy::update_rms(r.payloads[k].data(), d, codec.support);
        codec.scale = phy::common_scale(rms, r.weights);
        double v = 0.0;
        for (const double x : phy::symbol_powers(r.payloads, r.weights, codec))
            v += x;
        const double predicted = scalar_of<double>(answer, "nmse_predicted", DType::F64);
        rep.nmse_analytic = ref > 0.0 ? predicted * static_cast<double>(codec.n_symbols()) * v * codec.scale *
                                            codec.scale / ref
                                      : 0.0;
        double lin = 0.0;
        for (const double s : rep.device_snr_db)
            lin += std::pow(10.0, s / 10.0) / static_cast<double>(K);
        rep.snr_db = 10.0 * std::log10(lin);
        rep.device_gain.assign(K, 0.0);
        rep.device_csi.assign(K, {});
        for (std::size_t k = 0; k < K; ++k) {
            rep.device_csi[k].assign(gain.begin() + static_cast<std::ptrdiff_t>(k * M),
                                     gain.begin() + static_cast<std::ptrdiff_t>((k + 1) * M));
            for (std::size_t m = 0; m < M; ++m)
                rep.device_gain[k] += gain[k * M + m] / static_cast<double>(M);
        }
        rep.noise_var = scalar_of<double>(answer, "noise_var", DType::F64);
        rep.channel_uses = static_cast<std::uint64_t>(scalar_of<std::int64_t>(answer, "channel_uses", DType::I64));
        rep.ofdm_symbols = static_cast<std::uint64_t>(scalar_of<std::int64_t>(answer, "ofdm_symbols", DType::I64));
        rep.airtime_s = scalar_of<double>(answer, "airtime_s", DType::F64);
        rep.truncated_fraction = scalar_of<double>(answer, "truncated_fraction", DType::F64);
        return rep;
    }

private:
    static std::chrono::milliseconds round_timeout() {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(kRoundTimeoutS)) +
               kReplyMargin;
    }

    std::string command() const { return std::string(FEDLORA_PYTHON) + " -m " + kModule; }

    void start() {
        ChildProcess::Options o;
        o.program = FEDLORA_PYTHON;
        const bool verbose = spdlog::get_level() <= spdlog::level::debug;
        o.argv = {FEDLORA_PYTHON, "-m", kModule, "--bind", "tcp://127.0.0.1:*", "--watch-stdin",
                  "--round-timeout", std::to_string(kRoundTimeoutS), "--log-level", verbose ? "info" : "warn"};
        if (verbose)
            o.argv.push_back("--verbose");
        // Where gnuradio.fedlora comes from: FEDLORA_GR_PYTHONPATH (e.g. a build tree's gr-fedlora/python_test),
        // else the directory gr-fedlora installs to, ahead of the caller's PYTHONPATH.
        const char* mine = std::getenv("FEDLORA_GR_PYTHONPATH");
        std::string path = mine && *mine ? mine : FEDLORA_GR_PYTHON_INSTALL_DIR;
        if (const char* pp = std::getenv("PYTHONPATH"); pp && *pp)
            path += (path.empty() ? "" : ":") + std::string(pp);
        if (!path.empty())
            o.env.push_back("PYTHONPATH=" + path);
        if (!std::getenv("GR_CONF_CONTROLPORT_ON"))
            o.env.push_back("GR_CONF_CONTROLPORT_ON=False");
        o.pipe_stdin = o.pipe_stdout = o.pipe_stderr = true;
        try {
            proc_ = std::make_unique<ChildProcess>(o);
        } catch (const std::runtime_error& e) {
            throw std::runtime_error("flowgraph transport: cannot start the radio process (" + command() +
                                     "): " + e.what() + " (install Python 3 and GNU Radio: apt-get install gnuradio)");
        }

        // The first line on its stdout is the endpoint; its stderr is kept for the error message meanwhile.
        const auto deadline = Clock::now() + kStartTimeout;
        std::string out;
        while (out.find('\n') == std::string::npos) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0)
                fail_start("did not announce its endpoint within " +
                           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kStartTimeout).count()) +
                           " s");
            pollfd p[2] = {{proc_->stdout_fd(), POLLIN, 0}, {proc_->stderr_fd(), POLLIN, 0}};
            const int n = ::poll(p, err_open_ ? 2 : 1, static_cast<int>(left.count()));
            if (n < 0 && errno != EINTR)
                fail_start(std::string("could not be watched (poll: ") + std::strerror(errno) + ")");
            if (n <= 0)
                continue;
            if (err_open_ && p[1].revents)
                read_stderr(false);
            if (p[0].revents && !read_available(proc_->stdout_fd(), out) && out.find('\n') == std::string::npos)
                fail_start("");
        }
        const std::string line = out.substr(0, out.find('\n'));
        const std::string prefix = "fedlora-radio: listening on ";
        if (line.rfind(prefix, 0) != 0)
            fail_start("said '" + line + "' instead of its endpoint");
        endpoint_ = line.substr(prefix.size());
        if (!wire::is_loopback_endpoint(endpoint_))
            fail_start("listens on '" + endpoint_ + "', which is not a loopback endpoint");
        sock_.set(zmq::sockopt::linger, 0);
        wire::connect(sock_, endpoint_);
        for (const auto& l : tail_)
            spdlog::debug("radio process: {}", l);
        started_ = true;
        spdlog::info("flowgraph transport: radio process {} serving on {}", proc_->pid(), endpoint_);
    }

    // The request of one round: payloads, weights and the round's whole physical layer and channel.
    Message request(const RadioRound& r, const phy::Numerology& num) const {
        const auto K = r.payloads.size();
        const auto d = r.payloads[0].size();
        const auto wc = round_waveform_config(cfg_, r, num);
        const auto ch = round_channel_config(cfg_, r, num);
        // The radio's channel_model takes one profile and Doppler for every device and the simulator's defaults
        // for everything else: refuse a configuration that would not be the same channel.
        const phy::DeviceChannelConfig plain;
        for (const auto& dev : ch.devices)
            if (dev.profile != ch.devices[0].profile || dev.doppler_hz != ch.devices[0].doppler_hz ||
                dev.fading != plain.fading || dev.rician_k != plain.rician_k || dev.block_length != 0 ||
                !dev.random_phase || dev.gain_error_db != 0.0 ||
                !dev.snr_db.has_value())
                throw std::logic_error("flowgraph transport: the round's channel has per-device settings the "
                                       "radio process does not take");
        Message m;
        m.type = MessageType::Update;
        m.round = static_cast<std::uint32_t>(r.round);
        std::vector<float> flat;
        flat.reserve(K * d);
        for (const auto& p : r.payloads)
            flat.insert(flat.end(), p.begin(), p.end());
        auto& t = m.tensors;
        t.push_back(wire::make_f32("payloads", flat, {K, d}));
        t.push_back(vector_of("weights", DType::F64, r.weights));
        t.push_back(vector_of("clients", DType::I64, r.clients));
        t.push_back(i64("fft", num.fft_size));
        t.push_back(i64("cp", num.cp_len));
        t.push_back(i64("occupied", num.n_occupied));
        t.push_back(i64("pilot_spacing", num.pilot_spacing));
        t.push_back(i64("pilot_repeats", static_cast<std::int64_t>(wc.frame.pilot_repeats)));
        t.push_back(i64("reference_interval", static_cast<std::int64_t>(wc.frame.reference_interval)));
        t.push_back(f64("sample_rate", num.sample_rate));
        t.push_back(i64("n_tx", static_cast<std::int64_t>(wc.frame.n_tx)));
        t.push_back(i64("n_rx", ch.n_rx));
        t.push_back(i64("n_streams", static_cast<std::int64_t>(wc.n_streams)));
        t.push_back(i64("lead", static_cast<std::int64_t>(wc.lead)));
        t.push_back(vector_of("budget", DType::F64, wc.power.budget));
        t.push_back(text("policy", phy::to_string(wc.power.policy)));
        t.push_back(f64("g_th", wc.power.g_th));
        t.push_back(text("estimator", wc.estimator.name));
        t.push_back(i64("timing_backoff", wc.timing_backoff));
        t.push_back(i64("mimo_iterations", wc.mimo_iterations));
        std::vector<double> snr, cfo;
        for (const auto& dev : ch.devices) {
            snr.push_back(*dev.snr_db);
            cfo.push_back(dev.cfo_hz);
        }
        t.push_back(vector_of("snr_db", DType::F64, snr));
        t.push_back(vector_of("cfo_hz", DType::F64, cfo));
        // The virtual radios' timing offsets and their calibration, only when configured (radio.*).
        if (!cfg_.radio.timing_offsets.empty()) {
            std::vector<double> timing;
            for (const auto& dev : ch.devices)
                timing.push_back(dev.timing_offset_samples);
            t.push_back(vector_of("timing_offset", DType::F64, timing));
        }
        if (cal_) {
            std::string serials;
            for (const auto c : r.clients)
                serials += (serials.empty() ? "" : "\n") + cal_->serials.at(static_cast<std::size_t>(c));
            t.push_back(text("calibration", cal_->absolute_path));
            t.push_back(text("serials", serials));
            t.push_back(f64("frequency", cfg_.radio.frequency_hz));
        }
        t.push_back(text("profile", ch.devices[0].profile));
        t.push_back(f64("doppler_hz", ch.devices[0].doppler_hz));
        t.push_back(f64("phase_noise_hz", ch.phase_noise_linewidth_hz));
        t.push_back(f64("noise_variance", ch.noise_variance));
        std::int64_t seed_bits;  // the wire has no u64: the seed's 64 bits as an i64
        std::memcpy(&seed_bits, &ch.seed, sizeof seed_bits);
        t.push_back(i64("seed", seed_bits));
        return m;
    }

    // Sends one request and waits for the answer, watching the radio process meanwhile (its log lines are
    // forwarded; its end of stdout means it died).
    Message exchange(Message m, std::chrono::milliseconds timeout, const std::string& what) {
        m.run_id = run_id_;
        m.seq = ++seq_;
        const auto bytes = wire::encode(m);
        sock_.send(zmq::const_buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
        const auto deadline = Clock::now() + timeout;
        while (true) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0)
                fail(what + ": no answer from the radio process within " +
                     std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) + " s");
            zmq::pollitem_t items[3] = {{sock_.handle(), 0, ZMQ_POLLIN, 0},
                                        {nullptr, proc_->stdout_fd(), ZMQ_POLLIN, 0},
                                        {nullptr, proc_->stderr_fd(), ZMQ_POLLIN, 0}};
            zmq::poll(items, err_open_ ? 3 : 2, left);
            if (err_open_ && items[2].revents)
                read_stderr(true);
            if (items[1].revents) {
                std::string junk;
                const bool open = read_available(proc_->stdout_fd(), junk);
                if (!junk.empty())
                    spdlog::info("radio process: {}", junk.substr(0, junk.find_last_not_of('\n') + 1));
                if (!open)
                    fail(what);
            }
            if (items[0].revents) {
                zmq::message_t reply;
                if (!sock_.recv(reply, zmq::recv_flags::dontwait))
                    continue;
                Message a;
                try {
                    a = wire::decode(static_cast<const std::uint8_t*>(reply.data()), reply.size());
                } catch (const wire::WireError& e) {
                    fail(what + ": the radio's answer is malformed: " + e.what());
                }
                if (a.run_id != run_id_ || a.seq != m.seq || a.round != m.round)
                    fail(what + ": the radio answered another request (seq " + std::to_string(a.seq) + ", expected " +
                         std::to_string(m.seq) + ")");
                return a;
            }
        }
    }

    // Forwards (or, before the radio serves, keeps) the complete lines of its stderr.
    void read_stderr(bool forward) {
        err_open_ = read_available(proc_->stderr_fd(), err_buf_);
        std::size_t nl;
        while ((nl = err_buf_.find('\n')) != std::string::npos || (!err_open_ && !err_buf_.empty())) {
            const std::string line = err_buf_.substr(0, nl);
            err_buf_.erase(0, nl == std::string::npos ? std::string::npos : nl + 1);
            if (line.empty())
                continue;
            const std::string said = line.rfind(kLogPrefix, 0) == 0 ? line.substr(std::strlen(kLogPrefix)) : line;
            tail_.push_back(said);
            if (tail_.size() > kStderrTail)
                tail_.pop_front();
            if (forward) {
                const bool bad = said.find("error") != std::string::npos || said.find("warn") != std::string::npos;
                if (bad)
                    spdlog::warn("radio process: {}", said);
                else
                    spdlog::info("radio process: {}", said);
            }
        }
    }

    // The radio died or misbehaved: collects how it ended and what it said last, ends it, throws one line.
    [[noreturn]] void fail(const std::string& what) {
        broken_ = true;
        const auto st = proc_->wait_for(std::chrono::seconds(5));
        while (err_open_) {
            pollfd p{proc_->stderr_fd(), POLLIN, 0};
            if (::poll(&p, 1, 2000) <= 0)
                break;
            read_stderr(started_);
        }
        const int status = st ? *st : proc_->terminate(std::chrono::seconds(2));
        std::string said = tail_.empty() ? "" : tail_.back();
        for (auto it = tail_.rbegin(); it != tail_.rend(); ++it)  // a traceback's last line names the error
            if (it->find("Error") != std::string::npos || it->find("error") != std::string::npos) {
                said = *it;
                break;
            }
        std::string msg = "flowgraph transport: ";
        if (started_) {
            msg += what + (st ? ": the radio process " + ChildProcess::describe(status) : "");
        } else {
            msg += "the radio process (" + command() + ") " +
                   (what.empty() ? ChildProcess::describe(status) + " before it served" : what);
        }
        if (!said.empty())
            msg += ": " + said;
        const auto hint = install_hint(said);
        if (!hint.empty())
            msg += " — " + hint;
        throw std::runtime_error(msg);
    }
    [[noreturn]] void fail_start(const std::string& what) { fail(what); }

    void stop() {
        proc_->close_stdin();  // it exits at the end of its stdin, if BYE did not end it
        if (!proc_->wait_for(kStopTimeout))
            proc_->terminate(std::chrono::seconds(2));
        if (err_open_)
            read_stderr(true);
        const int st = *proc_->status();
        if (!broken_ && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            spdlog::warn("flowgraph transport: the radio process {}", ChildProcess::describe(st));
    }

    SimConfig cfg_;
    std::shared_ptr<const RadioCalibration> cal_;
    zmq::context_t ctx_;
    zmq::socket_t sock_;
    std::unique_ptr<ChildProcess> proc_;
    std::string endpoint_;
    std::string err_buf_;
    std::deque<std::string> tail_;
    bool err_open_ = true;
    bool started_ = false;
    bool broken_ = false;
    std::uint64_t run_id_ = static_cast<std::uint64_t>(::getpid()) << 32 | 0x52414449u;  // "RADI"
    std::uint64_t seq_ = 0;
};

}  // namespace

std::unique_ptr<Radio> make_flowgraph_radio(const SimConfig& cfg) { return std::make_unique<FlowgraphRadio>(cfg); }

}  // namespace fedlora::sim
