/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include "channel_model_impl.h"
#include "burst_time.h"
#include "channel_config.h"

#include <gnuradio/io_signature.h>

#include <algorithm>

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
    : gr::block("channel_model",
                gr::io_signature::make(static_cast<int>(cfg.devices.size()) * cfg.n_tx,
                                       static_cast<int>(cfg.devices.size()) * cfg.n_tx,
                                       sizeof(gr_complex)),
                gr::io_signature::make(cfg.n_rx, cfg.n_rx, sizeof(gr_complex))),
      d_channel(cfg),
      d_fs(cfg.sample_rate),
      d_state(cfg.devices.size() * static_cast<std::size_t>(cfg.n_tx)),
      d_tags(cfg.devices.size() * static_cast<std::size_t>(cfg.n_tx)),
      d_in(cfg.devices.size() * static_cast<std::size_t>(cfg.n_tx)),
      d_out(static_cast<std::size_t>(cfg.n_rx))
{
    for (auto& t : d_tags)
        t.reserve(64);
    set_tag_propagation_policy(TPP_DONT);
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

void channel_model_impl::forecast(int, gr_vector_int& ninput_items_required)
{
    // Every input must show its next sample (or its end): until then its silence is not known to end anywhere.
    for (auto& n : ninput_items_required)
        n = 1;
}

std::uint64_t channel_model_impl::place_head(std::size_t i, std::uint64_t cursor, bool apply)
{
    auto& st = d_state[i];
    const auto& tags = d_tags[i];
    const std::uint64_t at = nitems_read(static_cast<unsigned>(i)) + st.rel;
    std::size_t t = st.tag;
    while (t < tags.size() && tags[t].offset < at)
        ++t;
    if (t == tags.size() || tags[t].offset != at)
        return cursor;
    std::uint64_t when = cursor;
    try {
        when = to_sample(tags[t].value, d_fs);
    } catch (const std::invalid_argument& e) {
        if (apply && st.warned_at != at) {
            d_logger->warn("input {}: tx_time at item {} ignored: {}", i, at, e.what());
            st.warned_at = at;
        }
        return cursor;
    }
    if (when < cursor) {
        if (apply && st.warned_at != at) {
            d_logger->warn("input {}: late burst, tx_time at sample {} precedes the end of the previous burst ({}); "
                           "sent at {}",
                           i,
                           when,
                           cursor,
                           cursor);
            st.warned_at = at;
        }
        return cursor;
    }
    return when;
}

std::size_t channel_model_impl::run_length(std::size_t i)
{
    const auto& st = d_state[i];
    const auto& tags = d_tags[i];
    const std::uint64_t at = nitems_read(static_cast<unsigned>(i)) + st.rel;
    for (std::size_t t = st.tag; t < tags.size(); ++t)
        if (tags[t].offset > at)
            return static_cast<std::size_t>(tags[t].offset - at);
    return st.avail - st.rel;
}

std::uint64_t channel_model_impl::horizon(std::size_t i)
{
    auto& st = d_state[i];
    if (st.avail == 0)
        return st.cursor;
    // Walk the available samples: runs between tx_time tags, each starting where its tag says.
    const std::size_t rel0 = st.rel, tag0 = st.tag;
    std::uint64_t pos = st.head;
    for (;;) {
        const std::size_t run = run_length(i);
        pos += run;
        st.rel += run;
        while (st.tag < d_tags[i].size() &&
               d_tags[i][st.tag].offset < nitems_read(static_cast<unsigned>(i)) + st.rel)
            ++st.tag;
        if (st.rel == st.avail)
            break;
        pos = place_head(i, pos, false);
    }
    st.rel = rel0;
    st.tag = tag0;
    return pos;
}

int channel_model_impl::general_work(int noutput_items,
                                     gr_vector_int& ninput_items,
                                     gr_vector_const_void_star& input_items,
                                     gr_vector_void_star& output_items)
{
    std::lock_guard<std::mutex> lock(d_mutex);
    const std::uint64_t pos = d_channel.position();
    std::uint64_t end = pos + static_cast<std::uint64_t>(noutput_items);
    for (std::size_t i = 0; i < d_state.size(); ++i) {
        auto& st = d_state[i];
        st.avail = static_cast<std::size_t>(ninput_items[i]);
        st.rel = 0;
        st.tag = 0;
        get_tags_in_window(d_tags[i], static_cast<unsigned>(i), 0, st.avail, tag_tx_time());
        st.head = st.avail ? std::max(place_head(i, st.cursor, true), pos) : st.cursor;
        end = std::min(end, horizon(i));
    }
    if (end <= pos)
        return 0;

    // Output [pos, end) in pieces over which every input is either silent or a run of its samples.
    std::uint64_t t = pos;
    while (t < end) {
        std::uint64_t len = end - t;
        for (std::size_t i = 0; i < d_state.size(); ++i) {
            const auto& st = d_state[i];
            if (st.rel < st.avail && st.head == t) {
                d_in[i] = static_cast<const gr_complex*>(input_items[i]) + st.rel;
                len = std::min<std::uint64_t>(len, run_length(i));
            } else {
                d_in[i] = nullptr; // silent until its next sample's time
                if (st.rel < st.avail)
                    len = std::min<std::uint64_t>(len, st.head - t);
            }
        }
        for (std::size_t r = 0; r < d_out.size(); ++r)
            d_out[r] = static_cast<gr_complex*>(output_items[r]) + (t - pos);
        d_channel.process(d_in.data(), d_out.data(), static_cast<std::size_t>(len));
        t += len;
        for (std::size_t i = 0; i < d_state.size(); ++i) {
            auto& st = d_state[i];
            if (!d_in[i])
                continue;
            st.rel += static_cast<std::size_t>(len);
            st.cursor = t;
            st.head = t;
            if (st.rel < st.avail)
                st.head = place_head(i, t, true);
        }
    }
    for (std::size_t i = 0; i < d_state.size(); ++i)
        consume(static_cast<int>(i), static_cast<int>(d_state[i].rel));
    return static_cast<int>(end - pos);
}

} /* namespace fedlora */
} /* namespace gr */
