// A private temporary directory (mkdtemp under the system's temporary directory) removed with everything in it when
// the object goes: where the CLI's commands put the scripts and data they hand to /usr/bin/python3.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace fedlora::app {

class TempDir {
public:
    // `prefix` names the directory, e.g. "fedlora-report" gives /tmp/fedlora-report-XXXXXX.
    explicit TempDir(const std::string& prefix) {
        namespace fs = std::filesystem;
        const std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (!::mkdtemp(buf.data()))
            throw std::runtime_error("cannot create a temporary directory in " + fs::temp_directory_path().string() +
                                     ": " + std::strerror(errno));
        path_ = buf.data();
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

private:
    std::string path_;
};

}  // namespace fedlora::app
