#!/usr/bin/env bash
# Fuzzes the wire parser (fedlora::wire::decode) for a bounded time and fails on any finding: a crash, a sanitizer
# report (AddressSanitizer, UndefinedBehaviorSanitizer), a leak, a slow input or a runaway allocation.
# The fuzzer is a separate CMake project (fuzz/) built with clang, since libFuzzer needs it and the main build uses
# g++; it is configured and built under <work dir>, seeded with valid messages, then run.
# Usage: fuzz_test.sh <source dir> <work dir> [seconds]   (seconds default: $FEDLORA_FUZZ_SECONDS or 45)
set -euo pipefail
src=$1
work=$2
seconds=${3:-${FEDLORA_FUZZ_SECONDS:-45}}

for tool in clang clang++; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool is not installed (Debian: apt-get install clang libclang-rt-14-dev)"
    exit 77
  fi
done

mkdir -p "$work"
build=$work/build
if ! cmake -S "$src/fuzz" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
     -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/configure.log" 2>&1; then
  cat "$work/configure.log"
  echo "FAIL: cannot configure the fuzzer project $src/fuzz"
  exit 1
fi
cmake --build "$build" -j2 || { echo "FAIL: cannot build the fuzzer"; exit 1; }

# Fresh seeds every run; the corpus the fuzzer grows is kept, so later runs start where earlier ones stopped.
seeds=$work/seeds
corpus=$work/corpus
artifacts=$work/artifacts
rm -rf "$seeds" "$artifacts"
mkdir -p "$seeds" "$corpus" "$artifacts"
"$build/wire_seed_corpus" "$seeds"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Inputs that once found a bug run first, each exactly once.
regressions=("$src"/fuzz/regressions/*)
if [ -e "${regressions[0]}" ]; then
  "$build/fuzz_wire_decode" "${regressions[@]}" >"$work/regressions.log" 2>&1 ||
    { cat "$work/regressions.log"; echo "FAIL: a regression input of fuzz/regressions crashes the parser again"; exit 1; }
  echo "fuzz: ${#regressions[@]} regression inputs pass"
fi

echo "fuzz: running fuzz_wire_decode for ${seconds}s"
set +e
"$build/fuzz_wire_decode" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
  -max_len=8192 -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "$seeds" >"$work/fuzz.log" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ] || ls "$artifacts"/* >/dev/null 2>&1; then
  tail -n 60 "$work/fuzz.log"
  echo "FAIL: the fuzzer exited $rc; the input that broke the parser is in $artifacts:"
  ls -l "$artifacts"
  echo "Reproduce: $build/fuzz_wire_decode <that file>; full log: $work/fuzz.log"
  exit 1
fi
grep -E "INITED|^Done|^stat::" "$work/fuzz.log" || true
echo "fuzz: no finding in ${seconds}s (corpus: $(ls "$corpus" | wc -l) inputs in $corpus)"
