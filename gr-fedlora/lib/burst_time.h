/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_BURST_TIME_H
#define INCLUDED_FEDLORA_BURST_TIME_H

#include <pmt/pmt.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace gr {
namespace fedlora {

// UHD's burst tags, and the tx_time convention shared by the transmitter and the channel: time t (seconds) is the
// tuple (uint64 full seconds, double fractional seconds), and sample n of a stream at rate fs is at t = n / fs.
// to_sample(to_tx_time(n)) == n for every n below 2^50 at the rates used here.
inline const pmt::pmt_t& tag_tx_sob()
{
    static const pmt::pmt_t k = pmt::mp("tx_sob");
    return k;
}
inline const pmt::pmt_t& tag_tx_eob()
{
    static const pmt::pmt_t k = pmt::mp("tx_eob");
    return k;
}
inline const pmt::pmt_t& tag_tx_time()
{
    static const pmt::pmt_t k = pmt::mp("tx_time");
    return k;
}

inline pmt::pmt_t to_tx_time(std::uint64_t sample, double sample_rate)
{
    const double t = static_cast<double>(sample) / sample_rate;
    double full = std::floor(t);
    double frac = (static_cast<double>(sample) - full * sample_rate) / sample_rate;
    if (frac < 0.0) {
        full -= 1.0;
        frac += 1.0;
    }
    return pmt::make_tuple(pmt::from_uint64(static_cast<std::uint64_t>(full)), pmt::from_double(frac));
}

// Sample index of a tx_time value (tuple of full and fractional seconds, or a number of seconds). Throws
// std::invalid_argument for any other value or a negative time.
inline std::uint64_t to_sample(const pmt::pmt_t& t, double sample_rate)
{
    double full = 0.0, frac = 0.0;
    if (pmt::is_tuple(t) && pmt::length(t) == 2) {
        const auto a = pmt::tuple_ref(t, 0), b = pmt::tuple_ref(t, 1);
        full = pmt::is_uint64(a) ? static_cast<double>(pmt::to_uint64(a)) : pmt::to_double(a);
        frac = pmt::to_double(b);
    } else if (pmt::is_number(t)) {
        frac = pmt::to_double(t);
    } else {
        throw std::invalid_argument("tx_time must be a (full seconds, fractional seconds) tuple or a number");
    }
    const double n = full * sample_rate + frac * sample_rate;
    if (!(n >= -0.5) || !std::isfinite(n))
        throw std::invalid_argument("tx_time is negative or not finite");
    return static_cast<std::uint64_t>(std::llround(n));
}

} // namespace fedlora
} // namespace gr

#endif
