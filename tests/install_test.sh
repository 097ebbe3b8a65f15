#!/usr/bin/env bash
# Installs the build into a scratch prefix and imports gnuradio.fedlora from there with /usr/bin/python3, and
# checks that GRC finds the installed block definitions under the FedLoRA category.
# Usage: install_test.sh <build dir> <python dir relative to the prefix>
set -euo pipefail
build=$1 pydir=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" > "$prefix/install.log"
export PYTHONPATH=$prefix/$pydir LD_LIBRARY_PATH=$prefix/lib GR_CONF_CONTROLPORT_ON=False
/usr/bin/python3 - "$prefix" <<'PY'
import os, sys
from gnuradio import fedlora
prefix = sys.argv[1]
assert fedlora.__file__.startswith(prefix), fedlora.__file__
fedlora.ofdm_modulator(64, 16, 48)
fedlora.aircomp_transmitter()
fedlora.aircomp_receiver()
from gnuradio.fedlora import aircomp
assert aircomp.__file__.startswith(prefix), aircomp.__file__
from gnuradio.fedlora import radio_server  # the flowgraph transport's radio process
assert radio_server.__file__.startswith(prefix), radio_server.__file__
from gnuradio import gr
from gnuradio.grc.core.platform import Platform
os.environ["GRC_BLOCKS_PATH"] = os.path.join(prefix, "share/gnuradio/grc/blocks")
p = Platform(version=gr.version(), version_parts=(gr.major_version(), gr.api_version(), gr.minor_version()),
             prefs=gr.prefs())
p.build_library()
ours = {k: b for k, b in p.blocks.items() if k.startswith("fedlora_")}
assert ours, "GRC found no fedlora blocks"
for key, block in ours.items():
    assert block.category == ["FedLoRA"], (key, block.category)
print("installed:", fedlora.__file__)
print("GRC blocks under [FedLoRA]:", ", ".join(sorted(ours)))
PY
