#include "federation.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "fedlora/learn/checkpoint.h"
#include "fedlora/wire/curve.h"
#include "fedlora/wire/endpoint.h"
#include "fedlora/wire/message.h"
#include "process.h"
#include "radio.h"
#include "workspace.h"

namespace fedlora::sim {

namespace {

using Clock = std::chrono::steady_clock;
using wire::Message;
using wire::MessageType;

std::string routing_id_of(std::int64_t client) { return "client-" + std::to_string(client); }

// FNV-1a of the resolved configuration: the run id every message of the run carries.
std::uint64_t run_id_of(const SimConfig& cfg) {
    std::uint64_t h = 1469598103934665603ULL;
    for (const unsigned char c : to_yaml(cfg)) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h == 0 ? 1 : h;
}

wire::Tensor bytes_tensor(const std::string& name, const std::string& text) {
    wire::Tensor t;
    t.name = name;
    t.dtype = wire::DType::U8;
    t.shape = {text.size()};
    t.data.assign(text.begin(), text.end());
    return t;
}

std::string tensor_text(const wire::Tensor& t) { return std::string(t.data.begin(), t.data.end()); }

wire::Tensor i64_tensor(const std::string& name, const std::vector<std::int64_t>& v) {
    wire::Tensor t;
    t.name = name;
    t.dtype = wire::DType::I64;
    t.shape = {v.size()};
    t.data.resize(v.size() * sizeof(std::int64_t));
    if (!v.empty())
        std::memcpy(t.data.data(), v.data(), t.data.size());
    return t;
}

wire::Tensor f64_scalar(const std::string& name, double v) {
    wire::Tensor t;
    t.name = name;
    t.dtype = wire::DType::F64;
    t.data.resize(sizeof(double));
    std::memcpy(t.data.data(), &v, sizeof v);
    return t;
}

std::string shape_text(const std::vector<std::uint64_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i)
        out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

const wire::Tensor& require(const Message& m, const std::string& name, wire::DType dtype) {
    const auto* t = m.find(name);
    if (!t)
        throw wire::WireError(std::string(wire::to_string(m.type)) + " lacks tensor '" + name + "'");
    if (t->dtype != dtype)
        throw wire::WireError(std::string(wire::to_string(m.type)) + " tensor '" + name + "' is " +
                              wire::to_string(t->dtype) + ", expected " + wire::to_string(dtype));
    return *t;
}

// ROUND_START body: the global adapter's tensors and the support.
void put_round(Message& m, const learn::Adapter& global, const learn::RankSupport* support) {
    for (const auto& l : global.layers) {
        m.tensors.push_back(wire::make_f32("global/" + l.tensor_name(learn::LoraFactor::A), l.A,
                                           {static_cast<std::uint64_t>(l.rank), static_cast<std::uint64_t>(l.in)}));
        m.tensors.push_back(wire::make_f32("global/" + l.tensor_name(learn::LoraFactor::B), l.B,
                                           {static_cast<std::uint64_t>(l.out), static_cast<std::uint64_t>(l.rank)}));
    }
    if (support)
        for (std::size_t l = 0; l < support->kept.size(); ++l)
            m.tensors.push_back(i64_tensor("support/" + std::to_string(l), support->kept[l]));
}

// The global adapter of a ROUND_START, into the shape of this client's own adapter (every tensor checked).
learn::Adapter take_global(const Message& m, const learn::Adapter& shape) {
    learn::Adapter g = shape;
    for (auto& l : g.layers)
        for (const auto f : {learn::LoraFactor::A, learn::LoraFactor::B}) {
            const std::string name = "global/" + l.tensor_name(f);
            const auto& t = require(m, name, wire::DType::F32);
            const std::vector<std::uint64_t> want =
                f == learn::LoraFactor::A
                    ? std::vector<std::uint64_t>{static_cast<std::uint64_t>(l.rank), static_cast<std::uint64_t>(l.in)}
                    : std::vector<std::uint64_t>{static_cast<std::uint64_t>(l.out), static_cast<std::uint64_t>(l.rank)};
            if (t.shape != want)
                throw wire::WireError("ROUND_START tensor '" + name + "' has shape " + shape_text(t.shape) +
                                      ", this client's adapter has " + shape_text(want));
            l.factor(f) = wire::as_f32(t);
        }
    return g;
}

std::optional<learn::RankSupport> take_support(const Message& m, const learn::Adapter& shape) {
    if (!m.find("support/0"))
        return std::nullopt;
    learn::RankSupport s;
    for (std::size_t l = 0; l < shape.layers.size(); ++l) {
        const auto& t = require(m, "support/" + std::to_string(l), wire::DType::I64);
        std::vector<std::int64_t> v(t.data.size() / sizeof(std::int64_t));
        if (!v.empty())
            std::memcpy(v.data(), t.data.data(), v.size() * sizeof(std::int64_t));
        s.kept.push_back(std::move(v));
    }
    s.check(shape);
    return s;
}

// The largest message a peer may send in this run: an UPDATE of the full payload, with room for the framing.
std::size_t message_bound(const Workspace& ws, const learn::Adapter& global) {
    const auto d = ws.rule->payload_layout(global).size;
    return static_cast<std::size_t>(d) * sizeof(float) * 2 + (1u << 20);
}

// ---- server side -----------------------------------------------------------------------------------------------

struct Peer {
    std::string routing;
    Clock::time_point last_seen;
    bool gone = false;
};

class RemotePool final : public ClientPool {
public:
    RemotePool(const ServerOptions& o, Workspace& ws, const learn::Adapter& shape)
        : cfg_(ws.cfg), config_yaml_(to_yaml(ws.cfg)), run_id_(run_id_of(ws.cfg)), shape_(shape),
          sock_(ctx_, zmq::socket_type::router) {
        limits_.max_message_bytes = message_bound(ws, shape);
        limits_.max_tensors = 64;
        sock_.set(zmq::sockopt::router_mandatory, 1);
        sock_.set(zmq::sockopt::linger, 1000);
        // Transport-level cap (libzmq drops a peer that exceeds it) well above the decoder's limit, so that an
        // oversized message is refused with a log line rather than silently.
        sock_.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(limits_.max_message_bytes * 16));
        if (!o.curve_key.empty() || !o.allow.empty()) {
            if (o.curve_key.empty() || o.allow.empty())
                throw std::runtime_error("CURVE needs both --curve-key (the server's key pair) and --allow (the "
                                         "client keys admitted)");
            auth_ = std::make_unique<wire::Authenticator>(ctx_, wire::AllowList::load(o.allow),
                                                          [](const std::string& line) { spdlog::warn("{}", line); });
            wire::make_curve_server(sock_, wire::load_keypair(o.curve_key), *auth_);
        }
        endpoint_ = wire::bind(sock_, o.bind);
        spdlog::info("server listening on {}{} (run id {:016x})", endpoint_, auth_ ? " with CURVE" : "", run_id_);
        if (!o.endpoint_file.empty()) {
            std::ofstream f(o.endpoint_file);
            f << endpoint_ << "\n";
            if (!f)
                throw std::runtime_error("cannot write the endpoint to '" + o.endpoint_file + "'");
        }
    }
    ~RemotePool() override {
        sock_.close();
        auth_.reset();
    }

