#!/usr/bin/env bash
# fedlora calibrate: the virtual-radio procedure writes a valid calibration file whose estimates match the injected
# impairments and whose corrections bring AirComp back; `check` reads it back and looks values up; broken files and
# lookups give one error naming the file, the key or serial, and what the file holds; without a USRP the hardware
# procedure says so in one line.
# Usage: cli_calibrate_test.sh <path to fedlora>
set -uo pipefail
fedlora=$1
fail() { echo "FAIL: $*"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cal=$dir/cal.yaml

"$fedlora" --help | grep -qE "^  calibrate +[A-Za-z]" || fail "--help does not list 'calibrate' with a description"
"$fedlora" calibrate --help | grep -q -- "--gain-error-db" || fail "calibrate --help does not describe --gain-error-db"

# The virtual radio with given impairments (one timing offset beyond the CP) and a drawn one.
out=$("$fedlora" calibrate --devices 3 --gain-error-db 2.5,-1.5,0 --timing-offset 4.25,60,0.5 \
      --cfo-hz 900,-1200,150 --freq 915e6,2.45e9 --rounds 3 --out "$cal") || fail "calibrate exited $?: $out"
[ -s "$cal" ] || fail "calibrate wrote no file"
grep -q "^fedlora_calibration: 1" "$cal" || fail "the file has no schema version: $(head -5 "$cal")"
grep -q "outside 5 sigma" <<<"$out" && fail "an estimate is off: $out"
# Estimated against injected, per device: timing 60 samples recovered to 0.01.
line=$(grep "^virtual-1 " <<<"$out") || fail "no row for virtual-1: $out"
awk '{ for (i = 1; i <= NF; i++) if ($i == "|") bar++; else if (bar == 2 && !seen) { est = $i; seen = 1 } }
     END { d = est - 60; if (d < 0) d = -d; exit !(d < 0.01) }' <<<"$line" || fail "timing of virtual-1 not recovered: $line"
nmse() { grep "NMSE $1" <<<"$out" | awk '{ print $(NF-1) }'; }
ref=$(nmse unimpaired); raw=$(nmse "impaired, without"); fix=$(nmse "impaired, with calibration")
[ -n "$ref" ] && [ -n "$raw" ] && [ -n "$fix" ] || fail "no AirComp check figures: $out"
awk -v r="$ref" -v x="$raw" -v f="$fix" 'BEGIN { d = f - r; if (d < 0) d = -d; exit !(d < 1.0 && x > r + 3.0) }' ||
  fail "AirComp check: unimpaired $ref dB, without calibration $raw dB, with $fix dB"
"$fedlora" calibrate --devices 2 --seed 9 --no-verify --out "$dir/drawn.yaml" >/dev/null || fail "drawn impairments exited $?"

# check: valid, summary, lookups.
out=$("$fedlora" calibrate check "$cal") || fail "check of a fresh file exited $?: $out"
grep -q "valid (fedlora_calibration 1)" <<<"$out" || fail "check printed no validity line: $out"
grep -q "virtual-server (virtual) channel 0: rx_noise_floor at 915 MHz, 2450 MHz" <<<"$out" || fail "no server line: $out"
out=$("$fedlora" calibrate check "$cal" --serial virtual-0 --freq 2.45e9 --rate 15.36e6 --budget-dbm 0) ||
  fail "lookups exited $?: $out"
grep -q "advance 4.2[45][0-9] samples" <<<"$out" || fail "no correction for virtual-0: $out"
grep -qE "a 0 dBm budget -> TX gain 57\.[45]" <<<"$out" || fail "budget of virtual-0 (gain error 2.5 dB) wrong: $out"
"$fedlora" calibrate check "$dir/drawn.yaml" >/dev/null || fail "check of the drawn file exited $?"

# Broken files and lookups: exit 1, one error line naming the problem.
expect_error() {  # expect_error <what> <pattern> <args...>
  local what=$1 pattern=$2; shift 2
  local err rc
  err=$("$fedlora" "$@" 2>&1 >/dev/null); rc=$?
  [ $rc -eq 1 ] || fail "$what: exited $rc, expected 1 ($err)"
  [ "$(grep -c '\[error\]' <<<"$err")" -eq 1 ] || fail "$what: expected one error line, got: $err"
  grep -qF -- "$pattern" <<<"$err" || fail "$what: error does not name the problem ('$pattern'): $err"
}
expect_error "missing device" "no device with serial 'B210-0042' (the file holds: virtual-0 (virtual)" \
  calibrate check "$cal" --serial B210-0042
expect_error "other frequency" "device 'virtual-1' channel 0: tx_power.frequencies_hz: 5800 MHz is outside the calibrated frequencies (915 MHz, 2450 MHz)" \
  calibrate check "$cal" --serial virtual-1 --freq 5.8e9 --budget-dbm 0
expect_error "alignment at another rate" "measured at 15.36 MS/s, not 30.72 MS/s" \
  calibrate check "$cal" --serial virtual-1 --freq 2.45e9 --rate 30.72e6
expect_error "budget above the maximum" "exceeds the highest calibrated output power at 2450 MHz" \
  calibrate check "$cal" --serial virtual-1 --freq 2.45e9 --budget-dbm 30
sed 's/gains_db: \[50/gains_db: [fifty/' "$cal" > "$dir/type.yaml"
expect_error "wrong type" "devices[0] (serial 'virtual-0').channels[0].tx_power.gains_db[0] (line" \
  calibrate check "$dir/type.yaml"
grep -q "expected a number, got 'fifty'" <<<"$("$fedlora" calibrate check "$dir/type.yaml" 2>&1)" ||
  fail "wrong type: the error does not show the bad value"
sed '0,/  - serial: "virtual-0"/s//  - product: none/' "$cal" | sed '0,/    product: virtual/s///' > "$dir/noserial.yaml"
expect_error "missing serial" "devices[0] (line" calibrate check "$dir/noserial.yaml"
sed 's/^reference: external/reference: rubidium/' "$cal" > "$dir/ref.yaml"
expect_error "bad reference" "reference = 'rubidium' must be one of internal, external, gpsdo" calibrate check "$dir/ref.yaml"
sed 's/timing_offset_samples:/timing_ofset_samples:/' "$cal" > "$dir/key.yaml"
expect_error "misspelt key" "unknown key 'timing_ofset_samples'" calibrate check "$dir/key.yaml"
expect_error "missing file" "$dir/none.yaml: cannot read the calibration file" calibrate check "$dir/none.yaml"
# The examples in calibration/ are valid.
for f in "$(dirname "$0")"/../calibration/example_*.yaml; do
  "$fedlora" calibrate check "$f" >/dev/null || fail "example $f does not pass check"
done

# Usage errors exit 2 and name the option.
err=$("$fedlora" calibrate --devices 3 --gain-error-db 1,2 2>&1); rc=$?
[ $rc -eq 2 ] || fail "wrong number of gain errors exited $rc, expected 2"
grep -q -- "--gain-error-db: 2 values for 3 devices" <<<"$err" || fail "unclear usage error: $err"

# The TX power sweep without the server's RX power calibration is refused before any radio is touched.
expect_error "tx-power without --rx-offset-db" "needs the server's RX power calibration: give --rx-offset-db" \
  calibrate usrp --server-args type=b200 --device type=b200 --mode all --out "$dir/hw.yaml"
# No USRP (USB-only search: a test never broadcasts on the network): one line, exit 1.
err=$("$fedlora" calibrate usrp --server-args type=b200 --device type=b200 --mode align --out "$dir/hw.yaml" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "usrp with no radio exited $rc, expected 1"
[ "$(grep -c . <<<"$err")" -eq 1 ] && grep -q "no USRP found" <<<"$err" || fail "expected one 'no USRP found' line, got: $err"
[ -e "$dir/hw.yaml" ] && fail "usrp with no radio wrote a file"
echo "cli_calibrate: all checks passed"
