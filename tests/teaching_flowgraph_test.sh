#!/usr/bin/env bash
# The AirComp teaching flowgraph (flowgraphs/aircomp_teaching.grc, a QT GUI) headless under Xvfb: grcc compiles
# it against the build tree's gr-fedlora blocks, and it runs (through gnuradio.fedlora.run_flowgraph, as
# docs/gr-fedlora.md launches it) for a bounded number of rounds and stops by itself (--rounds N: once the N rounds
# are drawn it saves its window, --screenshot, and closes it). Checks:
#   1. K=3, 20 dB, truncated inversion, 30 rounds: exit status 0, one line per round with finite NMSE, the measured
#      NMSE within 2 dB of the analytic one every round and within 1 dB on average; the screenshot is a 1280x900
#      PNG with the plots drawn (many colours, and the blue and red of the constellation points and the curves
#      far beyond what the legends and controls of an empty window have);
#   2. the start settings from the command line (K=5, 30 dB, MMSE threshold), 4 rounds, no screenshot: the rounds
#      use them, the same NMSE checks, and it stops by itself;
#   3. the controls while it runs (policy radio button, K, SNR set on the GUI thread after three rounds): the rounds
#      from the next one on use them;
#   4. --screenshot without --rounds is refused with a message naming both.
# Usage: teaching_flowgraph_test.sh <source dir> <gr-fedlora grc dir> <build-tree PYTHONPATH> [copy screenshot to]
set -euo pipefail
src=$1 grc_dir=$2 pypath=$3 copy_to=${4:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v xvfb-run > /dev/null ||
  { echo "xvfb-run not found: install Debian's xvfb and xauth (scripts/setup.sh)"; exit 1; }
export GRC_BLOCKS_PATH=$grc_dir PYTHONPATH=$pypath GR_CONF_CONTROLPORT_ON=False
# The tree's block definitions only: Debian's grc.conf also reads /usr/local, where an older install may lie.
export GR_CONF_GRC_GLOBAL_BLOCKS_PATH=/usr/share/gnuradio/grc/blocks
# The window's saved geometry (QSettings) and Qt's runtime directory stay in the scratch directory.
export XDG_CONFIG_HOME=$work/config XDG_RUNTIME_DIR=$work/runtime
mkdir -m 700 "$work/runtime"

/usr/bin/python3 /usr/bin/grcc -o "$work" "$src/flowgraphs/aircomp_teaching.grc" > "$work/grcc.log" 2>&1 ||
  { cat "$work/grcc.log"; exit 1; }
flowgraph=$work/aircomp_teaching.py

run() {  # run <log> <flowgraph options...>: through the launcher, under Xvfb (24-bit screen), at most 120 s
  local log=$1
  shift
  local status=0
  timeout 120 xvfb-run -a -s "-screen 0 1600x1200x24" \
    /usr/bin/python3 -m gnuradio.fedlora.run_flowgraph "$flowgraph" "$@" > "$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$log"
    echo "the teaching flowgraph exited with status $status ($*)"
    exit 1
  fi
}

check_rounds() {  # check_rounds <log> <rounds> <K> <policy>: the per-round lines and their NMSE
  /usr/bin/python3 - "$@" <<'PY'
import math
import re
import sys
log, n, k, policy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pattern = re.compile(r"^round (\d+): K=(\d+) SNR=\S+ dB policy=(\w+) .*: NMSE measured (\S+) dB, analytic (\S+) dB, "
                     r"truncated (\S+) %$")
rows = [m.groups() for m in map(pattern.match, open(log).read().splitlines()) if m]
assert [int(r[0]) for r in rows] == list(range(n)), f"expected rounds 0..{n - 1}, got {[r[0] for r in rows]}"
assert all(int(r[1]) == k and r[2] == policy for r in rows), f"rounds not run with K={k}, {policy}: {rows}"
measured = [float(r[3]) for r in rows]
analytic = [float(r[4]) for r in rows]
assert all(math.isfinite(x) for x in measured + analytic), (measured, analytic)
diff = [abs(a - b) for a, b in zip(measured, analytic)]
mean_db = 10 * math.log10(sum(10 ** (x / 10) for x in measured) / n)
print(f"{n} rounds, K={k}, {policy}: NMSE measured {mean_db:.2f} dB on average, |measured - analytic| "
      f"{sum(diff) / n:.2f} dB on average, at most {max(diff):.2f} dB")
assert max(diff) <= 2.0 and sum(diff) / n <= 1.0, diff
PY
}

# 1. The default settings, 30 rounds (seed 5), a screenshot.
png=$work/teaching.png
run "$work/run1.log" --rounds 30 --interval 0.15 --seed 5 --screenshot "$png"
check_rounds "$work/run1.log" 30 3 truncated
grep -q "^screenshot: $png (1280x900)$" "$work/run1.log" || { cat "$work/run1.log"; echo "no screenshot line"; exit 1; }
/usr/bin/python3 - "$png" <<'PY'
import sys
import numpy as np
from PyQt5.QtGui import QImage
image = QImage(sys.argv[1])
assert not image.isNull(), f"{sys.argv[1]} is not an image"
assert (image.width(), image.height()) == (1280, 900), (image.width(), image.height())
image = image.convertToFormat(QImage.Format_RGB32)
pixels = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), np.uint8)
pixels = pixels.reshape(image.height(), image.bytesPerLine() // 4, 4)[:, :image.width(), :3].astype(int)
b, g, r = pixels[..., 0], pixels[..., 1], pixels[..., 2]
colours = len(np.unique(r * 65536 + g * 256 + b))
red = int(np.sum((r > 200) & (g < 80) & (b < 80)))
blue = int(np.sum((b > 200) & (r < 80) & (g < 80)))
# An empty window (controls, axes, legends) has about 290 colours, 230 red and 130 blue pixels; with the rounds
# drawn, about 1500 red (exact-sum points, curves) and 3800 blue (received points, curves).
print(f"screenshot: {image.width()}x{image.height()}, {colours} colours, {red} red and {blue} blue pixels")
assert colours >= 100 and red >= 800 and blue >= 1500, (colours, red, blue)
PY
if [ -n "$copy_to" ]; then
  cp "$png" "$copy_to"
  echo "screenshot copied to $copy_to"
fi

# 2. Start settings from the command line, no screenshot: it stops by itself after the rounds.
run "$work/run2.log" --rounds 4 --devices 5 --snr 30 --policy mmse --interval 0.1
check_rounds "$work/run2.log" 4 5 mmse
if grep -q "^screenshot:" "$work/run2.log"; then
  cat "$work/run2.log"
  echo "a screenshot without --screenshot"
  exit 1
fi

# 3. The controls while it runs: once three rounds have run, the GUI thread clicks "MMSE threshold" and sets
#    K = 6 and 30 dB (the callbacks the widgets call); the rounds from the next one on use them.
cat > "$work/drive.py" <<'PY'
import sys
from PyQt5 import Qt
sys.path.insert(0, sys.argv[1])
import aircomp_teaching as fg
app = Qt.QApplication(sys.argv[:1])
tb = fg.aircomp_teaching(rounds=8, interval=0.15)
fg.snippets_main_after_init(tb)
changed = []
def change():
    if tb.loop.rounds() >= 3 and not changed:
        changed.append(True)
        tb._power_policy_button_group.button(1).click()  # the radio button "MMSE threshold"
        tb.set_n_devices(6)
        tb.set_snr_db(30.0)
watch = Qt.QTimer()
watch.timeout.connect(change)
watch.start(10)
tb.start()
tb.show()
app.exec_()
print("changed after three rounds:", bool(changed))
PY
status=0
timeout 120 xvfb-run -a -s "-screen 0 1600x1200x24" /usr/bin/python3 "$work/drive.py" "$work" > "$work/run3.log" 2>&1 ||
  status=$?
[ "$status" -eq 0 ] && grep -q "^changed after three rounds: True$" "$work/run3.log" ||
  { cat "$work/run3.log"; echo "the driven run failed (status $status)"; exit 1; }
/usr/bin/python3 - "$work/run3.log" <<'PY'
import re
import sys
rows = re.findall(r"^round (\d+): K=(\d+) SNR=(\S+) dB policy=(\w+) ", open(sys.argv[1]).read(), re.MULTILINE)
settings = [(int(k), float(snr), policy) for _, k, snr, policy in rows]
assert [int(r[0]) for r in rows] == list(range(8)), rows
old, new = (3, 20.0, "truncated"), (6, 30.0, "mmse")
# The three controls change one after another while the loop waits for round 3: a round that starts between two
# of them takes some of each (rounds 3 to 5 allow for a slow GUI thread).
assert settings[:3] == [old] * 3 and settings[6:] == [new] * 2, settings
assert all(s[i] in (old[i], new[i]) for s in settings for i in range(3)), settings
first = settings.index(new)
print(f"controls: rounds 0-2 with K=3, 20 dB, truncated; rounds {first}-7 with K=6, 30 dB, mmse")
PY

# 4. A screenshot needs a bounded run.
if timeout 120 xvfb-run -a -s "-screen 0 1600x1200x24" \
    /usr/bin/python3 -m gnuradio.fedlora.run_flowgraph "$flowgraph" --screenshot "$work/x.png" > "$work/run4.log" 2>&1
then
  cat "$work/run4.log"
  echo "--screenshot without --rounds was accepted"
  exit 1
fi
grep -q -- "--screenshot $work/x.png needs --rounds N > 0" "$work/run4.log" ||
  { cat "$work/run4.log"; echo "no message naming --screenshot and --rounds"; exit 1; }
[ ! -e "$work/x.png" ] || { echo "a screenshot was written"; exit 1; }
echo "teaching flowgraph: OK"
