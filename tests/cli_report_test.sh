#!/usr/bin/env bash
# `fedlora report`: fixture run folders in the format of docs/report.md (three vision runs: ideal, aircomp, digital;
# two text runs) give the PNG plots (PNG signature, 800x500 from the IHDR chunk) and a report.md whose table equals
# the figures computed here independently from the fixture CSVs; malformed runs exit 1 naming the problem.
# Usage: cli_report_test.sh <path to fedlora>
set -uo pipefail
fedlora=$1
py=/usr/bin/python3
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
runs=$tmp/runs
export TMPDIR=$tmp/scratch  # the report's own scratch directory must be gone after each run
mkdir -p "$TMPDIR"

# ---- fixtures -------------------------------------------------------------------------------------------------
# make_run DIR TASK MODE ROUNDS USES_PER_ROUND LATENCY_S [flags]; flags: nonmse (ideal), nocum (cum_* cells left
# empty), extra (an unknown column appended), gap (no evaluation in round 2), nosummary.
make_run() {
  "$py" - "$@" <<'EOF' || fail "cannot write fixture $1"
import json, math, os, random, sys
d, task, mode, rounds, uses, lat = sys.argv[1:7]
flags = set(sys.argv[7:])
rounds, uses, lat = int(rounds), int(uses), float(lat)
rng = random.Random(d)
os.makedirs(os.path.join(d, "checkpoints"), exist_ok=True)
cols = ("round,mode,clients,snr_db,nmse_db,nmse_analytic_db,sparsity,subcarriers,channel_uses,cum_channel_uses,"
        "airtime_s,latency_s,cum_latency_s,train_loss,test_accuracy,test_perplexity,queue,wall_s").split(",")
if "extra" in flags:
    cols.append("future_column")
lines = [",".join(cols)]
cum_uses = cum_lat = 0.0
for r in range(1, rounds + 1):
    u = uses + rng.randrange(0, 7) if uses else 0  # channel uses vary a little from round to round; ideal: none
    l = round(lat * (1 + 0.2 * rng.random()), 6)
    cum_uses += u
    cum_lat += l
    # Rising with noise, so that the best round is not always the last one.
    acc = round(0.85 - {"aircomp": 0.02, "digital": 0.005}.get(mode, 0.0) - 0.5 * math.exp(-r / 2.5)
                + 0.03 * (rng.random() - 0.5) - (0.04 if r == rounds else 0.0), 4)
    ppl = round(20.0 / (1 + 0.3 * r) + 1.5 + rng.random() + (2.0 if r == rounds else 0.0), 3)
    row = {
        "round": r, "mode": mode, "clients": 10, "snr_db": round(15 + rng.random(), 2),
        "nmse_db": "" if "nonmse" in flags else round(-12 - 3 * rng.random(), 3),
        "nmse_analytic_db": "" if "nonmse" in flags or mode == "digital" else round(-12.5 - rng.random(), 3),
        "sparsity": 0.1, "subcarriers": 200, "channel_uses": u,
        "cum_channel_uses": "" if "nocum" in flags else int(cum_uses), "airtime_s": round(l / 2, 6),
        "latency_s": l, "cum_latency_s": "" if "nocum" in flags else round(cum_lat, 6),
        "train_loss": round(2.0 / r, 4) if r != 3 else "nan",
        "test_accuracy": acc if task == "vision" else "",
        "test_perplexity": ppl if task == "text" else "",
        "queue": "0.5", "wall_s": round(0.1 * r, 2), "future_column": "x;y",
    }
    if "gap" in flags and r == 2:
        row["test_accuracy" if task == "vision" else "test_perplexity"] = ""
    lines.append(",".join(str(row[c]) for c in cols))
with open(os.path.join(d, "rounds.csv"), "w") as f:
    f.write("\n".join(lines) + "\n")
with open(os.path.join(d, "config.yaml"), "w") as f:
    f.write(f"mode: {mode}\ntask: {task}\nseed: 1\nchannel:\n  snr_db: 15\n  task: nested-keys-are-not-top-level\n")
if "nosummary" not in flags:
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"run": os.path.basename(d), "mode": mode, "task": task, "rounds": rounds}, f)
EOF
}

