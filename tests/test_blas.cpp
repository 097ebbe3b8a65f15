// BLAS detection from the process's own mappings.
#include <gtest/gtest.h>

#include "fedlora/learn/blas.h"

using namespace fedlora::learn;

TEST(Blas, ClassifiesDebianAlternatives) {
    EXPECT_EQ(classify_blas_path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"), BlasKind::OpenBLAS);
    EXPECT_EQ(classify_blas_path("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"), BlasKind::Reference);
    EXPECT_EQ(classify_blas_path("/usr/lib/x86_64-linux-gnu/blis-pthread/libblas.so.3"), BlasKind::BLIS);
    EXPECT_EQ(classify_blas_path("/opt/intel/lib/libmkl_rt.so.2"), BlasKind::MKL);
    EXPECT_EQ(classify_blas_path("/usr/lib/libfoo.so"), BlasKind::Unknown);
}

TEST(Blas, ParsesMapsText) {
    const std::string maps =
        "7f00-7f01 r--p 00000000 fd:00 1 /usr/lib/x86_64-linux-gnu/blas/libblas.so.3\n"
        "7f01-7f02 r-xp 00001000 fd:00 1 /usr/lib/x86_64-linux-gnu/blas/libblas.so.3\n"
        "7f02-7f03 r--p 00000000 fd:00 2 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "7f03-7f04 r--p 00000000 00:00 0 [heap]\n"
        "7f04-7f05 r--p 00000000 fd:00 3 /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0\n";
    const auto libs = blas_libraries_in_maps(maps);
    ASSERT_EQ(libs.size(), 2u);
    EXPECT_EQ(libs[0], "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3");
    EXPECT_EQ(libs[1], "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0");
}

TEST(Blas, ThisProcessUsesOpenBlas) {
    // scripts/setup.sh installs libopenblas0-pthread; without it LibTorch's matmul is ~30x slower.
    const auto info = detect_blas();
    EXPECT_FALSE(info.mapped.empty());
    EXPECT_EQ(info.kind, BlasKind::OpenBLAS) << "sgemm_ provider: " << info.provider;
    EXPECT_FALSE(warn_if_reference_blas());
}
