/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include "ofdm_demodulator_impl.h"
#include "numerology_arg.h"

#include <gnuradio/io_signature.h>

namespace gr {
namespace fedlora {

ofdm_demodulator::sptr ofdm_demodulator::make(int fft_size, int cp_len, int n_occupied)
{
    return gnuradio::make_block_sptr<ofdm_demodulator_impl>(
        make_numerology(fft_size, cp_len, n_occupied));
}

ofdm_demodulator_impl::ofdm_demodulator_impl(const ::fedlora::phy::Numerology& num)
    : gr::sync_block("ofdm_demodulator",
                     gr::io_signature::make(1, 1, sizeof(gr_complex) * num.symbol_len()),
                     gr::io_signature::make(1, 1, sizeof(gr_complex) * num.n_occupied)),
      d_kernel(num)
{
}

int ofdm_demodulator_impl::work(int noutput_items,
                                gr_vector_const_void_star& input_items,
                                gr_vector_void_star& output_items)
{
    d_kernel.demodulate(static_cast<const gr_complex*>(input_items[0]),
                        static_cast<gr_complex*>(output_items[0]),
                        static_cast<std::size_t>(noutput_items));
    return noutput_items;
}

} /* namespace fedlora */
} /* namespace gr */
