#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""The radio process of the flowgraph transport (`fedlora sim --transport flowgraph`, docs/sim.md).

Serves AirComp rounds over ZeroMQ on the loopback interface, one request per round, in the project's wire format
(docs/wire.md, "Radio service"): the request (UPDATE) carries every device's payload, the aggregation weights and
the round's physical layer and channel; the process builds the AirComp loopback flowgraph for it (K
aircomp_transmitter chains -> channel_model -> aircomp_receiver, as flowgraphs/aircomp_loopback.grc), runs it and
answers with the aggregate and what the receiver measured (AGGREGATE), or why there is none (ERROR). Optional
tensors give the virtual radios timing offsets (channel_model's timing_offset) and a calibration file with each
device's serial: its transmitter then applies that radio's correction (aircomp_transmitter's calibration), and
the gap grows by the correctors' lead and tail, as aircomp_round_waveform's does with the same corrections.

    /usr/bin/python3 -m gnuradio.fedlora.radio_server --bind tcp://127.0.0.1:5600

The first line on stdout is the bound endpoint ("fedlora-radio: listening on tcp://127.0.0.1:PORT"); the process
exits on BYE, when --watch-stdin is given and its standard input reaches end of file (the parent is gone), or
after --idle-timeout seconds without a request. FFTs are planned with FFTW_ESTIMATE, as the experiment plans them,
so the aggregate equals fedlora_phy's aircomp_round_waveform for the same inputs and channel seed, bit for bit.
"""

import argparse
import os
import sys
import time

import numpy as np
import pmt
import zmq
from gnuradio import gr

from . import aircomp
from . import fedlora_python as _k

U64_MASK = (1 << 64) - 1


class RequestError(Exception):
    """A request the radio cannot serve (names the tensor and the problem)."""


class RoundLost(Exception):
    """The receiver found no frame: the round's aggregate is lost (the experiment goes on)."""


def log(text):
    print(f"fedlora-radio: {text}", file=sys.stderr, flush=True)


def text_tensor(s):
    return np.frombuffer(s.encode("utf-8"), dtype=np.uint8)


class Request:
    """The tensors of an UPDATE request, each checked for dtype and shape when read."""

    def __init__(self, tensors):
        self.t = tensors

    def get(self, name, dtype, shape=None, default=None):
        a = self.t.get(name)
        if a is None:
            if default is not None:
                return default
            raise RequestError(f"the request lacks tensor '{name}'")
        if a.dtype != np.dtype(dtype):
            raise RequestError(f"tensor '{name}' is {a.dtype}, expected {np.dtype(dtype)}")
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise RequestError(f"tensor '{name}' has shape {list(a.shape)}, expected {list(shape)}")
        return a

    def integer(self, name, lo, hi, default=None):
        v = self.get(name, np.int64, (), None if default is None else np.int64(default))
        v = int(v)
        if not lo <= v <= hi:
            raise RequestError(f"tensor '{name}' = {v} is outside [{lo}, {hi}]")
        return v

    def real(self, name, default=None):
        v = float(self.get(name, np.float64, (), None if default is None else np.float64(default)))
        if not np.isfinite(v):
            raise RequestError(f"tensor '{name}' = {v} is not finite")
        return v

    def text(self, name):
        return bytes(self.get(name, np.uint8)).decode("utf-8", errors="replace")

    def reals(self, name, n):
        v = self.get(name, np.float64, (n,))
        if not np.all(np.isfinite(v)):
            raise RequestError(f"tensor '{name}' holds a value that is not finite")
        return [float(x) for x in v]


def run_round(req, round_id, round_timeout):
    """Runs one round through a fresh loopback flowgraph; returns the reply's tensors (dict name -> array)."""
    payloads = req.get("payloads", np.float32)
    if payloads.ndim != 2 or payloads.shape[0] < 1 or payloads.shape[1] < 1:
        raise RequestError(f"tensor 'payloads' has shape {list(payloads.shape)}, expected [devices, length]")
    if not np.all(np.isfinite(payloads)):
        k = int(np.argwhere(~np.isfinite(payloads))[0][0])
        raise RequestError(f"the payload of device {k} holds a value that is not finite")
    n_dev, dim = (int(x) for x in payloads.shape)
    weights = req.reals("weights", n_dev)
    fft = req.integer("fft", 16, 65536)
    cp = req.integer("cp", 0, fft - 1)
    occupied = req.integer("occupied", 2, fft - 1)
    pilot_spacing = req.integer("pilot_spacing", 1, 65536)
    pilot_repeats = req.integer("pilot_repeats", 1, 64)
    reference_interval = req.integer("reference_interval", 1, 1 << 20, default=8)
    fs = req.real("sample_rate")
    n_tx = req.integer("n_tx", 1, 64)
    n_rx = req.integer("n_rx", 1, 64)
    n_streams = req.integer("n_streams", 0, 64)
    lead = req.integer("lead", 0, 1 << 30)
    budget = req.reals("budget", n_dev)
    policy = req.text("policy")
    g_th = req.real("g_th", default=0.1)
    estimator = req.text("estimator")
    timing_backoff = req.integer("timing_backoff", -1, 65536, default=-1)
    mimo_iterations = req.integer("mimo_iterations", 1, 1 << 20, default=60)
    snr_db = req.reals("snr_db", n_dev)
    cfo_hz = req.reals("cfo_hz", n_dev)
    profile = req.text("profile")
    doppler_hz = req.real("doppler_hz", default=0.0)
    phase_noise_hz = req.real("phase_noise_hz", default=0.0)
    noise_variance = req.real("noise_variance")
    seed = int(req.get("seed", np.int64, ())) & U64_MASK
    support = [int(i) for i in req.get("support", np.int64, default=np.zeros(0, np.int64))]
    # Optional: the virtual radios' timing offsets, and the calibration file whose corrections their transmitters
    # apply (one serial per device, newline-separated; the lookups at `frequency`).
    timing = req.reals("timing_offset", n_dev) if "timing_offset" in req.t else None
    calibration = req.text("calibration") if "calibration" in req.t else ""
    serials, freq = [], 0.0
    if calibration:
        serials = req.text("serials").split("\n")
        if len(serials) != n_dev:
            raise RequestError(f"tensor 'serials' names {len(serials)} radios for {n_dev} devices")
        freq = req.real("frequency")

    updates = [np.ascontiguousarray(payloads[k]) for k in range(n_dev)]
    if all(_k.kernel_update_rms(u, support) == 0.0 for u in updates):
        raise RequestError("every payload is zero: nothing to send")

    chan = dict(n_devices=n_dev, n_tx=n_tx, n_rx=n_rx, sample_rate=fs, snr_db=snr_db, profile=profile,
                fading="rayleigh", doppler_hz=doppler_hz, cfo_hz=cfo_hz, noise_variance=noise_variance,
                phase_noise_hz=phase_noise_hz, seed=seed)
    if timing is not None:
        chan["timing_offset"] = timing
    try:
        bulk = _k.channel_kernel(**chan).bulk_delay()
        # As aircomp_round_waveform: the pilot-to-payload gap the receiver always needs, no more; calibrated
        # transmitters send their bursts early by their correctors' lead and need room for lead + tail.
        span_lead = span_tail = 0
        for s in serials:
            c = _k.calibration_correction(calibration, s, 0, freq, fs)
            span_lead, span_tail = max(span_lead, c["lead"]), max(span_tail, c["tail"])
        gap = _k.receiver_min_gap(fft, cp, occupied, pilot_spacing, fs, bulk) + span_lead + span_tail
        frame = dict(fft_size=fft, cp_len=cp, n_occupied=occupied, pilot_spacing=pilot_spacing, sample_rate=fs,
                     gap=gap, pilot_repeats=pilot_repeats, reference_interval=reference_interval)
        layout = _k.kernel_frame_layout(n_devices=n_dev, n_tx=n_tx, **frame)
        tb = gr.top_block(f"fedlora radio round {round_id}")
        cal = [dict(calibration=calibration, serial=s, channel=0, frequency=freq) for s in serials] or \
            [{}] * n_dev
        txs = [_k.aircomp_transmitter(n_devices=n_dev, device=k, n_tx=n_tx, budget=budget[k], max_dim=dim,
                                      start_time=lead / fs, n_rounds=1, **frame, **cal[k]) for k in range(n_dev)]
        ch = _k.channel_model(**chan)
        rx = _k.aircomp_receiver(n_devices=n_dev, n_tx=n_tx, n_rx=n_rx, n_streams=n_streams, budget=budget,
                                 policy=policy, g_th=g_th, estimator=estimator, timing_backoff=timing_backoff,
                                 mimo_iterations=mimo_iterations, max_dim=dim, **frame)
    except (ValueError, RuntimeError) as e:  # bad parameters; a calibration file's lookups (serial, frequency)
        raise RequestError(str(e)) from e
    col = aircomp.RoundCollector()
    for k, t in enumerate(txs):
        for a in range(n_tx):
            tb.connect((t, a), (ch, k * n_tx + a))
        tb.msg_connect((rx, "plan"), (t, "plan"))
    for r in range(n_rx):
        tb.connect((ch, r), (rx, r))
    for port in col.ports:
        tb.msg_connect((rx, port), (col, port))
    aircomp.post_round(txs, rx, updates, weights=weights, round_id=round_id, support=support or None)

    # The devices send their pilot bursts (lead + payload offset samples on the channel's timeline, less the
    # earliest calibrated advance) and wait for the plan; the channel cannot run past them before the payloads
    # exist. So a receiver that has read all of it and still searches has found no frame: nothing more will come.
    burst = lead + layout["payload_offset"] - span_lead
    deadline = time.monotonic() + round_timeout
    lost = stalled = None
    tb.start()
    try:
        while not col.done.wait(0.01):
            if rx.frames() == 0 and rx.stage() == "searching" and rx.nitems_read(0) >= burst:
                lost = (f"the receiver found no frame in the {burst} samples of the pilot bursts "
                        "(SNR too low for the preamble?)")
                break
            if time.monotonic() > deadline:
                stalled = (f"the flowgraph made no aggregate within {round_timeout:g} s (receiver stage "
                           f"{rx.stage()}, {rx.nitems_read(0)} samples read)")
                break
    finally:
        tb.stop()
        tb.wait()
    if lost:
        raise RoundLost(lost)
    if stalled:
        raise RuntimeError(stalled)

    est = aircomp.aggregate_of(col.got["aggregate"])
    q = pmt.to_python(col.got["quality"])
    csi = pmt.to_python(col.got["csi"])
    plan = pmt.to_python(col.got["plan"])
    n_ofdm = int(plan["n_ofdm"])
    frame_samples = layout["payload_offset"] + n_ofdm * layout["symbol_len"]
    truth = np.zeros(dim, np.float64)
    for w, u in zip(weights, updates):
        truth += w * u.astype(np.float64)
    idx = np.asarray(support, dtype=np.int64) if support else slice(None)
    ref = float(np.sum(truth[idx] ** 2))
    err = float(np.sum((est[idx].astype(np.float64) - truth[idx]) ** 2))
    return {
        "aggregate": est.astype(np.float32),
        "csi_gain": np.asarray(csi["gain"], np.float64).reshape(n_dev, occupied),
        "device_snr_db": np.asarray(csi["device_snr_db"], np.float64),
        "error_var": np.asarray(csi["error_var"], np.float64),
        "noise_var": np.float64(csi["noise_var"]),
        "ofdm_symbols": np.int64(n_ofdm),
        "channel_uses": np.int64(n_ofdm * occupied),
        "frame_samples": np.int64(frame_samples),
        "airtime_s": np.float64(frame_samples / fs),
        "truncated_fraction": np.float64(plan["truncated_fraction"]),
        "nmse_measured": np.float64(err / ref if ref > 0.0 else 0.0),
        "nmse_predicted": np.float64(q["nmse_predicted"]),
        "nmse_pilots": np.float64(q["nmse_pilots"]),
        "pilot_mse": np.float64(q["pilot_mse"]),
        "cfo": np.float64(q["cfo"]),
        "detected_start": np.int64(q["detected_start"]),
        "mean_cpe_rad": np.float64(q["mean_cpe_rad"]),
        "skipped_detections": np.int64(q["skipped_detections"]),
        "gap": np.int64(gap),
    }


def handle(raw, args):
    """One request frame -> (reply frame, keep serving)."""
    try:
        msg = _k.wire_decode(raw, args.max_message_bytes)
    except ValueError as e:
        log(f"dropped a malformed request: {e}")
        return _k.wire_encode("ERROR", {"reason": text_tensor(f"malformed request: {e}"),
                                        "code": text_tensor("bad_request")}), True
    head = dict(run_id=msg["run_id"], round=msg["round"], client_id=msg["client_id"], seq=msg["seq"])
    kind = msg["type"]
    if kind == "BYE":
        return _k.wire_encode("BYE", {}, **head), False
    if kind == "HEARTBEAT":
        return _k.wire_encode("HEARTBEAT", {}, **head), True
    if kind != "UPDATE":
        return _k.wire_encode("ERROR", {"reason": text_tensor(f"unexpected {kind} (the radio serves UPDATE, "
                                                              "HEARTBEAT and BYE)"),
                                        "code": text_tensor("bad_request")}, **head), True

    def error(code, why):
        return _k.wire_encode("ERROR", {"reason": text_tensor(why), "code": text_tensor(code)}, **head), True

    t0 = time.monotonic()
    try:
        out = run_round(Request(msg["tensors"]), msg["round"], args.round_timeout)
    except RequestError as e:
        log(f"round {msg['round']}: refused the request: {e}")
        return error("bad_request", str(e))
    except RoundLost as e:
        log(f"round {msg['round']}: {e}")
        return error("no_frame", str(e))
    except Exception as e:  # noqa: BLE001 - the parent gets the reason instead of a dead radio
        log(f"round {msg['round']}: failed: {type(e).__name__}: {e}")
        return error("failed", f"{type(e).__name__}: {e}")
    if args.verbose:
        log(f"round {msg['round']}: {msg['tensors']['payloads'].shape[0]} devices, "
            f"{out['ofdm_symbols']} OFDM symbols, NMSE {out['nmse_measured']:.3g}, "
            f"{time.monotonic() - t0:.2f} s")
    return _k.wire_encode("AGGREGATE", out, **head), True


def serve(sock, args):
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    watch = sys.stdin.fileno() if args.watch_stdin else None
    if watch is not None:
        poller.register(watch, zmq.POLLIN)
    last = time.monotonic()
    while True:
        timeout = None
        if args.idle_timeout > 0:
            timeout = max(0.0, last + args.idle_timeout - time.monotonic()) * 1000.0
        events = dict(poller.poll(timeout))
        if not events:
            log(f"no request for {args.idle_timeout:g} s; exiting")
            return 0
        if watch is not None and watch in events:
            if not os.read(watch, 4096):
                log("the parent process is gone (end of standard input); exiting")
                return 0
        if sock in events:
            reply, more = handle(sock.recv(), args)
            sock.send(reply)
            last = time.monotonic()
            if not more:
                return 0


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python3 -m gnuradio.fedlora.radio_server",
        description="Serve AirComp rounds through the gr-fedlora loopback flowgraph over ZeroMQ (the radio process "
                    "of `fedlora sim --transport flowgraph`).")
    p.add_argument("--bind", default="tcp://127.0.0.1:*",
                   help="endpoint to listen on, loopback only (port * picks a free one); default %(default)s")
    p.add_argument("--watch-stdin", action="store_true",
                   help="exit when standard input reaches end of file (the parent holds its other end)")
    p.add_argument("--idle-timeout", type=float, default=0.0,
                   help="exit after this many seconds without a request (0: never)")
    p.add_argument("--round-timeout", type=float, default=300.0,
                   help="give up on a round whose flowgraph has not finished after this many seconds")
    p.add_argument("--max-message-bytes", type=int, default=512 << 20, help="largest request accepted")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per round on stderr")
    p.add_argument("--log-level", default="warn", choices=["trace", "debug", "info", "warn", "error", "off"],
                   help="GNU Radio's log level for the blocks (default %(default)s)")
    args = p.parse_args(argv)
    if not _k.wire_is_loopback(args.bind):
        p.error(f"--bind {args.bind}: the radio serves the loopback interface only (tcp://127.0.0.1:PORT, "
                "ipc://, inproc://); it has no transport security")
    if args.idle_timeout < 0 or args.round_timeout <= 0:
        p.error("--idle-timeout must be >= 0 and --round-timeout > 0")
    gr.logging().set_default_level(getattr(gr.log_levels, args.log_level))
    # Bit-identical FFTs: the plans the experiment (and aircomp_round_waveform) use.
    _k.set_fft_planning("estimate")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.MAXMSGSIZE, args.max_message_bytes)
    try:
        sock.bind(args.bind)
    except zmq.ZMQError as e:
        p.error(f"--bind {args.bind}: {e}")
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    print(f"fedlora-radio: listening on {endpoint}", flush=True)
    # Anything printed from now on goes to stderr: stdout told the parent the endpoint and is left alone.
    sys.stdout = sys.stderr
    try:
        return serve(sock, args)
    except KeyboardInterrupt:
        return 130
    finally:
        sock.close()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
