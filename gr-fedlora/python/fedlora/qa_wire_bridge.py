#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the PDU <-> wire bridges over ZeroMQ on 127.0.0.1. The frames are checked with an encoder and decoder written
here from docs/wire.md (struct + zlib), independent of the C++ code; malformed frames are dropped, the block
keeps running. Waiting is on events with timeouts, never on sleeps."""

import struct
import threading
import zlib

import numpy as np
import pmt
import zmq
from gnuradio import gr, gr_unittest
from gnuradio import fedlora

TYPES = {"UPDATE": 6, "AGGREGATE": 7, "CSI_REPORT": 8}
DTYPES = {1: ("<f4", 4), 2: ("<f8", 8), 3: ("<i4", 4), 4: ("<i8", 8), 5: ("u1", 1), 6: ("<c8", 8)}


def encode(mtype, run_id, rnd, client, seq, tensors):
    table, data = b"", b""
    for name, arr, code in tensors:
        nb = name.encode()
        table += struct.pack("<H", len(nb)) + nb + struct.pack("<BB", code, 1) + struct.pack("<Q", arr.size)
        data += arr.tobytes()
    body = table + data
    head = struct.pack("<4sHHQIIQIIQ", b"FLRW", 1, mtype, run_id, rnd, client, seq, len(tensors), 0, len(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body + struct.pack("<I", zlib.crc32(body))


def decode(buf):
    magic, ver, mtype, run_id, rnd, client, seq, n, flags, blen, hcrc = struct.unpack_from("<4sHHQIIQIIQI", buf)
    assert magic == b"FLRW" and ver == 1 and flags == 0 and hcrc == zlib.crc32(buf[:48])
    body = buf[52:52 + blen]
    assert struct.unpack_from("<I", buf, 52 + blen)[0] == zlib.crc32(body)
    pos, table = 0, []
    for _ in range(n):
        (ln,) = struct.unpack_from("<H", body, pos); pos += 2
        name = body[pos:pos + ln].decode(); pos += ln
        code, ndim = struct.unpack_from("<BB", body, pos); pos += 2
        shape = struct.unpack_from(f"<{ndim}Q", body, pos); pos += 8 * ndim
        table.append((name, code, shape))
    tensors = {}
    for name, code, shape in table:
        dt, size = DTYPES[code]
        count = int(np.prod(shape)) if shape else 1
        tensors[name] = np.frombuffer(body, dtype=dt, count=count, offset=pos); pos += count * size
    return dict(type=mtype, run_id=run_id, round=rnd, client=client, seq=seq), tensors


class pdu_emitter(gr.basic_block):
    """A message source: what send() gets, it publishes on "pdus" (so the receiving block is in the flowgraph)."""

    def __init__(self):
        gr.basic_block.__init__(self, "pdu_emitter", None, None)
        self.message_port_register_out(pmt.intern("pdus"))

    def send(self, pdu):
        self.message_port_pub(pmt.intern("pdus"), pdu)


class pdu_catcher(gr.basic_block):
    """Collects PDUs and sets an event when `expected` have arrived."""

    def __init__(self, expected):
        gr.basic_block.__init__(self, "pdu_catcher", None, None)
        self.expected, self.pdus, self.done = expected, [], threading.Event()
        self.message_port_register_in(pmt.intern("pdus"))
        self.set_msg_handler(pmt.intern("pdus"), self.handle)

    def handle(self, pdu):
        self.pdus.append(pdu)
        if len(self.pdus) >= self.expected:
            self.done.set()


class qa_wire_bridge(gr_unittest.TestCase):
    def setUp(self):
        self.ctx = zmq.Context()

    def tearDown(self):
        self.ctx.destroy(linger=0)

    def test_001_pdu_to_wire_frames_decode_independently(self):
        tb = gr.top_block()
        tx = fedlora.pdu_to_wire("tcp://127.0.0.1:*", True)
        src = pdu_emitter()
        tb.msg_connect(src, "pdus", tx, "pdus")
        pull = self.ctx.socket(zmq.PULL)
        pull.connect(tx.last_endpoint())
        tb.start()
        update = np.arange(-5, 95, dtype=np.float32) * 0.25
        meta = pmt.make_dict()
        for k, v in (("type", pmt.intern("UPDATE")), ("run_id", pmt.from_uint64(77)), ("round", pmt.from_long(3)),
                     ("client_id", pmt.from_long(12)), ("seq", pmt.from_uint64(9)), ("name", pmt.intern("update")),
                     ("rms", pmt.init_f64vector(1, [0.5]))):
            meta = pmt.dict_add(meta, pmt.intern(k), v)
        src.send(pmt.cons(meta, pmt.init_f32vector(len(update), update)))
        self.assertTrue(pull.poll(10000), "no frame within 10 s")
        header, tensors = decode(pull.recv())
        pull.close()
        tb.stop()
        tb.wait()
        self.assertEqual(header, dict(type=6, run_id=77, round=3, client=12, seq=9))
        np.testing.assert_array_equal(tensors["update"], update)
        np.testing.assert_array_equal(tensors["rms"], [0.5])

    def test_002_wire_to_pdu_publishes_and_drops_malformed(self):
        push = self.ctx.socket(zmq.PUSH)
        port = push.bind_to_random_port("tcp://127.0.0.1")
        tb = gr.top_block()
        rx = fedlora.wire_to_pdu(f"tcp://127.0.0.1:{port}", False)
        catcher = pdu_catcher(1)
        tb.msg_connect(rx, "pdus", catcher, "pdus")
        tb.start()
        push.send(b"not a fedlora frame, but long enough to look like a header............")
        good = encode(TYPES["AGGREGATE"], 5, 4, 0, 1, [("aggregate", np.linspace(0, 1, 33, dtype=np.float32), 1)])
        bad_version = bytearray(good)
        bad_version[4] = 2
        push.send(bytes(bad_version))
        push.send(good[:-7])  # truncated
        push.send(good)
        self.assertTrue(catcher.done.wait(10), "no PDU within 10 s")
        push.close()
        tb.stop()
        tb.wait()
        meta, vec = pmt.car(catcher.pdus[0]), pmt.cdr(catcher.pdus[0])
        self.assertEqual(pmt.symbol_to_string(pmt.dict_ref(meta, pmt.intern("type"), pmt.PMT_NIL)), "AGGREGATE")
        self.assertEqual(pmt.to_long(pmt.dict_ref(meta, pmt.intern("round"), pmt.PMT_NIL)), 4)
        np.testing.assert_array_equal(pmt.f32vector_elements(vec), np.linspace(0, 1, 33, dtype=np.float32))
        self.assertEqual(len(catcher.pdus), 1)
        self.assertEqual(rx.dropped(), 3)

    def test_003_loopback_preserves_every_field(self):
        tb = gr.top_block()
        tx = fedlora.pdu_to_wire("tcp://127.0.0.1:*", True)
        rx = fedlora.wire_to_pdu(tx.last_endpoint(), False)
        src, catcher = pdu_emitter(), pdu_catcher(1)
        tb.msg_connect(src, "pdus", tx, "pdus")
        tb.msg_connect(rx, "pdus", catcher, "pdus")
        tb.start()
        meta = pmt.dict_add(pmt.make_dict(), pmt.intern("type"), pmt.intern("CSI_REPORT"))
        meta = pmt.dict_add(meta, pmt.intern("snr_db"), pmt.init_f32vector(3, [1.5, 2.5, 3.5]))
        h = (np.arange(8) + 1j * np.arange(8)).astype(np.complex64)
        src.send(pmt.cons(meta, pmt.init_c32vector(8, h)))
        self.assertTrue(catcher.done.wait(10), "no PDU within 10 s")
        tb.stop()
        tb.wait()
        out_meta, out_vec = pmt.car(catcher.pdus[0]), pmt.cdr(catcher.pdus[0])
        np.testing.assert_array_equal(pmt.c32vector_elements(out_vec), h)
        np.testing.assert_array_equal(
            pmt.f32vector_elements(pmt.dict_ref(out_meta, pmt.intern("snr_db"), pmt.PMT_NIL)), [1.5, 2.5, 3.5])
        self.assertEqual(pmt.symbol_to_string(pmt.dict_ref(out_meta, pmt.intern("type"), pmt.PMT_NIL)), "CSI_REPORT")

    def test_004_bad_endpoint_is_a_clear_error(self):
        with self.assertRaisesRegex(Exception, "cannot bind ZeroMQ endpoint 'tcp://127.0.0.1:notaport'"):
            fedlora.pdu_to_wire("tcp://127.0.0.1:notaport", True)


if __name__ == "__main__":
    gr_unittest.run(qa_wire_bridge)
