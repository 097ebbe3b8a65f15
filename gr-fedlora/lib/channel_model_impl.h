/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_CHANNEL_MODEL_IMPL_H
#define INCLUDED_FEDLORA_CHANNEL_MODEL_IMPL_H

#include <gnuradio/fedlora/channel_model.h>

#include "fedlora/phy/channel.h"

#include <mutex>
#include <vector>

namespace gr {
namespace fedlora {

class channel_model_impl : public channel_model
{
public:
    explicit channel_model_impl(const ::fedlora::phy::ChannelSimConfig& cfg);

    void new_realisation() override;

    int work(int noutput_items,
             gr_vector_const_void_star& input_items,
             gr_vector_void_star& output_items) override;

private:
    ::fedlora::phy::MultiUserChannel d_channel;
    std::mutex d_mutex; // new_realisation() may come from another thread (Python, message handlers)
    std::vector<const gr_complex*> d_in;
    std::vector<gr_complex*> d_out;
};

} // namespace fedlora
} // namespace gr

#endif
