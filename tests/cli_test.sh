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
echo "cli contract holds"
