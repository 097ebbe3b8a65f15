// Internal to the experiment (apps/fedlora/sim): what one process of a federated run holds, and the two halves of a
// round. The in-process simulator (experiment.cpp), `fedlora server` and `fedlora client` (federation.cpp) build the
// same Workspace from the same configuration, so a client process computes exactly what the simulator computes.
// This header includes LibTorch (through the learning layer).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "config.h"
#include "experiment.h"
#include "fedlora/learn/aggregate.h"
#include "fedlora/learn/models.h"
#include "fedlora/learn/partition.h"
#include "fedlora/learn/train.h"
#include "radio.h"

namespace fedlora::sim {

struct Workspace {
    SimConfig cfg;
    bool vision = true;
    std::shared_ptr<learn::TransformerModelImpl> model;
    std::shared_ptr<learn::ViTImpl> vit;
    std::shared_ptr<learn::GptImpl> gpt;
    learn::TaskData pool;                   // the fine-tuning pool the clients share out
    learn::TaskData test;                   // the evaluation set
    std::vector<std::int64_t> pool_labels;  // class (vision) or category (text) of each pool example
    std::string base_path;                  // the frozen base model's file
    double compute_s = 0.0;                 // modelled local training time of a round (analytic FLOPs / device.gflops)
    learn::Partition partition;
    std::vector<std::int64_t> sizes;        // examples per client
    std::unique_ptr<learn::AggregationRule> rule;
    learn::TrainOptions train;
    std::string offline_rank;               // TSFA's offline rank choice as JSON (empty: none made)
};

// TSFA's offline stage (controller.rank_candidates): chooses the structural rank from the channel statistics and
// the latency budget, rebuilds the workspace with it when it differs from lora.rank, and records the choice.
void apply_offline_rank(Workspace& ws);

// Pretrains or loads the base, injects the adapters (initial A from the run's seed), loads the data and partitions
// it. Throws ConfigError / std::runtime_error naming the problem.
Workspace make_workspace(const SimConfig& cfg);

// The round-0 global adapter (the rule's initialisation from the run's seed).
learn::Adapter initial_global(Workspace& ws);

// One client's half of a round: start from the global adapter (and its own local factors, for fedsa), train E
// steps on its data, and form its payload of shared coordinates on the support. `ok` false (with `error`) when the
// update is not finite: the client must then stay silent.
struct ClientResult {
    std::int64_t client = 0;
    bool ok = false;
    std::string error;
    std::vector<float> payload;
    double loss = 0.0;
    learn::Adapter trained;  // the client's adapter after training (empty when it came over the network)
};
ClientResult train_client(Workspace& ws, std::int64_t client, std::int64_t round, const learn::Adapter& global,
                          const learn::Adapter* local, const learn::RankSupport* support);

// Where the clients' halves run: in this process, or in client processes over ZeroMQ.
class ClientPool {
public:
    virtual ~ClientPool() = default;
    // Results for the selected clients that answered (in `selected` order); the others are left out (logged).
    virtual std::vector<ClientResult> run_round(std::int64_t round, const std::vector<std::int64_t>& selected,
                                                const learn::Adapter& global, const learn::RankSupport* support,
                                                const std::map<std::int64_t, learn::Adapter>& local) = 0;
    // Called once when the run ends (e.g. to tell client processes to leave).
    virtual void finish() {}
};

// Fault injection for the fault tests: FEDLORA_FAULT_KILL_AT="R:C" makes the process that trains client C raise
// SIGKILL just before training it in round R (mid-round: earlier clients of the round have trained, nothing of the
// round is saved); "R:server" kills the server in round R after the clients were asked to train. {-1, -1}: unset.
// FEDLORA_FAULT_NAN_AT="R:C" makes client C send a NaN in its round-R update (past its own check, as a broken
// client would), for the server's check.
inline constexpr std::int64_t kFaultServer = -2;
std::pair<std::int64_t, std::int64_t> fault_kill_point();
std::pair<std::int64_t, std::int64_t> fault_point(const char* variable);

// Refuses a run folder that cannot be used as asked (exists without --resume/--force, or nothing to resume),
// before any expensive work. Throws ConfigError.
void check_run_folder(const RunOptions& options);

// The server's loop over the rounds (selection, support, control, radio, apply, evaluate, log, checkpoint).
// `radio` null: make_radio(ws.cfg).
RunSummary run_rounds(const RunOptions& options, Workspace& ws, ClientPool& pool,
                      std::unique_ptr<Radio> radio = nullptr);

}  // namespace fedlora::sim
