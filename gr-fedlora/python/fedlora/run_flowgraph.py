#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Run a grcc-generated flowgraph, failing fast when its USRP is not there.

    /usr/bin/python3 -m gnuradio.fedlora.run_flowgraph GENERATED.py [flowgraph options]

Loads GENERATED.py (grcc output of flowgraphs/device_tx.grc, server_rx.grc or any other) and calls its main() with
the options. When UHD finds no device for the flowgraph's device args, the flowgraph cannot be built; instead of the
traceback UHD's LookupError gives, one line goes to stderr,

    device_tx: no USRP found for args 'type=b200' (is it connected? `uhd_find_devices` lists what UHD sees)

and the exit status is 1. UHD's console log is at level "warning" unless UHD_LOG_CONSOLE_LEVEL says otherwise, so
the banner UHD prints at its first use does not precede that line; GNU Radio's default log level is "warn" (the
blocks' construction details are debug messages) unless FEDLORA_GR_LOG_LEVEL names another (trace, debug, info,
warn, error, off). Every other error is left as it is.
"""

import argparse
import os
import re
import runpy
import sys


def _is_no_device(exc):
    """True if exc is UHD's "no devices found" (a LookupError, or RuntimeError("LookupError: KeyError: No devices
    found for ...") through the pybind11 bindings)."""
    return isinstance(exc, (LookupError, RuntimeError)) and "no devices found" in str(exc).lower()


def _args_of(exc, argv):
    """The device args: --args if given, else the address UHD printed in its message."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--args", default=None)
    known, _ = p.parse_known_args(argv)
    if known.args is not None:
        return known.args
    pairs = re.findall(r"^\s+(\w+):\s*(.*?)\s*$", str(exc).split("Device Address:", 1)[-1], re.MULTILINE)
    return ",".join("%s=%s" % kv for kv in pairs)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else 2
    path, options = argv[0], argv[1:]
    name = os.path.splitext(os.path.basename(path))[0]
    os.environ.setdefault("UHD_LOG_CONSOLE_LEVEL", "warning")
    from gnuradio import gr
    level = os.environ.get("FEDLORA_GR_LOG_LEVEL", "warn")
    gr.logging().set_default_level(getattr(gr.log_levels, level))
    sys.argv = [path] + options  # the generated main() parses sys.argv
    try:
        module = runpy.run_path(path, run_name="fedlora_flowgraph")
        if "main" not in module:
            print("%s: %s has no main() (is it a grcc-generated flowgraph?)" % (name, path), file=sys.stderr)
            return 1
        result = module["main"]()
    except Exception as exc:  # noqa: BLE001 -- only UHD's "no devices found" is turned into one line
        if not _is_no_device(exc):
            raise
        print("%s: no USRP found for args '%s' (is it connected? `uhd_find_devices` lists what UHD sees)"
              % (name, _args_of(exc, options)), file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
