// Internal to fedlora_control: the argument checks the controller's models share. Every failure is an
// std::invalid_argument whose message names the field and its value.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace fedlora::control::detail {

inline std::string fmt(double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", x);
    return buf;
}

[[noreturn]] inline void fail(const std::string& what) { throw std::invalid_argument("control: " + what); }

inline void require_finite_nonneg(double x, const std::string& field) {
    if (!std::isfinite(x) || x < 0.0)
        fail(field + " = " + fmt(x) + " must be finite and >= 0");
}

inline void require_finite_pos(double x, const std::string& field) {
    if (!std::isfinite(x) || !(x > 0.0))
        fail(field + " = " + fmt(x) + " must be finite and > 0");
}

// "name[i]"
inline std::string at(const std::string& name, std::size_t i) { return name + "[" + std::to_string(i) + "]"; }

}  // namespace fedlora::control::detail
