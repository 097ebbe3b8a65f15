/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_NUMEROLOGY_ARG_H
#define INCLUDED_FEDLORA_NUMEROLOGY_ARG_H

#include "fedlora/phy/numerology.h"

namespace gr {
namespace fedlora {

// Builds and validates a numerology from block parameters; throws std::invalid_argument naming the bad one
// before the block's io signature is made (so make() fails cleanly in Python and GRC).
inline ::fedlora::phy::Numerology make_numerology(int fft_size, int cp_len, int n_occupied)
{
    ::fedlora::phy::Numerology num;
    num.fft_size = fft_size;
    num.cp_len = cp_len;
    num.n_occupied = n_occupied;
    num.validate();
    return num;
}

} // namespace fedlora
} // namespace gr

#endif
