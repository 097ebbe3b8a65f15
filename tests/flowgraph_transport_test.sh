#!/usr/bin/env bash
# `fedlora sim --transport flowgraph` (tiny configurations, real data): the radio as the gr-fedlora loopback
# flowgraph in a radio process (gnuradio.fedlora.radio_server from the build tree) and the clients as
# `fedlora client` processes.
#  1. the run ends with an adapter bitwise equal to `fedlora sim` in mode aircomp with the same configuration, and
#     rounds.csv agrees column by column (except wall time, the covariance only in-process training sees, and the
#     analytic NMSE, which the flowgraph receiver predicts from its estimated CSI);
#  2. configurations the transport cannot run are refused (exit 2) naming the key;
#  3. a missing gr-fedlora, a radio that crashes on start and a radio that dies mid-round each end the run with one
#     clear error line, and leave no process behind;
#  4. killed with SIGKILL mid-run, sim leaves no process behind either (the radio sees its stdin close, the clients
#     get SIGTERM from PR_SET_PDEATHSIG); resumed, it ends with the uninterrupted run's adapter.
# Every run is started with setsid, so its processes are those of one session. No sleeps: processes are waited
# for (wait, pidwait).
# Usage: flowgraph_transport_test.sh <path to fedlora> <build-tree PYTHONPATH of gr-fedlora>
set -uo pipefail
fedlora=$1
export FEDLORA_GR_PYTHONPATH=$2 GR_CONF_CONTROLPORT_ON=False
py=/usr/bin/python3
tmp=$(mktemp -d)
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -n 15 "$f"; done; exit 1; }
cleanup() { kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

tiny=(--set pretrain.dir="$tmp/pre" --set pretrain.steps=20 --set data.train_examples=600
      --set data.test_examples=300 --set clients=3 --set rounds=2 --set train.local_steps=2 --set train.batch=16
      --set train.threads=1 --set eval.batch=300 -q)

# The live processes of session $1 (zombies have exited: they only wait for an init that reaps them).
alive_in_session() { ps -o pid=,stat=,args= -s "$1" | awk '$2 !~ /^Z/'; }

# run_session NAME [args...]: fedlora sim in a session of its own; sets $rc, then checks that nothing of the
# session is left.
run_session() {
  local name=$1; shift
  setsid "$fedlora" sim "${tiny[@]}" "$@" > "$tmp/$name.log" 2>&1 &
  local sid=$!
  wait "$sid"; rc=$?
  left=$(alive_in_session "$sid")
  [ -z "$left" ] || fail "$name: processes of the run are left after it ended: $left"
}

# ---- 1. equal to the in-process run -------------------------------------------------------------------------------
"$fedlora" sim "${tiny[@]}" --out "$tmp/ref" > "$tmp/ref.log" 2>&1 || fail "reference sim run failed"
run_session fg --transport flowgraph --out "$tmp/fg"
[ $rc -eq 0 ] || fail "sim --transport flowgraph exited $rc"
cmp -s "$tmp/ref/adapter.safetensors" "$tmp/fg/adapter.safetensors" \
  || fail "the flowgraph transport's adapter differs from fedlora sim's"
grep -q "radio process .* serving on tcp://127.0.0.1:" "$tmp/fg.log" || fail "no radio process line"
grep -q "started 3 client processes" "$tmp/fg.log" || fail "no client processes line"
grep -q "\[error\]\|\[warning\]" "$tmp/fg.log" && fail "the flowgraph run logged a warning or an error"
$py - "$tmp/ref" "$tmp/fg" <<'PY' || fail "rounds.csv of the flowgraph run differs"
import csv, sys, yaml
ref = list(csv.DictReader(open(sys.argv[1] + "/rounds.csv")))
fg = list(csv.DictReader(open(sys.argv[2] + "/rounds.csv")))
assert len(ref) == len(fg) == 2, (len(ref), len(fg))
for a, b in zip(ref, fg):
    for k in a:
        if k in ("wall_s", "covariance", "nmse_analytic_db"):
            continue
        assert a[k] == b[k], (a["round"], k, a[k], b[k])
    assert abs(float(a["nmse_analytic_db"]) - float(b["nmse_analytic_db"])) < 1.0, (a, b)
    assert b["covariance"] == "", b["covariance"]
assert yaml.safe_load(open(sys.argv[2] + "/config.yaml"))["transport"] == "flowgraph"
PY

# ---- 2. refused configurations --------------------------------------------------------------------------------
check_refused() {  # check_refused KEY args...
  local key=$1; shift
  err=$("$fedlora" sim --transport flowgraph "$@" --print-config 2>&1); local r=$?
  [ $r -eq 2 ] || fail "--transport flowgraph $* exited $r, expected 2"
  grep -q "config key '$key'" <<<"$err" || fail "refusal of $* does not name $key: $err"
}
check_refused transport --mode digital
check_refused transport --mode aircomp-analytic
check_refused phy.perfect_csi --set phy.perfect_csi=true
check_refused aggregation --set aggregation=fedsa
err=$("$fedlora" sim --transport pigeon --print-config 2>&1) && fail "--transport pigeon accepted"
grep -q "pigeon" <<<"$err" || fail "bad --transport value not named: $err"

# ---- 3. a missing or broken radio: one error line, nothing left behind -----------------------------------------
one_error_line() {  # one_error_line NAME PATTERN...
  local name=$1; shift
  [ $rc -eq 1 ] || fail "$name: exited $rc, expected 1"
  [ "$(grep -c "\[error\]" "$tmp/$name.log")" -eq 1 ] || fail "$name: expected one error line"
  grep -q "Traceback" "$tmp/$name.log" && fail "$name: a Python traceback reached the log"
  for p in "$@"; do
    grep "\[error\]" "$tmp/$name.log" | grep -q -- "$p" || fail "$name: the error line does not say '$p'"
  done
}
# gr-fedlora missing: a 'gnuradio' package without fedlora ahead on the path.
mkdir -p "$tmp/nogr/gnuradio"
touch "$tmp/nogr/gnuradio/__init__.py"
FEDLORA_GR_PYTHONPATH=$tmp/nogr run_session missing --transport flowgraph --out "$tmp/missing"
one_error_line missing "radio process" "gnuradio.fedlora" "FEDLORA_GR_PYTHONPATH"
[ -e "$tmp/missing/rounds.csv" ] && fail "missing: the run started its rounds without a radio"
# A radio that fails on start, and one that dies in the first round, as fake packages ahead on the path.
mkdir -p "$tmp/crash/gnuradio/fedlora" "$tmp/dies/gnuradio/fedlora"
touch "$tmp/crash/gnuradio/__init__.py" "$tmp/crash/gnuradio/fedlora/__init__.py" \
      "$tmp/dies/gnuradio/__init__.py" "$tmp/dies/gnuradio/fedlora/__init__.py"
echo 'raise RuntimeError("the radio broke on start")' > "$tmp/crash/gnuradio/fedlora/radio_server.py"
cat > "$tmp/dies/gnuradio/fedlora/radio_server.py" <<'PY'
import os, sys, zmq
sock = zmq.Context().socket(zmq.REP)
sock.bind("tcp://127.0.0.1:*")
print("fedlora-radio: listening on " + sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
sock.recv()
print("fedlora-radio: giving up in the middle of a round", file=sys.stderr, flush=True)
os._exit(7)
PY
FEDLORA_GR_PYTHONPATH=$tmp/crash run_session crash --transport flowgraph --out "$tmp/crash-run"
one_error_line crash "exited with status 1 before it served" "RuntimeError: the radio broke on start"
FEDLORA_GR_PYTHONPATH=$tmp/dies run_session dies --transport flowgraph --out "$tmp/dies-run"
one_error_line dies "round 1" "exited with status 7" "giving up in the middle of a round"

# ---- 4. sim killed mid-run: the radio and the clients go too ---------------------------------------------------
FEDLORA_FAULT_KILL_AT=2:server setsid "$fedlora" sim "${tiny[@]}" --transport flowgraph --out "$tmp/killed" \
  > "$tmp/killed.log" 2>&1 &
sid=$!
wait "$sid"; rc=$?
[ $rc -eq 137 ] || fail "the killed sim exited $rc, expected 137"
timeout 60 pidwait -s "$sid"
left=$(alive_in_session "$sid")
[ -z "$left" ] || fail "processes outlived the killed sim: $left"
# ... and resumed, it ends where the uninterrupted run ends.
run_session resumed --transport flowgraph --out "$tmp/killed" --resume
[ $rc -eq 0 ] || fail "the resumed flowgraph run exited $rc"
grep -q "resuming .* after round 1" "$tmp/resumed.log" || fail "the flowgraph run did not resume after round 1"
cmp -s "$tmp/ref/adapter.safetensors" "$tmp/killed/adapter.safetensors" || fail "the resumed run's adapter differs"
echo "flowgraph transport: all checks passed"
