#!/usr/bin/env bash
# `fedlora sim` end to end on tiny configurations (real Debian data, tiny pretraining): the run folder and its files,
# the modes, usage errors, refusal to overwrite, and a run killed with SIGKILL mid-round then resumed, which must end
# with an adapter bitwise equal to an uninterrupted run's.
# Usage: cli_sim_test.sh <path to fedlora>
set -uo pipefail
fedlora=$1
py=/usr/bin/python3
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

tiny=(--set pretrain.dir="$tmp/pre" --set pretrain.steps=20 --set data.train_examples=600
      --set data.test_examples=300 --set clients=6 --set rounds=3 --set train.local_steps=2 --set train.batch=16
      --set train.threads=1 --set eval.batch=300 -q)

# ---- usage errors: exit 2, naming the key or file --------------------------------------------------------------
err=$("$fedlora" sim --set nonsense=1 --print-config 2>&1); rc=$?
[ $rc -eq 2 ] || fail "--set nonsense=1 exited $rc, expected 2"
grep -q "unknown config key 'nonsense'" <<<"$err" || fail "unknown key not named: $err"
err=$("$fedlora" sim --set train.lr=abc --print-config 2>&1); rc=$?
[ $rc -eq 2 ] || fail "--set train.lr=abc exited $rc"
grep -q "train.lr" <<<"$err" || fail "bad value error does not name train.lr: $err"
err=$("$fedlora" sim --set clients_per_round=30 --print-config 2>&1); rc=$?
[ $rc -eq 2 ] || fail "clients_per_round > clients exited $rc"
grep -q "clients_per_round" <<<"$err" || fail "combination error unclear: $err"
err=$("$fedlora" sim --config "$tmp/missing.yaml" --print-config 2>&1); rc=$?
[ $rc -eq 2 ] || fail "missing config exited $rc"
grep -q "missing.yaml" <<<"$err" || fail "missing config file not named: $err"
printf 'train:\n  lr: 0.01\n  lrr: 2\n' > "$tmp/bad.yaml"
err=$("$fedlora" sim --config "$tmp/bad.yaml" --print-config 2>&1); rc=$?
[ $rc -eq 2 ] || fail "unknown YAML key exited $rc"
grep -q "bad.yaml" <<<"$err" && grep -q "train.lrr" <<<"$err" || fail "YAML error does not name file and key: $err"
printf 'train: [1, 2\n' > "$tmp/broken.yaml"
err=$("$fedlora" sim --config "$tmp/broken.yaml" --print-config 2>&1); rc=$?
[ $rc -eq 2 ] || fail "broken YAML exited $rc"
grep -q "line" <<<"$err" || fail "YAML syntax error gives no line: $err"

# ---- the resolved config reads back to itself; --set wins over --config ------------------------------------------
printf 'rounds: 7\nchannel:\n  snr_db: 12.5\nlora:\n  targets: [qkv, head]\n' > "$tmp/c.yaml"
"$fedlora" sim --config "$tmp/c.yaml" --set rounds=9 --print-config > "$tmp/resolved.yaml" || fail "--print-config failed"
"$fedlora" sim --config "$tmp/resolved.yaml" --print-config > "$tmp/resolved2.yaml" || fail "re-reading failed"
cmp -s "$tmp/resolved.yaml" "$tmp/resolved2.yaml" || fail "resolved config does not read back to itself"
$py - "$tmp/resolved.yaml" <<'PY' || fail "resolved config has wrong values"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
assert c["rounds"] == 9, c["rounds"]
assert c["channel"]["snr_db"] == 12.5
assert c["lora"]["targets"] == ["qkv", "head"], c["lora"]["targets"]
assert c["mode"] == "aircomp" and c["clients"] == 20
PY

