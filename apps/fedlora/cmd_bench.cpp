// fedlora bench: measurements of this machine that the rest of the project depends on.
#include <cstdio>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fedlora/learn/blas.h"

namespace fedlora::app {

void add_bench(CLI::App& app, int& exit_code) {
    auto* bench = app.add_subcommand("bench", "Measure this machine: LibTorch matmul throughput and the BLAS in use, LoRA training steps C++ vs Python");
    bench->require_subcommand(1);

    struct BlasOpts {
        int size = 1024;
        double seconds = 2.0;
        int threads = 0;
    };
    auto opts = std::make_shared<BlasOpts>();
    auto* blas = bench->add_subcommand(
        "blas", "LibTorch float32 matmul GFLOP/s and the BLAS library actually loaded (read from /proc/self/maps)");
    blas->add_option("--size", opts->size, "Matrix size n (n x n times n x n)")
        ->check(CLI::Range(16, 8192))
        ->capture_default_str();
    blas->add_option("--seconds", opts->seconds, "Minimum measuring time")
        ->check(CLI::Range(0.01, 600.0))
        ->capture_default_str();
    blas->add_option("--threads", opts->threads, "Intra-op threads (0: LibTorch's default)")
        ->check(CLI::Range(0, 256))
        ->capture_default_str();
    blas->callback([opts, &exit_code] {
        const auto info = learn::detect_blas();
        std::printf("BLAS in use: %s (%s)\n", learn::to_string(info.kind),
                    info.provider.empty() ? "no sgemm_ provider found" : info.provider.c_str());
        if (info.blas_threads > 0)
            std::printf("  OpenBLAS threads: %d\n", info.blas_threads);
        for (const auto& m : info.mapped)
            std::printf("  mapped: %s\n", m.c_str());
        if (info.kind == learn::BlasKind::Reference)
            learn::warn_if_reference_blas();
        std::fflush(stdout);
        spdlog::info("timing {0}x{0} float32 matmul for at least {1} s", opts->size, opts->seconds);
        const auto r = learn::measure_matmul_gflops(opts->size, opts->seconds, opts->threads);
        std::printf("matmul %dx%d float32: %.2f GFLOP/s (%d LibTorch intra-op threads, %d repetitions in %.2f s)\n",
                    r.n, r.n, r.gflops,
                    r.threads, r.repetitions, r.seconds);
        exit_code = 0;
    });
    add_bench_train(*bench, exit_code);
}

}  // namespace fedlora::app