    const std::string& endpoint() const { return endpoint_; }
    // Called between polls while the pool waits for clients (to join, or to answer a round); may throw to abort
    // the wait (e.g. when a client process this program started has died).
    void set_watchdog(std::function<void()> f) { watchdog_ = std::move(f); }

    // Waits until every client has said HELLO (or any message), or the join timeout passes.
    void wait_for_clients() {
        const auto deadline = Clock::now() + seconds(cfg_.server.join_timeout_s);
        while (alive_count() < static_cast<std::size_t>(cfg_.clients) && Clock::now() < deadline) {
            poll_once(remaining(deadline), nullptr);
            if (watchdog_)
                watchdog_();
        }
        std::string missing;
        for (std::int64_t c = 0; c < cfg_.clients; ++c)
            if (!alive(c))
                missing += (missing.empty() ? "" : ", ") + std::to_string(c);
        if (missing.empty())
            spdlog::info("all {} clients joined", cfg_.clients);
        else
            spdlog::warn("{} of {} clients joined after {} s; missing: {}", alive_count(), cfg_.clients,
                         cfg_.server.join_timeout_s, missing);
    }

    std::vector<ClientResult> run_round(std::int64_t round, const std::vector<std::int64_t>& selected,
                                        const learn::Adapter& global, const learn::RankSupport* support,
                                        const std::map<std::int64_t, learn::Adapter>&) override {
        if (!joined_) {
            wait_for_clients();
            joined_ = true;
        }
        Collect col;
        col.round = round;
        Message start;
        start.type = MessageType::RoundStart;
        start.round = static_cast<std::uint32_t>(round);
        put_round(start, global, support);
        for (const auto c : selected) {
            if (!alive(c)) {
                spdlog::warn("round {}: client {} is not connected; left out", round, c);
                continue;
            }
            start.client_id = static_cast<std::uint32_t>(c);
            if (send_to(c, start))
                col.waiting.insert(c);
            else
                spdlog::warn("round {}: client {} cannot be reached; left out", round, c);
        }
        const auto deadline = Clock::now() + seconds(cfg_.server.round_deadline_s);
        while (!col.waiting.empty() && Clock::now() < deadline) {
            poll_once(remaining(deadline), &col);
            if (watchdog_)
                watchdog_();
        }
        for (const auto c : col.waiting)
            spdlog::warn("round {}: client {} missed the {} s deadline; left out", round, c,
                         cfg_.server.round_deadline_s);
        std::vector<ClientResult> out;
        for (const auto c : selected) {
            const auto it = col.results.find(c);
            if (it != col.results.end())
                out.push_back(std::move(it->second));
        }
        return out;
    }

