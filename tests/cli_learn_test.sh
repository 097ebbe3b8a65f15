#!/usr/bin/env bash
# The learning commands of the CLI: `fedlora pretrain` (tiny runs on the real Debian data: written, cached, retrained
# bit-identically with --force, clear errors) and `fedlora bench train` (both sides run and print their figures).
# Usage: cli_learn_test.sh <path to fedlora>
set -uo pipefail
fedlora=$1
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

out=$("$fedlora" --help) || fail "--help exited $?"
grep -qE "^  pretrain +[A-Za-z]" <<<"$out" || fail "--help does not list 'pretrain':"$'\n'"$out"
out=$("$fedlora" bench --help) || fail "bench --help exited $?"
grep -qE "^  train +[A-Za-z]" <<<"$out" || fail "bench --help does not list 'train':"$'\n'"$out"

# Usage errors: exit 2, naming the option.
err=$("$fedlora" pretrain --task nonsense 2>&1); rc=$?
[ $rc -eq 2 ] || fail "pretrain --task nonsense exited $rc, expected 2"
grep -q -- "--task" <<<"$err" || fail "error does not name --task: $err"
err=$("$fedlora" pretrain 2>&1); rc=$?
[ $rc -eq 2 ] || fail "pretrain without --task exited $rc, expected 2"
grep -q -- "--task" <<<"$err" || fail "error does not name --task: $err"
err=$("$fedlora" bench train --seconds 0 2>&1); rc=$?
[ $rc -eq 2 ] || fail "bench train --seconds 0 exited $rc, expected 2"

# Runtime errors: exit 1 with one error line.
err=$("$fedlora" pretrain --task vision --steps 1 --data-dir "$tmp/no-such-dir" --out "$tmp/o" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "missing dataset exited $rc, expected 1"
grep -q "apt-get install dataset-fashion-mnist" <<<"$err" || fail "missing dataset error does not name the package: $err"
[ "$(grep -c '\[error\]' <<<"$err")" -eq 1 ] || fail "expected one error line: $err"
touch "$tmp/plain-file"
err=$("$fedlora" pretrain --task vision --steps 1 --out "$tmp/plain-file/sub" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "unwritable output exited $rc, expected 1"
grep -q "output directory" <<<"$err" || fail "unwritable output error unclear: $err"

# Vision: written, then reused from the cache, then retrained bit-identically with --force.
st="$tmp/pre/vit-fashion-mnist.safetensors"
out=$("$fedlora" pretrain --task vision --steps 3 --threads 1 --out "$tmp/pre" 2>"$tmp/err1") || fail "pretrain vision exited $?: $(cat "$tmp/err1")"
[ -s "$st" ] || fail "no $st"
grep -q "frozen base on the 10000 test images: accuracy" <<<"$out" || fail "no accuracy printed: $out"
grep -q "step 3/3" "$tmp/err1" || fail "no progress line: $(cat "$tmp/err1")"
cp "$st" "$tmp/first.safetensors"
touch -d '2001-01-01' "$st"
out=$("$fedlora" pretrain --task vision --steps 3 --threads 1 --out "$tmp/pre" 2>"$tmp/err2") || fail "second pretrain exited $?"
[ "$(grep -c 'reusing' "$tmp/err2")" -eq 1 ] || fail "second run did not say once that it reuses the file: $(cat "$tmp/err2")"
grep -q "step " "$tmp/err2" && fail "second run trained again: $(cat "$tmp/err2")"
[ "$(stat -c %Y "$st")" = "$(date -d '2001-01-01' +%s)" ] || fail "cached file was rewritten"
"$fedlora" pretrain --task vision --steps 3 --threads 1 --out "$tmp/pre" --force >/dev/null 2>"$tmp/err3" || fail "--force exited $?"
cmp -s "$st" "$tmp/first.safetensors" || fail "--force with the same seed gave a different file"
"$fedlora" pretrain --task vision --steps 3 --threads 1 --out "$tmp/pre" --seed 7 >/dev/null 2>&1 || fail "--seed 7 exited $?"
cmp -s "$st" "$tmp/first.safetensors" && fail "another seed gave the same file"

# Text: a tiny run prints both perplexities.
out=$("$fedlora" pretrain --task text --steps 3 --threads 1 --out "$tmp/pre" 2>"$tmp/err4") || fail "pretrain text exited $?: $(cat "$tmp/err4")"
[ -s "$tmp/pre/gpt-fortunes.safetensors" ] || fail "no gpt-fortunes.safetensors"
grep -qE "frozen base perplexity: [0-9.]+ on validation entries .*, [0-9.]+ on the held-out" <<<"$out" \
  || fail "no perplexity printed: $out"

# bench train: both sides, both models, steps/s, ratio and the fraction of the matmul peak.
out=$(TMPDIR="$tmp" "$fedlora" bench train --seconds 0.2 --threads 1 2>"$tmp/err5") || fail "bench train exited $?: $(cat "$tmp/err5")"
for side in "C\\+\\+ LibTorch" "Python torch"; do
  [ "$(grep -cE "^  $side .* steps/s .* GFLOP/s = .*% of matmul peak" <<<"$out")" -eq 2 ] \
    || fail "bench train did not print '$side' for both models: $out"
done
[ "$(grep -cE "C\+\+ / Python: [0-9.]+x" <<<"$out")" -eq 2 ] || fail "no C++/Python ratio for both models: $out"
grep -q "matmul peak of this machine: [0-9.]* GFLOP/s" <<<"$out" || fail "no matmul peak: $out"
pgrep -f "$tmp/fedlora-bench-train" >/dev/null && fail "the Python side is still running"
[ -z "$(ls -d "$tmp"/fedlora-bench-train-* 2>/dev/null)" ] || fail "bench train left its temporary directory"
echo "learning commands hold"
