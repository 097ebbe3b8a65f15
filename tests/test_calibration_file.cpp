// The calibration file (fedlora_calib): the examples in calibration/ parse, a set survives a write/read round
// trip, and every kind of broken file gives an error that names the file, the key path and the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "fedlora/calib/file.h"

using namespace fedlora;
using phy::CalibrationError;

namespace {

const std::string kExamples = std::string(FEDLORA_TESTS_DIR) + "/../calibration/";

const char* kGood = R"(fedlora_calibration: 1
date: "2025-03-01T12:00:00Z"
conditions: "cabled, 30 dB"
reference: external
devices:
  - serial: "31A0B2C"
    product: B210
    channels:
      - channel: 0
        tx_power:
          frequencies_hz: [915e6, 2450e6]
          gains_db: [40, 60, 80]
          power_dbm:
            - [-30, -10, 8]
            - [-34, -14, 4]
        alignment:
          - frequency_hz: 2450e6
            sample_rate_hz: 15.36e6
            timing_offset_samples: 3.25
            phase_rad: 0.5
            reference_time_s: 2
            cfo_hz: 12
)";

// Replaces the first occurrence of `from` in the good file.
std::string edit(const std::string& from, const std::string& to) {
    std::string s = kGood;
    const auto at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
}

void expect_error(const std::string& yaml, const std::vector<std::string>& parts) {
    try {
        calib::parse_calibration(yaml, "broken.yaml");
        ADD_FAILURE() << "no error; expected one naming '" << parts.front() << "' for:\n" << yaml;
    } catch (const CalibrationError& e) {
        const std::string msg = e.what();
        EXPECT_EQ(msg.rfind("broken.yaml: ", 0), 0u) << msg;
        for (const auto& p : parts)
            EXPECT_NE(msg.find(p), std::string::npos) << "'" << msg << "' lacks '" << p << "'";
    }
}

}  // namespace

TEST(CalibrationFile, ExamplesParse) {
    const auto b = calib::load_calibration(kExamples + "example_b210.yaml");
    ASSERT_EQ(b.devices.size(), 1u);
    EXPECT_EQ(b.devices[0].product, "B210");
    EXPECT_NEAR(b.tx_power_dbm("EXAMPLE-B210-31A0B2C", 0, 2450e6, 60.0), -24.2, 1e-12);
    EXPECT_EQ(b.alignment("EXAMPLE-B210-31A0B2C", 0, 2450e6, 15.36e6).timing_offset_samples, 2.37);
    const auto x = calib::load_calibration(kExamples + "example_x310.yaml");
    EXPECT_NEAR(x.noise_floor_dbfs("EXAMPLE-X310-F5E4D3", 0, 2450e6), -82.5, 1e-12);
    EXPECT_NEAR(x.tx_gain_for("EXAMPLE-X310-F5E4D3", 1, 915e6, 1.8), 16.0, 1e-12);
}

TEST(CalibrationFile, RoundTrip) {
    auto s = calib::parse_calibration(kGood, "good.yaml");
    s.devices[0].channels[0].rx_noise.gain_db = 38.5;
    s.devices[0].channels[0].rx_noise.frequencies_hz = {2450e6};
    s.devices[0].channels[0].rx_noise.dbfs = {-71.123456789};
    s.devices[0].channels[0].alignment[0].phase_rad = -2.718281828459045;
    s.devices[0].channels[0].alignment[0].reference_time_s = 12345.678901234;
    s.devices.push_back(s.devices[0]);
    s.devices[1].serial = "0042";  // digits with a leading zero stay a serial, not a number
    s.devices[1].product.clear();
    const std::string path = ::testing::TempDir() + "fedlora_cal_roundtrip.yaml";
    calib::save_calibration(s, path);
    const auto r = calib::load_calibration(path);
    std::remove(path.c_str());
    auto same = [](double a, double b) { return std::fabs(a - b) <= 1e-13 * std::max(1.0, std::fabs(a)); };
    ASSERT_EQ(r.devices.size(), 2u);
    EXPECT_EQ(r.date, s.date);
    EXPECT_EQ(r.conditions, s.conditions);
    EXPECT_EQ(r.reference, s.reference);
    EXPECT_EQ(r.tx_reference_dbfs, s.tx_reference_dbfs);
    for (std::size_t d = 0; d < 2; ++d) {
        const auto &a = s.devices[d], &b = r.devices[d];
        EXPECT_EQ(a.serial, b.serial);
        EXPECT_EQ(a.product, b.product);
        ASSERT_EQ(a.channels.size(), b.channels.size());
        const auto &ca = a.channels[0], &cb = b.channels[0];
        EXPECT_EQ(ca.tx_power.power_dbm, cb.tx_power.power_dbm);
        EXPECT_EQ(ca.tx_power.frequencies_hz, cb.tx_power.frequencies_hz);
        EXPECT_EQ(ca.tx_power.gains_db, cb.tx_power.gains_db);
        EXPECT_EQ(ca.rx_noise.gain_db, cb.rx_noise.gain_db);
        ASSERT_EQ(cb.rx_noise.dbfs.size(), 1u);
        EXPECT_TRUE(same(ca.rx_noise.dbfs[0], cb.rx_noise.dbfs[0]));
        ASSERT_EQ(cb.alignment.size(), 1u);
        const auto &aa = ca.alignment[0], &ab = cb.alignment[0];
        EXPECT_TRUE(same(aa.phase_rad, ab.phase_rad)) << ab.phase_rad;
        EXPECT_TRUE(same(aa.reference_time_s, ab.reference_time_s)) << ab.reference_time_s;
        EXPECT_EQ(aa.frequency_hz, ab.frequency_hz);
        EXPECT_EQ(aa.sample_rate_hz, ab.sample_rate_hz);
        EXPECT_EQ(aa.timing_offset_samples, ab.timing_offset_samples);
        EXPECT_EQ(aa.cfo_hz, ab.cfo_hz);
    }
}