# ---- every example configuration in configs/ loads and validates -----------------------------------------------
for f in "$(dirname "$0")"/../configs/*.yaml; do
  "$fedlora" sim --config "$f" --print-config > /dev/null 2> "$tmp/cfg.err" || fail "$f does not load: $(cat "$tmp/cfg.err")"
done

# ---- an AirComp run: the run folder --------------------------------------------------------------------------
run="$tmp/air"
"$fedlora" sim "${tiny[@]}" --out "$run" > "$tmp/air.out" 2> "$tmp/air.err" || fail "aircomp run exited $?: $(tail -5 "$tmp/air.err")"
for f in config.yaml rounds.csv summary.json adapter.safetensors checkpoints/latest.safetensors; do
  [ -s "$run/$f" ] || fail "run folder lacks $f"
done
grep -q "test accuracy: frozen base" "$tmp/air.out" || fail "no accuracy summary: $(cat "$tmp/air.out")"
$py - "$run" <<'PY' || fail "aircomp run folder is inconsistent"
import csv, json, math, sys
run = sys.argv[1]
rows = list(csv.DictReader(open(run + "/rounds.csv")))
need = ["round", "mode", "clients", "snr_db", "nmse_db", "sparsity", "subcarriers", "channel_uses", "latency_s",
        "train_loss", "test_accuracy"]
for k in need:
    assert k in rows[0], k
assert [int(r["round"]) for r in rows] == [1, 2, 3], [r["round"] for r in rows]
s = json.load(open(run + "/summary.json"))
assert s["rounds"] == 3 and s["mode"] == "aircomp" and s["task"] == "vision"
assert abs(s["final_test_accuracy"] - float(rows[-1]["test_accuracy"])) < 1e-6
assert s["total_channel_uses"] == sum(int(r["channel_uses"]) for r in rows)
assert int(rows[-1]["cum_channel_uses"]) == s["total_channel_uses"]
assert abs(s["mean_nmse_db"] - sum(float(r["nmse_db"]) for r in rows) / 3) < 1e-3
for r in rows:
    assert r["mode"] == "aircomp" and int(r["clients"]) == 6
    # Measured NMSE of the aggregate next to the policy's analytic value for the same round.
    assert abs(float(r["nmse_db"]) - float(r["nmse_analytic_db"])) < 1.5, (r["nmse_db"], r["nmse_analytic_db"])
    assert float(r["nmse_db"]) < -10, r["nmse_db"]
    # Channel uses: OFDM symbols for ceil(payload / 2) complex values on the data carriers, × occupied carriers.
    data_carriers = 200 - 10  # phy.occupied minus one pilot every 20 carriers
    symbols = math.ceil(math.ceil(int(r["payload"]) / 2) / data_carriers)
    assert int(r["channel_uses"]) == symbols * 200, (r["channel_uses"], symbols)
    assert 0 <= float(r["test_accuracy"]) <= 1
PY

# ---- refusing to overwrite; ideal and digital modes --------------------------------------------------------------
err=$("$fedlora" sim "${tiny[@]}" --out "$run" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "existing run folder exited $rc, expected 2"
grep -q -- "--resume" <<<"$err" || fail "existing folder error does not suggest --resume: $err"
"$fedlora" sim "${tiny[@]}" --mode ideal --out "$tmp/ideal" > /dev/null 2>&1 || fail "ideal run failed"
"$fedlora" sim "${tiny[@]}" --mode digital --out "$tmp/digital" > /dev/null 2>&1 || fail "digital run failed"
$py - "$tmp" <<'PY' || fail "ideal / digital runs are inconsistent"
import csv, sys
t = sys.argv[1]
ideal = list(csv.DictReader(open(t + "/ideal/rounds.csv")))
air = list(csv.DictReader(open(t + "/air/rounds.csv")))
dig = list(csv.DictReader(open(t + "/digital/rounds.csv")))
for r in ideal:
    assert r["nmse_db"] == "" and int(r["channel_uses"]) == 0
for a, d in zip(air, dig):
    assert d["payload"] == a["payload"]
    # 8-bit digital uploads of 6 clients need far more resource elements than one analog superposition.
    assert int(d["channel_uses"]) > 10 * int(a["channel_uses"]), (d["channel_uses"], a["channel_uses"])
    assert float(d["nmse_db"]) < -20  # 8-bit stochastic quantisation of the sum
PY

# ---- SIGKILL mid-round, then resume: bitwise equal to the uninterrupted run ------------------------------------
FEDLORA_FAULT_KILL_AT=2:3 "$fedlora" sim "${tiny[@]}" --out "$tmp/killed" > /dev/null 2>&1; rc=$?
[ $rc -eq 137 ] || fail "the killed run exited $rc, expected 137 (SIGKILL)"
[ "$(tail -n +2 "$tmp/killed/rounds.csv" | wc -l)" -eq 1 ] || fail "killed run should have 1 finished round"
err=$("$fedlora" sim "${tiny[@]}" --set rounds=4 --out "$tmp/killed" --resume 2>&1); rc=$?
[ $rc -eq 2 ] || fail "resume with another config exited $rc"
grep -q "rounds" <<<"$err" || fail "resume mismatch does not name the key: $err"
"$fedlora" sim "${tiny[@]}" --out "$tmp/killed" --resume > "$tmp/resume.out" 2>&1 || fail "resume failed: $(tail -5 "$tmp/resume.out")"
grep -q "resumed after round 1" "$tmp/resume.out" || fail "resume not reported: $(cat "$tmp/resume.out")"
cmp -s "$run/adapter.safetensors" "$tmp/killed/adapter.safetensors" || fail "resumed adapter differs from the uninterrupted run's"
cmp -s "$run/checkpoints/latest.safetensors" "$tmp/killed/checkpoints/latest.safetensors" || fail "final checkpoints differ"
$py - "$run/rounds.csv" "$tmp/killed/rounds.csv" <<'PY' || fail "resumed rounds.csv differs"
import csv, sys
a = list(csv.DictReader(open(sys.argv[1])))
b = list(csv.DictReader(open(sys.argv[2])))
assert len(a) == len(b) == 3
for x, y in zip(a, b):
    for k in x:
        if k != "wall_s":
            assert x[k] == y[k], (k, x[k], y[k])
PY

# ---- TSFA: the offline rank is recorded and used; the queue follows its recurrence on the realised latencies ------
"$fedlora" sim "${tiny[@]}" --set controller.name=tsfa --set controller.rank_candidates=2,4,8 \
  --set controller.latency_budget_s=0.03 --set controller.v=1e-4 --set soft.support=seeded \
  --set phy.sample_rate=1e6 --set device.gflops=200 --out "$tmp/tsfa" > /dev/null 2> "$tmp/tsfa.err" \
  || fail "tsfa run failed: $(tail -5 "$tmp/tsfa.err")"
$py - "$tmp/tsfa" <<'PY' || fail "tsfa run folder is inconsistent"
import csv, json, struct, sys
run = sys.argv[1]
s = json.load(open(run + "/summary.json"))
o = s["offline_rank"]
assert [c["rank"] for c in o["candidates"]] == [2, 4, 8]
best = min(o["candidates"], key=lambda c: (c["proxy"], c["rank"]))
assert o["chosen_rank"] == best["rank"] == s["lora_rank"], (o, s["lora_rank"])
raw = open(run + "/adapter.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
meta = json.loads(raw[8:8 + n])["__metadata__"]
assert int(meta["lora.rank"]) == s["lora_rank"], meta["lora.rank"]
z = 0.0
for r in csv.DictReader(open(run + "/rounds.csv")):
    z = max(z + float(r["latency_s"]) - 0.03, 0.0)
    assert abs(z - float(r["queue"])) < 1e-6 * max(1.0, z), (r["round"], z, r["queue"])
    rank = s["lora_rank"]
    assert abs(float(r["sparsity"]) * rank - round(float(r["sparsity"]) * rank)) < 1e-9, r["sparsity"]
PY

# ---- TSFA resumes bit for bit too: its queue and the CSI it remembers are in the checkpoint ----------------------
tsfa=(--set controller.name=tsfa --set controller.latency_budget_s=0.03 --set controller.v=1e-4
      --set soft.support=seeded --set phy.sample_rate=1e6 --set device.gflops=200 --set channel.shadowing_db=4)
"$fedlora" sim "${tiny[@]}" "${tsfa[@]}" --out "$tmp/tsfa-full" > /dev/null 2>&1 || fail "tsfa reference run failed"
FEDLORA_FAULT_KILL_AT=3:2 "$fedlora" sim "${tiny[@]}" "${tsfa[@]}" --out "$tmp/tsfa-killed" > /dev/null 2>&1; rc=$?
[ $rc -eq 137 ] || fail "the killed tsfa run exited $rc, expected 137"
"$fedlora" sim "${tiny[@]}" "${tsfa[@]}" --out "$tmp/tsfa-killed" --resume > /dev/null 2>&1 || fail "tsfa resume failed"
cmp -s "$tmp/tsfa-full/adapter.safetensors" "$tmp/tsfa-killed/adapter.safetensors" || fail "resumed tsfa adapter differs"
$py - "$tmp/tsfa-full/rounds.csv" "$tmp/tsfa-killed/rounds.csv" <<'PY' || fail "resumed tsfa rounds.csv differs"
import csv, sys
a = list(csv.DictReader(open(sys.argv[1])))
b = list(csv.DictReader(open(sys.argv[2])))
assert len(a) == len(b) == 3
for x, y in zip(a, b):
    for k in ("sparsity", "subcarriers", "queue", "nmse_db", "test_accuracy"):
        assert x[k] == y[k], (x["round"], k, x[k], y[k])
PY
$py - "$tmp/tsfa-killed/checkpoints/latest.safetensors" <<'PY' || fail "the checkpoint lacks the controller's state"
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
b, e = h["controller"]["data_offsets"]
state = json.loads(raw[8 + n + b:8 + n + e].decode())
assert state["controller"].startswith("tsfa") or "tsfa" in state["controller"], state["controller"][:40]
assert state["noise_var"] > 0
assert sorted(int(c) for c in state["csi"]) == list(range(6)), list(state["csi"])
assert all(len(g) > 0 and all(v >= 0 for v in g) for g in state["csi"].values())
PY

# ---- the text task through the same command --------------------------------------------------------------------
"$fedlora" sim --task text --set pretrain.dir="$tmp/pre" --set pretrain.steps=20 --set data.train_examples=800 \
  --set data.test_examples=200 --set clients=4 --set data.partition=category --set rounds=2 \
  --set train.local_steps=2 --set train.batch=16 --set train.threads=1 -q --out "$tmp/text" > "$tmp/text.out" 2>&1 \
  || fail "text run failed: $(tail -5 "$tmp/text.out")"
grep -q "test perplexity: frozen base" "$tmp/text.out" || fail "no perplexity summary: $(cat "$tmp/text.out")"
$py - "$tmp/text" <<'PY' || fail "text run folder is inconsistent"
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/rounds.csv")))
assert len(rows) == 2
for r in rows:
    assert r["test_accuracy"] == "" and 1.0 < float(r["test_perplexity"]) < 256.0
s = json.load(open(sys.argv[1] + "/summary.json"))
assert s["task"] == "text" and s["final_test_accuracy"] is None and s["final_test_perplexity"] > 1
PY
echo "cli_sim: all checks passed"