make_run "$runs/ideal" vision ideal 8 0 0.002 nonmse extra
make_run "$runs/aircomp" vision aircomp 8 2600 0.003 gap
make_run "$runs/digital" vision digital 8 104000 0.5 nosummary nocum
make_run "$runs/text-aircomp" text aircomp 6 2600 0.003
make_run "$runs/text-digital" text digital 6 52000 0.2 gap

# The table report.md must hold, computed from the CSVs: TASK RUN... (the reference of the channel-use ratio is the
# first run with channel uses).
expected_table() {
  "$py" - "$@" <<'EOF'
import csv, math, os, sys
task, dirs = sys.argv[1], sys.argv[2:]
def num(s):
    return None if s.strip() in ("", "nan") else float(s)
def sig4(v):
    if v == 0:
        return "0"
    d = min(12, max(0, 3 - math.floor(math.log10(abs(v)))))
    return f"{v:.{d}f}"
def count(v):
    return f"{int(v):,}" if v == int(v) else sig4(v)
metric = "test_accuracy" if task == "vision" else "test_perplexity"
fmt = (lambda v: f"{100 * v:.2f}%") if task == "vision" else sig4
rows, ref_uses, table = [], None, []
for d in dirs:
    with open(os.path.join(d, "rounds.csv")) as f:
        recs = list(csv.DictReader(f))
    mode = recs[0]["mode"]
    vals = [num(r[metric]) for r in recs if num(r[metric]) is not None]
    best = max(vals) if task == "vision" else min(vals)
    cum = [num(r["cum_channel_uses"]) for r in recs if num(r["cum_channel_uses"]) is not None]
    uses = cum[-1] if cum else sum(num(r["channel_uses"]) for r in recs)
    cl = [num(r["cum_latency_s"]) for r in recs if num(r["cum_latency_s"]) is not None]
    lat = cl[-1] if cl else sum(num(r["latency_s"]) for r in recs)
    nm = [num(r["nmse_db"]) for r in recs if num(r["nmse_db"]) is not None]
    ref_uses = uses if ref_uses is None and uses > 0 else ref_uses
    table.append([os.path.basename(d), mode, str(int(num(recs[-1]["round"]))), fmt(vals[-1]), fmt(best), count(uses),
                  uses, f"{sum(nm) / len(nm):.2f} dB" if nm else "n/a", sig4(lat) + " s"])
for cells in table:
    cells[6] = sig4(cells[6] / ref_uses) + "×"
    rows.append("| " + " | ".join(cells) + " |")
print("\n".join(rows))
EOF
}

