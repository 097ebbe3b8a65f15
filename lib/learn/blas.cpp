#include "fedlora/learn/blas.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

namespace fedlora::learn {

const char* to_string(BlasKind k) {
    switch (k) {
        case BlasKind::OpenBLAS: return "OpenBLAS";
        case BlasKind::MKL: return "Intel MKL";
        case BlasKind::BLIS: return "BLIS";
        case BlasKind::ATLAS: return "ATLAS";
        case BlasKind::Reference: return "reference BLAS (netlib)";
        case BlasKind::Unknown: return "unknown";
    }
    return "unknown";
}

BlasKind classify_blas_path(const std::string& path) {
    std::string p = path;
    std::transform(p.begin(), p.end(), p.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (p.find("openblas") != std::string::npos)
        return BlasKind::OpenBLAS;
    if (p.find("mkl") != std::string::npos)
        return BlasKind::MKL;
    if (p.find("blis") != std::string::npos)
        return BlasKind::BLIS;
    if (p.find("atlas") != std::string::npos)
        return BlasKind::ATLAS;
    // Debian's netlib reference implementation lives in .../blas/libblas.so.3 (the alternatives' default).
    if (p.find("/blas/libblas.so") != std::string::npos || p.find("libblas.so") != std::string::npos)
        return BlasKind::Reference;
    return BlasKind::Unknown;
}

std::vector<std::string> blas_libraries_in_maps(const std::string& maps_text) {
    std::vector<std::string> libs;
    std::istringstream in(maps_text);
    std::string line;
    while (std::getline(in, line)) {
        const auto slash = line.find('/');
        if (slash == std::string::npos)
            continue;
        const std::string path = line.substr(slash);
        const auto base = path.substr(path.rfind('/') + 1);
        const bool blas_like = base.find("blas") != std::string::npos || base.find("mkl") != std::string::npos ||
                               base.find("blis") != std::string::npos || base.find("atlas") != std::string::npos;
        if (blas_like && base.find(".so") != std::string::npos &&
            std::find(libs.begin(), libs.end(), path) == libs.end())
            libs.push_back(path);
    }
    return libs;
}

BlasInfo detect_blas() {
    // Make sure LibTorch has run a matmul so lazily loaded BLAS back ends are mapped.
    (void)torch::matmul(torch::ones({2, 2}), torch::ones({2, 2}));
    BlasInfo info;
    std::ifstream maps("/proc/self/maps");
    std::stringstream ss;
    ss << maps.rdbuf();
    info.mapped = blas_libraries_in_maps(ss.str());
    if (void* sym = dlsym(RTLD_DEFAULT, "sgemm_")) {
        Dl_info dl{};
        if (dladdr(sym, &dl) && dl.dli_fname) {
            // dli_fname is the name the loader used; the mapping gives the resolved file.
            const std::string fname = dl.dli_fname;
            info.provider = fname;
            const auto base = fname.substr(fname.rfind('/') + 1);
            for (const auto& m : info.mapped)
                if (m.size() >= base.size() && m.compare(m.size() - base.size(), base.size(), base) == 0) {
                    info.provider = m;
                    break;
                }
        }
    }
    using threads_fn = int (*)();
    if (void* f = dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))
        info.blas_threads = reinterpret_cast<threads_fn>(f)();
    if (!info.provider.empty())
        info.kind = classify_blas_path(info.provider);
    else if (!info.mapped.empty())
        info.kind = classify_blas_path(info.mapped.front());
    return info;
}

bool warn_if_reference_blas() {
    const auto info = detect_blas();
    if (info.kind == BlasKind::Reference) {
        spdlog::warn("LibTorch is using the reference BLAS ({}): matmul is ~30x slower. "
                     "Install libopenblas0-pthread (apt-get install libopenblas0-pthread).",
                     info.provider);
        return true;
    }
    return false;
}

MatmulResult measure_matmul_gflops(int n, double min_seconds, int threads) {
    if (threads > 0)
        torch::set_num_threads(threads);
    torch::NoGradGuard ng;
    torch::manual_seed(0);
    auto a = torch::randn({n, n});
    auto b = torch::randn({n, n});
    auto c = torch::empty({n, n});
    torch::matmul_out(c, a, b);  // warm-up
    MatmulResult r;
    r.n = n;
    r.threads = torch::get_num_threads();
    const auto t0 = std::chrono::steady_clock::now();
    double elapsed = 0.0;
    do {
        torch::matmul_out(c, a, b);
        ++r.repetitions;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (elapsed < min_seconds);
    r.seconds = elapsed;
    r.gflops = 2.0 * n * static_cast<double>(n) * n * r.repetitions / elapsed / 1e9;
    return r;
}

}  // namespace fedlora::learn
