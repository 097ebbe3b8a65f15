#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""The messages of an AirComp round on the gr-fedlora blocks, built as the server and the devices build them.

The device's update PDU (for aircomp_transmitter's "update" port) and the server's round dict (for
aircomp_receiver's "round" port) carry the updates' RMS and the common scale computed by the fedlora_phy kernels
(kernel_update_rms, kernel_common_scale), so a flowgraph plans from the same numbers, bit for bit, as
kernel_aircomp_round_waveform does in one call.
"""

import threading

import numpy as np
import pmt
from gnuradio import gr

from . import fedlora_python as _k


def make_updates(n_devices, dim, seed):
    """Deterministic test updates: device k's entries are N(0, (0.5 + k % 3)^2), float32."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(dim) * (0.5 + k % 3)).astype(np.float32) for k in range(n_devices)]


def round_messages(updates, weights=None, round_id=0, support=None, frame_time=None):
    """Returns (update PDUs, one per device; the server's round dict; the common scale c).

    weights default to 1/K; support (ascending indices) limits what is sent; frame_time (seconds) places the
    frame, otherwise each transmitter uses its start_time or the end of its previous frame.
    """
    k_devices = len(updates)
    if k_devices == 0:
        raise ValueError("round_messages: no updates")
    weights = [1.0 / k_devices] * k_devices if weights is None else [float(w) for w in weights]
    sup = [] if support is None else [int(i) for i in support]
    rms = [_k.kernel_update_rms(np.asarray(u, dtype=np.float32), sup) for u in updates]
    scale = _k.kernel_common_scale(rms, weights)
    sup_pmt = pmt.init_s64vector(len(sup), sup) if sup else None
    pdus = []
    for k, u in enumerate(updates):
        u = np.asarray(u, dtype=np.float32)
        meta = pmt.make_dict()
        meta = pmt.dict_add(meta, pmt.intern("round"), pmt.from_long(round_id))
        meta = pmt.dict_add(meta, pmt.intern("device"), pmt.from_long(k))
        meta = pmt.dict_add(meta, pmt.intern("weight"), pmt.from_double(weights[k]))
        meta = pmt.dict_add(meta, pmt.intern("scale"), pmt.from_double(scale))
        if sup_pmt is not None:
            meta = pmt.dict_add(meta, pmt.intern("support"), sup_pmt)
        if frame_time is not None:
            meta = pmt.dict_add(meta, pmt.intern("frame_time"), pmt.from_double(float(frame_time)))
        pdus.append(pmt.cons(meta, pmt.init_f32vector(u.size, u.tolist())))
    info = pmt.make_dict()
    info = pmt.dict_add(info, pmt.intern("round"), pmt.from_long(round_id))
    info = pmt.dict_add(info, pmt.intern("dim"), pmt.from_long(int(np.asarray(updates[0]).size)))
    info = pmt.dict_add(info, pmt.intern("scale"), pmt.from_double(scale))
    info = pmt.dict_add(info, pmt.intern("weights"), pmt.init_f64vector(k_devices, weights))
    info = pmt.dict_add(info, pmt.intern("rms"), pmt.init_f64vector(k_devices, rms))
    if sup_pmt is not None:
        info = pmt.dict_add(info, pmt.intern("support"), sup_pmt)
    return pdus, info, scale


def post_round(transmitters, receiver, updates, **kwargs):
    """Posts one round's messages: update PDU k to transmitters[k] ("update"), the round dict to the receiver
    ("round"). Works before or after the flowgraph starts. Returns the common scale."""
    pdus, info, scale = round_messages(updates, **kwargs)
    if len(transmitters) != len(pdus):
        raise ValueError(f"post_round: {len(transmitters)} transmitters for {len(pdus)} updates")
    for tx, pdu in zip(transmitters, pdus):
        tx.to_basic_block()._post(pmt.intern("update"), pdu)
    receiver.to_basic_block()._post(pmt.intern("round"), info)
    return scale


def aggregate_of(pdu):
    """The f32 vector of an aggregate PDU, as a numpy array."""
    return np.asarray(pmt.to_python(pmt.cdr(pdu)), dtype=np.float32)


class RoundCollector(gr.basic_block):
    """Keeps the first message of each of the receiver's ports in `ports` (aggregate, quality, csi, plan);
    `done` is set once the frame's aggregate and quality dict are in. Connect each receiver port to the port of
    the same name."""

    ALL_PORTS = ("aggregate", "quality", "csi", "plan")

    def __init__(self, ports=ALL_PORTS):
        gr.basic_block.__init__(self, name="fedlora_round_collector", in_sig=None, out_sig=None)
        unknown = [p for p in ports if p not in self.ALL_PORTS]
        if unknown or not {"aggregate", "quality"} <= set(ports):
            raise ValueError(f"RoundCollector: ports {list(ports)} must include aggregate and quality and be "
                             f"among {list(self.ALL_PORTS)}")
        self.ports = tuple(ports)
        self.got = {}
        self.done = threading.Event()
        for port in self.ports:
            self.message_port_register_in(pmt.intern(port))
            # GNU Radio calls a Python message handler by its name: one method per port.
            self.set_msg_handler(pmt.intern(port), getattr(self, "_on_" + port))

    def _on_aggregate(self, msg):
        self._store("aggregate", msg)

    def _on_quality(self, msg):
        self._store("quality", msg)

    def _on_csi(self, msg):
        self._store("csi", msg)

    def _on_plan(self, msg):
        self._store("plan", msg)

    def _store(self, port, msg):
        self.got.setdefault(port, msg)
        if "aggregate" in self.got and "quality" in self.got:
            self.done.set()
