/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_OFDM_MODULATOR_IMPL_H
#define INCLUDED_FEDLORA_OFDM_MODULATOR_IMPL_H

#include <gnuradio/fedlora/ofdm_modulator.h>

#include "fedlora/phy/ofdm.h"

namespace gr {
namespace fedlora {

class ofdm_modulator_impl : public ofdm_modulator
{
public:
    ofdm_modulator_impl(const ::fedlora::phy::Numerology& num);

    int work(int noutput_items,
             gr_vector_const_void_star& input_items,
             gr_vector_void_star& output_items) override;

private:
    ::fedlora::phy::OfdmModulator d_kernel;
};

} // namespace fedlora
} // namespace gr

#endif
