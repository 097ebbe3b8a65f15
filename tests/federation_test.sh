#!/usr/bin/env bash
# fedlora server + fedlora client as separate processes on 127.0.0.1 (tiny configurations, real data):
#  1. a federated run ends with the adapter `fedlora sim` computes, bit for bit, while an intruder sends malformed,
#     truncated, wrong-version, oversized, unknown-client and other-run messages (one log line each, nothing else);
#  2. a client killed mid-round and a client sending a NaN update are left out; the round completes with the rest;
#  3. the server killed mid-run and restarted with --resume ends with the uninterrupted run's adapter;
#  4. CURVE: an allowed key takes part, an unknown key is refused with one log line; a non-loopback endpoint
#     without keys is refused.
# No sleeps: endpoints come through FIFOs, processes are waited for.
# Usage: federation_test.sh <path to fedlora>
set -uo pipefail
fedlora=$1
py=/usr/bin/python3
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -n 15 "$f"; done; exit 1; }
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

tiny=(--set pretrain.dir="$tmp/pre" --set pretrain.steps=20 --set data.train_examples=600
      --set data.test_examples=300 --set clients=3 --set rounds=3 --set train.local_steps=2 --set train.batch=16
      --set train.threads=1 --set eval.batch=300)

"$fedlora" sim "${tiny[@]}" -q --out "$tmp/ref" > "$tmp/ref.log" 2>&1 || fail "reference sim run failed"

# start_server NAME [args...]: runs a server in the background; sets $ep to its endpoint and $server_pid.
start_server() {
  local name=$1; shift
  rm -f "$tmp/$name.ep"; mkfifo "$tmp/$name.ep"
  "$fedlora" server "${tiny[@]}" --endpoint-file "$tmp/$name.ep" "$@" > "$tmp/$name.log" 2>&1 &
  server_pid=$!
  read -r ep < "$tmp/$name.ep" || fail "server $name gave no endpoint"
}
client_pids=()
start_clients() {  # start_clients LOGPREFIX [env assignments for client k as C<k>=...]
  client_pids=()
  for k in 0 1 2; do
    local envvar="C$k"
    env ${!envvar:-} "$fedlora" client --connect "$ep" --id "$k" --idle-timeout 120 > "$tmp/$1-c$k.log" 2>&1 &
    client_pids+=($!)
  done
}

# ---- 1. equivalence, with an intruder --------------------------------------------------------------------------
start_server fed --bind 'tcp://127.0.0.1:*' --out "$tmp/fed"
$py - "$ep" <<'PY' || fail "intruder script failed"
import struct, sys, zlib, zmq
def frame(mtype, run_id=0, client=0, body=b"", n=0, version=1):
    hdr = struct.pack("<4sHHQIIQIIQ", b"FLRW", version, mtype, run_id, 0, client, 1, n, 0, len(body))
    hdr += struct.pack("<I", zlib.crc32(hdr))
    return hdr + body + struct.pack("<I", zlib.crc32(body))
def u8(name, data):
    return struct.pack("<H", len(name)) + name.encode() + struct.pack("<BBQ", 5, 1, len(data))
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.ROUTING_ID, b"intruder")
s.setsockopt(zmq.LINGER, 5000)
s.connect(sys.argv[1])
s.send(b"this is not a frame")                                   # malformed
s.send(frame(1)[:30])                                            # truncated
s.send(frame(1, version=7))                                      # wrong version
big = b"\0" * (16 << 20)
s.send(frame(1, body=u8("blob", big) + big, n=1))                # oversized (16 MiB)
s.send(frame(2, client=99))                                      # unknown client id
s.send(frame(2, run_id=12345, client=2))                         # another run
s.close()
ctx.term()
PY
start_clients fed
wait "$server_pid"; rc=$?
[ $rc -eq 0 ] || fail "server exited $rc"
for p in "${client_pids[@]}"; do wait "$p" || fail "a client exited $?"; done
cmp -s "$tmp/ref/adapter.safetensors" "$tmp/fed/adapter.safetensors" || fail "federated adapter differs from fedlora sim's"
log="$tmp/fed.log"
[ "$(grep -c "dropped a malformed message from peer 'intruder'" "$log")" -eq 4 ] || fail "expected 4 malformed-message lines"
grep -q "intruder.*version" "$log" || fail "wrong version not named"
grep -q "intruder.*exceeds\|intruder.*limit" "$log" || fail "oversized message not named"
grep -q "client id 99 is not one of the run's 3 clients" "$log" || fail "unknown client not named"
grep -q "run id 0000000000003039 is not this run's" "$log" || fail "other run not named"
grep -q "\[error\]" "$log" && fail "the server logged an error"

