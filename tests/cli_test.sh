#!/usr/bin/env bash
# The CLI contract: --help lists every subcommand, usage errors exit 2 with a clear message, a command that needs
# a USRP says in one line that none was found and exits non-zero.
# Usage: cli_test.sh <path to fedlora>
set -uo pipefail
fedlora=$1
fail() { echo "FAIL: $*"; exit 1; }

out=$("$fedlora" --help) || fail "--help exited $?"
for cmd in loopback bench devices; do
  grep -qE "^  $cmd +[A-Za-z]" <<<"$out" || fail "--help does not list '$cmd' with a description:"$'\n'"$out"
done

for args in "--no-such-option loopback" "loopback --no-such-option" "bench blas --no-such-option"; do
  err=$("$fedlora" $args 2>&1); rc=$?
  [ $rc -eq 2 ] || fail "'fedlora $args' exited $rc, expected 2"
  grep -q "no-such-option" <<<"$err" || fail "error for 'fedlora $args' does not name the bad option: $err"
done

err=$("$fedlora" loopback --devices 0 2>&1); rc=$?
[ $rc -eq 2 ] || fail "out-of-range value exited $rc, expected 2"
grep -q -- "--devices" <<<"$err" || fail "error does not name the option: $err"

err=$("$fedlora" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "missing subcommand exited $rc, expected 2"

# USB-only search: a test never broadcasts on the network.
err=$("$fedlora" devices --args type=b200 2>&1); rc=$?
[ $rc -ne 0 ] || fail "devices with no USRP exited 0"
[ "$(grep -c 'no USRP found' <<<"$err")" -eq 1 ] || fail "expected one 'no USRP found' line, got: $err"

out=$("$fedlora" loopback --devices 4 --length 20000 --snr-db 15) || fail "loopback exited $?"
grep -q "NMSE of the weighted sum: measured" <<<"$out" || fail "loopback printed no NMSE: $out"
err=$("$fedlora" loopback --fft 100 2>&1); rc=$?
[ $rc -eq 1 ] || fail "bad numerology exited $rc, expected 1"
grep -q "fft_size = 100 is not a power of two" <<<"$err" || fail "bad numerology error unclear: $err"
# fedlora keys: a CURVE key pair in a fresh directory, the secret file 0600, no overwrite without --force.
"$fedlora" --help | grep -qE "^  keys +[A-Za-z]" || fail "--help does not list 'keys' with a description"
keydir=$(mktemp -d)
trap 'rm -rf "$keydir"' EXIT
"$fedlora" keys --help | grep -q -- "--force" || fail "keys --help does not describe --force"
out=$("$fedlora" keys --name server --out "$keydir/k") || fail "keys exited $?"
[ -f "$keydir/k/server.key" ] && [ -f "$keydir/k/server.pub" ] || fail "keys did not write server.key/.pub: $(ls -la "$keydir/k")"
[ "$(stat -c %a "$keydir/k/server.key")" = 600 ] || fail "server.key has mode $(stat -c %a "$keydir/k/server.key"), expected 600"
pub=$(grep -v '^#' "$keydir/k/server.pub")
[ ${#pub} -eq 40 ] || fail "server.pub does not hold one 40-character key: '$pub'"
grep -qF "public key: $pub" <<<"$out" || fail "keys did not print the public key: $out"
grep -qF "$keydir/k/server.key" <<<"$out" || fail "keys did not print the secret key path: $out"
grep -qF "$keydir/k/server.pub" <<<"$out" || fail "keys did not print the public key path: $out"
grep -qF "secret-key = " "$keydir/k/server.key" || fail "server.key holds no secret key"
grep -q "secret" <<<"$(grep -v '^#' "$keydir/k/server.pub")" && fail "server.pub holds a secret"
before=$(cat "$keydir/k/server.key")
err=$("$fedlora" keys --name server --out "$keydir/k" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "overwriting a key exited $rc, expected 1"
grep -q "already exists" <<<"$err" && grep -q -- "--force" <<<"$err" || fail "overwrite refusal unclear: $err"
[ "$before" = "$(cat "$keydir/k/server.key")" ] || fail "a refused overwrite changed server.key"
"$fedlora" keys --name server --out "$keydir/k" --force >/dev/null || fail "keys --force exited $?"
[ "$before" != "$(cat "$keydir/k/server.key")" ] || fail "keys --force did not replace server.key"
[ "$(stat -c %a "$keydir/k/server.key")" = 600 ] || fail "replaced server.key is not mode 600"
[ "$(ls -A "$keydir/k" | wc -l)" -eq 2 ] || fail "keys left extra files: $(ls -A "$keydir/k")"
err=$("$fedlora" keys --name ../escape --out "$keydir" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "a bad key name exited $rc, expected 2"
grep -q -- "--name" <<<"$err" || fail "bad key name error does not name --name: $err"

echo "cli contract holds"
