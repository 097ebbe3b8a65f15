#!/usr/bin/env bash
# fedlora setup: installs the Debian 12 packages the project needs (only those missing: safe to run again),
# configures and builds with ccache, and installs gr-fedlora and the fedlora CLI under /usr/local so that
# `/usr/bin/python3 -c "from gnuradio import fedlora"` works and GRC lists the FedLoRA blocks.
#
# Environment: BUILD_DIR (default: build), BUILD_TYPE (default: Release), CMAKE_ARGS (extra configure
# arguments, e.g. -DFEDLORA_SANITIZE=ON), FEDLORA_NO_INSTALL=1 to skip the install step.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # toolchain
  g++ make cmake pkg-config ccache binutils clang libclang-rt-14-dev  # clang: the wire fuzzer (tests/fuzz_test.sh)
  # radio side
  gnuradio gnuradio-dev libuhd-dev uhd-host libfftw3-dev libvolk2-dev libeigen3-dev
  # learning side: LibTorch plus a fast BLAS (without libopenblas0-pthread matmul is ~30x slower)
  libtorch-dev libopenblas0-pthread python3-torch python3-numpy zlib1g-dev
  # transport, configuration, logging, CLI
  libzmq3-dev cppzmq-dev libyaml-cpp-dev libspdlog-dev nlohmann-json3-dev libcli11-dev
  # tests, benchmarks, Python bindings
  libgtest-dev libbenchmark-dev pybind11-dev python3-dev
  python3-matplotlib  # plots of fedlora report
  xvfb xauth  # xvfb-run: a headless X server for the QT GUI teaching flowgraph's test
  # data shipped by Debian
  dataset-fashion-mnist fortunes
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" ${CMAKE_ARGS:-}
cmake --build "$build" -j"${JOBS:-2}"
if [ "${FEDLORA_NO_INSTALL:-0}" != 1 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo cmake --install "$build" > "$build/install.log"
  $sudo ldconfig
  echo "setup: installed under $(grep -m1 -o '/[^ ]*/bin/fedlora' "$build/install.log" | sed 's|/bin/fedlora||' || echo /usr/local)"
fi
ccache --show-stats 2>/dev/null | grep -E "^(Hits|Misses|Cacheable)" || true
