/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_CHANNEL_CONFIG_H
#define INCLUDED_FEDLORA_CHANNEL_CONFIG_H

#include "fedlora/phy/channel.h"

#include <complex>
#include <stdexcept>
#include <string>
#include <vector>

namespace gr {
namespace fedlora {

// Builds and validates the simulator configuration from block parameters (shared by the block and the Python
// kernel binding, so both run the same configuration). Per-device lists of one value apply to every device.
inline ::fedlora::phy::ChannelSimConfig make_channel_config(int n_devices,
                                                          int n_tx,
                                                          int n_rx,
                                                          double sample_rate,
                                                          const std::vector<double>& snr_db,
                                                          const std::string& profile,
                                                          const std::string& fading,
                                                          double rician_k,
                                                          double doppler_hz,
                                                          const std::vector<double>& cfo_hz,
                                                          const std::vector<double>& timing_offset,
                                                          double noise_variance,
                                                          double phase_noise_hz,
                                                          std::complex<double> dc_offset,
                                                          unsigned long long seed)
{
    if (n_devices < 1)
        throw std::invalid_argument("channel_model: n_devices = " + std::to_string(n_devices) +
                                    " must be >= 1");
    auto per_device = [n_devices](const std::vector<double>& v, const char* name) {
        if (v.size() != 1 && v.size() != static_cast<std::size_t>(n_devices))
            throw std::invalid_argument(std::string("channel_model: ") + name + " has " +
                                        std::to_string(v.size()) + " values for " +
                                        std::to_string(n_devices) +
                                        " devices (give one value or one per device)");
        return [&v](std::size_t k) { return v.size() == 1 ? v[0] : v[k]; };
    };
    const auto snr = per_device(snr_db, "snr_db");
    const auto cfo = per_device(cfo_hz, "cfo_hz");
    const auto tim = per_device(timing_offset, "timing_offset");
    ::fedlora::phy::ChannelSimConfig c;
    c.devices.resize(static_cast<std::size_t>(n_devices));
    for (std::size_t k = 0; k < c.devices.size(); ++k) {
        auto& d = c.devices[k];
        d.snr_db = snr(k);
        d.profile = profile;
        d.fading = fading;
        d.rician_k = rician_k;
        d.doppler_hz = doppler_hz;
        d.cfo_hz = cfo(k);
        d.timing_offset_samples = tim(k);
    }
    c.n_tx = n_tx;
    c.n_rx = n_rx;
    c.sample_rate = sample_rate;
    c.noise_variance = noise_variance;
    c.phase_noise_linewidth_hz = phase_noise_hz;
    c.dc_offset = dc_offset;
    c.seed = seed;
    c.validate();
    return c;
}

} // namespace fedlora
} // namespace gr

#endif
