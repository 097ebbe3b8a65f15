#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""The radio end of the USRP flowgraphs (flowgraphs/device_tx.grc, flowgraphs/server_rx.grc).

radio_sink / radio_source return a UHD USRP sink / source, set up for timed bursts on a common timeline, or, for the
virtual radio, a ZeroMQ PUSH sink / PULL source of complex samples with their stream tags. The choice is made when
the flowgraph starts (its `radio` parameter), so one flowgraph serves both; the GRC blocks fedlora_radio_sink and
fedlora_radio_source call these.

Reference and time (docs/hardware.md, section 2): `internal` sets the device time to 0 now; `external` (10 MHz and
PPS at REF IN / PPS IN) and `gpsdo` set clock and time source and latch time 0 at the next PPS edge, so that sample
m of the common timeline is device time m / rate on every radio. The transmitter's tx_time tags are on that
timeline; the USRP sink sends each burst (tx_sob ... tx_eob) at its tx_time.
"""

from gnuradio import gr

REFERENCES = ("internal", "external", "gpsdo")


def _check(radio, ref):
    if radio not in ("usrp", "zmq"):
        raise ValueError("radio must be 'usrp' or 'zmq', not %r" % (radio,))
    if ref not in REFERENCES:
        raise ValueError("ref must be one of %s, not %r" % (", ".join(REFERENCES), ref))


def _setup_usrp(u, ref, freq, gain, samp_rate):
    from gnuradio import uhd
    if ref != "internal":
        u.set_clock_source(ref, 0)
        u.set_time_source(ref, 0)
    u.set_samp_rate(samp_rate)
    u.set_center_freq(freq, 0)
    u.set_gain(gain, 0)
    if ref == "internal":
        u.set_time_now(uhd.time_spec(0.0))
    else:
        u.set_time_unknown_pps(uhd.time_spec(0.0))


def radio_sink(radio, args, freq, gain, samp_rate, ref, address):
    """A USRP sink in burst mode (radio 'usrp') or a ZeroMQ PUSH sink binding `address` (radio 'zmq')."""
    _check(radio, ref)
    if radio == "zmq":
        from gnuradio import zeromq
        return zeromq.push_sink(gr.sizeof_gr_complex, 1, address, 100, True, -1)
    from gnuradio import uhd
    # No length tag: bursts are delimited by the tx_sob / tx_eob tags, sent at their tx_time.
    u = uhd.usrp_sink(args, uhd.stream_args(cpu_format="fc32", channels=[0]), "")
    _setup_usrp(u, ref, freq, gain, samp_rate)
    return u


def radio_source(radio, args, freq, gain, samp_rate, ref, address, start_time):
    """A USRP source streaming from device time start_time (radio 'usrp') or a ZeroMQ PULL source connecting to
    `address` (radio 'zmq')."""
    _check(radio, ref)
    if radio == "zmq":
        from gnuradio import zeromq
        return zeromq.pull_source(gr.sizeof_gr_complex, 1, address, 100, True, -1)
    from gnuradio import uhd
    u = uhd.usrp_source(args, uhd.stream_args(cpu_format="fc32", channels=[0]))
    _setup_usrp(u, ref, freq, gain, samp_rate)
    u.set_start_time(uhd.time_spec(start_time))
    return u
