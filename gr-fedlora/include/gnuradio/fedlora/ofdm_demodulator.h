/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_OFDM_DEMODULATOR_H
#define INCLUDED_FEDLORA_OFDM_DEMODULATOR_H

#include <gnuradio/fedlora/api.h>
#include <gnuradio/sync_block.h>

namespace gr {
namespace fedlora {

/*!
 * \brief OFDM demodulator: one time-domain OFDM symbol (cyclic prefix first) in, its occupied-subcarrier values
 * out. Symbol-aligned input is assumed (synchronisation is a separate block).
 * \ingroup fedlora
 *
 * The DSP is fedlora::phy::OfdmDemodulator, the same kernel the simulator runs.
 */
class FEDLORA_API ofdm_demodulator : virtual public gr::sync_block
{
public:
    typedef std::shared_ptr<ofdm_demodulator> sptr;

    static sptr make(int fft_size = 64, int cp_len = 16, int n_occupied = 48);
};

} // namespace fedlora
} // namespace gr

#endif /* INCLUDED_FEDLORA_OFDM_DEMODULATOR_H */