# ---- 2. a client killed mid-round, a client sending NaN --------------------------------------------------------
start_server faults --bind 'tcp://127.0.0.1:*' --out "$tmp/faults" --set server.round_deadline_s=3 \
  --set server.heartbeat_s=0.2
C1="FEDLORA_FAULT_KILL_AT=2:1" C2="FEDLORA_FAULT_NAN_AT=2:2" start_clients faults
wait "$server_pid" || fail "server with faulty clients exited $?"
wait "${client_pids[0]}" || fail "client 0 exited $?"
wait "${client_pids[1]}"; rc=$?
[ $rc -eq 137 ] || fail "killed client exited $rc, expected 137"
wait "${client_pids[2]}" || fail "client 2 exited $?"
$py - "$tmp/faults/rounds.csv" <<'PY' || fail "rounds.csv of the fault run is wrong"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
got = [(int(r["clients"]), int(r["dropped"]), r["delivered"]) for r in rows]
assert got == [(3, 0, "1"), (1, 2, "1"), (2, 1, "1")], got
PY
grep -q "round 2: client 1 missed the 3 s deadline; left out" "$tmp/faults.log" || fail "dead client not logged"
grep -q "round 2: client 2 left out: its update is not finite" "$tmp/faults.log" || fail "NaN update not logged"
grep -q "round 3: client 1 " "$tmp/faults.log" || fail "round 3 does not mention the dead client"

# ---- 3. the server killed and restarted --------------------------------------------------------------------------
FEDLORA_FAULT_KILL_AT=2:server start_server restart1 --bind 'tcp://127.0.0.1:*' --out "$tmp/restart"
start_clients restart
wait "$server_pid"; rc=$?
[ $rc -eq 137 ] || fail "killed server exited $rc, expected 137"
[ "$(tail -n +2 "$tmp/restart/rounds.csv" | wc -l)" -eq 1 ] || fail "the killed server should have finished round 1"
start_server restart2 --bind "$ep" --out "$tmp/restart" --resume
wait "$server_pid" || fail "restarted server exited $?"
for p in "${client_pids[@]}"; do wait "$p" || fail "a client of the restarted run exited $?"; done
grep -q "resuming .* after round 1" "$tmp/restart2.log" || fail "restart did not resume"
cmp -s "$tmp/ref/adapter.safetensors" "$tmp/restart/adapter.safetensors" || fail "restarted run's adapter differs"

# ---- 4. CURVE: allowed and unknown keys; the loopback rule -------------------------------------------------------
mkdir -p "$tmp/keys" "$tmp/allow"
for n in server a b; do "$fedlora" keys --name "$n" --out "$tmp/keys" > /dev/null || fail "fedlora keys $n failed"; done
cp "$tmp/keys/a.pub" "$tmp/allow/"
start_server curve --bind 'tcp://127.0.0.1:*' --out "$tmp/curve" --set clients=2 --set server.join_timeout_s=3 \
  --curve-key "$tmp/keys/server.key" --allow "$tmp/allow"
"$fedlora" client --connect "$ep" --id 0 --curve-key "$tmp/keys/a.key" --server-key "$tmp/keys/server.pub" \
  > "$tmp/curve-a.log" 2>&1 & a_pid=$!
"$fedlora" client --connect "$ep" --id 1 --curve-key "$tmp/keys/b.key" --server-key "$tmp/keys/server.pub" \
  --idle-timeout 4 > "$tmp/curve-b.log" 2>&1 & b_pid=$!
wait "$server_pid" || fail "CURVE server exited $?"
wait "$a_pid" || fail "allowed client exited $?"
wait "$b_pid"; rc=$?
[ $rc -eq 1 ] || fail "refused client exited $rc, expected 1"
grep -q "no word from the server" "$tmp/curve-b.log" || fail "refused client does not say why"
bkey=$(grep -v '^#' "$tmp/keys/b.pub" | tr -d '\n')
[ "$(grep -cF "rejected client key $bkey" "$tmp/curve.log")" -eq 1 ] || fail "expected one line naming the refused key"
$py - "$tmp/curve/rounds.csv" <<'PY' || fail "CURVE run rounds are wrong"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 3 and all(int(r["clients"]) == 1 for r in rows), [r["clients"] for r in rows]
PY
err=$("$fedlora" server "${tiny[@]}" --bind 'tcp://192.0.2.1:5555' --out "$tmp/open" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "non-loopback endpoint without keys exited $rc, expected 1"
grep -q "192.0.2.1" <<<"$err" && grep -qi "curve" <<<"$err" || fail "loopback rule error unclear: $err"
echo "federation: all checks passed"
