// fedlora keys: creates a CURVE key pair for the encrypted, authenticated control plane (docs/wire.md,
// "Transport security").
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fedlora/wire/curve.h"

namespace fedlora::app {

namespace {

struct KeysOpts {
    std::string name;
    std::string out = ".";
    bool force = false;
};

int run_keys(const KeysOpts& o) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(o.out, ec);
    if (ec) {
        spdlog::error("cannot create the key directory '{}': {}", o.out, ec.message());
        return 1;
    }
    wire::KeyFiles files;
    wire::KeyPair pair;
    try {
        pair = wire::generate_keypair();
        files = wire::write_keypair(o.out, o.name, pair, o.force);
    } catch (const wire::KeyFileExists& e) {
        spdlog::error("{}; pass --force to replace the pair '{}' (its old secret key is then lost)", e.what(),
                      o.name);
        return 1;
    } catch (const wire::CurveError& e) {
        spdlog::error("{}", e.what());
        return 1;
    }
    const auto abs = [](const std::string& p) {
        std::error_code e;
        const auto a = std::filesystem::absolute(p, e);
        return e ? p : a.lexically_normal().string();
    };
    std::printf("CURVE key pair '%s' written\n", o.name.c_str());
    std::printf("  secret key file: %s (mode 0600; keep it on this host, never copy it)\n",
                abs(files.secret_file).c_str());
    std::printf("  public key file: %s (give it to the peers that must trust '%s')\n",
                abs(files.public_file).c_str(), o.name.c_str());
    std::printf("public key: %s\n", pair.public_key.c_str());
    return 0;
}

}  // namespace

void add_keys(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<KeysOpts>();
    auto* cmd = app.add_subcommand(
        "keys", "Create a CURVE key pair (NAME.key, NAME.pub) for the encrypted, authenticated control plane");
    cmd->footer(
        "Writes NAME.key (public + secret key, mode 0600) and NAME.pub (the public key alone), each atomically,\n"
        "and prints the public key and both paths. Every endpoint beyond loopback must use CURVE:\n"
        "  - the server loads its NAME.key and admits only the clients whose .pub files are in its allow-list\n"
        "    (a directory of .pub files, or a file with one public key per line);\n"
        "  - a client loads its own NAME.key and the server's .pub.\n"
        "An existing pair is never overwritten unless --force is given. See docs/wire.md, \"Transport security\".");
    cmd->add_option("--name", o->name,
                    "Name of the pair, e.g. 'server' or 'device-3': the files are NAME.key and NAME.pub "
                    "(letters, digits, '.', '_', '-'; at most 64)")
        ->required()
        ->check(CLI::Validator(
            [](std::string& name) { return wire::key_name_problem(name); }, "NAME", "key name"));
    cmd->add_option("--out", o->out, "Directory for the two files (created if missing)")->capture_default_str();
    cmd->add_flag("--force", o->force, "Replace an existing pair of the same name (its old secret key is lost)");
    cmd->callback([o, &exit_code] { exit_code = run_keys(*o); });
}

}  // namespace fedlora::app
