// fedlora server / fedlora client: the federated experiment across processes and hosts over ZeroMQ (the same
// rounds as fedlora sim; docs/sim.md, "Server and clients").
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "sim/config.h"
#include "sim/federation.h"

namespace fedlora::app {

namespace {

struct ServerCli {
    std::string config_file;
    std::vector<std::string> sets;
    std::string mode;
    std::string task;
    std::string out;
    sim::ServerOptions o;
    bool resume = false;
    bool force = false;
};

int run_server(ServerCli& c) {
    const auto cfg = sim::resolve_config({c.config_file, c.mode, c.task, nullptr, c.sets});
    c.o.run.config = cfg;
    c.o.run.out_dir = c.out.empty() ? "runs/" + cfg.task + "-" + cfg.mode + "-server-seed" + std::to_string(cfg.seed)
                                    : c.out;
    c.o.run.resume = c.resume;
    c.o.run.force = c.force;
    c.o.run.progress = false;
    c.o.run.on_round = [](const sim::RoundRow& r) {
        spdlog::info("round {}: {} clients, loss {:.4f}, {}", r.round, r.clients, r.train_loss,
                     std::isfinite(r.test_accuracy) ? "accuracy " + std::to_string(r.test_accuracy)
                                                    : "perplexity " + std::to_string(r.test_perplexity));
    };
    const auto s = sim::run_server(c.o);
    std::printf("fedlora server: %lld rounds done; run folder %s\n", static_cast<long long>(s.rounds),
                s.out_dir.c_str());
    return 0;
}

template <class F>
void guarded(int& exit_code, F f) {
    try {
        exit_code = f();
    } catch (const sim::ConfigError& e) {
        std::fprintf(stderr, "fedlora: error: %s\n", e.what());
        exit_code = 2;
    }
}

}  // namespace

void add_federation(CLI::App& app, int& exit_code) {
    auto s = std::make_shared<ServerCli>();
    auto* srv = app.add_subcommand("server", "Run the federated experiment's server: clients join over ZeroMQ");
    srv->footer("Takes the same configuration as fedlora sim and writes the same run folder; clients get the "
                "configuration from the server when they join. Non-loopback endpoints need CURVE keys "
                "(fedlora keys). Every configuration key: fedlora sim --help-config.");
    srv->add_option("--bind", s->o.bind, "Endpoint to listen on (port * picks a free one)")->capture_default_str();
    srv->add_option("--endpoint-file", s->o.endpoint_file, "Write the bound endpoint here once clients can join");
    srv->add_option("--config", s->config_file, "YAML configuration file");
    srv->add_option("--set", s->sets, "Override one key (repeatable), e.g. --set server.round_deadline_s=30");
    srv->add_option("--mode", s->mode, "ideal, aircomp, aircomp-analytic or digital")
        ->check(CLI::IsMember({"ideal", "aircomp", "aircomp-analytic", "digital"}));
    srv->add_option("--task", s->task, "vision or text")->check(CLI::IsMember({"vision", "text"}));
    srv->add_option("--out", s->out, "Run folder (default: runs/<task>-<mode>-server-seed<seed>)");
    srv->add_flag("--resume", s->resume, "Continue the run in --out from its last checkpoint");
    srv->add_flag("--force", s->force, "Replace an existing run folder");
    srv->add_option("--curve-key", s->o.curve_key, "The server's key pair (NAME.key from fedlora keys)");
    srv->add_option("--allow", s->o.allow, "Client public keys admitted: a directory of .pub files or a key list");
    srv->callback([s, &exit_code] { guarded(exit_code, [&] { return run_server(*s); }); });

    auto c = std::make_shared<sim::ClientOptions>();
    auto* cli = app.add_subcommand("client", "Run one federated client: local LoRA training for the server's rounds");
    cli->footer("Joins the server, receives the run's configuration, trains its share of the data every round it "
                "is selected and sends its update; leaves when the server ends the run.");
    cli->add_option("--connect", c->connect, "The server's endpoint")->capture_default_str();
    cli->add_option("--id", c->id, "This client's id, 0 .. clients-1")->required()->check(CLI::Range(0, 9999));
    cli->add_option("--set", c->sets, "Local override of the server's configuration (e.g. data.dir on this host)");
    cli->add_option("--curve-key", c->curve_key, "This client's key pair (NAME.key from fedlora keys)");
    cli->add_option("--server-key", c->server_key, "The server's public key (NAME.pub)");
    cli->add_option("--idle-timeout", c->idle_timeout_s, "Give up after this many seconds without word from the server")
        ->check(CLI::Range(0.1, 1e7))
        ->capture_default_str();
    // Set by `fedlora sim --transport flowgraph` for the clients it starts: exit with that parent.
    cli->add_option("--parent-pid", c->parent_pid, "Exit when this parent process exits")
        ->check(CLI::PositiveNumber)
        ->group("");
    cli->callback([c, &exit_code] { guarded(exit_code, [&] { return sim::run_client(*c); }); });
}

}  // namespace fedlora::app