# check_png FILE: PNG signature, 800x500 in the IHDR chunk, a plausible size.
check_png() {
  [ -f "$1" ] || fail "no $1"
  [ "$(od -An -tx1 -N8 "$1" | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$1 does not start with the PNG signature"
  [ "$(od -An -c -j12 -N4 "$1" | tr -d ' \n')" = IHDR ] || fail "$1 has no IHDR chunk first"
  local w h size
  read -r w h <<<"$(od -An -tu1 -j16 -N8 "$1" | awk '{print $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}')"
  [ "$w" -eq 800 ] && [ "$h" -eq 500 ] || fail "$1 is ${w}x${h}, expected 800x500"
  size=$(stat -c %s "$1")
  [ "$size" -gt 8000 ] && [ "$size" -lt 2000000 ] || fail "$1 has an implausible size of $size bytes"
}

# ---- help and usage -------------------------------------------------------------------------------------------
out=$("$fedlora" --help) || fail "--help exited $?"
grep -qE "^  report +[A-Za-z]" <<<"$out" || fail "--help does not list 'report':"$'\n'"$out"
out=$("$fedlora" report --help) || fail "report --help exited $?"
for word in rounds.csv summary.json report.md --out nmse_vs_round.png "Exit status"; do
  grep -q -- "$word" <<<"$out" || fail "report --help does not mention $word:"$'\n'"$out"
done
err=$("$fedlora" report 2>&1); rc=$?
[ $rc -eq 2 ] || fail "report without runs exited $rc, expected 2"
grep -qi "runs" <<<"$err" || fail "usage error does not name the missing runs: $err"

# ---- vision: three runs ---------------------------------------------------------------------------------------
out=$(cd "$tmp" && "$fedlora" report runs/ideal runs/aircomp/ runs/digital 2>"$tmp/err") \
  || fail "report exited $?: $(cat "$tmp/err")"
vision_pngs="accuracy_vs_round nmse_vs_round channel_uses_vs_round latency_per_round accuracy_vs_channel_uses"
for p in $vision_pngs; do
  check_png "$tmp/report/$p.png"
  grep -q "wrote report/$p.png" <<<"$out" || fail "the written path of $p.png was not printed: $out"
  grep -qF "]($p.png)" "$tmp/report/report.md" || fail "report.md does not link $p.png"
done
grep -q "wrote report/report.md" <<<"$out" || fail "the path of report.md was not printed: $out"
[ -z "$(ls "$tmp/report" | grep -v -e '\.png$' -e '^report\.md$')" ] || fail "unexpected files: $(ls "$tmp/report")"
grep -q "digital: no summary.json" "$tmp/err" || fail "no warning about the missing summary.json: $(cat "$tmp/err")"
[ "$(md5sum "$tmp"/report/*.png | awk '{print $1}' | sort -u | wc -l)" -eq 5 ] || fail "two plots are identical"

md=$tmp/report/report.md
grep -qF "| run | mode | rounds | final accuracy | best accuracy | channel uses | relative | mean NMSE | latency |" \
  "$md" || fail "report.md has no table header: $(cat "$md")"
expected=$(expected_table vision "$runs/ideal" "$runs/aircomp" "$runs/digital") || fail "cannot compute the table"
actual=$(grep -E "^\| (ideal|aircomp|digital) \|" "$md")
[ "$actual" = "$expected" ] || fail "report.md rows differ from the fixtures:"$'\n'"got:"$'\n'"$actual"$'\n'"expected:"$'\n'"$expected"
grep -q "^| ideal | ideal | 8 | .* | 0 | 0× | n/a |" "$md" || fail "the ideal row does not show no channel uses, no NMSE: $actual"
grep -q "^| aircomp | aircomp | 8 | .* | 1.000× | " "$md" || fail "aircomp is not the reference of the ratio: $actual"
grep -q "their ratio to those of \`aircomp\`" "$md" || fail "report.md does not name the reference run"
for p in nmse_vs_round channel_uses_vs_round accuracy_vs_channel_uses; do
  grep -A4 "($p.png)" "$md" | grep -q "Not in this plot: ideal (no " || fail "report.md does not say ideal is not in $p"
done

# ---- text: perplexity plots; --out elsewhere ------------------------------------------------------------------
out=$("$fedlora" report "$runs/text-aircomp" "$runs/text-digital" --out "$tmp/text/out" 2>"$tmp/err") \
  || fail "text report exited $?: $(cat "$tmp/err")"
for p in perplexity_vs_round nmse_vs_round channel_uses_vs_round latency_per_round perplexity_vs_channel_uses; do
  check_png "$tmp/text/out/$p.png"
done
ls "$tmp/text/out"/accuracy_* >/dev/null 2>&1 && fail "a text report drew accuracy plots"
md=$tmp/text/out/report.md
grep -qF "| final perplexity | best perplexity |" "$md" || fail "text report.md has no perplexity columns: $(cat "$md")"
expected=$(expected_table text "$runs/text-aircomp" "$runs/text-digital") || fail "cannot compute the text table"
actual=$(grep -E "^\| text-" "$md")
[ "$actual" = "$expected" ] || fail "text report.md rows differ:"$'\n'"got:"$'\n'"$actual"$'\n'"expected:"$'\n'"$expected"

# A report into a folder that holds an earlier one leaves none of the earlier files.
"$fedlora" report "$runs/text-aircomp" --out "$tmp/report" >/dev/null 2>&1 || fail "text report into report/ failed"
ls "$tmp/report"/accuracy_* >/dev/null 2>&1 && fail "accuracy plots of the earlier report were left: $(ls "$tmp/report")"
check_png "$tmp/report/perplexity_vs_round.png"

# ---- errors: exit 1, naming the run folder and the problem; nothing written -----------------------------------
expect_error() {  # PATTERN ARGS...
  local pattern=$1
  shift
  rm -rf "$tmp/bad-out"
  err=$("$fedlora" report --out "$tmp/bad-out" "$@" 2>&1); rc=$?
  [ $rc -eq 1 ] || fail "report $* exited $rc, expected 1: $err"
  grep -qF -- "$pattern" <<<"$err" || fail "report $*: the error does not say '$pattern': $err"
  [ ! -e "$tmp/bad-out/report.md" ] || fail "report $* wrote report.md despite the error"
}
expect_error "run folder '$tmp/no-such-run' does not exist" "$runs/ideal" "$tmp/no-such-run"
mkdir -p "$tmp/empty-run"
expect_error "run folder '$tmp/empty-run': no rounds.csv in it" "$tmp/empty-run"

cp -r "$runs/aircomp" "$tmp/no-round"
sed -i '1s/^round,/rnd,/' "$tmp/no-round/rounds.csv"
expect_error "$tmp/no-round/rounds.csv: the required column 'round' is missing" "$tmp/no-round"

cp -r "$runs/aircomp" "$tmp/bad-cell"
awk -F, -v OFS=, 'NR == 4 { $4 = "fifteen" } { print }' "$runs/aircomp/rounds.csv" >"$tmp/bad-cell/rounds.csv"
expect_error "$tmp/bad-cell/rounds.csv line 4 (row 3), column 'snr_db': 'fifteen' is not a number" "$tmp/bad-cell"

cp -r "$runs/aircomp" "$tmp/percent"
awk -F, -v OFS=, 'NR == 3 { $15 = "87.5" } { print }' "$runs/aircomp/rounds.csv" >"$tmp/percent/rounds.csv"
expect_error "column 'test_accuracy': 87.5 is not a fraction in [0, 1]" "$tmp/percent"

cp -r "$runs/aircomp" "$tmp/short-row"
sed -i '3s/,[^,]*$//' "$tmp/short-row/rounds.csv"
expect_error "$tmp/short-row/rounds.csv line 3 (row 2): 17 cells, but the header has 18 columns" "$tmp/short-row"

expect_error "runs of different tasks cannot be compared: '$runs/aircomp' is vision (summary.json), '$runs/text-aircomp' is text (summary.json)" \
  "$runs/aircomp" "$runs/text-aircomp"

# Every bad run is named, one error line each.
err=$("$fedlora" report --out "$tmp/bad-out" "$tmp/no-such-run" "$tmp/bad-cell" "$runs/ideal" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "two bad runs exited $rc, expected 1"
[ "$(grep -c '\[error\]' <<<"$err")" -eq 2 ] || fail "expected one error line for each of the two bad runs: $err"

# No matplotlib: one clear line naming the package (python3 -S does not see Debian's dist-packages).
printf '#!/bin/sh\nexec %s -S "$@"\n' "$py" >"$tmp/python-without-site"
chmod +x "$tmp/python-without-site"
expect_error "apt-get install python3-matplotlib" --python "$tmp/python-without-site" "$runs/aircomp"
[ "$(grep -c '\[error\]' <<<"$err")" -eq 1 ] || fail "expected one error line without matplotlib: $err"
expect_error "apt-get install python3-matplotlib" --python "$tmp/no-such-python" "$runs/aircomp"

[ -z "$(ls -A "$TMPDIR")" ] || fail "report left files in its temporary directory: $(ls -A "$TMPDIR")"
echo "fedlora report holds"
