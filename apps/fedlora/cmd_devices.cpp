// fedlora devices: the USRPs UHD can see.
#include <cstdio>
#include <string>

#include <spdlog/spdlog.h>
#include <uhd/device.hpp>
#include <uhd/types/device_addr.hpp>

#include "commands.h"

namespace fedlora::app {

void add_devices(CLI::App& app, int& exit_code) {
    auto args = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("devices", "List the USRPs UHD finds (exits 1 if there are none)");
    cmd->add_option("--args", *args,
                    "UHD device arguments to filter the search, e.g. 'type=b200' or 'addr=192.168.10.2' "
                    "(empty: every transport UHD knows, which includes a network broadcast)");
    cmd->callback([args, &exit_code] {
        uhd::device_addrs_t found;
        try {
            found = uhd::device::find(uhd::device_addr_t(*args));
        } catch (const std::exception& e) {
            spdlog::error("UHD device search failed (args '{}'): {}", *args, e.what());
            exit_code = 1;
            return;
        }
        if (found.empty()) {
            spdlog::error("no USRP found (UHD device args '{}'); check the cable/network and 'uhd_find_devices'",
                          *args);
            exit_code = 1;
            return;
        }
        for (const auto& d : found)
            std::printf("%s\n", d.to_pp_string().c_str());
        exit_code = 0;
    });
}

}  // namespace fedlora::app
