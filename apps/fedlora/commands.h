// Subcommands of the fedlora CLI. Each add_* registers its subcommand; the callback runs it and stores the exit
// code through `exit_code` (0 success, 1 runtime failure; usage errors are 2, raised by the parser).
#pragma once

#include <CLI/CLI.hpp>

namespace fedlora::app {

void add_bench(CLI::App& app, int& exit_code);
void add_calibrate(CLI::App& app, int& exit_code);
void add_devices(CLI::App& app, int& exit_code);
void add_keys(CLI::App& app, int& exit_code);
void add_loopback(CLI::App& app, int& exit_code);
void add_pretrain(CLI::App& app, int& exit_code);
void add_sim(CLI::App& app, int& exit_code);
// `server` and `client`.
void add_federation(CLI::App& app, int& exit_code);
void add_report(CLI::App& app, int& exit_code);
// `bench train`, registered under the `bench` subcommand by add_bench.
void add_bench_train(CLI::App& bench, int& exit_code);

}  // namespace fedlora::app
