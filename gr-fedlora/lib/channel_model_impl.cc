/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include "channel_model_impl.h"
#include "channel_config.h"

#include <gnuradio/io_signature.h>

namespace gr {
namespace fedlora {

channel_model::sptr channel_model::make(int n_devices,
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
                                        gr_complex dc_offset,
                                        unsigned long long seed)
{
    return gnuradio::make_block_sptr<channel_model_impl>(
        make_channel_config(n_devices,
                            n_tx,
                            n_rx,
                            sample_rate,
                            snr_db,
                            profile,
                            fading,
                            rician_k,
                            doppler_hz,
                            cfo_hz,
                            timing_offset,
                            noise_variance,
                            phase_noise_hz,
                            std::complex<double>(dc_offset),
                            seed));
}

channel_model_impl::channel_model_impl(const ::fedlora::phy::ChannelSimConfig& cfg)
    : gr::sync_block("channel_model",
                     gr::io_signature::make(static_cast<int>(cfg.devices.size()) * cfg.n_tx,
                                            static_cast<int>(cfg.devices.size()) * cfg.n_tx,
                                            sizeof(gr_complex)),
                     gr::io_signature::make(cfg.n_rx, cfg.n_rx, sizeof(gr_complex))),
      d_channel(cfg),
      d_in(cfg.devices.size() * static_cast<std::size_t>(cfg.n_tx)),
      d_out(static_cast<std::size_t>(cfg.n_rx))
{
    d_logger->debug("{} devices x {} tx -> {} rx, {} kernel",
                    cfg.devices.size(),
                    cfg.n_tx,
                    cfg.n_rx,
                    d_channel.kernel_name());
}

void channel_model_impl::new_realisation()
{
    std::lock_guard<std::mutex> lock(d_mutex);
    d_channel.new_realisation();
}

int channel_model_impl::work(int noutput_items,
                             gr_vector_const_void_star& input_items,
                             gr_vector_void_star& output_items)
{
    for (std::size_t i = 0; i < d_in.size(); ++i)
        d_in[i] = static_cast<const gr_complex*>(input_items[i]);
    for (std::size_t r = 0; r < d_out.size(); ++r)
        d_out[r] = static_cast<gr_complex*>(output_items[r]);
    std::lock_guard<std::mutex> lock(d_mutex);
    d_channel.process(d_in.data(), d_out.data(), static_cast<std::size_t>(noutput_items));
    return noutput_items;
}

} /* namespace fedlora */
} /* namespace gr */