    void finish() override {
        Message bye;
        bye.type = MessageType::Bye;
        for (const auto& [c, p] : peers_)
            if (!p.gone)
                send_to(c, bye);
    }

private:
    struct Collect {
        std::int64_t round = 0;
        std::set<std::int64_t> waiting;
        std::map<std::int64_t, ClientResult> results;
    };

    static Clock::duration seconds(double s) {
        return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    }
    static std::chrono::milliseconds remaining(Clock::time_point deadline) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        return std::max(std::chrono::milliseconds(1), std::min(left, std::chrono::milliseconds(200)));
    }
    bool alive(std::int64_t c) const {
        const auto it = peers_.find(c);
        return it != peers_.end() && !it->second.gone &&
               Clock::now() - it->second.last_seen < seconds(5.0 * cfg_.server.heartbeat_s) +
                                                         seconds(cfg_.server.round_deadline_s);
    }
    std::size_t alive_count() const {
        std::size_t n = 0;
        for (std::int64_t c = 0; c < cfg_.clients; ++c)
            n += alive(c) ? 1 : 0;
        return n;
    }

    bool send_to(std::int64_t c, Message m) {
        const auto it = peers_.find(c);
        if (it == peers_.end())
            return false;
        m.run_id = run_id_;
        m.seq = ++seq_;
        const auto bytes = wire::encode(m);
        try {
            sock_.send(zmq::buffer(it->second.routing), zmq::send_flags::sndmore);
            sock_.send(zmq::const_buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
            return true;
        } catch (const zmq::error_t& e) {
            if (e.num() == EHOSTUNREACH) {
                it->second.gone = true;
                return false;
            }
            throw;
        }
    }

    void poll_once(std::chrono::milliseconds timeout, Collect* col) {
        zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, timeout) == 0)
            return;
        std::vector<zmq::message_t> frames;
        do {
            zmq::message_t f;
            if (!sock_.recv(f, zmq::recv_flags::dontwait))
                break;
            frames.push_back(std::move(f));
        } while (sock_.get(zmq::sockopt::rcvmore));
        if (frames.empty())
            return;
        const std::string routing = frames[0].to_string();
        if (frames.size() != 2) {
            spdlog::warn("dropped a message of {} frames from peer '{}' (one frame expected)", frames.size() - 1,
                         routing);
            return;
        }
        Message m;
        try {
            m = wire::decode(static_cast<const std::uint8_t*>(frames[1].data()), frames[1].size(), limits_);
        } catch (const wire::WireError& e) {
            spdlog::warn("dropped a malformed message from peer '{}': {}", routing, e.what());
            return;
        }
        handle(routing, m, col);
    }

    void handle(const std::string& routing, const Message& m, Collect* col) {
        const auto c = static_cast<std::int64_t>(m.client_id);
        if (c >= cfg_.clients) {
            spdlog::warn("dropped {} from peer '{}': client id {} is not one of the run's {} clients",
                         wire::to_string(m.type), routing, c, cfg_.clients);
            return;
        }
        if (m.type != MessageType::Hello && m.run_id != run_id_) {
            spdlog::warn("dropped {} from client {}: run id {:016x} is not this run's ({:016x})",
                         wire::to_string(m.type), c, m.run_id, run_id_);
            return;
        }
        auto& p = peers_[c];
        if (p.routing != routing && !p.routing.empty())
            spdlog::info("client {} reconnected as '{}'", c, routing);
        p.routing = routing;
        p.last_seen = Clock::now();
        p.gone = false;
        switch (m.type) {
        case MessageType::Hello: {
            Message w;
            w.type = MessageType::Hello;
            w.client_id = m.client_id;
            w.tensors.push_back(bytes_tensor("config", config_yaml_));
            send_to(c, w);
            spdlog::info("client {} joined", c);
            return;
        }
        case MessageType::Heartbeat:
            return;
        case MessageType::Bye:
            p.gone = true;
            spdlog::info("client {} left", c);
            return;
        case MessageType::Update:
        case MessageType::Error: {
            if (!col || static_cast<std::int64_t>(m.round) != col->round || !col->waiting.count(c)) {
                spdlog::debug("ignored {} of client {} for round {} (not awaited)", wire::to_string(m.type), c,
                              m.round);
                return;
            }
            ClientResult r;
            r.client = c;
            try {
                if (m.type == MessageType::Error) {
                    const auto* why = m.find("reason");
                    r.error = why ? tensor_text(*why) : "the client gave no reason";
                } else {
                    r.payload = wire::as_f32(require(m, "payload", wire::DType::F32));
                    const auto& loss = require(m, "loss", wire::DType::F64);
                    if (loss.data.size() != sizeof(double))
                        throw wire::WireError("UPDATE tensor 'loss' is not a scalar");
                    std::memcpy(&r.loss, loss.data.data(), sizeof(double));
                    r.ok = true;
                }
            } catch (const wire::WireError& e) {
                spdlog::warn("round {}: dropped the update of client {}: {}", col->round, c, e.what());
                return;  // the client stays awaited: a correct update may still come before the deadline
            }
            col->waiting.erase(c);
            col->results[c] = std::move(r);
            return;
        }
        default:
            spdlog::warn("dropped an unexpected {} from client {}", wire::to_string(m.type), c);
            return;
        }
    }

    SimConfig cfg_;
    std::string config_yaml_;
    std::uint64_t run_id_;
    learn::Adapter shape_;
    wire::Limits limits_;
    zmq::context_t ctx_;
    std::unique_ptr<wire::Authenticator> auth_;
    zmq::socket_t sock_;
    std::string endpoint_;
    std::map<std::int64_t, Peer> peers_;
    std::uint64_t seq_ = 0;
    bool joined_ = false;
    std::function<void()> watchdog_;
};

