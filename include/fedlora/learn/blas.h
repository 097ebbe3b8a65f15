// Which BLAS the process actually uses, read from its own mappings, and how fast LibTorch's matmul runs.
// This header does not include LibTorch.
#pragma once

#include <string>
#include <vector>

namespace fedlora::learn {

enum class BlasKind { OpenBLAS, MKL, BLIS, ATLAS, Reference, Unknown };
const char* to_string(BlasKind k);

// Classifies a shared-library path (e.g. ".../openblas-pthread/libblas.so.3" -> OpenBLAS,
// ".../blas/libblas.so.3" -> Reference).
BlasKind classify_blas_path(const std::string& path);

// BLAS-like libraries mapped in a /proc/<pid>/maps text, in first-mapped order, without duplicates.
std::vector<std::string> blas_libraries_in_maps(const std::string& maps_text);

struct BlasInfo {
    BlasKind kind = BlasKind::Unknown;
    std::string provider;             // shared object that resolves sgemm_ in the global scope
    std::vector<std::string> mapped;  // every BLAS-like library in /proc/self/maps
    int blas_threads = 0;             // OpenBLAS's own thread count (openblas_get_num_threads), 0 if unknown
};

// Inspects the running process (loads LibTorch's BLAS if it is not loaded yet).
BlasInfo detect_blas();

// Logs a warning through spdlog when the reference BLAS serves matmul; returns true if it does.
bool warn_if_reference_blas();

struct MatmulResult {
    int n = 0;
    int threads = 0;
    int repetitions = 0;
    double seconds = 0.0;
    double gflops = 0.0;
};

// Times n×n float32 LibTorch matmuls for at least min_seconds (after one warm-up).
MatmulResult measure_matmul_gflops(int n, double min_seconds, int threads);

}  // namespace fedlora::learn
