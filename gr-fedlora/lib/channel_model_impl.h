/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_CHANNEL_MODEL_IMPL_H
#define INCLUDED_FEDLORA_CHANNEL_MODEL_IMPL_H

#include <gnuradio/fedlora/channel_model.h>

#include "fedlora/phy/channel.h"

#include <cstdint>
#include <mutex>
#include <vector>

namespace gr {
namespace fedlora {

class channel_model_impl : public channel_model
{
public:
    explicit channel_model_impl(const ::fedlora::phy::ChannelSimConfig& cfg);

    void new_realisation() override;

    void forecast(int noutput_items, gr_vector_int& ninput_items_required) override;

    int general_work(int noutput_items,
                     gr_vector_int& ninput_items,
                     gr_vector_const_void_star& input_items,
                     gr_vector_void_star& output_items) override;

private:
    // One input's place on the common timeline.
    struct input_state {
        std::uint64_t cursor = 0;       // where its next sample goes unless tagged tx_time (end of the last one)
        std::uint64_t warned_at = ~0ull; // item offset of the last late tx_time warned about
        // within one general_work call:
        std::size_t avail = 0, rel = 0, tag = 0; // samples available, consumed, next tx_time tag index
        std::uint64_t head = 0;                  // where the sample at rel goes
    };

    // Where input i's sample at rel goes (its tx_time if tagged, else right after the previous one); applies the
    // tag, warning once about a late one if `apply`.
    std::uint64_t place_head(std::size_t i, std::uint64_t cursor, bool apply);
    // Timeline position up to which input i's available samples (and the silence before them) are known.
    std::uint64_t horizon(std::size_t i);
    // Samples from rel up to the next tx_time tag or the end of what is available.
    std::size_t run_length(std::size_t i);

    ::fedlora::phy::MultiUserChannel d_channel;
    const double d_fs;
    std::mutex d_mutex; // new_realisation() may come from another thread (Python, message handlers)
    std::vector<input_state> d_state;
    std::vector<std::vector<gr::tag_t>> d_tags; // per input, tx_time tags of the available samples
    std::vector<const gr_complex*> d_in;
    std::vector<gr_complex*> d_out;
};

} // namespace fedlora
} // namespace gr

#endif
