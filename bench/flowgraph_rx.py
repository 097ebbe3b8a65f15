#!/usr/bin/python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Server receive flowgraph throughput: gr-fedlora's AirComp receiver against GNU Radio's stock OFDM receiver.

Both flowgraphs read a recorded stream of frames from a file (file_source, repeating) into their receiver, whose
results go to message sinks, pinned to ONE core (the process's CPU affinity; GNU Radio's block threads inherit
it), in the same run, alternating, --repeats times each:

  fedlora:  file_source -> head -> fedlora.aircomp_receiver (S&C sync, CFO, FFT, DFT channel estimation of K
            devices, power plan, combining, common phase, decoding) -> aggregate / quality messages
  stock:    file_source -> head -> digital.ofdm_rx (S&C sync, FFT, header and payload equalisation, demapping,
            CRC) -> packet stream -> tagged_stream_to_pdu -> messages

The fedlora stream is one AirComp round (K devices, EPA Rayleigh at 20 dB, --dim values per update) recorded from the
loopback transmitters -> channel_model; the stock stream is digital.ofdm_tx's output for random packets (QPSK
payload), with the same FFT size, CP and 200 active carriers, through a channel with noise. Items are input
samples; each receiver's decoded frames are counted, so a receiver that only skipped would show.

  /usr/bin/python3 bench/flowgraph_rx.py [--fft 256] [--seconds 3] [--repeats 3] [--cpu N]

Needs gnuradio.fedlora on the Python path (installed by scripts/setup.sh, or the build tree's python directory
in PYTHONPATH).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pmt
from gnuradio import blocks, channels, digital, gr, pdu

try:
    from gnuradio import fedlora
    from gnuradio.fedlora import aircomp
except ImportError as e:  # pragma: no cover - environment problem, reported plainly
    sys.exit(f"flowgraph_rx: cannot import gnuradio.fedlora ({e}); run scripts/setup.sh or set PYTHONPATH")