// The client processes of `fedlora sim --transport flowgraph`: `fedlora client --connect EP --id K` children of
// this program's own executable, one per client. They exit when the server says BYE (wait()); the destructor ends
// any that still run (an error on the way), and each one dies with this process (--parent-pid: PR_SET_PDEATHSIG).
class ClientProcesses {
public:
    ClientProcesses(const std::string& endpoint, std::int64_t clients) {
        const std::string exe = self_executable();
        // Clients log warnings and errors (and everything when this process logs debug).
        const bool verbose = spdlog::get_level() <= spdlog::level::debug;
        for (std::int64_t k = 0; k < clients; ++k) {
            ChildProcess::Options o;
            o.program = "/proc/self/exe";
            o.argv = {exe, "--log-level", verbose ? "debug" : "warn", "client", "--connect", endpoint, "--id",
                      std::to_string(k), "--parent-pid", std::to_string(::getpid())};
            procs_.push_back(std::make_unique<ChildProcess>(o));
        }
        spdlog::info("started {} client processes ({} client --connect {})", clients, exe, endpoint);
    }
    ~ClientProcesses() {
        for (auto& p : procs_)
            if (!p->exited())
                p->terminate(std::chrono::seconds(2));
    }
    ClientProcesses(const ClientProcesses&) = delete;
    ClientProcesses& operator=(const ClientProcesses&) = delete;

