#!/usr/bin/env bash
# The alignment procedure as flowgraphs, headless over ZeroMQ with the virtual radio (docs/hardware.md, step 3):
#   K x flowgraphs/calibration_burst_tx.grc (--radio zmq: each device's calibration bursts on a ZeroMQ PUSH sink)
#   -> a virtual radio: ZeroMQ PULL sources -> fedlora channel_model (per-device timing offsets, CFOs, random
#      phases, 20 dB per carrier, no fading) -> ZeroMQ PUSH sink
#   -> flowgraphs/calibration_alignment.grc (--radio zmq: ZeroMQ PULL source -> fedlora_alignment_estimator), which
#      writes the calibration file.
# Checks, against the impairments the channel injected (docs/hardware.md, tolerances at 20 dB): the link gain
# within 0.05 dB, the timing offset (relative to device 0, as written with --timing-reference 0) within 0.01
# samples, the phase at each device's reference sample within 0.02 rad, the CFO within 10 Hz; and that both
# flowgraphs fail fast with one line when --radio usrp finds no USRP.
# Usage: calibration_alignment_test.sh <source dir> <gr-fedlora grc dir> <build-tree PYTHONPATH>
set -euo pipefail
src=$1 grc_dir=$2 pypath=$3
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export GRC_BLOCKS_PATH=$grc_dir PYTHONPATH=$pypath GR_CONF_CONTROLPORT_ON=False
# The tree's block definitions, not those of an installed gr-fedlora (Debian's grc.conf adds /usr/local's, which
# would override them).
export GR_CONF_GRC_GLOBAL_BLOCKS_PATH=/usr/share/gnuradio/grc/blocks
py=/usr/bin/python3
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "== $f"; tail -n 20 "$f"; done; exit 1; }

for g in calibration_alignment calibration_burst_tx device_tx; do
  $py /usr/bin/grcc -o "$work" "$src/flowgraphs/$g.grc" > "$work/grcc.log" 2>&1 || { cat "$work/grcc.log"; exit 1; }
done

# Without a USRP: one line naming "no USRP found", exit status 1.
for g in calibration_alignment calibration_burst_tx; do
  rc=0
  timeout 20 $py -m gnuradio.fedlora.run_flowgraph "$work/$g.py" --radio usrp --args type=b200 \
    > /dev/null 2> "$work/err" < /dev/null || rc=$?
  [ "$rc" -eq 1 ] && [ "$(grep -c . "$work/err")" -eq 1 ] && grep -q "^$g: no USRP found" "$work/err" \
    || { cat "$work/err"; fail "$g with --radio usrp and no USRP: exit $rc"; }
done
echo "no USRP: both flowgraphs exit 1 with one line"

# Free loopback ports: K device ports and the server's.
K=3
read -r -a ports <<<"$($py - $((K + 1)) <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
server_port=${ports[$K]}
cat > "$work/impairments.py" <<PY
K = $K
TIMING = [0.0, 6.5, 12.25]
CFO = [1500.0, -900.0, 2700.0]
CHANNEL = dict(n_devices=K, sample_rate=15.36e6, snr_db=[20.0], profile="flat", fading="none", cfo_hz=CFO,
               timing_offset=TIMING, noise_variance=1e-3, seed=4242)
PY
bulk=$(cd "$work" && $py -c "from gnuradio import fedlora; import impairments as i; print(fedlora.channel_kernel(**i.CHANNEL).bulk_delay())")
# --level-db 0: the virtual radio's SNR is that of phy power 1.
schedule=(--n-devices $K --burst-time 0.002 --period 0.004 --n-bursts 2 --freq 2.45e9 --samp-rate 15.36e6
          --level-db 0)

# The server, the virtual radio, the devices (each binds or connects as its ZeroMQ role says, in any order).
FEDLORA_GR_LOG_LEVEL=info timeout 180 $py -m gnuradio.fedlora.run_flowgraph "$work/calibration_alignment.py" \
  --radio zmq --zmq-address "tcp://127.0.0.1:$server_port" "${schedule[@]}" --system-delay "$bulk" \
  --serials virt-0,virt-1,virt-2 --timing-reference 0 --ref external --tx-gain 60 --out-file "$work/cal.yaml" \
  > "$work/server.log" 2>&1 < /dev/null &
server=$!
pids+=("$server")
# The virtual radio runs until the test ends it (its ZeroMQ sources never end by themselves); timeout bounds it.
(cd "$work" && exec timeout 180 $py - "${ports[@]}" > "$work/vradio.log" 2>&1 <<'PY') &
import sys
from gnuradio import gr, zeromq
from gnuradio import fedlora
import impairments as imp
ports = sys.argv[1:]
tb = gr.top_block("virtual radio")
ch = fedlora.channel_model(**imp.CHANNEL)
for k in range(imp.K):
    tb.connect(zeromq.pull_source(gr.sizeof_gr_complex, 1, f"tcp://127.0.0.1:{ports[k]}", 100, True, -1), (ch, k))