def fedlora_frame(fft):
    cp = fft // 8
    occupied = min(200 * fft // 256, fft - fft // 8)
    return dict(fft_size=fft, cp_len=cp, n_occupied=occupied, pilot_spacing=20, sample_rate=15.36e6 * fft / 256,
                gap=2048 * fft // 256)


def record_fedlora(fft, k_devices, dim, seed):
    """One AirComp round through the loopback (transmitters -> channel_model -> receiver), the channel output
    recorded. Returns (samples, the round dict for the receiver)."""
    frame = fedlora_frame(fft)
    tb = gr.top_block()
    txs = [fedlora.aircomp_transmitter(n_devices=k_devices, device=k, budget=1.0, max_dim=dim,
                                       start_time=300 / frame["sample_rate"], n_rounds=1, **frame)
           for k in range(k_devices)]
    ch = fedlora.channel_model(n_devices=k_devices, sample_rate=frame["sample_rate"], snr_db=[20.0],
                               profile="EPA", seed=seed)
    rx = fedlora.aircomp_receiver(n_devices=k_devices, budget=[1.0], estimator="dft", max_dim=dim, **frame)
    for b in txs + [rx]:
        b.set_log_level("warn")
    sink = blocks.vector_sink_c()
    agg = blocks.message_debug()
    for k, t in enumerate(txs):
        tb.connect(t, (ch, k))
        tb.msg_connect((rx, "plan"), (t, "plan"))
    tb.connect(ch, rx)
    tb.connect(ch, sink)
    tb.msg_connect((rx, "aggregate"), (agg, "store"))
    updates = aircomp.make_updates(k_devices, dim, seed)
    _, info, _ = aircomp.round_messages(updates)
    aircomp.post_round(txs, rx, updates)
    tb.run()
    if agg.num_messages() != 1:
        raise RuntimeError("flowgraph_rx: the recording round produced no aggregate")
    x = np.asarray(sink.data(), dtype=np.complex64)
    return np.concatenate([x, np.zeros(fft + fft // 8, np.complex64)]), info


def stock_carriers(fft):
    half = 100 * fft // 256
    pilots = (-3 * half // 4, -half // 4, half // 4, 3 * half // 4)
    data = [c for c in range(-half, half + 1) if c != 0 and c not in pilots]
    return (data,), (pilots,)


def record_stock(fft, n_packets, packet_len, seed):
    """digital.ofdm_tx output for n_packets random packets, through AWGN at 20 dB."""
    occupied, pilots = stock_carriers(fft)
    rng = np.random.default_rng(seed)
    payload = rng.integers(0, 256, n_packets * packet_len, dtype=np.uint8).tolist()
    tb = gr.top_block()
    src = blocks.vector_source_b(payload, False)
    s2ts = blocks.stream_to_tagged_stream(gr.sizeof_char, 1, packet_len, "packet_len")
    tx = digital.ofdm_tx(fft_len=fft, cp_len=fft // 8, packet_length_tag_key="packet_len",
                         occupied_carriers=occupied, pilot_carriers=pilots, bps_header=1, bps_payload=2)
    ch = channels.channel_model(noise_voltage=0.1 * 0.05, frequency_offset=0.0, epsilon=1.0, taps=[1.0],
                                noise_seed=seed)
    sink = blocks.vector_sink_c()
    tb.connect(src, s2ts, tx, ch, sink)
    tb.run()
    x = np.asarray(sink.data(), dtype=np.complex64)
    return np.concatenate([x, np.zeros(4 * fft, np.complex64)])


def info_dim(info):
    return pmt.to_long(pmt.dict_ref(info, pmt.intern("dim"), pmt.PMT_NIL))


def write(path, x):
    x.astype(np.complex64).tofile(path)


def source(path, n_items, buffer_items):
    """file_source (repeating) -> head, with output buffers of buffer_items samples (fewer thread switches on the
    one core)."""
    src = blocks.file_source(gr.sizeof_gr_complex, path, True)
    head = blocks.head(gr.sizeof_gr_complex, n_items)
    for b in (src, head):
        b.set_min_output_buffer(buffer_items)
    return src, head


def run_fedlora(path, n_items, fft, k_devices, info, frame_len, buffer_items):
    frame = fedlora_frame(fft)
    tb = gr.top_block()
    src, head = source(path, n_items, buffer_items)
    rx = fedlora.aircomp_receiver(n_devices=k_devices, budget=[1.0], estimator="dft", max_dim=info_dim(info),
                                  **frame)
    rx.set_log_level("warn")
    agg = blocks.message_debug()
    tb.connect(src, head, rx)
    tb.msg_connect((rx, "aggregate"), (agg, "store"))
    # One round dict per frame the stream holds (the n-th detection takes the n-th dict).
    for r in range(n_items // frame_len + 2):
        d = pmt.dict_add(info, pmt.intern("round"), pmt.from_long(r))
        rx.to_basic_block()._post(pmt.intern("round"), d)
    t0 = time.perf_counter()
    tb.run()
    return time.perf_counter() - t0, agg.num_messages()


def run_stock(path, n_items, fft, buffer_items):
    occupied, pilots = stock_carriers(fft)
    tb = gr.top_block()
    src, head = source(path, n_items, buffer_items)
    rx = digital.ofdm_rx(fft_len=fft, cp_len=fft // 8, packet_length_tag_key="packet_len",
                         occupied_carriers=occupied, pilot_carriers=pilots, bps_header=1, bps_payload=2)
    to_pdu = pdu.tagged_stream_to_pdu(gr.types.byte_t, "packet_len")
    pkts = blocks.message_debug()
    tb.connect(src, head, rx, to_pdu)
    tb.msg_connect((to_pdu, "pdus"), (pkts, "store"))
    t0 = time.perf_counter()
    tb.run()
    return time.perf_counter() - t0, pkts.num_messages()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Prints one line per run and the medians; ratios are from the same run.")
    p.add_argument("--fft", type=int, default=256, help="FFT size of both receivers (default 256)")
    p.add_argument("--devices", type=int, default=4, help="AirComp devices K in the recorded round (default 4)")
    p.add_argument("--dim", type=int, default=16976,
                   help="update length of the recorded round (default 16976, the payload of fedlora sim's default "
                        "experiment)")
    p.add_argument("--seconds", type=float, default=3.0, help="approximate length of each timed run (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each receiver, alternating (default 3)")
    p.add_argument("--buffer", type=int, default=1 << 18,
                   help="output buffer of the file source and head, samples (default 262144, for both receivers)")
    p.add_argument("--only", choices=["fedlora", "stock"], help="run one receiver only (for profiling)")
    p.add_argument("--cpu", type=int, help="the one CPU both flowgraphs are pinned to (default: the first this "
                                           "process may use)")
    a = p.parse_args(argv)
    if a.fft not in (64, 128, 256, 512, 1024, 2048):
        p.error(f"--fft {a.fft}: use a power of two from 64 to 2048")
    if a.devices < 1 or a.devices > 16:
        p.error(f"--devices {a.devices}: use 1 to 16")
    if a.dim < 2 or a.dim > 1 << 22:
        p.error(f"--dim {a.dim}: use 2 to {1 << 22}")
    if a.seconds <= 0 or a.repeats < 1:
        p.error("--seconds must be > 0 and --repeats >= 1")
    if a.cpu is None:
        a.cpu = min(os.sched_getaffinity(0))
    if a.cpu not in os.sched_getaffinity(0):
        p.error(f"--cpu {a.cpu}: not one of the CPUs this process may use {sorted(os.sched_getaffinity(0))}")
    os.sched_setaffinity(0, {a.cpu})
    gr.logging().set_default_level(gr.log_levels.warn)

    print(f"flowgraph_rx: FFT {a.fft}, CP {a.fft // 8}, one core (CPU {a.cpu}); recording the streams ...",
          flush=True)
    fed, info = record_fedlora(a.fft, a.devices, a.dim, seed=7)
    stock = record_stock(a.fft, n_packets=50, packet_len=400, seed=7)
    with tempfile.TemporaryDirectory(prefix="fedlora-bench-") as tmp:
        fed_path, stock_path = os.path.join(tmp, "fedlora.cf32"), os.path.join(tmp, "stock.cf32")
        write(fed_path, fed)
        write(stock_path, stock)
        # Size each run from a short first measurement so that it lasts about --seconds.
        rates = {"fedlora": [], "stock": []}
        failures = []
        if a.only != "stock":
            dt, _ = run_fedlora(fed_path, 20 * fed.size, a.fft, a.devices, info, fed.size, a.buffer)
            n_fed = max(fed.size, int(20 * fed.size / dt * a.seconds))
        if a.only != "fedlora":
            dt, _ = run_stock(stock_path, 2 * stock.size, a.fft, a.buffer)
            n_stock = max(stock.size, int(2 * stock.size / dt * a.seconds))
        for rep in range(a.repeats):
            if a.only != "stock":
                dt, frames = run_fedlora(fed_path, n_fed, a.fft, a.devices, info, fed.size, a.buffer)
                want = n_fed // fed.size
                rates["fedlora"].append(n_fed / dt)
                if frames < want:
                    failures.append(f"run {rep + 1}: the fedlora receiver decoded {frames} of {want} frames")
                print(f"  run {rep + 1}: fedlora aircomp_receiver {n_fed / dt / 1e6:8.2f} MS/s "
                      f"({frames} aggregates of {want} whole frames)", flush=True)
            if a.only != "fedlora":
                dt, pkts = run_stock(stock_path, n_stock, a.fft, a.buffer)
                want = n_stock // stock.size * 50
                rates["stock"].append(n_stock / dt)
                if pkts == 0:
                    failures.append(f"run {rep + 1}: the stock receiver decoded no packet")
                print(f"  run {rep + 1}: gr-digital ofdm_rx        {n_stock / dt / 1e6:8.2f} MS/s "
                      f"({pkts} packets of about {want} sent)", flush=True)
    for f in failures:
        print("flowgraph_rx: " + f, file=sys.stderr)
    if failures:
        return 1
    if a.only:
        r = rates[a.only]
        print(f"median: {a.only} {statistics.median(r) / 1e6:.2f} MS/s")
        return 0
    f, s = statistics.median(rates["fedlora"]), statistics.median(rates["stock"])
    ratios = [x / y for x, y in zip(rates["fedlora"], rates["stock"])]
    print(f"median: fedlora {f / 1e6:.2f} MS/s, stock {s / 1e6:.2f} MS/s, ratio {f / s:.2f} "
          f"(per run {', '.join(f'{r:.2f}' for r in ratios)}); B210 maximum 61.44 MS/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
