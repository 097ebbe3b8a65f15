#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""The virtual radio: one process per radio, samples over ZeroMQ (docs/gr-fedlora.md, "Virtual radio").

device_tx (one per device, --radio zmq) pushes its tagged bursts to a ZeroMQ PUSH socket; the channel emulator
(flowgraphs/channel_emulator.grc) pulls the K devices' streams, runs them through the multi-user channel on the
common timeline their tx_time tags define, and pushes the received samples to server_rx (--radio zmq). This module
holds the pieces those flowgraphs use:

* virtual_channel: a hierarchical block, K ZeroMQ PULL sources (one per device address) into fedlora
  channel_model, one output (the server antenna). K is a run-time parameter, so one flowgraph serves any K.
* end_after_bursts, end_after_messages: bounded runs. A ZeroMQ source never sees the end of its stream, and
  GNU Radio's message sources never end by themselves, so a flowgraph fed by them would run forever. These sinks
  count rounds (payload bursts on a sample stream, or messages such as aggregates) and, after n_rounds, tell the
  blocks given to finish_with() that they are done; GNU Radio then ends the blocks downstream of them once they
  have consumed every item, and the process exits.
* finish(*blocks): that "done" notice (a message on GNU Radio's system port).

Run as a program it is the trainer's side of a run (drive_rounds): it publishes the rounds' update PDUs and round
dicts once every device_tx and server_rx has subscribed, and collects the aggregates server_rx publishes.

    /usr/bin/python3 -m gnuradio.fedlora.virtual_radio --help
"""

import argparse
import re
import sys
import time

import numpy as np
import pmt
from gnuradio import gr

_SYSTEM = pmt.intern("system")
_DONE = pmt.cons(pmt.intern("done"), pmt.from_long(1))
_BURST = pmt.intern("fedlora_burst")
_EOB = pmt.intern("tx_eob")
_KIND = pmt.intern("kind")
_DEVICE = pmt.intern("device")
_PAYLOAD = pmt.intern("payload")


def finish(*blocks):
    """Tells each block that it is done (a ("done" . 1) message on its system port). A source that would wait for
    input forever (ZeroMQ) stops; blocks downstream of it end once they have consumed its items, and blocks
    subscribed to its message ports are told in turn."""
    for b in blocks:
        b.to_basic_block()._post(_SYSTEM, _DONE)


def _check_rounds(n_rounds, who):
    if isinstance(n_rounds, bool) or int(n_rounds) != n_rounds or n_rounds < 0:
        raise ValueError("%s: n_rounds = %r must be an integer >= 0 (0: no limit)" % (who, n_rounds))
    return int(n_rounds)


class end_after_bursts(gr.sync_block):
    """Sink of a transmitter's sample stream (tagged as fedlora_aircomp_transmitter tags it) that ends the run
    after n_rounds rounds: a round is counted when the last sample (tx_eob) of a payload burst (fedlora_burst
    tag, kind payload) has arrived. Then the blocks given to finish_with() are finished. n_rounds = 0: never.

    device >= 0: the bursts must be that device's (fedlora_burst "device"); another device's are reported once as
    an error naming `name` (a device stream connected to the wrong input), and wrong_device holds its index.

    rounds: payload bursts counted so far."""

    def __init__(self, n_rounds=0, device=-1, name=""):
        gr.sync_block.__init__(self, name="end_after_bursts", in_sig=[np.complex64], out_sig=None)
        self.n_rounds = _check_rounds(n_rounds, "end_after_bursts")
        self.device = int(device)
        self.label = name or "input"
        self.rounds = 0
        self._in_payload = False
        self._targets = []
        self._ended = False
        self.wrong_device = None

    def finish_with(self, *blocks):
        """Blocks to finish when the run ends (the sources that would otherwise run forever). Returns self."""
        self._targets.extend(blocks)
        return self

    def _burst_start(self, value):
        kind = pmt.dict_ref(value, _KIND, pmt.PMT_NIL)
        self._in_payload = pmt.eq(kind, _PAYLOAD)
        if self.device >= 0 and self.wrong_device is None:
            dev = pmt.dict_ref(value, _DEVICE, pmt.PMT_NIL)
            if pmt.is_integer(dev) and pmt.to_long(dev) != self.device:
                self.wrong_device = pmt.to_long(dev)
                self.logger.error("%s carries the bursts of device %d, expected device %d (are the device "
                                  "addresses listed in device order?)" % (self.label, self.wrong_device, self.device))

    def work(self, input_items, output_items):
        n = len(input_items[0])
        if self._ended or (not self.n_rounds and self.device < 0):
            return n  # nothing left to count or check
        tags = self.get_tags_in_window(0, 0, n)
        # At one offset a burst's start (fedlora_burst) comes before its end (tx_eob): a one-sample burst.
        for t in sorted(tags, key=lambda t: (t.offset, not pmt.eq(t.key, _BURST))):
            if pmt.eq(t.key, _BURST) and pmt.is_dict(t.value):
                self._burst_start(t.value)
            elif pmt.eq(t.key, _EOB) and self._in_payload:
                self._in_payload = False
                self.rounds += 1
                if self.n_rounds and self.rounds >= self.n_rounds:
                    self._ended = True
                    finish(*self._targets)
                    break
        return n


class end_after_messages(gr.basic_block):
    """Message sink ("in") that ends the run after n_rounds messages (e.g. server_rx's aggregates): the blocks
    given to finish_with() are finished. n_rounds = 0: never."""

    def __init__(self, n_rounds=0):
        gr.basic_block.__init__(self, name="end_after_messages", in_sig=None, out_sig=None)
        self.n_rounds = _check_rounds(n_rounds, "end_after_messages")
        self.count = 0
        self._targets = []
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def finish_with(self, *blocks):
        """Blocks to finish when the run ends. Returns self."""
        self._targets.extend(blocks)
        return self

    def _handle(self, msg):
        self.count += 1
        if self.n_rounds and self.count == self.n_rounds:
            finish(*self._targets)


def _numbers(value, name):
    """A list of floats from a list, a number or a string of comma- or space-separated numbers."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, (int, float)):
        items = [value]
    else:
        items = [s for s in re.split(r"[,\s]+", str(value).strip()) if s]
    out = []
    for s in items:
        try:
            out.append(float(s))
        except (TypeError, ValueError):
            raise ValueError("%s: %r is not a number (give one value, or one per device separated by commas)"
                             % (name, s)) from None
    if not out:
        raise ValueError("%s is empty: give one value, or one per device" % name)
    return out


def _addresses(value):
    items = list(value) if isinstance(value, (list, tuple)) else re.split(r"[,\s]+", str(value).strip())
    return [str(a) for a in items if str(a)]


class virtual_channel(gr.hier_block2):
    """The channel emulator's core: K devices' sample streams from ZeroMQ, through the multi-user channel, out.

    Input k is a ZeroMQ PULL source (complex samples with their stream tags) connected to device_addresses[k],
    the PUSH address of device k's device_tx (--radio zmq); it feeds input k of fedlora channel_model, which
    places every burst on the common timeline by its tx_time and sums the devices through their channels. The
    output is the server antenna's stream (single-antenna devices and server, as device_tx and server_rx are).

    n_rounds > 0: after every device's n_rounds-th payload burst has arrived, the ZeroMQ sources end; the channel
    then ends once it has produced the whole timeline up to the end of the last bursts, and so does the rest of the
    flowgraph. 0: runs until stopped.
    """

    def __init__(self, n_devices, device_addresses, sample_rate=15.36e6, snr_db="20", profile="EPA",
                 fading="rayleigh", rician_k=0.0, doppler_hz=0.0, cfo_hz="0", timing_offset="0",
                 noise_variance=0.01, phase_noise_hz=0.0, dc_offset=0j, seed=1, n_rounds=0, timeout_ms=100):
        from gnuradio import fedlora, zeromq

        addresses = _addresses(device_addresses)
        if isinstance(n_devices, bool) or int(n_devices) != n_devices or n_devices < 1:
            raise ValueError("virtual_channel: n_devices = %r must be an integer >= 1" % (n_devices,))
        n_devices = int(n_devices)
        if len(addresses) != n_devices:
            raise ValueError("virtual_channel: %d device address(es) %s for n_devices = %d: give one ZeroMQ "
                             "address per device, in device order, separated by commas"
                             % (len(addresses), addresses, n_devices))
        if len(set(addresses)) != len(addresses):
            raise ValueError("virtual_channel: device addresses %s are not distinct" % (addresses,))
        n_rounds = _check_rounds(n_rounds, "virtual_channel")
        gr.hier_block2.__init__(self, "virtual_channel", gr.io_signature(0, 0, 0),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.channel = fedlora.channel_model(n_devices, 1, 1, float(sample_rate), _numbers(snr_db, "snr_db"),
                                             str(profile), str(fading), float(rician_k), float(doppler_hz),
                                             _numbers(cfo_hz, "cfo_hz"), _numbers(timing_offset, "timing_offset"),
                                             float(noise_variance), float(phase_noise_hz), complex(dc_offset),
                                             int(seed))
        self.sources = []
        self.ends = []
        for k, address in enumerate(addresses):
            src = zeromq.pull_source(gr.sizeof_gr_complex, 1, address, int(timeout_ms), True, -1)
            end = end_after_bursts(n_rounds, device=k, name="device %d (%s)" % (k, address)).finish_with(src)
            self.connect(src, (self.channel, k))
            self.connect(src, end)
            self.sources.append(src)
            self.ends.append(end)
        self.connect(self.channel, self)
        self.addresses = addresses


# ---- the trainer's side of a run -------------------------------------------------------------------------------

def _parser():
    p = argparse.ArgumentParser(
        prog="python3 -m gnuradio.fedlora.virtual_radio",
        description="The trainer's side of a run of the AirComp flowgraphs (device_tx per device, server_rx, "
                    "and the channel emulator or the radios in between): publishes each round's update PDUs "
                    "(one per device) and round dict once every device_tx and server_rx has subscribed, then "
                    "collects the aggregates and quality dicts server_rx publishes. Round r's updates are "
                    "aircomp.make_updates(K, dim, update_seed + r), weighted 1/K. Exit status 0 once all "
                    "aggregates have arrived, 1 on a timeout (naming what is missing) or a bad option.")
    p.add_argument("-K", "--n-devices", type=int, default=2, help="devices K (default %(default)s)")
    p.add_argument("--rounds", type=int, default=1, help="rounds to run (default %(default)s)")
    p.add_argument("--dim", type=int, default=3001, help="update length (default %(default)s)")
    p.add_argument("--update-seed", type=int, default=5, help="seed of round 0's updates (default %(default)s)")
    p.add_argument("--update-address", default="tcp://127.0.0.1:5601",
                   help="ZeroMQ address the update PDUs are published on (binds; device_tx --update-address "
                        "connects; default %(default)s)")
    p.add_argument("--round-address", default="tcp://127.0.0.1:5602",
                   help="ZeroMQ address the round dicts are published on (binds; server_rx --round-address "
                        "connects; default %(default)s)")
    p.add_argument("--result-address", default="tcp://127.0.0.1:5604",
                   help="server_rx's --result-address to subscribe to (connects; default %(default)s)")
    p.add_argument("--out", default="", help="write the aggregates (float32, round after round) to this file")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the subscribers and the aggregates (default %(default)s)")
    return p


def _check_args(a):
    for name in ("n_devices", "rounds", "dim"):
        if getattr(a, name) < 1:
            raise ValueError("--%s = %d must be >= 1" % (name.replace("_", "-"), getattr(a, name)))
    if not a.timeout > 0:
        raise ValueError("--timeout = %g must be > 0" % a.timeout)
    addresses = [a.update_address, a.round_address, a.result_address]
    if len(set(addresses)) != 3:
        raise ValueError("--update-address, --round-address and --result-address must differ, not %s" % addresses)


def _log(line):
    print(line, flush=True)


def drive_rounds(a, log=_log):
    """Runs a.rounds rounds (options as _parser() defines them); returns the aggregates, one array per round."""
    import zmq
    from zmq.utils.monitor import recv_monitor_message
    from . import aircomp

    ctx = zmq.Context()
    try:
        updates = ctx.socket(zmq.XPUB)
        rounds = ctx.socket(zmq.XPUB)
        results = ctx.socket(zmq.SUB)
        for s in (updates, rounds, results):
            s.setsockopt(zmq.LINGER, 1000)
        # Every subscription is reported, also a second one to the same topic: one per subscriber.
        updates.setsockopt(zmq.XPUB_VERBOSE, 1)
        rounds.setsockopt(zmq.XPUB_VERBOSE, 1)
        for s, address, what in ((updates, a.update_address, "--update-address"),
                                 (rounds, a.round_address, "--round-address")):
            try:
                s.bind(address)
            except zmq.ZMQError as e:
                raise RuntimeError("cannot bind %s %s: %s" % (what, address, e)) from None
        monitor = results.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        results.setsockopt(zmq.SUBSCRIBE, b"")
        results.connect(a.result_address)
        deadline = time.monotonic() + a.timeout

        # Readiness: K subscriptions to the updates (one per device_tx), one to the rounds (server_rx), and our
        # subscription to the results is through (handshake done: it precedes every result).
        want = {"device_tx update subscriptions": [updates, a.n_devices], "server_rx round subscription":
                [rounds, 1], "connection to server_rx's results": [monitor, 1]}
        log("virtual_radio: publishing updates on %s, rounds on %s; waiting for %d device_tx and server_rx"
            % (a.update_address, a.round_address, a.n_devices))
        poller = zmq.Poller()
        for s, _ in want.values():
            poller.register(s, zmq.POLLIN)
        while any(n > 0 for _, n in want.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join("%s (%d missing)" % (k, n) for k, (_, n) in want.items() if n > 0)
                raise TimeoutError("no %s after %g s" % (missing, a.timeout))
            ready = dict(poller.poll(left * 1000))
            for key, entry in want.items():
                s = entry[0]
                if s not in ready:
                    continue
                if s is monitor:
                    recv_monitor_message(s)
                    entry[1] -= 1
                elif s.recv()[:1] == b"\x01":
                    entry[1] -= 1

        for r in range(a.rounds):
            ups = aircomp.make_updates(a.n_devices, a.dim, a.update_seed + r)
            pdus, info, scale = aircomp.round_messages(ups, round_id=r)
            for pdu in pdus:
                updates.send(pmt.serialize_str(pdu))
            rounds.send(pmt.serialize_str(info))
            log("virtual_radio: round %d published (%d devices, dim %d, scale %.6g)" % (r, a.n_devices, a.dim, scale))

        aggregates, qualities = {}, {}
        while len(aggregates) < a.rounds or len(qualities) < a.rounds:
            left = deadline - time.monotonic()
            if left <= 0 or not results.poll(left * 1000):
                raise TimeoutError("after %g s: aggregates of rounds %s, quality of rounds %s received, of %d "
                                   "rounds" % (a.timeout, sorted(aggregates), sorted(qualities), a.rounds))
            msg = pmt.deserialize_str(results.recv())
            if pmt.is_pair(msg) and pmt.is_f32vector(pmt.cdr(msg)):
                meta = pmt.to_python(pmt.car(msg))
                aggregates[int(meta["round"])] = aircomp.aggregate_of(msg)
            else:
                d = pmt.to_python(msg)
                if isinstance(d, dict) and "pilot_mse" in d:
                    qualities[int(d.get("round", len(qualities)))] = d
        for r in range(a.rounds):
            q = qualities[r]
            log("virtual_radio: round %d aggregate: %d values; nmse_pilots %.3g, truncated_fraction %.3g, "
                "cfo %.6g, detected_start %d" % (r, aggregates[r].size, q["nmse_pilots"], q["truncated_fraction"],
                                                 q["cfo"], q["detected_start"]))
        return [aggregates[r] for r in range(a.rounds)]
    finally:
        ctx.destroy(linger=1000)


def main(argv=None):
    a = _parser().parse_args(argv)
    try:
        _check_args(a)
        aggregates = drive_rounds(a)
    except (ValueError, RuntimeError, TimeoutError) as e:
        print("virtual_radio: %s" % e, file=sys.stderr)
        return 1
    if a.out:
        np.concatenate(aggregates).astype(np.float32).tofile(a.out)
        _log("virtual_radio: %d aggregate(s) written to %s" % (len(aggregates), a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