TEST(CalibrationFile, BrokenFilesNameTheProblem) {
    // Missing keys.
    expect_error(edit("reference: external\n", ""), {"top level", "missing key 'reference'"});
    expect_error(edit("serial: \"31A0B2C\"\n    product: B210", "product: B210"),
                 {"devices[0]", "missing key 'serial'"});
    expect_error(edit("            cfo_hz: 12\n", ""),
                 {"devices[0] (serial '31A0B2C').channels[0].alignment[0]", "missing key 'cfo_hz'"});
    // Wrong types.
    expect_error(edit("[-34, -14, 4]", "[-34, minus fourteen, 4]"),
                 {"devices[0] (serial '31A0B2C').channels[0].tx_power.power_dbm[1][1]", "line 15",
                  "expected a number, got 'minus fourteen'"});
    expect_error(edit("channel: 0", "channel: first"),
                 {"channels[0].channel", "expected an integer, got 'first'"});
    expect_error(edit("gains_db: [40, 60, 80]", "gains_db: 60"),
                 {"tx_power.gains_db", "expected a list of numbers, got '60'"});
    expect_error(edit("frequency_hz: 2450e6", "frequency_hz: [2450e6]"),
                 {"alignment[0].frequency_hz", "expected a number, got a list"});
    expect_error(edit("fedlora_calibration: 1", "fedlora_calibration: 2"),
                 {"fedlora_calibration", "2 is not a version this build reads (1)"});
    // Shapes and values (semantic checks name the serial).
    expect_error(edit("            - [-34, -14, 4]\n", ""), {"tx_power.power_dbm", "1 rows for 2 frequencies"});
    expect_error(edit("[-34, -14, 4]", "[-34, -14]"), {"power_dbm[1]", "2 values for 3 gains"});
    expect_error(edit("[-34, -14, 4]", "[-34, -44, 4]"),
                 {"device '31A0B2C' channel 0", "tx_power.power_dbm[1][1] = -44", "must grow with gain"});
    expect_error(edit("reference: external", "reference: atomic"), {"reference = 'atomic'"});
    expect_error(edit("cfo_hz: 12", "cfo_hz: 9e9"), {"device '31A0B2C' channel 0: alignment[0].cfo_hz = 9e+09"});
    // Unknown keys and a misspelt one.
    expect_error(edit("product: B210", "product: B210\n    colour: blue"),
                 {"devices[0].colour", "unknown key 'colour'", "serial, product, channels"});
    expect_error(edit("timing_offset_samples", "timing_ofset_samples"),
                 {"alignment[0].timing_ofset_samples", "unknown key 'timing_ofset_samples'"});
    // Not YAML, empty, not a mapping.
    expect_error("devices: [", {"not valid YAML"});
    expect_error("", {"the file is empty"});
    expect_error("- 1\n- 2\n", {"the top level must be a mapping"});
    // An unreadable file.
    try {
        calib::load_calibration("/nonexistent/cal.yaml");
        ADD_FAILURE() << "no error for a missing file";
    } catch (const CalibrationError& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/cal.yaml: cannot read"), std::string::npos) << e.what();
    }
}

TEST(CalibrationFile, LookupsOnAParsedFileNameSerialKeyAndFrequencies) {
    const auto s = calib::parse_calibration(kGood, "lab.yaml");
    try {
        s.correction("NOPE", 0, 2450e6, 15.36e6);
        ADD_FAILURE();
    } catch (const CalibrationError& e) {
        EXPECT_NE(std::string(e.what()).find("lab.yaml: no device with serial 'NOPE' (the file holds: 31A0B2C (B210))"),
                  std::string::npos)
            << e.what();
    }
    try {
        s.tx_power_dbm("31A0B2C", 0, 5.8e9, 60.0);
        ADD_FAILURE();
    } catch (const CalibrationError& e) {
        EXPECT_NE(std::string(e.what()).find("lab.yaml: device '31A0B2C' channel 0: tx_power.frequencies_hz: 5800 MHz "
                                             "is outside the calibrated frequencies (915 MHz, 2450 MHz)"),
                  std::string::npos)
            << e.what();
    }
    try {
        s.alignment("31A0B2C", 0, 915e6, 15.36e6);
        ADD_FAILURE();
    } catch (const CalibrationError& e) {
        EXPECT_NE(std::string(e.what()).find("alignment has no entry at 915 MHz (measured at: 2450 MHz"),
                  std::string::npos)
            << e.what();
    }
}