    // Throws if a client process has ended before the run did.
    void check() {
        for (std::size_t k = 0; k < procs_.size(); ++k)
            if (const auto st = procs_[k]->poll_exit())
                throw std::runtime_error("client process " + std::to_string(k) + " (pid " +
                                         std::to_string(procs_[k]->pid()) + ") " + ChildProcess::describe(*st) +
                                         " during the run (its log is above)");
    }

    // After BYE: every client must exit, with status 0, within `timeout`.
    void wait(std::chrono::milliseconds timeout) {
        const auto deadline = Clock::now() + timeout;
        for (std::size_t k = 0; k < procs_.size(); ++k) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            const auto st = procs_[k]->wait_for(std::max(left, std::chrono::milliseconds(0)));
            if (!st)
                throw std::runtime_error("client process " + std::to_string(k) + " did not leave after the run");
            if (!WIFEXITED(*st) || WEXITSTATUS(*st) != 0)
                throw std::runtime_error("client process " + std::to_string(k) + " " + ChildProcess::describe(*st));
        }
    }

private:
    std::vector<std::unique_ptr<ChildProcess>> procs_;
};

}  // namespace

RunSummary run_server(const ServerOptions& o) {
    o.run.config.validate();
    if (o.run.config.aggregation == "fedsa")
        throw ConfigError("config key 'aggregation': fedsa keeps each client's B on the client, which the server "
                          "cannot checkpoint; fedlora server supports fedit and ffa (fedlora sim runs fedsa)");
    check_run_folder(o.run);
    auto radio = make_radio(o.run.config);  // the radio process (transport flowgraph) fails before pretraining
    Workspace ws = make_workspace(o.run.config);
    apply_offline_rank(ws);
    const auto shape = initial_global(ws);
    RemotePool pool(o, ws, shape);
    return run_rounds(o.run, ws, pool, std::move(radio));
}

RunSummary run_sim_with_processes(const RunOptions& o) {
    o.config.validate();
    check_run_folder(o);
    // The radio process first: a missing GNU Radio or gr-fedlora fails at once, before pretraining.
    auto radio = make_radio(o.config);
    Workspace ws = make_workspace(o.config);
    apply_offline_rank(ws);
    const auto shape = initial_global(ws);
    ServerOptions so;
    so.run = o;
    so.bind = "tcp://127.0.0.1:*";
    RemotePool pool(so, ws, shape);
    ClientProcesses clients(pool.endpoint(), ws.cfg.clients);
    pool.set_watchdog([&clients] { clients.check(); });
    auto summary = run_rounds(o, ws, pool, std::move(radio));  // ends with BYE to the clients
    clients.wait(std::chrono::seconds(60));
    return summary;
}

// ---- client side -----------------------------------------------------------------------------------------------

