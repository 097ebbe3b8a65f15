#!/usr/bin/env bash
# Compiles every flowgraphs/*.grc with grcc against the build tree's gr-fedlora blocks, then runs the OFDM
# loopback, the multi-user channel and the AirComp loopback flowgraphs headless and checks their outputs (numpy);
# the AirComp loopback's aggregate must equal fedlora_phy's aircomp_round_waveform for the same updates and channel
# seed, bit for bit.
# Usage: grc_test.sh <source dir> <gr-fedlora grc dir> <build-tree PYTHONPATH>
set -euo pipefail
src=$1 grc_dir=$2 pypath=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GRC_BLOCKS_PATH=$grc_dir PYTHONPATH=$pypath GR_CONF_CONTROLPORT_ON=False
# The tree's block definitions only: Debian's grc.conf also reads /usr/local, where an older install may lie.
export GR_CONF_GRC_GLOBAL_BLOCKS_PATH=/usr/share/gnuradio/grc/blocks
shopt -s nullglob
n=0
for g in "$src"/flowgraphs/*.grc; do
  echo "grcc $(basename "$g")"
  /usr/bin/python3 /usr/bin/grcc -o "$work" "$g" > "$work/grcc.log" 2>&1 || { cat "$work/grcc.log"; exit 1; }
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "no flowgraphs found"; exit 1; }
echo "compiled $n flowgraphs"

/usr/bin/python3 "$work/ofdm_loopback.py" --out-file "$work/out.c64"
/usr/bin/python3 - "$work/out.c64" <<'PY'
import sys
import numpy as np
y = np.fromfile(sys.argv[1], dtype=np.complex64)
n_occ, n_sym = 48, 200
x = np.array([complex(i % 7 - 3, 2 - i % 5) for i in range(n_occ * n_sym)], dtype=np.complex64)
assert y.size == x.size, (y.size, x.size)
err = np.max(np.abs(y - x))
print(f"loopback flowgraph: {y.size} values, max error {err:.2e}")
assert err < 1e-4, err
PY

# The multi-user channel flowgraph: two tones at 20 and 15 dB SNR through fading, over noise of variance 1e-3.
/usr/bin/python3 "$work/aircomp_channel.py" --out-file "$work/rx.c64"
/usr/bin/python3 - "$work/rx.c64" <<'PY'
import sys
import numpy as np
y = np.fromfile(sys.argv[1], dtype=np.complex64)
assert y.size == 100000, y.size
power = float(np.mean(np.abs(y) ** 2))
# Expected mean power 1e-3 * (10^2.0 + 10^1.5) + 1e-3 = 0.133 on average over fading; one realisation varies it
# by a few dB, so the check is that both devices' signals arrived, far above the noise, and nothing blew up.
print(f"channel flowgraph: {y.size} samples, mean power {power:.3g} (noise 1e-3)")
assert 0.01 < power < 2.0, power
PY

# The AirComp loopback: three transmitters -> channel -> server receiver, one round. Its aggregate against the
# in-process simulator (kernel_aircomp_round_waveform) on the same updates and channel seed, for two seeds.
for seeds in "7 5" "11 3"; do
  set -- $seeds
  /usr/bin/python3 "$work/aircomp_loopback.py" --seed "$1" --update-seed "$2" --out-file "$work/agg.f32" \
    > "$work/loopback.log" 2>&1 || { cat "$work/loopback.log"; exit 1; }
  grep '^quality:' "$work/loopback.log"
  /usr/bin/python3 - "$work/agg.f32" "$1" "$2" <<'PY'
import sys
import numpy as np
from gnuradio import fedlora
from gnuradio.fedlora import aircomp
fedlora.set_fft_planning("estimate")  # as the flowgraph does
got = np.fromfile(sys.argv[1], dtype=np.float32)
seed, update_seed = int(sys.argv[2]), int(sys.argv[3])
K, dim, fs, lead = 3, 3001, 15.36e6, 300
frame = dict(fft_size=256, cp_len=32, n_occupied=200, pilot_spacing=20, sample_rate=fs, gap=2048, pilot_repeats=2,
             reference_interval=8)
# The reference raises a gap below receiver_min_gap; the flowgraph's must already be enough.
assert frame["gap"] >= fedlora.receiver_min_gap(256, 32, 200, 20, fs, 0)
updates = aircomp.make_updates(K, dim, update_seed)
_, _, scale = aircomp.round_messages(updates)
channel = fedlora.channel_kernel(n_devices=K, n_tx=1, n_rx=1, sample_rate=fs, snr_db=[20.0], profile="EPA",
                                 fading="rayleigh", cfo_hz=[3000.0], noise_variance=0.01, seed=seed)
want, report = fedlora.kernel_aircomp_round_waveform(updates, [1.0 / K] * K, scale, channel, lead=lead,
                                                     policy="truncated", estimator="sparse", **frame)
assert got.size == want.size == dim, (got.size, want.size)
diff = float(np.max(np.abs(got - want)))
print(f"aircomp loopback (channel seed {seed}, update seed {update_seed}): {dim} values, max |flowgraph - "
      f"aircomp_round_waveform| = {diff:.3g}, NMSE {10 * np.log10(report['nmse_measured']):.2f} dB")
assert np.array_equal(got, want), diff
PY
done
