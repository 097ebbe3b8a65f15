#!/usr/bin/env bash
# Compiles every flowgraphs/*.grc with grcc against the build tree's gr-fedlora blocks, then runs the OFDM
# loopback flowgraph headless and checks its output against what it transmitted (numpy).
# Usage: grc_test.sh <source dir> <gr-fedlora grc dir> <build-tree PYTHONPATH>
set -euo pipefail
src=$1 grc_dir=$2 pypath=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GRC_BLOCKS_PATH=$grc_dir PYTHONPATH=$pypath GR_CONF_CONTROLPORT_ON=False
shopt -s nullglob
n=0
for g in "$src"/flowgraphs/*.grc; do
  echo "grcc $(basename "$g")"
  /usr/bin/python3 /usr/bin/grcc -o "$work" "$g" > "$work/grcc.log" 2>&1 || { cat "$work/grcc.log"; exit 1; }
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "no flowgraphs found"; exit 1; }
echo "compiled $n flowgraphs"

/usr/bin/python3 "$work/ofdm_loopback.py" --out-file "$work/out.c64"
/usr/bin/python3 - "$work/out.c64" <<'PY'
import sys
import numpy as np
y = np.fromfile(sys.argv[1], dtype=np.complex64)
n_occ, n_sym = 48, 200
x = np.array([complex(i % 7 - 3, 2 - i % 5) for i in range(n_occ * n_sym)], dtype=np.complex64)
assert y.size == x.size, (y.size, x.size)
err = np.max(np.abs(y - x))
print(f"loopback flowgraph: {y.size} values, max error {err:.2e}")
assert err < 1e-4, err
PY
