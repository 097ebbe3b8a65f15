// fedlora: one command line for the over-the-air federated LoRA testbed.
#include <cstdio>
#include <exception>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "commands.h"

int main(int argc, char** argv) {
    CLI::App app{
        "fedlora: a software-defined-radio testbed for wireless federated LoRA fine-tuning with over-the-air "
        "computation (AirComp). Runs in loopback simulation by default; USRPs through UHD when attached.",
        "fedlora"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("fedlora ") + FEDLORA_VERSION);
    std::string log_level = "info";
    app.add_option("--log-level", log_level, "Log verbosity: trace, debug, info, warn, error, off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
        ->capture_default_str();

    int exit_code = 0;
    fedlora::app::add_sim(app, exit_code);
    fedlora::app::add_federation(app, exit_code);
    fedlora::app::add_loopback(app, exit_code);
    fedlora::app::add_pretrain(app, exit_code);
    fedlora::app::add_bench(app, exit_code);
    fedlora::app::add_devices(app, exit_code);
    fedlora::app::add_keys(app, exit_code);
    fedlora::app::add_report(app, exit_code);
    fedlora::app::add_calibrate(app, exit_code);

    auto logger = spdlog::stderr_color_mt("fedlora");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    app.parse_complete_callback([&] { spdlog::set_level(spdlog::level::from_str(log_level)); });

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "fedlora: error: %s\nRun 'fedlora --help' for usage.\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        return 1;
    }
    return exit_code;
}
