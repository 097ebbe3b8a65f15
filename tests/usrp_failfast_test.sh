#!/usr/bin/env bash
# The USRP flowgraphs (flowgraphs/device_tx.grc, server_rx.grc) compile with grcc against the build tree's
# gr-fedlora blocks and, run through gnuradio.fedlora.run_flowgraph in USRP mode with no USRP attached, fail fast:
# exit status 1, exactly one non-empty stderr line naming "no USRP found", within 20 s. `--args type=b200` makes UHD
# search USB only (no network broadcast).
# Usage: usrp_failfast_test.sh <source dir> <gr-fedlora grc dir> <build-tree PYTHONPATH>
set -euo pipefail
src=$1 grc_dir=$2 pypath=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GRC_BLOCKS_PATH=$grc_dir PYTHONPATH=$pypath GR_CONF_CONTROLPORT_ON=False
# The tree's block definitions only: Debian's grc.conf also reads /usr/local, where an older install may lie.
export GR_CONF_GRC_GLOBAL_BLOCKS_PATH=/usr/share/gnuradio/grc/blocks
unset UHD_LOG_CONSOLE_LEVEL FEDLORA_GR_LOG_LEVEL
for g in device_tx server_rx; do
  /usr/bin/python3 /usr/bin/grcc -o "$work" "$src/flowgraphs/$g.grc" > "$work/grcc.log" 2>&1 \
    || { cat "$work/grcc.log"; exit 1; }
  start=$(date +%s%N)
  rc=0
  timeout 20 /usr/bin/python3 -m gnuradio.fedlora.run_flowgraph "$work/$g.py" --radio usrp --args type=b200 \
    > "$work/out" 2> "$work/err" < /dev/null || rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "$g: exit $rc after ${ms} ms; stderr:"
  cat "$work/err"
  [ "$rc" -eq 1 ] || { echo "FAIL: $g exit status $rc, expected 1 (124: timed out)"; exit 1; }
  lines=$(grep -c . "$work/err" || true)
  [ "$lines" -eq 1 ] || { echo "FAIL: $g wrote $lines non-empty stderr lines, expected 1"; exit 1; }
  grep -q "^$g: no USRP found for args 'type=b200'" "$work/err" \
    || { echo "FAIL: $g's stderr line does not name 'no USRP found' for the args"; exit 1; }
  if grep -q Traceback "$work/out" "$work/err"; then echo "FAIL: traceback"; exit 1; fi
done

# The launcher leaves other errors alone: a bad --ref is a ValueError with its traceback, exit status 1.
rc=0
timeout 20 /usr/bin/python3 -m gnuradio.fedlora.run_flowgraph "$work/device_tx.py" --args type=b200 --ref bogus \
  > /dev/null 2> "$work/err" < /dev/null || rc=$?
[ "$rc" -eq 1 ] && grep -q "ValueError: ref must be one of" "$work/err" \
  || { cat "$work/err"; echo "FAIL: a bad --ref should raise ValueError (exit $rc)"; exit 1; }
echo "usrp fail-fast: ok"
