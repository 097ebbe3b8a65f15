// The calibration file (YAML): reading, validating and writing fedlora_phy's CalibrationSet (calibration.h).
// Schema and examples: calibration/README.md, calibration/example_b210.yaml, calibration/example_x310.yaml.
//
// Every error is a phy::CalibrationError whose message names the file, the key path (e.g.
// "devices[1].channels[0].tx_power.power_dbm[2][3]"), its line, and what is wrong with the value; unknown keys
// are rejected (a misspelt key must not silently fall back to a default).
#pragma once

#include <string>

#include "fedlora/phy/calibration.h"

namespace fedlora::calib {

// Parses YAML text; `source` names it in error messages. The result has passed CalibrationSet::validate().
phy::CalibrationSet parse_calibration(const std::string& yaml_text, const std::string& source);
// Reads and parses a file (an unreadable file is a CalibrationError naming the path).
phy::CalibrationSet load_calibration(const std::string& path);

// YAML text of a (valid) set, with a header comment; parse_calibration(to_yaml(s)) reproduces s.
std::string to_yaml(const phy::CalibrationSet& set);
// Validates and writes atomically (a temporary file renamed over `path`).
void save_calibration(const phy::CalibrationSet& set, const std::string& path);

// The current UTC time in ISO 8601 (e.g. 2026-11-22T05:40:17Z), as a calibration's `date`.
std::string utc_now();

}  // namespace fedlora::calib
