#!/usr/bin/env bash
# The virtual radio, one process per radio on 127.0.0.1: two device_tx flowgraphs (--radio zmq), the channel
# emulator (flowgraphs/channel_emulator.grc) and server_rx (--radio zmq), each a separate process launched through
# gnuradio.fedlora.run_flowgraph, and the trainer's side (python3 -m gnuradio.fedlora.virtual_radio) publishing two
# rounds of updates and round dicts and collecting the aggregates. Checks:
#  - every flowgraph prints its readiness line naming the addresses it was given, and exits with status 0 by itself
#    after the rounds (--n-rounds), none killed, no traceback, no late burst;
#  - each round's aggregate equals kernel_aircomp_round_waveform's, bit for bit, for the same updates on one
#    channel_kernel with the emulator's seed and parameters (round 0 at the devices' start time, round 1 one guard
#    symbol after round 0's frame), and its NMSE against the true weighted sum is the reference's;
#  - the emulator refuses a device address list that does not have K entries, naming both.
# Ports: seven ports in a block of 30 below the ephemeral range, derived from the PID; if any process cannot bind
# ("Address already in use") everything is stopped and the run is repeated on other ports (up to 5 times).
# Synchronisation: readiness lines read from FIFOs, the trainer waits for the ZeroMQ subscriptions; no sleeps.
# Usage: virtual_radio_test.sh <source dir> <gr-fedlora grc dir> <build-tree PYTHONPATH>
set -euo pipefail
src=$1 grc_dir=$2 pypath=$3
work=$(mktemp -d)
pids=()             # every process started here (flowgraphs under timeout, their output drains)
declare -A flowgraph  # name -> pid of its timeout process
stop_all() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  # Every process runs under `timeout -k`, so these waits end.
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
export GRC_BLOCKS_PATH=$grc_dir PYTHONPATH=$pypath GR_CONF_CONTROLPORT_ON=False
# The tree's block definitions only: Debian's grc.conf also reads /usr/local, where an older install may lie.
export GR_CONF_GRC_GLOBAL_BLOCKS_PATH=/usr/share/gnuradio/grc/blocks
unset FEDLORA_GR_LOG_LEVEL
py=/usr/bin/python3
limit=120  # seconds any process may run; a flowgraph still running then did not stop by itself

for g in device_tx server_rx channel_emulator; do
  $py /usr/bin/grcc -o "$work" "$src/flowgraphs/$g.grc" > "$work/grcc.log" 2>&1 || { cat "$work/grcc.log"; exit 1; }
done

K=2 ROUNDS=2 DIM=3001 UPDATE_SEED=5 SEED=7 SNR=20 CFO=3000 NOISE=0.01 LEAD=300
start_time=$($py -c "print(repr($LEAD / 15.36e6))")  # the first frame at sample $LEAD of the common timeline

fail() { echo "FAIL: $*"; exit 1; }

# launch NAME EXPECTED-LINE-PREFIX COMMAND...: starts COMMAND (under timeout) with stdout on a FIFO, reads its first
# line, then drains the rest to $work/NAME.out. Returns 0 when the line starts as expected, 2 when the process died
# unable to bind its address, 1 otherwise.
launch() {
  local name=$1 want=$2 fd line=""
  shift 2
  mkfifo "$work/$name.fifo"
  timeout -k 5 "$limit" "$@" > "$work/$name.fifo" 2> "$work/$name.err" < /dev/null &
  pids+=($!)
  flowgraph[$name]=$!
  exec {fd}< "$work/$name.fifo"
  read -r -t 60 -u "$fd" line || true
  cat <&"$fd" > "$work/$name.out" &
  pids+=($!)
  exec {fd}<&-
  rm -f "$work/$name.fifo"
  echo "$name: $line"
  [[ $line == "$want"* ]] && return 0
  grep -q "Address already in use" "$work/$name.err" && return 2
  echo "$name did not start (expected a line starting '$want'); stderr:"
  cat "$work/$name.err"
  return 1
}

