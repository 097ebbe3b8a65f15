#!/usr/bin/env bash
# The layer rule on the built binaries: nothing on the radio side needs LibTorch at run time.
# Usage: layers_test.sh <shared object>...
set -euo pipefail
for so in "$@"; do
  needed=$(readelf -d "$so" | grep NEEDED || true)
  if grep -Ei 'torch|c10' <<<"$needed"; then
    echo "FAIL: $so links LibTorch"; exit 1
  fi
  echo "ok: $(basename "$so") does not link LibTorch"
done
