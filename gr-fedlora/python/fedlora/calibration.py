#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""The alignment procedure as GNU Radio blocks (docs/hardware.md; docs/math.md, "Calibration").

calibration_bursts    a device's side: its calibration burst (fedlora::phy::CalibrationTransmitter: its own slot
                      of the common burst, a Schmidl & Cox preamble and R Zadoff-Chu pilot symbols), sent every
                      `period` seconds from `start_time` as a UHD burst (tx_sob, tx_time, tx_eob)
alignment_estimator   the server's side: cuts each burst's window out of the received stream (sample indices on
                      the common timeline: `stream_start`, or the source's rx_time tags) and runs
                      fedlora::phy::AlignmentEstimator on it, which measures every device's link gain, timing
                      offset, phase and CFO with their predicted standard deviations; posts them as a dict on its
                      "alignment" port, logs them, and writes them into a calibration file

Both are thin: the DSP is the fedlora_phy kernels (calibration_burst_kernel, alignment_kernel), the same code
`fedlora calibrate` runs. flowgraphs/calibration_burst_tx.grc and flowgraphs/calibration_alignment.grc use them.
"""

import math

import numpy as np
import pmt
from gnuradio import gr

from . import fedlora_python as _k

_TX_SOB = pmt.intern("tx_sob")
_TX_EOB = pmt.intern("tx_eob")
_TX_TIME = pmt.intern("tx_time")
_RX_TIME = pmt.intern("rx_time")
_BURST = pmt.intern("fedlora_calibration")
_PORT = pmt.intern("alignment")

REFERENCES = ("internal", "external", "gpsdo")


def tx_time(sample, sample_rate):
    """UHD's (full seconds, fractional seconds) tuple of timeline sample `sample` (as burst_time.h makes it)."""
    full = math.floor(sample / sample_rate)
    frac = (sample - full * sample_rate) / sample_rate
    if frac < 0.0:
        full -= 1
        frac += 1.0
    return pmt.make_tuple(pmt.from_uint64(int(full)), pmt.from_double(frac))


def time_to_sample(t, sample_rate):
    """Timeline sample of an rx_time / tx_time value (tuple of full and fractional seconds, or seconds)."""
    if pmt.is_tuple(t) and pmt.length(t) == 2:
        a, b = pmt.tuple_ref(t, 0), pmt.tuple_ref(t, 1)
        full = pmt.to_uint64(a) if pmt.is_uint64(a) else pmt.to_double(a)
        return int(round(full * sample_rate + pmt.to_double(b) * sample_rate))
    return int(round(pmt.to_double(t) * sample_rate))


def _burst_args(n_devices, pilot_repeats, guard, fft_size, cp_len, n_occupied, sample_rate):
    return dict(n_devices=int(n_devices), pilot_repeats=int(pilot_repeats), guard=int(guard),
                fft_size=int(fft_size), cp_len=int(cp_len), n_occupied=int(n_occupied),
                sample_rate=float(sample_rate))


def _schedule(start_time, period, n_bursts, sample_rate, length, what):
    if not start_time >= 0.0:
        raise ValueError(f"{what}: start_time = {start_time} s must be >= 0")
    if n_bursts < 0:
        raise ValueError(f"{what}: n_bursts = {n_bursts} must be >= 0 (0: no limit)")
    first = int(round(start_time * sample_rate))
    step = int(round(period * sample_rate))
    if step < length:
        raise ValueError(f"{what}: period = {period} s ({step} samples) is shorter than one calibration burst "
                         f"({length} samples = {length / sample_rate:.6g} s)")
    return first, step


def burst_padding(n_devices=2, pilot_repeats=16, guard=0, fft_size=256, cp_len=32, n_occupied=200,
                  sample_rate=15.36e6):
    """Zeros a device appends to its calibration burst: the server's synchroniser latency plus two symbols, so
    that the received stream reaches past the last slot even when nothing follows the burst."""
    est = _k.alignment_kernel(**_burst_args(n_devices, pilot_repeats, guard, fft_size, cp_len, n_occupied,
                                            sample_rate))
    return est.tail + 2 * (int(fft_size) + int(cp_len))


class calibration_bursts(gr.basic_block):
    """Device `device`'s calibration burst, sent every `period` seconds from `start_time` (n_bursts of them; 0: no
    limit), each tagged tx_sob and tx_time on its first sample, tx_eob on its last, and fedlora_calibration (dict:
    burst, device). Every device of the procedure runs one with the same burst parameters and schedule; their
    slots follow each other inside the burst (the others are silent in each device's slot). The samples are at
    per-carrier power `power` (phy units: 1 is the reference digital level of the calibration file)."""

    def __init__(self, n_devices=2, device=0, pilot_repeats=16, guard=0, fft_size=256, cp_len=32, n_occupied=200,
                 sample_rate=15.36e6, power=1.0, start_time=0.5, period=0.1, n_bursts=1):
        gr.basic_block.__init__(self, name="fedlora_calibration_bursts", in_sig=None, out_sig=[np.complex64])
        args = _burst_args(n_devices, pilot_repeats, guard, fft_size, cp_len, n_occupied, sample_rate)
        if not 0 <= int(device) < int(n_devices):
            raise ValueError(f"calibration_bursts: device = {device} must be in [0, n_devices = {n_devices})")
        kernel = _k.calibration_burst_kernel(device=int(device), power=float(power), **args)
        burst = kernel.burst()
        self._burst = np.concatenate([burst, np.zeros(burst_padding(**args), np.complex64)]).astype(np.complex64)
        self._fs = float(sample_rate)
        self._device = int(device)
        self._n_bursts = int(n_bursts)
        self._first, self._step = _schedule(float(start_time), float(period), self._n_bursts, self._fs,
                                            self._burst.size, "calibration_bursts")
        self._pos = 0
        self._sent = 0
        self.set_tag_propagation_policy(gr.TPP_DONT)

    def bursts_sent(self):
        return self._sent

    def burst_length(self):
        """Samples per burst, the trailing zeros included."""
        return int(self._burst.size)

    def general_work(self, input_items, output_items):
        if self._n_bursts and self._sent >= self._n_bursts:
            return -1  # WORK_DONE
        out = output_items[0]
        n = min(len(out), self._burst.size - self._pos)
        out[:n] = self._burst[self._pos:self._pos + n]
        first = self.nitems_written(0)
        if self._pos == 0:
            start = self._first + self._sent * self._step
            self.add_item_tag(0, first, _TX_SOB, pmt.PMT_T)
            self.add_item_tag(0, first, _TX_TIME, tx_time(start, self._fs))
            info = pmt.make_dict()
            info = pmt.dict_add(info, pmt.intern("burst"), pmt.from_long(self._sent))
            info = pmt.dict_add(info, pmt.intern("device"), pmt.from_long(self._device))
            self.add_item_tag(0, first, _BURST, info)
        self._pos += n
        if self._pos == self._burst.size:
            self.add_item_tag(0, first + n - 1, _TX_EOB, pmt.PMT_T)
            self._pos = 0
            self._sent += 1
        return n


def _names(serials, n_devices):
    if isinstance(serials, str):
        serials = [s.strip() for s in serials.split(",") if s.strip()]
    serials = [str(s) for s in serials]
    if serials and len(serials) != n_devices:
        raise ValueError(f"alignment_estimator: {len(serials)} serials for {n_devices} devices (give one per "
                         f"device, in slot order)")
    return serials


def _per_device(v, n_devices, name):
    v = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
    if len(v) == 1:
        v = v * n_devices
    if len(v) != n_devices:
        raise ValueError(f"alignment_estimator: {name} has {len(v)} values for {n_devices} devices")
    return [float(x) for x in v]


class alignment_estimator(gr.sync_block):
    """The server's alignment measurement: the calibration bursts of n_devices devices, scheduled at start_time +
    i * period (i < n_bursts; 0: no limit), are cut out of the received stream and measured with
    fedlora::phy::AlignmentEstimator. Sample 0 of the stream is at stream_start (seconds) on the common timeline,
    unless an rx_time tag (a USRP source's) says otherwise. system_delay (samples) is the latency common to every
    device (the virtual radio's channel bulk delay; on hardware a loopback measurement, or 0 with a timing
    reference device): timing offsets are reported beyond it.

    Per burst: a dict on the "alignment" port (burst, burst_start, and devices: one dict per device with gain_db,
    gain_error_db, timing_offset_samples, phase_rad, reference_sample, cfo_hz, snr_db and the predicted standard
    deviations *_std), one log line per device, and with out_file the alignment records written into that
    calibration file (kept: the file's other contents; replaced: the entries of these serials at this frequency
    and rate) with timing offsets relative to device timing_reference (>= 0) or as measured (-1). After n_bursts
    bursts the block is done, and tells the blocks given to finish_with() (e.g. its ZeroMQ source) so too."""

    def __init__(self, n_devices=2, pilot_repeats=16, guard=0, fft_size=256, cp_len=32, n_occupied=200,
                 sample_rate=15.36e6, start_time=0.5, period=0.1, n_bursts=1, stream_start=0.0, system_delay=0.0,
                 pilot_power=1.0, expected_gain_db=0.0, serials="", channel=0, frequency=2.45e9,
                 reference="external", tx_gain=0.0, timing_reference=-1, out_file="", conditions=""):
        gr.sync_block.__init__(self, name="fedlora_alignment_estimator", in_sig=[np.complex64], out_sig=None)
        K = int(n_devices)
        args = _burst_args(K, pilot_repeats, guard, fft_size, cp_len, n_occupied, sample_rate)
        if not system_delay >= 0.0:
            raise ValueError(f"alignment_estimator: system_delay = {system_delay} must be >= 0")
        self._est = _k.alignment_kernel(pilot_power=_per_device(pilot_power, K, "pilot_power"),
                                        expected_gain_db=_per_device(expected_gain_db, K, "expected_gain_db"),
                                        system_delay=float(system_delay), **args)
        lay = self._est.layout
        self._fs = float(sample_rate)
        self._K = K
        self._n_bursts = int(n_bursts)
        padded = lay["length"] + burst_padding(**args)
        self._first, self._step = _schedule(float(start_time), float(period), self._n_bursts, self._fs, padded,
                                            "alignment_estimator")
        # The window of a burst: from its start plus the common latency (devices arrive up to a guard early or
        # late, inside the burst's own guards) to its end plus the synchroniser's latency, which the devices'
        # padding covers (burst_padding).
        self._before = -int(math.floor(system_delay))
        self._len = int(math.ceil(system_delay)) + lay["length"] + self._est.tail + self._before
        self._buf = np.zeros(self._len, np.complex64)
        self._serials = _names(serials, K)
        self._out_file = str(out_file)
        if self._out_file and not self._serials:
            raise ValueError("alignment_estimator: out_file needs the devices' serials (parameter serials, "
                             "comma-separated in slot order): the calibration file is keyed by them")
        if reference not in REFERENCES:
            raise ValueError(f"alignment_estimator: reference = {reference!r} must be one of "
                             f"{', '.join(REFERENCES)}")
        if not -1 <= int(timing_reference) < K:
            raise ValueError(f"alignment_estimator: timing_reference = {timing_reference} must be -1 (none) or a "
                             f"device in [0, {K})")
        self._channel = int(channel)
        self._frequency = float(frequency)
        self._reference = reference
        self._tx_gain = float(tx_gain)
        self._timing_reference = int(timing_reference)
        self._conditions = str(conditions)
        self._next = int(round(float(stream_start) * self._fs))  # timeline index of the next input sample
        self._started = False
        self._burst = 0
        self._filled = 0
        self.results = []  # per burst: the list of per-device dicts (None where the burst was lost)
        self._finish = []
        self.message_port_register_out(_PORT)
        self.set_tag_propagation_policy(gr.TPP_DONT)

    def finish_with(self, *blocks):
        """Blocks to tell that they are done (("done" . 1) on their system port) when the last burst has been
        measured: a ZeroMQ source that would wait for samples forever then stops, and the flowgraph ends."""
        self._finish.extend(blocks)
        return self

    def _window(self):
        start = self._first + self._burst * self._step
        return start, start - self._before

    def _done(self):
        return self._n_bursts and self._burst >= self._n_bursts

    def work(self, input_items, output_items):
        x = input_items[0]
        n = len(x)
        tags = sorted(self.get_tags_in_window(0, 0, n, _RX_TIME), key=lambda t: t.offset)
        base = self.nitems_read(0)
        at = 0
        for t in tags + [None]:
            end = n if t is None else int(t.offset - base)
            if end > at:
                self._take(x[at:end], self._next)
                self._next += end - at
                at = end
            if t is not None:
                self._next = time_to_sample(t.value, self._fs)
        if not self._done():
            return n
        for b in self._finish:
            b.to_basic_block()._post(pmt.intern("system"), pmt.cons(pmt.intern("done"), pmt.from_long(1)))
        self._finish = []
        return -1  # WORK_DONE

    def _take(self, x, a0):
        """Places the samples x (x[0] at timeline index a0) into the current burst's window; measures every
        window that is complete."""
        while len(x) and not self._done():
            burst_start, ws = self._window()
            we = ws + self._len
            a1 = a0 + len(x)
            if a1 <= ws:
                self._started = True
                return
            have = ws + self._filled
            if a0 > have:
                if self._started or a0 >= we:
                    self.logger.warn(f"burst {self._burst}: samples {have} to {a0} of its window are missing "
                                     f"(overflow, a jump in rx_time, or the stream started late); burst skipped")
                    self.results.append(None)
                    self._advance()
                    continue
                self._filled = a0 - ws  # the stream starts inside the window: what came before is silence
                have = a0
            self._started = True
            hi = min(a1, we)
            self._buf[have - ws:hi - ws] = x[have - a0:hi - a0]
            self._filled = hi - ws
            if self._filled < self._len:
                return
            self._measure(burst_start, ws)
            self._advance()

    def _advance(self):
        """On to the next burst's window, keeping the samples of it already seen (windows may overlap)."""
        old_ws, old_filled = self._window()[1], self._filled
        self._burst += 1
        shift = self._window()[1] - old_ws
        if 0 <= shift < old_filled:
            n = old_filled - shift
            self._buf[:n] = self._buf[shift:old_filled].copy()
            self._buf[n:] = 0
            self._filled = n
        else:
            self._buf[:] = 0
            self._filled = 0

    def _measure(self, burst_start, ws):
        i = self._burst
        try:
            est = self._est.estimate(self._buf, ws, burst_start)
        except RuntimeError as e:
            self.logger.error(f"burst {i}: {e}")
            self.results.append(None)
            return
        names = self._serials or [f"device {k}" for k in range(self._K)]
        for k, d in enumerate(est):
            self.logger.info(
                f"burst {i} {names[k]}: SNR {d['snr_db']:.1f} dB, gain {d['gain_db']:+.3f} dB "
                f"(+-{d['gain_std_db']:.3f}), timing {d['timing_offset_samples']:.4f} "
                f"(+-{d['timing_std_samples']:.4f}) samples, phase {d['phase_rad']:+.4f} "
                f"(+-{d['phase_std_rad']:.4f}) rad at sample {d['reference_sample']}, CFO {d['cfo_hz']:+.2f} "
                f"(+-{d['cfo_std_hz']:.2f}) Hz")
        self.results.append(est)
        msg = pmt.make_dict()
        msg = pmt.dict_add(msg, pmt.intern("burst"), pmt.from_long(i))
        msg = pmt.dict_add(msg, pmt.intern("burst_start"), pmt.from_long(int(burst_start)))
        devices = pmt.make_vector(self._K, pmt.PMT_NIL)
        for k, d in enumerate(est):
            dk = pmt.make_dict()
            if self._serials:
                dk = pmt.dict_add(dk, pmt.intern("serial"), pmt.intern(self._serials[k]))
            for key, v in d.items():
                val = pmt.from_long(int(v)) if key == "reference_sample" else pmt.from_double(float(v))
                dk = pmt.dict_add(dk, pmt.intern(key), val)
            pmt.vector_set(devices, k, dk)
        msg = pmt.dict_add(msg, pmt.intern("devices"), devices)
        self.message_port_pub(_PORT, msg)
        if self._out_file:
            self._write(est)

    def _write(self, est):
        t_ref = est[self._timing_reference]["timing_offset_samples"] if self._timing_reference >= 0 else 0.0
        entries = []
        for k, d in enumerate(est):
            entries.append(dict(serial=self._serials[k], channel=self._channel, frequency_hz=self._frequency,
                                sample_rate_hz=self._fs, timing_offset_samples=d["timing_offset_samples"] - t_ref,
                                phase_rad=d["phase_rad"], reference_time_s=d["reference_sample"] / self._fs,
                                cfo_hz=d["cfo_hz"], tx_gain_db=self._tx_gain))
        _k.calibration_write_alignment(self._out_file, entries, self._reference, self._conditions)
        self.logger.info(f"wrote the alignment of {len(entries)} devices into {self._out_file}")