run_flowgraph=("$py" -m gnuradio.fedlora.run_flowgraph)

# One run of the topology on ports base+1 ... base+20. Returns as launch does.
topology() {
  local base=$1 rc=0
  updates=tcp://127.0.0.1:$((base + 1)) rounds=tcp://127.0.0.1:$((base + 2)) plans=tcp://127.0.0.1:$((base + 3))
  results=tcp://127.0.0.1:$((base + 4)) dev0=tcp://127.0.0.1:$((base + 10)) dev1=tcp://127.0.0.1:$((base + 11))
  air=tcp://127.0.0.1:$((base + 20))
  launch server_rx "server_rx: running, plans on $plans, results on $results" \
    "${run_flowgraph[@]}" "$work/server_rx.py" --radio zmq -K $K --zmq-address "$air" --round-address "$rounds" \
    --plan-address "$plans" --result-address "$results" --n-rounds $ROUNDS || return
  launch device0 "device_tx: device 0 of 2 running, samples on $dev0" \
    "${run_flowgraph[@]}" "$work/device_tx.py" --radio zmq -K $K --device 0 --start-time "$start_time" \
    --zmq-address "$dev0" --update-address "$updates" --plan-address "$plans" --n-rounds $ROUNDS || return
  launch device1 "device_tx: device 1 of 2 running, samples on $dev1" \
    "${run_flowgraph[@]}" "$work/device_tx.py" --radio zmq -K $K --device 1 --start-time "$start_time" \
    --zmq-address "$dev1" --update-address "$updates" --plan-address "$plans" --n-rounds $ROUNDS || return
  launch emulator "channel_emulator: running, 2 device(s) from $dev0, $dev1, samples to the server on $air" \
    "${run_flowgraph[@]}" "$work/channel_emulator.py" -K $K --device-addresses "$dev0,$dev1" --zmq-address "$air" \
    --snr-db $SNR --cfo-hz $CFO --noise-variance $NOISE --profile EPA --fading rayleigh --seed $SEED \
    --n-rounds $ROUNDS || return
  timeout -k 5 "$limit" $py -m gnuradio.fedlora.virtual_radio -K $K --rounds $ROUNDS --dim $DIM \
    --update-seed $UPDATE_SEED --update-address "$updates" --round-address "$rounds" --result-address "$results" \
    --out "$work/aggregates.f32" --timeout 90 > "$work/trainer.out" 2> "$work/trainer.err" || rc=$?
  cat "$work/trainer.out"
  if [ $rc -ne 0 ]; then
    grep -q "Address already in use" "$work/trainer.err" && return 2
    cat "$work/trainer.err"
    echo "the trainer exited with status $rc"
    return 1
  fi
}

