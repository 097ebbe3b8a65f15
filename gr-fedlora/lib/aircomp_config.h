/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_AIRCOMP_CONFIG_H
#define INCLUDED_FEDLORA_AIRCOMP_CONFIG_H

#include "fedlora/phy/frame.h"

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace gr {
namespace fedlora {

// Frame parameters as the AirComp blocks (and the kernel bindings QA compares them with) take them. Each check names
// the block parameter, before any buffer is sized from it.
struct frame_params {
    int n_devices = 2;
    int n_tx = 1;
    int fft_size = 256;
    int cp_len = 32;
    int n_occupied = 200;
    int pilot_spacing = 20;
    double sample_rate = 15.36e6;
    int gap = 2048;
    int pilot_repeats = 2;
    int reference_interval = 8;
};

inline ::fedlora::phy::FrameConfig make_frame_config(const frame_params& p, const char* block)
{
    auto at_least = [block](int v, int lo, const char* name) {
        if (v < lo)
            throw std::invalid_argument(std::string(block) + ": " + name + " = " + std::to_string(v) +
                                        " must be >= " + std::to_string(lo));
    };
    at_least(p.n_devices, 1, "n_devices");
    at_least(p.n_tx, 1, "n_tx");
    at_least(p.gap, 0, "gap");
    at_least(p.pilot_repeats, 1, "pilot_repeats");
    at_least(p.reference_interval, 1, "reference_interval");
    at_least(p.pilot_spacing, 1, "pilot_spacing");
    if (!(p.sample_rate > 0.0))
        throw std::invalid_argument(std::string(block) + ": sample_rate = " + std::to_string(p.sample_rate) +
                                    " must be > 0");
    ::fedlora::phy::FrameConfig f;
    f.numerology.fft_size = p.fft_size;
    f.numerology.cp_len = p.cp_len;
    f.numerology.n_occupied = p.n_occupied;
    f.numerology.pilot_spacing = p.pilot_spacing;
    f.numerology.sample_rate = p.sample_rate;
    f.n_devices = static_cast<std::size_t>(p.n_devices);
    f.n_tx = static_cast<std::size_t>(p.n_tx);
    f.gap = static_cast<std::size_t>(p.gap);
    f.pilot_repeats = static_cast<std::size_t>(p.pilot_repeats);
    f.reference_interval = static_cast<std::size_t>(p.reference_interval);
    try {
        f.validate();
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string(block) + ": " + e.what());
    }
    return f;
}

// One value for every device, or one per device.
inline std::vector<double>
per_device(const std::vector<double>& v, int n_devices, const char* block, const char* name)
{
    if (v.size() != 1 && v.size() != static_cast<std::size_t>(n_devices))
        throw std::invalid_argument(std::string(block) + ": " + name + " has " + std::to_string(v.size()) +
                                    " values for " + std::to_string(n_devices) +
                                    " devices (give one value or one per device)");
    return v.size() == 1 ? std::vector<double>(static_cast<std::size_t>(n_devices), v[0]) : v;
}

// Power budgets P_k (one or K values, each > 0) and the per-antenna pilot power P_k / N_t.
inline std::vector<double> make_budgets(const std::vector<double>& budget, int n_devices, const char* block)
{
    auto b = per_device(budget, n_devices, block, "budget");
    for (std::size_t k = 0; k < b.size(); ++k)
        if (!(b[k] > 0.0))
            throw std::invalid_argument(std::string(block) + ": budget[" + std::to_string(k) + "] = " +
                                        std::to_string(b[k]) + " must be > 0");
    return b;
}

inline std::vector<double> pilot_powers(const std::vector<double>& budgets, int n_tx)
{
    std::vector<double> p(budgets.size());
    for (std::size_t k = 0; k < p.size(); ++k)
        p[k] = budgets[k] / static_cast<double>(n_tx);
    return p;
}

} // namespace fedlora
} // namespace gr

#endif
