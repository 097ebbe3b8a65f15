// `fedlora server` and `fedlora client`: the federated experiment across processes (and hosts), on the control
// plane of DESIGN.md §2 over ZeroMQ with the project's wire format (docs/wire.md, "Round protocol").
//
//   client → server  HELLO (client id)                 server → client  HELLO (run id, the resolved config)
//   server → client  ROUND_START (round, global adapter, support)
//   client → server  UPDATE (payload, loss)  or  ERROR (why it stays silent, e.g. a non-finite update)
//   client → server  HEARTBEAT while idle               server → client  BYE when the run ends
//
// The server runs the same round loop as `fedlora sim` (selection, support, controller, radio, apply, evaluate,
// rounds.csv, checkpoints); the clients run the same client half (train_client), so with the same configuration a
// federated run ends with the adapter the in-process simulator computes, bit for bit. A round waits for the
// selected clients' updates until server.round_deadline_s, then completes with those that answered; clients
// silent for five heartbeat periods are left out of later rounds until they are heard again. A server killed and
// restarted with --resume continues from its checkpoint; the clients stay connected (ZeroMQ reconnects) and answer
// the round again. Every refused message (malformed, truncated, oversized, another version or run, unknown client,
// non-finite update) costs one log line and nothing else.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "experiment.h"

namespace fedlora::sim {

struct ServerOptions {
    RunOptions run;
    std::string bind = "tcp://127.0.0.1:5555";
    std::string endpoint_file;  // if set, the bound endpoint is written there (a FIFO works) once clients can join
    std::string curve_key;      // the server's NAME.key (CURVE); required for a non-loopback endpoint
    std::string allow;          // the client keys admitted (directory of .pub files, or a key-list file)
};

// Throws ConfigError for a bad configuration (e.g. fedsa, whose B lives on the clients) and std::runtime_error for
// transport problems, naming them.
RunSummary run_server(const ServerOptions& options);

// `fedlora sim --transport flowgraph`: the in-process simulator's run with the clients as separate processes on
// this host. This process is the server (as run_server, bound to tcp://127.0.0.1:*) and starts one
// `fedlora client --connect EP --id K` child of its own executable per client; the radio is the flowgraph
// transport's radio process. A client process that dies ends the run with an error; all children are ended and
// reaped before this returns or throws.
RunSummary run_sim_with_processes(const RunOptions& options);

struct ClientOptions {
    std::string connect = "tcp://127.0.0.1:5555";
    std::int64_t id = 0;
    std::vector<std::string> sets;  // local overrides of the server's config (e.g. data.dir on this host)
    std::string curve_key;          // this client's NAME.key (CURVE)
    std::string server_key;         // the server's NAME.pub (CURVE)
    double idle_timeout_s = 600.0;  // give up when the server has been silent this long
    long parent_pid = 0;            // > 0: exit with this parent process (PR_SET_PDEATHSIG), which started us
};

// Runs until the server says BYE (returns 0) or stays silent past the idle timeout (throws std::runtime_error).
int run_client(const ClientOptions& options);

}  // namespace fedlora::sim
