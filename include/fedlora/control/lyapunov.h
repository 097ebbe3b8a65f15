// Virtual queue for a long-term average constraint (Lyapunov drift-plus-penalty).
//
// A constraint "time average of T(t) <= T_bar" becomes the queue Z(t+1) = max(Z(t) + T(t) - T_bar, 0).
// If Z(t)/t -> 0 the constraint holds on average; drift-plus-penalty picks each round's decision to minimise
// V * penalty + Z(t) * T (see docs/math.md).
#pragma once

#include <cstddef>

namespace fedlora::control {

class VirtualQueue {
public:
    // budget: the long-term average the served quantity must not exceed (e.g. seconds per round). Must be > 0.
    explicit VirtualQueue(double budget);

    double budget() const { return budget_; }
    double backlog() const { return z_; }
    std::size_t updates() const { return t_; }
    // Running average of the values pushed so far (0 before the first).
    double average() const { return t_ ? sum_ / static_cast<double>(t_) : 0.0; }

    // Account one round's realised value; returns the new backlog. Throws on NaN or negative values.
    double push(double value);

    // Drift-plus-penalty objective of a candidate decision with the given penalty and value.
    double objective(double v_weight, double penalty, double value) const { return v_weight * penalty + z_ * value; }
    // The backlog push(value) would leave, without pushing: max(Z + value − budget, 0).
    double after(double value) const { return z_ + value - budget_ > 0.0 ? z_ + value - budget_ : 0.0; }

    // For checkpoint/resume.
    void restore(double backlog, std::size_t updates, double sum);
    double sum() const { return sum_; }

private:
    double budget_;
    double z_ = 0.0;
    double sum_ = 0.0;
    std::size_t t_ = 0;
};

}  // namespace fedlora::control
