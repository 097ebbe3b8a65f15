#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Blocks of the AirComp teaching flowgraph (flowgraphs/aircomp_teaching.grc, docs/gr-fedlora.md).

aircomp_round_loop runs AirComp rounds one after another, each through the loopback of the gr-fedlora blocks (K
aircomp_transmitter -> channel_model -> aircomp_receiver, as flowgraphs/aircomp_loopback.grc), with the number of
devices, the SNR and the power-control policy a lab course turns on its controls, and publishes what the receiver
measured. Three small converters turn those messages into streams for GNU Radio's QT GUI sinks:

    pdu_to_constellation   f32 PDU -> complex points (x[2i], x[2i+1]): the AirComp codec's packing
    dict_to_vectors        a dict's real vector -> one vector stream per row (e.g. per-device channel gains)
    dict_to_history        numbers of a dict -> the last N values of each as a vector stream (N = 1: a number)

finish_when_drawn (PyQt5) closes a QT flowgraph once its rounds are over and its displays have drawn them, after
saving a screenshot of its window: what makes the flowgraph run headless in a test.
"""

import collections
import math
import sys
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from . import aircomp
from . import fedlora_python as _k

#: Power-control policies of the single-stream receiver (fedlora::phy::power_policy_from_name).
POLICIES = ("truncated", "mmse", "full")
#: What the devices send: "qpsk" (every entry +-1, so each complex symbol is a QPSK point and the sum of K devices
#: lands on a (K + 1) x (K + 1) grid) or "gaussian" (entries N(0, 1), like the updates of training).
ALPHABETS = ("qpsk", "gaussian")
#: Log levels the loop accepts for the blocks of its rounds.
LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "off")


def round_seed(seed, round_id):
    """The channel seed of round round_id of a loop seeded with seed: every round draws a new channel."""
    return int(np.random.SeedSequence([int(seed), int(round_id)]).generate_state(1, np.uint64)[0])


def teaching_updates(n_devices, dim, alphabet, seed, round_id):
    """The updates of one round (float32, one per device): see ALPHABETS."""
    if alphabet not in ALPHABETS:
        raise ValueError(f"teaching_updates: alphabet = '{alphabet}' must be one of {', '.join(ALPHABETS)}")
    rng = np.random.default_rng([int(seed), int(round_id), 1])
    if alphabet == "qpsk":
        return [rng.choice(np.array([-1.0, 1.0], np.float32), dim) for _ in range(n_devices)]
    return [rng.standard_normal(dim).astype(np.float32) for _ in range(n_devices)]


def _weighted_sum(updates, weights):
    truth = np.zeros(updates[0].size, np.float64)
    for w, u in zip(weights, updates):
        truth += w * u.astype(np.float64)
    return truth


class aircomp_round_loop(gr.basic_block):
    """AirComp rounds one after another through the gr-fedlora blocks, for teaching.

    Round r: K devices draw updates (teaching_updates: alphabet, seed, r) and send them with weights 1/K through a
    fresh loopback flowgraph, K aircomp_transmitter -> channel_model (profile, Rayleigh fading, the SNR for every
    device, a CFO of cfo_hz, noise_variance, channel seed round_seed(seed, r)) -> aircomp_receiver (policy, g_th,
    estimator), the frame placed `lead` samples in, with the pilot-to-payload gap receiver_min_gap gives for the
    channel. A fresh flowgraph per round draws a new channel every round and takes the number of devices, the SNR,
    the policy, g_th and the alphabet the setters last set (a lab's controls), from the next round on.

    Message outputs, one message each per round, in this order:
      aggregate  the receiver's aggregate PDU (f32 estimate of sum_k x_k / K)
      reference  the exact sum_k x_k / K (PDU, f32; meta round, dim): what the aggregate estimates
      csi        the receiver's CSI dict (gain [k*M + m] = |h_k[m]|^2, snr_db, device_snr_db, ...)
      quality    the receiver's quality dict plus nmse_measured (|aggregate - reference|^2 / |reference|^2),
                 n_devices, snr_db, policy, g_th, alphabet; nmse_predicted in it is the policy's analytic MSE
                 of the plan on the estimated channels, over the same energy (aircomp_receiver)
    With log_rounds each round prints one line on stdout (round, settings, NMSE measured and analytic in dB,
    truncated fraction). A round whose frame the receiver does not find (SNR too low for the preamble) is
    reported as lost and publishes nothing.

    Rounds start `interval` seconds apart (0: at once; a display shows every round if it is at least the displays'
    update time). After n_rounds rounds (0: no limit) the block is done and says so to its message neighbours
    (GNU Radio's "done" system message), so a flowgraph of it and its displays ends by itself.
    """

    def __init__(self, n_devices=3, snr_db=20.0, policy="truncated", g_th=0.1, alphabet="qpsk", dim=1024,
                 profile="EPA", cfo_hz=3000.0, noise_variance=0.01, estimator="sparse", seed=1, n_rounds=0,
                 interval=0.25, fft_size=256, cp_len=32, n_occupied=200, pilot_spacing=20, sample_rate=15.36e6,
                 pilot_repeats=2, lead=300, round_timeout=10.0, log_rounds=True, log_level="warn"):
        gr.basic_block.__init__(self, name="aircomp_round_loop", in_sig=None, out_sig=None)
        me = "aircomp_round_loop"
        if int(dim) < 2:
            raise ValueError(f"{me}: dim = {dim} must be >= 2 (two values per complex symbol)")
        if int(n_rounds) < 0:
            raise ValueError(f"{me}: n_rounds = {n_rounds} must be >= 0 (0: no limit)")
        if not float(interval) >= 0.0 or not math.isfinite(float(interval)):
            raise ValueError(f"{me}: interval = {interval} must be a finite number of seconds >= 0")
        if not float(round_timeout) > 0.0:
            raise ValueError(f"{me}: round_timeout = {round_timeout} must be > 0 seconds")
        if int(lead) < 0:
            raise ValueError(f"{me}: lead = {lead} must be >= 0 samples")
        if log_level not in LOG_LEVELS:
            raise ValueError(f"{me}: log_level = '{log_level}' must be one of {', '.join(LOG_LEVELS)}")
        self._dim = int(dim)
        self._profile = str(profile)
        self._cfo_hz = float(cfo_hz)
        self._noise_variance = float(noise_variance)
        self._estimator = str(estimator)
        self._seed = int(seed)
        self._n_rounds = int(n_rounds)
        self._interval = float(interval)
        self._round_timeout = float(round_timeout)
        self._lead = int(lead)
        self._log_rounds = bool(log_rounds)
        self._log_level = log_level
        self._frame = dict(fft_size=int(fft_size), cp_len=int(cp_len), n_occupied=int(n_occupied),
                           pilot_spacing=int(pilot_spacing), sample_rate=float(sample_rate),
                           pilot_repeats=int(pilot_repeats), reference_interval=8)
        self._lock = threading.Lock()
        self._settings = {}
        self.set_n_devices(n_devices)
        self.set_snr_db(snr_db)
        self.set_policy(policy)
        self.set_g_th(g_th)
        self.set_alphabet(alphabet)
        # The channel and frame are checked now, with the first round's settings, so that a bad profile or
        # numerology is an error here rather than a lost round later.
        try:
            _k.channel_kernel(**self._channel_params(self._settings, 0))
            _k.kernel_frame_layout(n_devices=self._settings["n_devices"], n_tx=1, gap=0, **self._frame)
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{me}: {e}") from e
        self._stop = threading.Event()
        self._worker = None
        self._rounds = 0
        self._lost = 0
        self._finished = threading.Event()
        for port in ("aggregate", "reference", "csi", "quality"):
            self.message_port_register_out(pmt.intern(port))

    # ---- the controls: they take effect from the next round on -------------------------------------------------

    def set_n_devices(self, n_devices):
        k = int(n_devices)
        if k < 1 or k != n_devices:
            raise ValueError(f"aircomp_round_loop: n_devices = {n_devices} must be an integer >= 1")
        self._set("n_devices", k)

    def set_snr_db(self, snr_db):
        v = float(snr_db)
        if not math.isfinite(v):
            raise ValueError(f"aircomp_round_loop: snr_db = {snr_db} must be a finite number of dB")
        self._set("snr_db", v)

    def set_policy(self, policy):
        if policy not in POLICIES:
            raise ValueError(f"aircomp_round_loop: policy = '{policy}' must be one of {', '.join(POLICIES)}")
        self._set("policy", str(policy))

    def set_g_th(self, g_th):
        v = float(g_th)
        if not (v >= 0.0 and math.isfinite(v)):
            raise ValueError(f"aircomp_round_loop: g_th = {g_th} must be a finite number >= 0")
        self._set("g_th", v)

    def set_alphabet(self, alphabet):
        if alphabet not in ALPHABETS:
            raise ValueError(f"aircomp_round_loop: alphabet = '{alphabet}' must be one of {', '.join(ALPHABETS)}")
        self._set("alphabet", str(alphabet))

    def _set(self, key, value):
        with self._lock:
            self._settings[key] = value

    def settings(self):
        """The settings the next round takes (a copy)."""
        with self._lock:
            return dict(self._settings)

    def rounds(self):
        """Rounds run so far (lost ones included)."""
        return self._rounds

    def rounds_lost(self):
        return self._lost

    def finished(self):
        """True once n_rounds rounds have run and every message is out."""
        return self._finished.is_set()

    # ---- the loop ------------------------------------------------------------------------------------------------

    def start(self):
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name="aircomp_round_loop", daemon=True)
        self._worker.start()
        return True

    def stop(self):
        self._stop.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join()
        return True

    def _run(self):
        r = self._rounds  # a flowgraph started again goes on where it stopped
        while not self._stop.is_set() and (self._n_rounds == 0 or r < self._n_rounds):
            began = time.monotonic()
            s = self.settings()
            try:
                self._publish(r, s, self._run_round(r, s))
            except _RoundLost as e:
                self._lost += 1
                self._print(f"round {r}: {self._describe(s)}: lost, {e}")
            except _Stopped:
                return
            except (RuntimeError, ValueError) as e:
                self._lost += 1
                self._print(f"round {r}: {self._describe(s)}: failed, {e}")
            r += 1
            self._rounds = r
            rest = self._interval - (time.monotonic() - began)
            if rest > 0.0 and self._stop.wait(rest):
                return
        if self._stop.is_set():
            return
        self._finished.set()
        # Done: GNU Radio passes this on to the message neighbours, which finish once they have passed on what
        # they hold.
        self.to_basic_block()._post(pmt.intern("system"), pmt.cons(pmt.intern("done"), pmt.from_long(1)))

    def _channel_params(self, s, round_id):
        return dict(n_devices=s["n_devices"], n_tx=1, n_rx=1, sample_rate=self._frame["sample_rate"],
                    snr_db=[s["snr_db"]], profile=self._profile, fading="rayleigh", cfo_hz=[self._cfo_hz],
                    noise_variance=self._noise_variance, seed=round_seed(self._seed, round_id))

    def _run_round(self, round_id, s):
        """One round through a fresh loopback flowgraph: (updates, receiver messages)."""
        K, dim, fr = s["n_devices"], self._dim, self._frame
        updates = teaching_updates(K, dim, s["alphabet"], self._seed, round_id)
        chan = self._channel_params(s, round_id)
        bulk = _k.channel_kernel(**chan).bulk_delay()
        gap = _k.receiver_min_gap(fr["fft_size"], fr["cp_len"], fr["n_occupied"], fr["pilot_spacing"],
                                  fr["sample_rate"], bulk)
        frame = dict(fr, gap=gap)
        layout = _k.kernel_frame_layout(n_devices=K, n_tx=1, **frame)
        tb = gr.top_block(f"aircomp teaching round {round_id}")
        txs = [_k.aircomp_transmitter(n_devices=K, device=k, n_tx=1, budget=1.0, max_dim=dim,
                                      start_time=self._lead / fr["sample_rate"], n_rounds=1, **frame)
               for k in range(K)]
        ch = _k.channel_model(**chan)
        rx = _k.aircomp_receiver(n_devices=K, n_tx=1, n_rx=1, n_streams=0, budget=[1.0], policy=s["policy"],
                                 g_th=s["g_th"], estimator=self._estimator, max_dim=dim, **frame)
        for blk in txs + [ch, rx]:
            blk.set_log_level(self._log_level)
        col = aircomp.RoundCollector(("aggregate", "quality", "csi"))
        for k, t in enumerate(txs):
            tb.connect((t, 0), (ch, k))
            tb.msg_connect((rx, "plan"), (t, "plan"))
        tb.connect((ch, 0), (rx, 0))
        for port in col.ports:
            tb.msg_connect((rx, port), (col, port))
        aircomp.post_round(txs, rx, updates, round_id=round_id)
        # The devices send their pilot bursts and wait for the plan; the channel cannot run past them before the
        # payloads exist. So a receiver that has read all of them and still searches has found no frame.
        burst = self._lead + layout["payload_offset"]
        deadline = time.monotonic() + self._round_timeout
        tb.start()
        try:
            while not col.done.wait(0.01):
                if self._stop.is_set():
                    raise _Stopped()
                if rx.frames() == 0 and rx.stage() == "searching" and rx.nitems_read(0) >= burst:
                    raise _RoundLost(f"the receiver found no frame in the {burst} samples of the pilot bursts "
                                     "(SNR too low for the preamble?)")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no aggregate within {self._round_timeout:g} s (receiver stage "
                                       f"{rx.stage()}, {rx.nitems_read(0)} samples read)")
        finally:
            tb.stop()
            tb.wait()
        return updates, col.got

    def _publish(self, round_id, s, result):
        updates, got = result
        K = len(updates)
        truth = _weighted_sum(updates, [1.0 / K] * K)
        est = aircomp.aggregate_of(got["aggregate"]).astype(np.float64)
        ref = float(np.sum(truth ** 2))
        nmse = float(np.sum((est - truth) ** 2)) / ref if ref > 0.0 else 0.0
        meta = pmt.make_dict()
        meta = pmt.dict_add(meta, pmt.intern("round"), pmt.from_long(round_id))
        meta = pmt.dict_add(meta, pmt.intern("dim"), pmt.from_long(truth.size))
        reference = pmt.cons(meta, pmt.init_f32vector(truth.size, truth.astype(np.float32).tolist()))
        q = got["quality"]
        for key, val in (("nmse_measured", pmt.from_double(nmse)), ("n_devices", pmt.from_long(K)),
                         ("snr_db", pmt.from_double(s["snr_db"])), ("policy", pmt.intern(s["policy"])),
                         ("g_th", pmt.from_double(s["g_th"])), ("alphabet", pmt.intern(s["alphabet"]))):
            q = pmt.dict_add(q, pmt.intern(key), val)
        self.message_port_pub(pmt.intern("aggregate"), got["aggregate"])
        self.message_port_pub(pmt.intern("reference"), reference)
        if "csi" in got:
            self.message_port_pub(pmt.intern("csi"), got["csi"])
        self.message_port_pub(pmt.intern("quality"), q)
        predicted = pmt.to_double(pmt.dict_ref(q, pmt.intern("nmse_predicted"), pmt.from_double(float("nan"))))
        truncated = pmt.to_double(pmt.dict_ref(q, pmt.intern("truncated_fraction"), pmt.from_double(0.0)))
        self._print(f"round {round_id}: {self._describe(s)}: NMSE measured {_db(nmse):.2f} dB, "
                    f"analytic {_db(predicted):.2f} dB, truncated {100.0 * truncated:.1f} %")

    @staticmethod
    def _describe(s):
        return (f"K={s['n_devices']} SNR={s['snr_db']:.1f} dB policy={s['policy']} g_th={s['g_th']:.2f} "
                f"alphabet={s['alphabet']}")

    def _print(self, line):
        if self._log_rounds:
            print(line, flush=True)


class _RoundLost(Exception):
    pass


class _Stopped(Exception):
    pass


def _db(x):
    return 10.0 * math.log10(x) if x > 0.0 else float("-inf")


# ---- message -> stream converters for the QT GUI sinks ----------------------------------------------------------

class _message_source(gr.sync_block):
    """A source whose items come from messages on port "in": each message gives one frame (an array per output,
    the same number of items each), written out in arrival order. Holds at most max_frames frames (the oldest go
    first). Finishes, after writing what it holds, when GNU Radio's "done" system message arrives."""

    def __init__(self, name, out_sig, max_frames=64):
        gr.sync_block.__init__(self, name=name, in_sig=None, out_sig=out_sig)
        self._frames = collections.deque()
        self._offset = 0
        self._max_frames = int(max_frames)
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._on_message)

    def _frame(self, msg):
        raise NotImplementedError

    def _on_message(self, msg):
        try:
            frame = self._frame(msg)
        except (ValueError, TypeError) as e:
            gr.logger(self.name()).error(f"message dropped: {e}")
            return
        if frame is None:
            return
        if len(self._frames) == self._max_frames:
            self._frames.popleft()
            self._offset = 0
        self._frames.append(frame)

    def work(self, input_items, output_items):
        n_out = len(output_items[0])
        done = 0
        while self._frames and done < n_out:
            frame = self._frames[0]
            n = min(len(frame[0]) - self._offset, n_out - done)
            for out, part in zip(output_items, frame):
                out[done:done + n] = part[self._offset:self._offset + n]
            done += n
            self._offset += n
            if self._offset == len(frame[0]):
                self._frames.popleft()
                self._offset = 0
        return done


def _real_vector(value, what):
    if not (pmt.is_f32vector(value) or pmt.is_f64vector(value)):
        raise ValueError(f"{what} is not an f32 or f64 vector")
    return np.asarray(pmt.to_python(value), dtype=np.float64)


def _to_db(x):
    """10 log10(x); NaN where x <= 0 or not finite."""
    out = np.full(x.shape, np.nan)
    ok = np.isfinite(x) & (x > 0.0)
    out[ok] = 10.0 * np.log10(x[ok])
    return out


class pdu_to_constellation(_message_source):
    """PDU of a real vector x (f32 or f64) -> complex points x[2i] + j x[2i+1] (an odd length's last value with
    imaginary part 0): the AirComp codec's packing, so an aggregate PDU becomes the received superposition's
    constellation in the units of the sum. One point per pair, all of a PDU's points in a row."""

    def __init__(self):
        _message_source.__init__(self, "pdu_to_constellation", [np.complex64])

    def _frame(self, msg):
        if not pmt.is_pair(msg):
            raise ValueError("the message is not a PDU (meta . vector)")
        x = _real_vector(pmt.cdr(msg), "the PDU's data")
        if x.size == 0:
            return None
        if x.size % 2:
            x = np.append(x, 0.0)
        return [(x[0::2] + 1j * x[1::2]).astype(np.complex64)]


def _check_copies(me, copies):
    if int(copies) < 1 or int(copies) != copies:
        raise ValueError(f"{me}: copies = {copies} must be an integer >= 1")
    return int(copies)


class dict_to_vectors(_message_source):
    """A dict's real vector under `key`, read as rows of vlen values (row-major, e.g. the CSI's gain [k*M + m]),
    -> output r carries row r as a vector, `copies` times per message. With db, 10 log10 of every value. Rows
    the vector does not have (fewer devices this round), and values <= 0 in dB, are `fill`. A vector whose
    length is not a multiple of vlen, or has more than n_outputs rows, is an error (logged; the message is
    dropped).

    For GNU Radio 3.10's QT vector sink: it draws, of the vectors one work() call gives it, the one after the
    first (vector_sink_f reads its input at + vlen), so copies = 2 makes it draw the vector itself; and it
    averages every vector with the previous one, so a NaN stays NaN there for good: give a fill below the
    plot's range instead (the point is then drawn off the plot)."""

    def __init__(self, key="gain", n_outputs=4, vlen=200, db=True, copies=2, fill=float("nan")):
        if int(n_outputs) < 1 or int(vlen) < 1:
            raise ValueError(f"dict_to_vectors: n_outputs = {n_outputs} and vlen = {vlen} must be >= 1")
        self._key = pmt.intern(str(key))
        self._name = str(key)
        self._rows = int(n_outputs)
        self._vlen = int(vlen)
        self._db = bool(db)
        self._copies = _check_copies("dict_to_vectors", copies)
        self._fill = float(fill)
        _message_source.__init__(self, "dict_to_vectors", [(np.float32, self._vlen)] * self._rows)

    def _frame(self, msg):
        if not pmt.is_dict(msg):
            raise ValueError("the message is not a dict")
        if not pmt.dict_has_key(msg, self._key):
            raise ValueError(f"the dict has no '{self._name}'")
        x = _real_vector(pmt.dict_ref(msg, self._key, pmt.PMT_NIL), f"'{self._name}'")
        if x.size % self._vlen or x.size // self._vlen > self._rows:
            raise ValueError(f"'{self._name}' has {x.size} values: not up to {self._rows} rows of {self._vlen}")
        rows = np.full((self._rows, self._vlen), np.nan)
        rows[:x.size // self._vlen] = x.reshape(-1, self._vlen)
        if self._db:
            rows = _to_db(rows)
        rows[np.isnan(rows)] = self._fill
        rows = rows.astype(np.float32)
        return [np.repeat(rows[r:r + 1], self._copies, axis=0) for r in range(self._rows)]


class dict_to_history(_message_source):
    """Numbers of a dict under `keys` -> output i carries, per message, the last `length` values of keys[i],
    oldest first and the newest last, as one vector written `copies` times; length 1 gives a plain float stream
    (the newest value, `copies` times). With db, 10 log10 of the values. Places before the first messages, a
    missing key, a value that is not a real number, and values <= 0 in dB, are `fill`.

    copies and fill: 2 and a value below the plot's range for a QT vector sink (see dict_to_vectors); a QT
    number sink takes its input in multiples of the SIMD alignment (16 floats with AVX-512) and shows the first
    value of each: give it copies = 16."""

    def __init__(self, keys=("nmse_measured", "nmse_predicted"), length=50, db=True, copies=2, fill=float("nan")):
        keys = [keys] if isinstance(keys, str) else list(keys)
        if not keys:
            raise ValueError("dict_to_history: keys is empty")
        if int(length) < 1:
            raise ValueError(f"dict_to_history: length = {length} must be >= 1")
        self._keys = [pmt.intern(str(k)) for k in keys]
        self._length = int(length)
        self._db = bool(db)
        self._copies = _check_copies("dict_to_history", copies)
        self._fill = float(fill)
        self._history = np.full((len(keys), self._length), self._fill)
        sig = np.float32 if self._length == 1 else (np.float32, self._length)
        _message_source.__init__(self, "dict_to_history", [sig] * len(keys))

    def _frame(self, msg):
        if not pmt.is_dict(msg):
            raise ValueError("the message is not a dict")
        values = np.full(len(self._keys), np.nan)
        for i, key in enumerate(self._keys):
            v = pmt.dict_ref(msg, key, pmt.PMT_NIL)
            if pmt.is_real(v) or pmt.is_integer(v) or pmt.is_uint64(v):
                values[i] = pmt.to_double(v) if pmt.is_real(v) else float(pmt.to_python(v))
        if self._db:
            values = _to_db(values)
        values[np.isnan(values)] = self._fill
        self._history = np.roll(self._history, -1, axis=1)
        self._history[:, -1] = values
        h = self._history.astype(np.float32)
        if self._length == 1:
            return [np.repeat(h[i], self._copies) for i in range(len(self._keys))]
        return [np.repeat(h[i:i + 1], self._copies, axis=0) for i in range(len(self._keys))]


# ---- headless runs -----------------------------------------------------------------------------------------------

def finish_when_drawn(window, loop, screenshot="", feeds=(), size=None, poll_ms=20):
    """Closes a QT GUI flowgraph once its rounds are over and drawn, after saving a screenshot of its window.

    window: the flowgraph's top-level QWidget (a GRC QT flowgraph is one); loop: its aircomp_round_loop, made with
    n_rounds > 0; feeds: (producer, sink, first_input) triples, a converter and the QT sink it feeds, output i of
    the producer connected to input first_input + i of the sink. When the loop has finished and every sink has
    read every item its producers wrote (checked on the GUI thread every poll_ms), the sinks have posted their
    last updates to the GUI; those are processed, the window is grabbed (QWidget.grab()) and saved as PNG to
    `screenshot` (if given; one line on stdout names it), and the window is closed, which stops the flowgraph.
    size: (width, height) the window is resized to first, so that the screenshot's size does not depend on the
    geometry a previous run saved.
    """
    from PyQt5 import Qt

    links = []
    for producer, sink, first in feeds:
        n = producer.output_signature().max_streams()
        if n < 1:
            raise ValueError(f"finish_when_drawn: {producer.name()} has no fixed number of outputs")
        links += [(producer, i, sink, first + i) for i in range(n)]

    def drawn():
        return loop.finished() and all(sink.nitems_read(j) >= producer.nitems_written(i)
                                       for producer, i, sink, j in links)

    def check():
        if not drawn():
            return
        timer.stop()
        Qt.QCoreApplication.sendPostedEvents()
        if screenshot:
            image = window.grab()
            if not image.save(screenshot, "PNG"):
                print(f"finish_when_drawn: could not write the screenshot to {screenshot}", file=sys.stderr,
                      flush=True)
            else:
                print(f"screenshot: {screenshot} ({image.width()}x{image.height()})", flush=True)
        window.close()

    if size is not None:
        window.resize(int(size[0]), int(size[1]))
    timer = Qt.QTimer(window)
    timer.timeout.connect(check)
    timer.start(int(poll_ms))
    window._fedlora_finish_timer = timer  # keeps the timer alive with the window
    return timer
