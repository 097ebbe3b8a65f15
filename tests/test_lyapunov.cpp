#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "fedlora/control/lyapunov.h"

using fedlora::control::VirtualQueue;

TEST(VirtualQueue, GrowsLinearlyWhenOverBudget) {
    VirtualQueue q(1.0);
    for (int t = 1; t <= 50; ++t) {
        q.push(1.5);
        EXPECT_NEAR(q.backlog(), 0.5 * t, 1e-12);  // Z(t) = t (T - T_bar) from Z(0) = 0
    }
    EXPECT_NEAR(q.average(), 1.5, 1e-12);
}

TEST(VirtualQueue, StaysEmptyUnderBudgetAndDrainsToZero) {
    VirtualQueue q(2.0);
    q.push(5.0);  // Z = 3
    q.push(0.5);  // Z = 1.5
    EXPECT_NEAR(q.backlog(), 1.5, 1e-12);
    q.push(0.0);  // would be -0.5: clipped
    EXPECT_EQ(q.backlog(), 0.0);
    q.push(1.0);
    EXPECT_EQ(q.backlog(), 0.0);
}

TEST(VirtualQueue, BacklogBoundsTheAverageViolation) {
    // Z(T)/T >= average(T) - T_bar for any sequence (telescoping the max(.,0) recursion).
    std::mt19937 rng(5);
    std::exponential_distribution<double> e(1.0);
    VirtualQueue q(0.9);
    for (int t = 1; t <= 1000; ++t) {
        q.push(e(rng));
        EXPECT_GE(q.backlog() / t + 1e-12, q.average() - q.budget());
    }
}

TEST(VirtualQueue, RejectsBadValues) {
    EXPECT_THROW(VirtualQueue(0.0), std::invalid_argument);
    EXPECT_THROW(VirtualQueue(std::numeric_limits<double>::quiet_NaN()), std::invalid_argument);
    VirtualQueue q(1.0);
    EXPECT_THROW(q.push(-1.0), std::invalid_argument);
    EXPECT_THROW(q.push(std::numeric_limits<double>::quiet_NaN()), std::invalid_argument);
    EXPECT_EQ(q.updates(), 0u);
}

TEST(VirtualQueue, DriftPlusPenaltyTradesOffByBacklog) {
    VirtualQueue q(1.0);
    // Two candidates: (penalty 1, time 2) and (penalty 3, time 1). Empty queue: penalty decides.
    const double v = 1.0;
    EXPECT_LT(q.objective(v, 1.0, 2.0), q.objective(v, 3.0, 1.0));
    q.push(4.0);  // Z = 3: time now costs more than the penalty gap.
    EXPECT_GT(q.objective(v, 1.0, 2.0), q.objective(v, 3.0, 1.0));
}
