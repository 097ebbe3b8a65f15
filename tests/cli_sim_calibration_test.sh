#!/usr/bin/env bash
# `fedlora sim` with calibrated virtual radios (config keys radio.*; tiny configurations, real data):
#  1. `fedlora calibrate` measures three virtual radios with known timing offsets and CFOs and writes the file;
#  2. the same run three times in mode aircomp: unimpaired radios; radios with those timing offsets and CFOs
#     (radio.timing_offsets, radio.cfo_offsets_hz); the same radios with radio.calibration. The calibrated run's
#     mean NMSE is within 1 dB of the unimpaired run's, the uncalibrated one's at least 3 dB worse;
#  3. with a gr-fedlora build tree (second argument), the calibrated run with --transport flowgraph (calibrated
#     aircomp_transmitter blocks in the radio process) ends with the in-process run's adapter, bit for bit;
#  4. the keys are in --help-config, and bad values are refused naming the key (exit 2).
# Usage: cli_sim_calibration_test.sh <path to fedlora> [build-tree PYTHONPATH of gr-fedlora]
set -uo pipefail
fedlora=$1
pypath=${2:-}
py=/usr/bin/python3
tmp=$(mktemp -d)
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -n 15 "$f"; done; exit 1; }
trap 'rm -rf "$tmp"' EXIT

tiny=(--set pretrain.dir="$tmp/pre" --set pretrain.steps=20 --set data.train_examples=600
      --set data.test_examples=300 --set clients=3 --set rounds=2 --set train.local_steps=2 --set train.batch=16
      --set train.threads=1 --set eval.batch=300 -q)
timing=5.3,0,11.7
cfo=900,-1200,300
impaired=(--set radio.timing_offsets=$timing --set radio.cfo_offsets_hz=$cfo)

# ---- 1. the calibration of the virtual radios ---------------------------------------------------------------
"$fedlora" calibrate --devices 3 --gain-error-db 0,0,0 --timing-offset $timing --cfo-hz $cfo --no-verify \
  --seed 3 --out "$tmp/cal.yaml" > "$tmp/calibrate.log" 2>&1 || fail "fedlora calibrate failed"

# ---- 2. unimpaired, impaired, impaired and calibrated ---------------------------------------------------------
"$fedlora" sim "${tiny[@]}" --out "$tmp/ref" > "$tmp/ref.log" 2>&1 || fail "unimpaired run failed"
"$fedlora" sim "${tiny[@]}" "${impaired[@]}" --out "$tmp/imp" > "$tmp/imp.log" 2>&1 || fail "impaired run failed"
"$fedlora" sim "${tiny[@]}" "${impaired[@]}" --set radio.calibration="$tmp/cal.yaml" --out "$tmp/cal" \
  > "$tmp/cal.log" 2>&1 || fail "calibrated run failed"
$py - "$tmp" <<'PY' || fail "NMSE with and without calibration"
import csv, json, sys, yaml
tmp = sys.argv[1]
mean = {}
for run in ("ref", "imp", "cal"):
    rows = list(csv.DictReader(open(f"{tmp}/{run}/rounds.csv")))
    assert len(rows) == 2 and all(r["nmse_db"] != "" for r in rows), (run, rows)
    mean[run] = json.load(open(f"{tmp}/{run}/summary.json"))["mean_nmse_db"]
    print(f"{run}: NMSE per round {[r['nmse_db'] for r in rows]} dB, mean {mean[run]:.2f} dB")
assert abs(mean["cal"] - mean["ref"]) < 1.0, mean
assert mean["imp"] - mean["ref"] > 3.0, mean
cfg = yaml.safe_load(open(f"{tmp}/cal/config.yaml"))
assert cfg["radio"]["calibration"].endswith("cal.yaml"), cfg["radio"]
assert [float(x) for x in cfg["radio"]["timing_offsets"]] == [5.3, 0.0, 11.7], cfg["radio"]
PY

# ---- 3. the flowgraph transport: calibrated transmitter blocks, the same adapter ------------------------------
if [ -n "$pypath" ]; then
  FEDLORA_GR_PYTHONPATH=$pypath GR_CONF_CONTROLPORT_ON=False "$fedlora" sim "${tiny[@]}" "${impaired[@]}" \
    --set radio.calibration="$tmp/cal.yaml" --transport flowgraph --out "$tmp/calfg" > "$tmp/calfg.log" 2>&1 \
    || fail "calibrated run with --transport flowgraph failed"
  cmp -s "$tmp/cal/adapter.safetensors" "$tmp/calfg/adapter.safetensors" \
    || fail "the flowgraph transport's calibrated adapter differs from the in-process run's"
  cmp -s <(cut -d, -f1-5 "$tmp/cal/rounds.csv") <(cut -d, -f1-5 "$tmp/calfg/rounds.csv") \
    || fail "rounds.csv of the calibrated flowgraph run differs"
  echo "flowgraph transport with calibration: same adapter and NMSE as in-process"
fi

# ---- 4. documentation and refusals ----------------------------------------------------------------------------
help=$("$fedlora" sim --help-config)
for k in radio.calibration radio.serials radio.frequency_hz radio.timing_offsets radio.cfo_offsets_hz; do
  grep -q "^  $k (default" <<<"$help" || fail "--help-config lacks $k"
done
refused() {  # refused KEY WORDS args...
  local key=$1 words=$2; shift 2
  err=$("$fedlora" sim "${tiny[@]}" --out "$tmp/refused" --force "$@" 2>&1); local r=$?
  [ $r -eq 2 ] || fail "$* exited $r, expected 2: $err"
  grep -q "config key '$key'" <<<"$err" || fail "refusal of $* does not name $key: $err"
  grep -q -- "$words" <<<"$err" || fail "refusal of $* does not say '$words': $err"
}
refused radio.calibration "mode 'digital'" --mode digital --set radio.calibration="$tmp/cal.yaml"
refused radio.calibration "cannot read" --set radio.calibration="$tmp/none.yaml"
refused radio.calibration "915 MHz" --set radio.calibration="$tmp/cal.yaml" --set radio.frequency_hz=915e6
refused radio.serials "B210-9" --set radio.calibration="$tmp/cal.yaml" --set radio.serials=virtual-0,virtual-1,B210-9
refused radio.serials "radio.calibration is empty" --set radio.serials=a,b,c
refused radio.timing_offsets "2 values for 3 clients" --set radio.timing_offsets=1,2
refused radio.cfo_offsets_hz "aircomp-analytic" --mode aircomp-analytic --set radio.cfo_offsets_hz=1,2,3
echo "sim calibration: ok"
