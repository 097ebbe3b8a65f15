/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_OFDM_MODULATOR_H
#define INCLUDED_FEDLORA_OFDM_MODULATOR_H

#include <gnuradio/fedlora/api.h>
#include <gnuradio/sync_block.h>

namespace gr {
namespace fedlora {

/*!
 * \brief OFDM modulator: one vector of occupied-subcarrier values in, one time-domain OFDM symbol with its
 * cyclic prefix out.
 * \ingroup fedlora
 *
 * Input: vectors of \p n_occupied complex values, subcarriers -n_occupied/2..-1, 1..n_occupied/2 (DC unused).
 * Output: vectors of fft_size + cp_len complex samples. Unitary scaling (1/sqrt(fft_size)).
 * The DSP is fedlora::phy::OfdmModulator, the same kernel the simulator runs.
 */
class FEDLORA_API ofdm_modulator : virtual public gr::sync_block
{
public:
    typedef std::shared_ptr<ofdm_modulator> sptr;

    /*!
     * \param fft_size FFT size (power of two, 8..65536)
     * \param cp_len cyclic prefix length in samples (0..fft_size)
     * \param n_occupied number of occupied subcarriers (even, <= fft_size - 2)
     */
    static sptr make(int fft_size = 64, int cp_len = 16, int n_occupied = 48);
};

} // namespace fedlora
} // namespace gr

#endif /* INCLUDED_FEDLORA_OFDM_MODULATOR_H */
