// fedlora sim: the default loopback experiment — federated LoRA fine-tuning of a pretrained transformer with the
// clients' updates summed over the simulated wireless channel (or exactly, or digitally), writing a run folder.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "sim/config.h"
#include "sim/experiment.h"

namespace fedlora::app {

namespace {

struct SimCli {
    std::string config_file;
    std::vector<std::string> sets;
    std::string mode;
    std::string task;
    std::string transport;
    std::string out;
    std::uint64_t seed = 0;
    bool seed_given = false;
    bool resume = false;
    bool force = false;
    bool quiet = false;
    bool help_config = false;
    bool print_config = false;
};

sim::SimConfig resolve(const SimCli& c) {
    // --transport is a shortcut like --mode: after the file, before the --set overrides.
    auto sets = c.sets;
    if (!c.transport.empty())
        sets.insert(sets.begin(), "transport=" + c.transport);
    return sim::resolve_config({c.config_file, c.mode, c.task, c.seed_given ? &c.seed : nullptr, sets});
}

std::string default_out(const sim::SimConfig& cfg) {
    return "runs/" + cfg.task + "-" + cfg.mode + "-seed" + std::to_string(cfg.seed);
}

int run(const SimCli& c) {
    if (c.help_config) {
        std::printf("Configuration keys of fedlora sim (YAML nests them: train: {lr: 0.003}):\n%s",
                    sim::config_help().c_str());
        return 0;
    }
    sim::RunOptions o;
    o.config = resolve(c);
    if (c.print_config) {
        std::printf("%s", sim::to_yaml(o.config).c_str());
        return 0;
    }
    o.out_dir = c.out.empty() ? default_out(o.config) : c.out;
    o.resume = c.resume;
    o.force = c.force;
    o.progress = !c.quiet;
    const auto s = sim::run_simulation(o);
    const bool vision = o.config.task == "vision";
    std::printf("fedlora sim: %s task, mode %s, %lld rounds%s\n", o.config.task.c_str(), o.config.mode.c_str(),
                static_cast<long long>(s.rounds),
                s.resumed_from ? (" (resumed after round " + std::to_string(s.resumed_from) + ")").c_str() : "");
    if (vision)
        std::printf("  test accuracy: frozen base %.4f -> final %.4f (best %.4f)\n", s.base_test_accuracy,
                    s.final_test_accuracy, s.best_test_accuracy);
    else
        std::printf("  test perplexity: frozen base %.3f -> final %.3f (best %.3f)\n", s.base_test_perplexity,
                    s.final_test_perplexity, s.best_test_perplexity);
    if (std::isfinite(s.mean_nmse_db))
        std::printf("  mean NMSE of the aggregate %.2f dB\n", s.mean_nmse_db);
    std::printf("  channel uses %llu, modelled latency %.3f s, wall time %.1f s\n",
                static_cast<unsigned long long>(s.total_channel_uses), s.total_latency_s, s.wall_s);
    std::printf("  run folder: %s (config.yaml, rounds.csv, summary.json, checkpoints/, adapter.safetensors)\n",
                s.out_dir.c_str());
    return 0;
}

}  // namespace

void add_sim(CLI::App& app, int& exit_code) {
    auto c = std::make_shared<SimCli>();
    auto* cmd = app.add_subcommand(
        "sim", "Federated LoRA fine-tuning over the simulated wireless channel (the default loopback experiment)");
    cmd->footer(
        "With no arguments: ViT LoRA on Fashion-MNIST, 20 clients with Dirichlet(0.5) label skew, waveform-level "
        "AirComp through the impaired multi-user channel at 20 dB (+/-3 dB) receive SNR; the base model is "
        "pretrained first if not cached. Writes RUN/config.yaml, rounds.csv, summary.json, checkpoints/ and "
        "adapter.safetensors; `fedlora report RUN...` plots runs side by side. Every configuration key: "
        "--help-config.");
    cmd->add_option("--mode", c->mode,
                    "ideal (exact sum), aircomp (waveform level), aircomp-analytic (effective noise), digital (OFDMA)")
        ->check(CLI::IsMember({"ideal", "aircomp", "aircomp-analytic", "digital"}));
    cmd->add_option("--transport", c->transport,
                    "inprocess (default) or flowgraph: with mode aircomp, the radio as the gr-fedlora loopback "
                    "flowgraph in a radio process and the clients as fedlora client processes")
        ->check(CLI::IsMember({"inprocess", "flowgraph"}));
    cmd->add_option("--task", c->task, "vision (ViT, accuracy) or text (GPT, perplexity)")
        ->check(CLI::IsMember({"vision", "text"}));
    cmd->add_option("--config", c->config_file, "YAML configuration file (keys: --help-config)");
    cmd->add_option("--set", c->sets, "Override one key, e.g. --set rounds=10 --set channel.snr_db=15 (repeatable)");
    cmd->add_option("--out", c->out, "Run folder (default: runs/<task>-<mode>-seed<seed>)");
    cmd->add_option("--seed", c->seed, "Seed of the whole experiment (partition, channels, training)")
        ->each([c](const std::string&) { c->seed_given = true; });
    cmd->add_flag("--resume", c->resume, "Continue the run in --out from its last checkpoint (same configuration)");
    cmd->add_flag("--force", c->force, "Replace an existing run folder");
    cmd->add_flag("-q,--quiet", c->quiet, "No progress bar");
    cmd->add_flag("--help-config", c->help_config, "List every configuration key with its default and exit");
    cmd->add_flag("--print-config", c->print_config, "Print the resolved configuration as YAML and exit");
    cmd->callback([c, &exit_code] {
        try {
            exit_code = run(*c);
        } catch (const sim::ConfigError& e) {
            // A bad configuration is a usage error, like a bad option.
            std::fprintf(stderr, "fedlora sim: error: %s\n", e.what());
            exit_code = 2;
        }
    });
}

}  // namespace fedlora::app
