#include "fedlora/control/lyapunov.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace fedlora::control {

VirtualQueue::VirtualQueue(double budget) : budget_(budget) {
    if (!(budget > 0.0) || !std::isfinite(budget))
        throw std::invalid_argument("VirtualQueue: budget = " + std::to_string(budget) + " must be finite and > 0");
}

double VirtualQueue::push(double value) {
    if (!std::isfinite(value) || value < 0.0)
        throw std::invalid_argument("VirtualQueue::push: value = " + std::to_string(value) +
                                    " must be finite and >= 0");
    z_ = std::max(z_ + value - budget_, 0.0);
    sum_ += value;
    ++t_;
    return z_;
}

void VirtualQueue::restore(double backlog, std::size_t updates, double sum) {
    if (!std::isfinite(backlog) || backlog < 0.0 || !std::isfinite(sum) || sum < 0.0)
        throw std::invalid_argument("VirtualQueue::restore: backlog = " + std::to_string(backlog) +
                                    ", sum = " + std::to_string(sum) + " must be finite and >= 0");
    z_ = backlog;
    t_ = updates;
    sum_ = sum;
}

}  // namespace fedlora::control
