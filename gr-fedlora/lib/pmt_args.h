/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_PMT_ARGS_H
#define INCLUDED_FEDLORA_PMT_ARGS_H

#include <pmt/pmt.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace gr {
namespace fedlora {

// Typed reads of the message dictionaries the AirComp blocks exchange; each error names the key.

inline long dict_integer(const pmt::pmt_t& d, const char* key, long fallback)
{
    const auto v = pmt::dict_ref(d, pmt::mp(key), pmt::PMT_NIL);
    if (pmt::is_null(v))
        return fallback;
    if (pmt::is_uint64(v))
        return static_cast<long>(pmt::to_uint64(v));
    if (pmt::is_integer(v))
        return pmt::to_long(v);
    if (pmt::is_real(v) && pmt::to_double(v) == static_cast<double>(static_cast<long>(pmt::to_double(v))))
        return static_cast<long>(pmt::to_double(v));
    throw std::invalid_argument(std::string("'") + key + "' must be an integer");
}

inline double dict_number(const pmt::pmt_t& d, const char* key, double fallback)
{
    const auto v = pmt::dict_ref(d, pmt::mp(key), pmt::PMT_NIL);
    if (pmt::is_null(v))
        return fallback;
    if (pmt::is_uint64(v))
        return static_cast<double>(pmt::to_uint64(v));
    if (pmt::is_number(v) && !pmt::is_complex(v))
        return pmt::to_double(v);
    throw std::invalid_argument(std::string("'") + key + "' must be a number");
}

// A vector of reals (f64, f32, or integer uniform vectors, or a PMT vector of numbers), into out (cleared first).
inline void dict_reals(const pmt::pmt_t& d, const char* key, std::vector<double>& out)
{
    out.clear();
    const auto v = pmt::dict_ref(d, pmt::mp(key), pmt::PMT_NIL);
    if (pmt::is_null(v))
        return;
    std::size_t n = 0;
    if (pmt::is_f64vector(v)) {
        const double* p = pmt::f64vector_elements(v, n);
        out.assign(p, p + n);
    } else if (pmt::is_f32vector(v)) {
        const float* p = pmt::f32vector_elements(v, n);
        out.assign(p, p + n);
    } else if (pmt::is_vector(v)) {
        for (std::size_t i = 0; i < pmt::length(v); ++i)
            out.push_back(pmt::to_double(pmt::vector_ref(v, i)));
    } else if (pmt::is_number(v)) {
        out.push_back(pmt::to_double(v));
    } else {
        throw std::invalid_argument(std::string("'") + key + "' must be a vector of numbers");
    }
}

// Indices (u32, s32, s64 or u64 uniform vectors), into out (cleared first; left empty if the key is absent).
inline void dict_indices(const pmt::pmt_t& d, const char* key, std::vector<std::uint32_t>& out)
{
    out.clear();
    const auto v = pmt::dict_ref(d, pmt::mp(key), pmt::PMT_NIL);
    if (pmt::is_null(v))
        return;
    std::size_t n = 0;
    auto put = [&](auto* p) {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
        for (std::size_t i = 0; i < n; ++i) {
            bool bad = false;
            if constexpr (std::is_signed_v<T>)
                bad = p[i] < 0;
            if (bad || static_cast<std::uint64_t>(p[i]) > 0xFFFFFFFFull)
                throw std::invalid_argument(std::string("'") + key + "' entry " + std::to_string(i) +
                                            " is out of range");
            out.push_back(static_cast<std::uint32_t>(p[i]));
        }
    };
    if (pmt::is_u32vector(v))
        put(pmt::u32vector_elements(v, n));
    else if (pmt::is_s32vector(v))
        put(pmt::s32vector_elements(v, n));
    else if (pmt::is_s64vector(v))
        put(pmt::s64vector_elements(v, n));
    else if (pmt::is_u64vector(v))
        put(pmt::u64vector_elements(v, n));
    else
        throw std::invalid_argument(std::string("'") + key + "' must be a u32, s32, s64 or u64 vector");
}

} // namespace fedlora
} // namespace gr

#endif
