#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the radio process (gnuradio.fedlora.radio_server), run as the experiment runs it: a child process on
127.0.0.1 that takes one wire request per round.

- its aggregate and report equal kernel_aircomp_round_waveform's for the same payloads, weights and channel seed
  (a seed above 2^63, as the experiment derives them), bit for bit, single stream and 2x2 with two streams, rounds
  back to back;
- a round whose preamble drowns comes back as ERROR "no_frame", and the radio serves the next round;
- malformed and incomplete requests come back as ERROR "bad_request" naming the problem;
- it refuses a non-loopback endpoint, exits on BYE and when its standard input closes (the parent is gone).
"""

import subprocess
import sys

import numpy as np
import zmq
from gnuradio import gr_unittest
from gnuradio import fedlora
from gnuradio.fedlora import aircomp

FS = 15.36e6
SEED = 0xC0FFEE0123456789  # above 2^63: travels as the int64 with the same bits


def text(s):
    return np.frombuffer(s.encode(), dtype=np.uint8)


def start_radio(*extra):
    proc = subprocess.Popen([sys.executable, "-m", "gnuradio.fedlora.radio_server", "--watch-stdin", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    prefix = "fedlora-radio: listening on "
    assert line.startswith(prefix), line
    return proc, line[len(prefix):].strip()


def request(updates, weights, snr_db, n_tx=1, n_rx=1, n_streams=0, occupied=200, pilot_spacing=20,
            pilot_repeats=2, policy="mmse", lead=256, seed=SEED, cfo=0.05, profile="EPA"):
    K = len(updates)
    return {
        "payloads": np.stack(updates).astype(np.float32),
        "weights": np.asarray(weights, np.float64),
        "clients": np.arange(K, dtype=np.int64),
        "fft": np.int64(256), "cp": np.int64(32), "occupied": np.int64(occupied),
        "pilot_spacing": np.int64(pilot_spacing), "pilot_repeats": np.int64(pilot_repeats),
        "reference_interval": np.int64(8), "sample_rate": np.float64(FS),
        "n_tx": np.int64(n_tx), "n_rx": np.int64(n_rx), "n_streams": np.int64(n_streams),
        "lead": np.int64(lead), "budget": np.ones(K, np.float64), "policy": text(policy), "g_th": np.float64(0.1),
        "estimator": text("sparse"), "timing_backoff": np.int64(-1), "mimo_iterations": np.int64(60),
        "snr_db": np.asarray(snr_db, np.float64), "cfo_hz": np.full(K, cfo * FS / 256, np.float64),
        "profile": text(profile), "doppler_hz": np.float64(0.0), "phase_noise_hz": np.float64(0.0),
        "noise_variance": np.float64(1e-3), "seed": np.array(seed, dtype=np.uint64).astype(np.int64),
    }


def reference(req):
    """The same round in one call: kernel_aircomp_round_waveform on a channel_kernel of the same parameters."""
    K = req["payloads"].shape[0]
    updates = [req["payloads"][k] for k in range(K)]
    weights = [float(w) for w in req["weights"]]
    _, _, scale = aircomp.round_messages(updates, weights=weights)
    chan = fedlora.channel_kernel(
        n_devices=K, n_tx=int(req["n_tx"]), n_rx=int(req["n_rx"]), sample_rate=FS,
        snr_db=[float(s) for s in req["snr_db"]], profile=bytes(req["profile"]).decode(), fading="rayleigh",
        cfo_hz=[float(c) for c in req["cfo_hz"]], noise_variance=1e-3, seed=int(req["seed"]) & ((1 << 64) - 1))
    return fedlora.kernel_aircomp_round_waveform(
        updates, weights, scale, chan, n_tx=int(req["n_tx"]), fft_size=256, cp_len=32,
        n_occupied=int(req["occupied"]), pilot_spacing=int(req["pilot_spacing"]), sample_rate=FS, gap=0,
        pilot_repeats=int(req["pilot_repeats"]), n_streams=int(req["n_streams"]), budget=[1.0],
        policy=bytes(req["policy"]).decode(), estimator="sparse", lead=int(req["lead"]))


class qa_radio_server(gr_unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        fedlora.set_fft_planning("estimate")
        cls.proc, cls.endpoint = start_radio()
        cls.ctx = zmq.Context()
        cls.sock = cls.ctx.socket(zmq.REQ)
        cls.sock.setsockopt(zmq.RCVTIMEO, 120000)
        cls.sock.setsockopt(zmq.LINGER, 0)
        cls.sock.connect(cls.endpoint)
        cls.seq = 0

    @classmethod
    def tearDownClass(cls):
        cls.sock.send(fedlora.wire_encode("BYE", {}, run_id=9))
        reply = fedlora.wire_decode(cls.sock.recv())
        cls.sock.close()
        cls.ctx.term()
        assert reply["type"] == "BYE", reply["type"]
        assert cls.proc.wait(timeout=60) == 0
        cls.proc.stdin.close()
        cls.proc.stdout.close()

    def ask(self, kind, tensors, round_id=1):
        type(self).seq += 1
        self.sock.send(fedlora.wire_encode(kind, tensors, run_id=77, round=round_id, seq=self.seq))
        reply = fedlora.wire_decode(self.sock.recv())
        self.assertEqual((reply["run_id"], reply["round"], reply["seq"]), (77, round_id, self.seq))
        return reply

    def check_round(self, req, round_id, what):
        reply = self.ask("UPDATE", req, round_id)
        self.assertEqual(reply["type"], "AGGREGATE", f"{what}: {reply['tensors'].get('reason', b'')}")
        got = reply["tensors"]
        want, rep = reference(req)
        K = req["payloads"].shape[0]
        np.testing.assert_array_equal(got["aggregate"], want, err_msg=what)
        np.testing.assert_array_equal(got["csi_gain"].ravel(), rep["csi_gain"], err_msg=what)
        self.assertEqual(got["csi_gain"].shape, (K, int(req["occupied"])))
        np.testing.assert_array_equal(got["device_snr_db"], rep["device_snr_db_estimated"], err_msg=what)
        self.assertEqual(float(got["noise_var"]), rep["noise_var_estimated"], what)
        self.assertEqual(int(got["ofdm_symbols"]), rep["ofdm_symbols"], what)
        self.assertEqual(int(got["channel_uses"]), rep["channel_uses"], what)
        self.assertEqual(int(got["frame_samples"]), rep["frame_samples"], what)
        self.assertEqual(float(got["airtime_s"]), rep["airtime_s"], what)
        self.assertEqual(float(got["truncated_fraction"]), rep["truncated_fraction"], what)
        self.assertEqual(float(got["cfo"]), rep["cfo_estimate"], what)
        self.assertEqual(int(got["detected_start"]), rep["detected_start"], what)
        self.assertAlmostEqual(float(got["nmse_measured"]) / rep["nmse_measured"], 1.0, delta=1e-9, msg=what)
        self.assertLess(rep["nmse_measured"], 0.5, what)

    def test_001_single_stream_equals_round_waveform(self):
        updates = aircomp.make_updates(3, 3001, 5)
        self.check_round(request(updates, [0.5, 0.3, 0.2], [20.0, 18.5, 22.0]), 1, "K=3 single stream")
        # The next round on the same radio: a new flowgraph, another channel.
        updates = aircomp.make_updates(4, 1000, 6)
        self.check_round(request(updates, [0.25] * 4, [17.0, 23.0, 20.0, 19.0], seed=42, policy="truncated"), 2,
                         "K=4 truncated, second round")

    def test_002_mimo_equals_round_waveform(self):
        updates = aircomp.make_updates(2, 4000, 7)
        self.check_round(request(updates, [0.5, 0.5], [20.0, 20.0], n_tx=2, n_rx=2, n_streams=2, occupied=192,
                                 pilot_spacing=16, pilot_repeats=4), 3, "K=2 2x2 L=2")

    def test_003_lost_frame_then_next_round(self):
        updates = aircomp.make_updates(2, 500, 8)
        req = request(updates, [0.5, 0.5], [-40.0, -40.0], profile="flat")
        with self.assertRaises(RuntimeError):
            reference(req)  # the one-call round finds no frame either
        reply = self.ask("UPDATE", req, 4)
        self.assertEqual(reply["type"], "ERROR")
        self.assertEqual(bytes(reply["tensors"]["code"]).decode(), "no_frame")
        self.assertIn("no frame", bytes(reply["tensors"]["reason"]).decode())
        self.check_round(request(updates, [0.5, 0.5], [20.0, 20.0]), 5, "the round after a lost one")

    def test_004_bad_requests_named(self):
        updates = aircomp.make_updates(2, 100, 9)
        req = request(updates, [0.5, 0.5], [20.0, 20.0])
        del req["policy"]
        reply = self.ask("UPDATE", req)
        self.assertEqual(reply["type"], "ERROR")
        self.assertEqual(bytes(reply["tensors"]["code"]).decode(), "bad_request")
        self.assertIn("'policy'", bytes(reply["tensors"]["reason"]).decode())
        req = request(updates, [0.5, 0.5], [20.0, 20.0])
        req["weights"] = np.ones(3)
        reason = bytes(self.ask("UPDATE", req)["tensors"]["reason"]).decode()
        self.assertIn("'weights' has shape [3], expected [2]", reason)
        req = request(updates, [0.5, 0.5], [20.0, 20.0], policy="moon")
        self.assertIn("policy", bytes(self.ask("UPDATE", req)["tensors"]["reason"]).decode())
        self.assertEqual(self.ask("HEARTBEAT", {})["type"], "HEARTBEAT")
        self.sock.send(b"not a frame")
        reply = fedlora.wire_decode(self.sock.recv())
        self.assertEqual(reply["type"], "ERROR")
        self.assertIn("malformed request", bytes(reply["tensors"]["reason"]).decode())

    def test_005_loopback_only(self):
        r = subprocess.run([sys.executable, "-m", "gnuradio.fedlora.radio_server", "--bind", "tcp://0.0.0.0:5599"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("loopback", r.stderr)

    def test_006_exits_when_stdin_closes(self):
        proc, _ = start_radio()
        proc.stdin.close()
        self.assertEqual(proc.wait(timeout=60), 0)
        proc.stdout.close()


if __name__ == "__main__":
    gr_unittest.run(qa_radio_server)