t0=$(date +%s%N)
ok=0
for attempt in 1 2 3 4 5; do
  base=$((20000 + (($$ * 31 + attempt * 997) % 400) * 30))
  echo "attempt $attempt: ports $((base + 1)) ... $((base + 20)) on 127.0.0.1"
  rc=0
  topology $base || rc=$?
  [ $rc -eq 0 ] && { ok=1; break; }
  [ $rc -eq 2 ] || fail "the topology did not run (see above)"
  echo "a port was in use; stopping this attempt's processes and retrying elsewhere"
  stop_all
  flowgraph=()
  rm -f "$work"/*.err "$work"/*.out
done
[ $ok -eq 1 ] || fail "no free ports after 5 attempts"

# The flowgraphs stop by themselves after the rounds: wait for each (at most $limit s in all, then timeout kills).
for n in server_rx device0 device1 emulator; do
  rc=0
  wait "${flowgraph[$n]}" || rc=$?
  [ $rc -eq 0 ] || fail "$n exited with status $rc (124 or 137: still running after ${limit} s, not stopped by itself)"
done
for p in "${pids[@]}"; do wait "$p" || true; done  # the drains end with their flowgraph's output
pids=()
ms=$((($(date +%s%N) - t0) / 1000000))
echo "all four flowgraphs exited by themselves with status 0; topology run ${ms} ms"
for n in server_rx device0 device1 emulator; do
  if grep -q -i -E "traceback|late burst|:error:" "$work/$n.err"; then cat "$work/$n.err"; fail "$n logged an error"; fi
done
grep -c "MESSAGE DEBUG PRINT" "$work/server_rx.out" | grep -qx $ROUNDS \
  || fail "server_rx did not print $ROUNDS quality dicts"

# The independent reference: the same rounds in one process through fedlora_phy's aircomp_round_waveform, on one
# channel_kernel built with the emulator's parameters (it keeps its state from round to round, as the emulator's
# channel does), with the devices' frame timing: round 0 after LEAD samples, round 1 right after round 0's frame.
$py - "$work/aggregates.f32" $K $ROUNDS $DIM $UPDATE_SEED $SEED $SNR $CFO $NOISE $LEAD <<'PY'
import sys
import numpy as np
from gnuradio import fedlora
from gnuradio.fedlora import aircomp
fedlora.set_fft_planning("estimate")  # as device_tx and server_rx do
path = sys.argv[1]
K, rounds, dim, update_seed, seed = (int(v) for v in sys.argv[2:7])
snr, cfo, noise = (float(v) for v in sys.argv[7:10])
lead = int(sys.argv[10])
fs = 15.36e6
frame = dict(fft_size=256, cp_len=32, n_occupied=200, pilot_spacing=20, sample_rate=fs, gap=2048, pilot_repeats=2,
             reference_interval=8)  # the variables of device_tx.grc and server_rx.grc
assert frame["gap"] >= fedlora.receiver_min_gap(256, 32, 200, 20, fs, 0)
got = np.fromfile(path, dtype=np.float32)
assert got.size == rounds * dim, (got.size, rounds, dim)
got = got.reshape(rounds, dim)
channel = fedlora.channel_kernel(n_devices=K, n_tx=1, n_rx=1, sample_rate=fs, snr_db=[snr], profile="EPA",
                                 fading="rayleigh", cfo_hz=[cfo], noise_variance=noise, seed=seed)
for r in range(rounds):
    updates = aircomp.make_updates(K, dim, update_seed + r)
    _, _, scale = aircomp.round_messages(updates)
    want, report = fedlora.kernel_aircomp_round_waveform(updates, [1.0 / K] * K, scale, channel,
                                                         lead=lead if r == 0 else 256 + 32, policy="truncated",
                                                         estimator="sparse", **frame)
    diff = float(np.max(np.abs(got[r] - want)))
    truth = sum(np.asarray(u, dtype=np.float64) for u in updates) / K
    nmse = float(np.sum((got[r] - truth) ** 2) / np.sum(truth ** 2))
    print(f"round {r}: {dim} values, max |virtual radio - aircomp_round_waveform| = {diff:.3g}; NMSE against the "
          f"true weighted sum {10 * np.log10(nmse):.2f} dB (reference {10 * np.log10(report['nmse_measured']):.2f} dB)")
    assert np.array_equal(got[r], want), f"round {r}: the aggregates differ by up to {diff}"
    assert abs(nmse - report["nmse_measured"]) <= 1e-5 * report["nmse_measured"], (nmse, report["nmse_measured"])
PY

# A device address list of the wrong length is refused, naming the count and K.
rc=0
timeout -k 5 60 $py -m gnuradio.fedlora.run_flowgraph "$work/channel_emulator.py" -K 3 \
  --device-addresses tcp://127.0.0.1:1,tcp://127.0.0.1:2 --zmq-address "tcp://127.0.0.1:*" \
  > /dev/null 2> "$work/bad.err" < /dev/null || rc=$?
[ $rc -eq 1 ] && grep -q "2 device address(es) .* for n_devices = 3" "$work/bad.err" \
  || { cat "$work/bad.err"; fail "a short --device-addresses list was not refused by name (exit $rc)"; }
echo "virtual radio: ok"
