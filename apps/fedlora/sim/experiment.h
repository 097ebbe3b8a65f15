// The federated fine-tuning experiment of `fedlora sim`: what a client does in a round (train the adapter it
// received on its own data, form its payload) and what the server does (select clients and the support, sum the
// payloads over the radio, apply, evaluate, checkpoint, log). The in-process simulator runs both sides on one
// model; `fedlora server` / `fedlora client` run them in separate processes with the same functions, so the two
// transports compute the same thing.
//
// A run folder (docs/report.md describes the files):
//   config.yaml            the fully resolved configuration
//   rounds.csv             one row per round (columns: kRoundColumns)
//   summary.json           the run's figures, written at the end
//   checkpoints/latest.safetensors   the state after the last checkpointed round (atomic; learn/checkpoint.h)
// A run resumes from its folder (`--resume`): rows after the checkpoint's round are dropped from rounds.csv and the
// rounds are run again, so a run killed at any moment and resumed ends bit for bit where an uninterrupted run ends.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config.h"

namespace fedlora::sim {

struct RoundRow {
    std::int64_t round = 0;
    std::string mode;
    std::int64_t clients = 0;           // clients whose payload went into the aggregate
    double snr_db = 0.0;                // mean measured receive SNR (NaN: ideal)
    double nmse_db = 0.0;               // measured NMSE of the aggregate (NaN: ideal or lost round)
    double nmse_analytic_db = 0.0;      // the power-control policy's analytic NMSE (NaN where none)
    double sparsity = 1.0;              // ρ: fraction of rank components sent
    std::int64_t subcarriers = 0;
    std::uint64_t channel_uses = 0;
    std::uint64_t cum_channel_uses = 0;
    double airtime_s = 0.0;
    double latency_s = 0.0;             // slowest client's compute time + airtime
    double cum_latency_s = 0.0;
    double train_loss = 0.0;            // mean local loss of the participating clients (weighted)
    double test_accuracy = 0.0;         // NaN for text or when not evaluated this round
    double test_perplexity = 0.0;       // NaN for vision or when not evaluated
    double queue = 0.0;                 // the controller's latency queue after the round (0: fixed)
    double wall_s = 0.0;                // wall time of the round on this machine
    double covariance = 0.0;            // ‖Σ p_k (B_k − B̄)(A_k − Ā)‖_F (what separate averaging loses)
    std::int64_t payload = 0;           // reals per client
    std::int64_t dropped = 0;           // selected clients left out (non-finite update, missed deadline)
    bool delivered = true;              // false: the receiver lost the aggregate; the global adapter is unchanged
};

// The columns of rounds.csv, in order.
const std::vector<std::string>& round_columns();
std::string round_csv_line(const RoundRow& row);

struct RunOptions {
    SimConfig config;
    std::string out_dir;
    bool resume = false;     // continue the run in out_dir from its checkpoint
    bool force = false;      // replace an existing run folder
    bool progress = true;    // progress bar on stderr
    // Called after each round (after the row is written and the checkpoint saved).
    std::function<void(const RoundRow&)> on_round;
};

struct RunSummary {
    std::string out_dir;
    std::int64_t rounds = 0;
    std::int64_t resumed_from = 0;          // rounds already done when the run started
    double base_test_accuracy = 0.0;        // the frozen base (no adapter update), NaN for text
    double base_test_perplexity = 0.0;      // NaN for vision
    double final_test_accuracy = 0.0;
    double final_test_perplexity = 0.0;
    double best_test_accuracy = 0.0;
    double best_test_perplexity = 0.0;
    std::uint64_t total_channel_uses = 0;
    double total_latency_s = 0.0;
    double mean_nmse_db = 0.0;
    double wall_s = 0.0;
    std::string adapter_path;               // the final global adapter (safetensors)
};

// Runs (or resumes) the experiment. Errors: ConfigError (bad configuration or a run folder made with another one),
// std::runtime_error (data, files), with messages naming the problem; a finished round is never lost.
RunSummary run_simulation(const RunOptions& options);

}  // namespace fedlora::sim