int run_client(const ClientOptions& o) {
    if (o.parent_pid > 0) {
        // Started by a program that runs the whole federation on this host: leave with it.
        if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != static_cast<pid_t>(o.parent_pid))
            throw std::runtime_error("client " + std::to_string(o.id) + ": the parent process " +
                                     std::to_string(o.parent_pid) + " is gone");
    }
    zmq::context_t ctx;
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::routing_id, routing_id_of(o.id));
    sock.set(zmq::sockopt::linger, 2000);
    if (!o.curve_key.empty() || !o.server_key.empty()) {
        if (o.curve_key.empty() || o.server_key.empty())
            throw std::runtime_error("CURVE needs both --curve-key (this client's key pair) and --server-key (the "
                                     "server's public key)");
        wire::make_curve_client(sock, wire::load_keypair(o.curve_key), wire::load_public_key(o.server_key));
    }
    wire::connect(sock, o.connect);

    std::uint64_t run_id = 0, seq = 0;
    auto send = [&](Message m) {
        m.run_id = run_id;
        m.client_id = static_cast<std::uint32_t>(o.id);
        m.seq = ++seq;
        wire::send(sock, m);
    };
    Message hello;
    hello.type = MessageType::Hello;
    send(hello);
    spdlog::info("client {}: connecting to {}", o.id, o.connect);

    std::optional<Workspace> ws;
    learn::Adapter shape;
    wire::Limits limits;
    auto last_heard = Clock::now();
    auto last_hello = Clock::now();
    const auto period = std::chrono::duration<double>(1.0);
    while (true) {
        std::optional<Message> m;
        try {
            m = wire::receive(sock, std::chrono::duration_cast<std::chrono::milliseconds>(
                                        ws ? std::chrono::duration<double>(ws->cfg.server.heartbeat_s) : period),
                              limits);
        } catch (const wire::WireError& e) {
            spdlog::warn("client {}: dropped a malformed message from the server: {}", o.id, e.what());
            continue;
        }
        if (!m) {
            if (std::chrono::duration<double>(Clock::now() - last_heard).count() > o.idle_timeout_s)
                throw std::runtime_error("no word from the server at " + o.connect + " for " +
                                         std::to_string(static_cast<long long>(o.idle_timeout_s)) +
                                         " s (is it running, and does it admit this client's key?)");
            if (ws) {
                Message hb;
                hb.type = MessageType::Heartbeat;
                send(hb);
            } else if (Clock::now() - last_hello > std::chrono::seconds(5)) {
                send(hello);  // the server may have started after us, or restarted
                last_hello = Clock::now();
            }
            continue;
        }
        last_heard = Clock::now();
        if (run_id != 0 && m->run_id != run_id) {
            spdlog::warn("client {}: dropped {} of another run (run id {:016x})", o.id, wire::to_string(m->type),
                         m->run_id);
            continue;
        }
        switch (m->type) {
        case MessageType::Hello: {
            if (ws)
                continue;  // already configured (an answer to a repeated HELLO)
            SimConfig cfg;
            load_yaml_text(cfg, tensor_text(require(*m, "config", wire::DType::U8)), "the server's configuration");
            for (const auto& s : o.sets)
                apply_override(cfg, s);
            cfg.validate();
            if (o.id < 0 || o.id >= cfg.clients)
                throw std::runtime_error("client id " + std::to_string(o.id) + " is not one of the run's " +
                                         std::to_string(cfg.clients) + " clients");
            run_id = m->run_id;
            spdlog::info("client {}: joined run {:016x}; preparing the model and data", o.id, run_id);
            ws.emplace(make_workspace(cfg));
            shape = initial_global(*ws);
            limits.max_message_bytes = message_bound(*ws, shape);
            Message hb;
            hb.type = MessageType::Heartbeat;
            send(hb);
            spdlog::info("client {}: ready ({} examples)", o.id, ws->sizes[static_cast<std::size_t>(o.id)]);
            continue;
        }
        case MessageType::RoundStart: {
            if (!ws)
                continue;
            const auto round = static_cast<std::int64_t>(m->round);
            Message reply;
            reply.round = m->round;
            try {
                const auto global = take_global(*m, shape);
                const auto support = take_support(*m, shape);
                auto r = train_client(*ws, o.id, round, global, nullptr, support ? &*support : nullptr);
                if (r.ok) {
                    reply.type = MessageType::Update;
                    reply.tensors.push_back(wire::make_f32("payload", r.payload));
                    reply.tensors.push_back(f64_scalar("loss", r.loss));
                } else {
                    reply.type = MessageType::Error;
                    reply.tensors.push_back(bytes_tensor("reason", r.error));
                    spdlog::warn("client {}: round {}: staying silent: {}", o.id, round, r.error);
                }
            } catch (const std::exception& e) {
                reply.type = MessageType::Error;
                reply.tensors.clear();
                reply.tensors.push_back(bytes_tensor("reason", e.what()));
                spdlog::warn("client {}: round {}: refused the round: {}", o.id, round, e.what());
            }
            send(reply);
            continue;
        }
        case MessageType::Bye:
            spdlog::info("client {}: the server ended the run", o.id);
            return 0;
        default:
            continue;
        }
    }
}

}  // namespace fedlora::sim
