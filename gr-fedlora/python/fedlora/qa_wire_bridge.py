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

TYPES = {"POWER_PLAN": 5, "UPDATE": 6, "AGGREGATE": 7, "CSI_REPORT": 8}
DTYPES = {1: ("<f4", 4), 2: ("<f8", 8), 3: ("<i4", 4), 4: ("<i8", 8), 5: ("u1", 1), 6: ("<c8", 8), 7: ("<c16", 16)}


def encode(mtype, run_id, rnd, client, seq, tensors):
    table, data = b"", b""
    for name, arr, code in tensors:
        nb = name.encode()
        table += struct.pack("<H", len(nb)) + nb + struct.pack("<BB", code, arr.ndim)
        table += struct.pack(f"<{arr.ndim}Q", *arr.shape)
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
        v = np.frombuffer(body, dtype=dt, count=count, offset=pos); pos += count * size
        tensors[name] = v.reshape(shape) if shape else v[0]
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

    def plan_dict(self):
        """A dict shaped like aircomp_receiver's plan: integers, reals, an f64 vector, c64 precoders."""
        K, M = 2, 5
        prec = (np.arange(K * M) * 0.25 - 1j / (1 + np.arange(K * M))).astype(np.complex128)
        d = pmt.make_dict()
        for k, v in (("round", pmt.from_long(7)), ("n_devices", pmt.from_long(K)), ("n_carriers", pmt.from_long(M)),
                     ("n_tx", pmt.from_long(1)), ("n_rx", pmt.from_long(1)), ("n_streams", pmt.from_long(0)),
                     ("n_ofdm", pmt.from_long(12)), ("scale", pmt.from_double(0.375)),
                     ("eta", pmt.init_f64vector(M, [0.5, 0.25, 0.125, 1.0, 2.0])),
                     ("precoders", pmt.init_c64vector(K * M, prec.tolist())),
                     ("truncated_fraction", pmt.from_double(0.1)), ("policy", pmt.intern("mmse")),
                     ("start", pmt.from_uint64(2 ** 40 + 3)), ("gain", pmt.from_complex(0.5 - 2j))):
            d = pmt.dict_add(d, pmt.intern(k), v)
        return d, prec

    def test_005_dict_to_wire_frames_decode_independently(self):
        # A plan dict (no "type": the block's default POWER_PLAN) as one message: header round, every other entry a
        # tensor; numbers 0-d, c64 vectors and complex numbers as c128. Checked with the decoder written here.
        tb = gr.top_block()
        tx = fedlora.pdu_to_wire("tcp://127.0.0.1:*", True, "POWER_PLAN")
        src = pdu_emitter()
        tb.msg_connect(src, "pdus", tx, "pdus")
        pull = self.ctx.socket(zmq.PULL)
        pull.connect(tx.last_endpoint())
        tb.start()
        plan, prec = self.plan_dict()
        src.send(plan)
        self.assertTrue(pull.poll(10000), "no frame within 10 s")
        header, t = decode(pull.recv())
        pull.close()
        tb.stop()
        tb.wait()
        self.assertEqual(header, dict(type=5, run_id=0, round=7, client=0, seq=0))
        self.assertNotIn("round", t)
        self.assertEqual((t["n_devices"], t["n_carriers"], t["n_ofdm"], t["n_streams"]), (2, 5, 12, 0))
        self.assertEqual(t["n_devices"].dtype, np.dtype("<i8"))
        self.assertEqual((t["scale"], t["truncated_fraction"]), (0.375, 0.1))
        np.testing.assert_array_equal(t["eta"], [0.5, 0.25, 0.125, 1.0, 2.0])
        self.assertEqual(t["precoders"].dtype, np.dtype("<c16"))
        np.testing.assert_array_equal(t["precoders"], prec)
        self.assertEqual(t["gain"], 0.5 - 2j)
        self.assertEqual(t["start"], 2 ** 40 + 3)
        self.assertEqual(bytes(t["policy"]), b"mmse")

    def test_006_dicts_round_trip_through_both_bridges(self):
        # pdu_to_wire -> wire_to_pdu(as_dict): every entry of the plan dict comes back with its value and kind
        # (the header adds type, run_id, client_id and seq; text comes back as u8). A message the encoder cannot
        # carry (a list value) is dropped with a log line and the next one still passes.
        tb = gr.top_block()
        tx = fedlora.pdu_to_wire("tcp://127.0.0.1:*", True, "POWER_PLAN")
        rx = fedlora.wire_to_pdu(tx.last_endpoint(), False, 1 << 20, True)
        src, catcher = pdu_emitter(), pdu_catcher(1)
        tb.msg_connect(src, "pdus", tx, "pdus")
        tb.msg_connect(rx, "pdus", catcher, "pdus")
        tb.start()
        plan, _ = self.plan_dict()
        src.send(pmt.dict_add(pmt.make_dict(), pmt.intern("bad"), pmt.list2(pmt.PMT_T, pmt.PMT_F)))
        src.send(plan)
        self.assertTrue(catcher.done.wait(10), "no dict within 10 s")
        tb.stop()
        tb.wait()
        got = catcher.pdus[0]
        self.assertTrue(pmt.is_dict(got))
        items = pmt.dict_items(plan)
        for i in range(pmt.length(items)):
            kv = pmt.nth(i, items)
            key = pmt.symbol_to_string(pmt.car(kv))
            back = pmt.dict_ref(got, pmt.car(kv), pmt.PMT_NIL)
            if key == "policy":
                self.assertEqual(bytes(pmt.u8vector_elements(back)), b"mmse")
            elif key == "start":
                self.assertEqual(pmt.to_long(back), 2 ** 40 + 3)
            else:
                self.assertTrue(pmt.equal(back, pmt.cdr(kv)), key)
        self.assertEqual(pmt.symbol_to_string(pmt.dict_ref(got, pmt.intern("type"), pmt.PMT_NIL)), "POWER_PLAN")
        self.assertEqual(len(catcher.pdus), 1)

    def test_004_bad_endpoint_is_a_clear_error(self):
        with self.assertRaisesRegex(Exception, "cannot bind ZeroMQ endpoint 'tcp://127.0.0.1:notaport'"):
            fedlora.pdu_to_wire("tcp://127.0.0.1:notaport", True)
        with self.assertRaisesRegex(Exception, "default_type.*PLAN_B"):
            fedlora.pdu_to_wire("tcp://127.0.0.1:*", True, "PLAN_B")
        # Plaintext stays on this host: other endpoints are refused, in both directions, naming the endpoint.
        with self.assertRaisesRegex(Exception, "pdu_to_wire: endpoint 'tcp://10.1.2.3:5555' is not a loopback"):
            fedlora.pdu_to_wire("tcp://10.1.2.3:5555", False)
        with self.assertRaisesRegex(Exception, "wire_to_pdu: endpoint 'tcp://0.0.0.0:5555' is not a loopback"):
            fedlora.wire_to_pdu("tcp://0.0.0.0:5555", True)


if __name__ == "__main__":
    gr_unittest.run(qa_wire_bridge)