tb.connect(ch, zeromq.push_sink(gr.sizeof_gr_complex, 1, f"tcp://127.0.0.1:{ports[imp.K]}", 100, True, -1))
tb.start()
print("virtual radio: running", flush=True)
tb.wait()  # never returns: ended by the test (or by timeout)
PY
pids+=("$!")
for k in $(seq 0 $((K - 1))); do
  timeout 180 $py -m gnuradio.fedlora.run_flowgraph "$work/calibration_burst_tx.py" --radio zmq \
    --zmq-address "tcp://127.0.0.1:${ports[$k]}" --device "$k" "${schedule[@]}" > "$work/device$k.log" 2>&1 \
    < /dev/null &
  pids+=("$!")
done
rc=0
wait "$server" || rc=$?
[ "$rc" -eq 0 ] || fail "calibration_alignment exited $rc"
[ -s "$work/cal.yaml" ] || fail "no calibration file written"
grep -q "wrote the alignment of $K devices" "$work/server.log" || fail "the estimator did not report writing the file"

# Estimates against the injected impairments.
(cd "$work" && $py - "$work/cal.yaml" "$work/server.log" "$bulk") <<'PY' || fail "estimates outside the tolerances"
import math, re, sys
from gnuradio import fedlora
import impairments as imp
path, log, bulk = sys.argv[1], open(sys.argv[2]).read(), float(sys.argv[3])
fs, f0 = 15.36e6, 2.45e9
ch = fedlora.channel_kernel(**imp.CHANNEL)
gain_true = 10 * math.log10(imp.CHANNEL["noise_variance"]) + imp.CHANNEL["snr_db"][0]
# The last burst's log lines (the file holds that burst).
lines = [l for l in log.splitlines() if re.search(r"burst 1 virt-\d: SNR", l)]
assert len(lines) == imp.K, lines
worst = dict(gain=0.0, timing=0.0, phase=0.0, cfo=0.0)
for k in range(imp.K):
    c = fedlora.calibration_correction(path, f"virt-{k}", 0, f0, fs)
    gain = float(re.search(r"gain ([-+0-9.]+) dB", lines[k]).group(1))
    e = dict(gain=gain - gain_true,
             timing=c["advance_samples"] - (imp.TIMING[k] - imp.TIMING[0]),
             phase=math.remainder(c["phase_rad"] - fedlora.kernel_link_phase(ch, k, c["reference_sample"]),
                                  2 * math.pi),
             cfo=c["cfo_hz"] - imp.CFO[k])
    print(f"virt-{k}: advance {c['advance_samples']:.4f} samples, phase {c['phase_rad']:+.4f} rad at sample "
          f"{c['reference_sample']}, CFO {c['cfo_hz']:+.2f} Hz; errors: gain {e['gain']:+.4f} dB, timing "
          f"{e['timing']:+.5f} samples, phase {e['phase']:+.5f} rad, CFO {e['cfo']:+.2f} Hz")
    for key in worst:
        worst[key] = max(worst[key], abs(e[key]))
print("largest errors: gain %.4f dB, timing %.5f samples, phase %.5f rad, CFO %.2f Hz" %
      (worst["gain"], worst["timing"], worst["phase"], worst["cfo"]))
tol = dict(gain=0.05, timing=0.01, phase=0.02, cfo=10.0)
bad = [k for k in tol if worst[k] > tol[k]]
assert not bad, bad
PY

# device_tx.grc with the file just written: its transmitter looks this radio up and sends its bursts early by the
# correction's lead (an unknown serial is an error that names it and what the file holds).
rc=0
timeout 60 $py -m gnuradio.fedlora.run_flowgraph "$work/device_tx.py" --radio zmq \
  --zmq-address "tcp://127.0.0.1:${ports[0]}" --cal-file "$work/cal.yaml" --serial B210-0042 \
  > /dev/null 2> "$work/err" < /dev/null || rc=$?
[ "$rc" -ne 0 ] && grep -q "no device with serial 'B210-0042' (the file holds: virt-0, virt-1, virt-2)" "$work/err" \
  || { cat "$work/err"; fail "device_tx with an unknown serial: exit $rc"; }
# Its log line is read as it comes, through a FIFO, up to the line naming the correction (or the end).
mkfifo "$work/device_tx.fifo"
FEDLORA_GR_LOG_LEVEL=info timeout 60 $py -m gnuradio.fedlora.run_flowgraph "$work/device_tx.py" --radio zmq \
  --zmq-address "tcp://127.0.0.1:${ports[0]}" --cal-file "$work/cal.yaml" --serial virt-2 --device 1 \
  > "$work/device_tx.fifo" 2>&1 < /dev/null &
dtx=$!
pids+=("$dtx")
: > "$work/device_tx.log"
while IFS= read -r line; do
  printf '%s\n' "$line" >> "$work/device_tx.log"
  case "$line" in *"bursts go out"*) break ;; esac
done < "$work/device_tx.fifo"
grep -q "serial 'virt-2' channel 0 at 2450 MHz: advance 12.2.* samples.*bursts go out 28 samples early" \
  "$work/device_tx.log" || fail "device_tx did not apply virt-2's calibration"
kill "$dtx" 2>/dev/null || true
echo "device_tx: the transmitter applies the file's correction (virt-2: advance 12.25 samples, 28 samples early)"
echo "calibration alignment flowgraphs: ok"
