// Internal to `fedlora calibrate` (cmd_calibrate.cpp: the command line, the virtual radio and `check`;
// calibrate_usrp.cpp: the same procedures through UHD).
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "fedlora/phy/calibration.h"

namespace fedlora::app::calibrate {

// The waveform of the calibration bursts: FFT 256, CP 32, 200 occupied carriers at `sample_rate`.
phy::Numerology burst_numerology(double sample_rate);

struct UsrpOptions {
    std::string server_args;            // UHD device args of the server (the receiver)
    std::vector<std::string> devices;   // UHD device args of each transmitting device, "args" or "args#channel"
    std::string reference = "internal"; // internal | external | gpsdo (clock and time source of every radio)
    std::vector<double> freqs{2.45e9};
    double rate = 15.36e6;
    double rx_gain = 30.0;
    int rx_channel = 0;
    double tx_gain = 60.0;              // gain of the alignment bursts
    std::vector<double> sweep_gains;    // TX power sweep (empty: 40 to the device's maximum in 10 dB steps)
    // Loss from each device's TX port to the server's RX port (cable + attenuators + combiner), dB: one value for
    // every device, or one per device (measure each path: a difference shows up as a gain error otherwise).
    std::vector<double> attenuation_db{30.0};
    // RX power calibration of the server at rx_gain: dBm at its RX port = dBFS + rx_offset_db (measured once with
    // a signal generator or power meter). Without it the TX power sweep cannot give dBm and is refused.
    double rx_offset_db = std::numeric_limits<double>::quiet_NaN();
    std::string mode = "all";           // all | noise | tx-power | align
    std::size_t repeats = 16;
    double system_delay = 0.0;          // samples: latency common to every device (loopback measurement)
    std::string timing_reference;       // serial whose timing offset is taken as zero (empty: none)
    double start_delay_s = 0.5;         // bursts are scheduled this far ahead of the current device time
    std::string out = "calibration.yaml";
    std::string conditions;
};

// Runs the procedures through UHD and writes the calibration file. Returns the exit code (1 with one line when no
// USRP answers).
int run_usrp(const UsrpOptions& o);

}  // namespace fedlora::app::calibrate
