// Partitioners: exact covers, sizes, determinism by seed, argument checks, and the label statistics of the
// Dirichlet partitioner at large and small alpha.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>

#include "fedlora/learn/partition.h"

using namespace fedlora::learn;

namespace {

// Fashion-MNIST-like labels: 10 classes × 6000, interleaved.
std::vector<std::int64_t> balanced_labels(std::int64_t classes = 10, std::int64_t per_class = 6000) {
    std::vector<std::int64_t> l(static_cast<std::size_t>(classes * per_class));
    for (std::size_t i = 0; i < l.size(); ++i)
        l[i] = static_cast<std::int64_t>(i) % classes;
    return l;
}

// Total-variation distance between a client's label distribution and the uniform distribution over C classes.
double tv_to_uniform(const std::vector<std::int64_t>& hist) {
    const double n = static_cast<double>(std::accumulate(hist.begin(), hist.end(), std::int64_t{0}));
    const double u = 1.0 / static_cast<double>(hist.size());
    double tv = 0.0;
    for (auto c : hist)
        tv += std::abs(static_cast<double>(c) / n - u);
    return 0.5 * tv;
}

// Smallest number of classes that together hold at least 90% of a client's examples.
int classes_for_90_percent(std::vector<std::int64_t> hist) {
    std::sort(hist.rbegin(), hist.rend());
    const double n = static_cast<double>(std::accumulate(hist.begin(), hist.end(), std::int64_t{0}));
    double acc = 0.0;
    int k = 0;
    for (auto c : hist) {
        acc += static_cast<double>(c);
        ++k;
        if (acc >= 0.9 * n)
            break;
    }
    return k;
}

template <class E>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
    try {
        fn();
        ADD_FAILURE() << "nothing was thrown";
    } catch (const E& e) {
        const std::string msg = e.what();
        for (const auto& p : parts)
            EXPECT_NE(msg.find(p), std::string::npos) << "message '" << msg << "' lacks '" << p << "'";
    } catch (const std::exception& e) {
        ADD_FAILURE() << "wrong exception type: " << e.what();
    }
}

std::vector<std::size_t> sizes(const Partition& p) {
    std::vector<std::size_t> s;
    for (const auto& x : p)
        s.push_back(x.size());
    return s;
}

}  // namespace

TEST(Partition, CheckPartitionDetectsDefects) {
    check_partition({{0, 2}, {1, 3}}, 4);
    expect_error<PartitionError>([] { check_partition({{0, 1}, {1, 2, 3}}, 4); },
                                 {"example 1 is held by client 0 and by client 1"});
    expect_error<PartitionError>([] { check_partition({{0, 1}, {3}}, 4); }, {"example 2 belongs to no client"});
    expect_error<PartitionError>([] { check_partition({{0, 1, 2}, {4}}, 4); }, {"client 1 holds index 4"});
    const auto h = label_histograms({{0, 1, 2}, {3}}, {2, 0, 2, 1}, 3);
    EXPECT_EQ(h, (std::vector<std::vector<std::int64_t>>{{1, 0, 2}, {0, 1, 0}}));
    expect_error<std::invalid_argument>([] { label_histograms({{0}}, {5}, 3); }, {"label of example 0 is 5"});
}

TEST(Partition, IidCoversEvenlyAndIsDeterministic) {
    for (auto [n, k] : {std::pair<std::int64_t, std::int64_t>{1003, 10}, {60000, 7}, {5, 5}, {17, 1}}) {
        SCOPED_TRACE(std::to_string(n) + " over " + std::to_string(k));
        const auto p = partition_iid(n, k, 3);
        ASSERT_EQ(static_cast<std::int64_t>(p.size()), k);
        check_partition(p, n);
        const auto s = sizes(p);
        EXPECT_LE(*std::max_element(s.begin(), s.end()) - *std::min_element(s.begin(), s.end()), 1u);
        for (const auto& part : p)
            EXPECT_TRUE(std::is_sorted(part.begin(), part.end()));
        EXPECT_EQ(partition_iid(n, k, 3), p);
    }
    EXPECT_NE(partition_iid(1000, 4, 1), partition_iid(1000, 4, 2));
    // A shuffle, not contiguous blocks: client 0 of 1000 over 4 holds indices from everywhere.
    const auto p = partition_iid(1000, 4, 9);
    EXPECT_GT(p[0].back() - p[0].front(), 900);
    expect_error<std::invalid_argument>([] { partition_iid(10, 0, 1); }, {"partition_iid", "num_clients = 0"});
    expect_error<std::invalid_argument>([] { partition_iid(3, 4, 1); }, {"num_examples = 3", "num_clients = 4"});
}

TEST(Partition, DirichletLargeAlphaFollowsGlobalLabelMix) {
    // alpha = 1000, K = 10: each client's share of a class is 1/K with relative standard deviation
    // sqrt((K - 1) / (K alpha + 1)) ~ 3%, so its label mix deviates from uniform by a TV distance of ~0.01.
    // Bound stated and tested: TV <= 0.05 for every client; 9 or more classes needed to reach 90%.
    const auto labels = balanced_labels();
    DirichletOptions o;
    o.alpha = 1000.0;
    o.seed = 11;
    const auto p = partition_dirichlet(labels, 10, o);
    check_partition(p, static_cast<std::int64_t>(labels.size()));
    const auto h = label_histograms(p, labels, 10);
    double worst = 0.0, mean_classes = 0.0;
    for (const auto& hist : h) {
        worst = std::max(worst, tv_to_uniform(hist));
        mean_classes += classes_for_90_percent(hist) / 10.0;
    }
    RecordProperty("alpha1000_worst_tv", std::to_string(worst));
    std::printf("    alpha = 1000: worst per-client TV to the global label mix %.4f, classes for 90%% %.2f\n", worst,
                mean_classes);
    EXPECT_LE(worst, 0.05);
    EXPECT_GE(mean_classes, 9.0);
    // Sizes near N/K as well.
    for (auto s : sizes(p))
        EXPECT_NEAR(static_cast<double>(s), 6000.0, 600.0);
}

TEST(Partition, DirichletSmallAlphaIsSkewed) {
    const auto labels = balanced_labels();
    DirichletOptions o;
    o.alpha = 0.1;
    o.seed = 5;
    o.min_size = 10;
    double mean_classes = 0.0, mean_tv = 0.0;
    int runs = 0;
    for (std::uint64_t seed = 1; seed <= 5; ++seed) {
        o.seed = seed;
        const auto p = partition_dirichlet(labels, 10, o);
        check_partition(p, static_cast<std::int64_t>(labels.size()));
        for (const auto& hist : label_histograms(p, labels, 10)) {
            mean_classes += classes_for_90_percent(hist);
            mean_tv += tv_to_uniform(hist);
            ++runs;
        }
    }
    mean_classes /= runs;
    mean_tv /= runs;
    std::printf("    alpha = 0.1: classes holding 90%% of a client's data %.2f on average, mean TV %.3f\n",
                mean_classes, mean_tv);
    // IID would need 9 classes; with alpha = 0.1 a client is dominated by very few.
    EXPECT_LE(mean_classes, 3.5);
    EXPECT_GE(mean_tv, 0.5);
}

TEST(Partition, DirichletDeterministicBySeedAndHonoursMinSize) {
    // K = 20, alpha = 0.1: about 60% of single draws leave some client below 200 examples.
    const auto labels = balanced_labels();
    DirichletOptions free;
    free.alpha = 0.1;
    free.min_size = 0;
    std::uint64_t seed = 0;
    std::size_t smallest = 0;
    do {  // a seed whose first draw violates min_size = 200
        free.seed = ++seed;
        const auto p = partition_dirichlet(labels, 20, free);
        smallest = std::min_element(p.begin(), p.end(), [](auto& a, auto& b) { return a.size() < b.size(); })->size();
    } while (smallest >= 200 && seed < 50);
    ASSERT_LT(smallest, 200u);
    DirichletOptions o = free;
    o.min_size = 200;
    o.max_attempts = 50;
    const auto a = partition_dirichlet(labels, 20, o);
    check_partition(a, 60000);
    for (const auto& part : a)
        EXPECT_GE(part.size(), 200u);
    EXPECT_NE(a, partition_dirichlet(labels, 20, free));  // a later draw was taken
    EXPECT_EQ(partition_dirichlet(labels, 20, o), a);
    o.seed = seed + 1;
    EXPECT_NE(partition_dirichlet(labels, 20, o), a);
    // Arbitrary label values (not 0..C-1), in the same ascending order, give the same partition.
    std::vector<std::int64_t> odd(labels.size());
    std::transform(labels.begin(), labels.end(), odd.begin(), [](std::int64_t l) { return 7 * l - 1000; });
    o.seed = seed;
    EXPECT_EQ(partition_dirichlet(odd, 20, o), a);
}

TEST(Partition, DirichletSelfBalancingBoundsSizes) {
    // A client above the fair share N/K receives nothing more, so no client exceeds N/K + the largest class.
    const auto labels = balanced_labels();
    DirichletOptions o;
    o.alpha = 0.3;
    o.self_balancing = true;
    for (std::uint64_t seed = 1; seed <= 5; ++seed) {
        o.seed = seed;
        const auto p = partition_dirichlet(labels, 10, o);
        check_partition(p, 60000);
        for (auto s : sizes(p))
            EXPECT_LE(s, 6000u + 6000u);
    }
    // And in practice it evens the sizes out: the largest client is smaller on average than without balancing.
    double largest[2] = {0.0, 0.0};
    for (int balance = 0; balance < 2; ++balance)
        for (std::uint64_t seed = 1; seed <= 20; ++seed) {
            o.seed = seed;
            o.self_balancing = balance == 1;
            const auto s = sizes(partition_dirichlet(labels, 10, o));
            largest[balance] += static_cast<double>(*std::max_element(s.begin(), s.end())) / 20.0;
        }
    std::printf("    alpha = 0.3, K = 10: mean largest client %.0f without self-balancing, %.0f with\n", largest[0],
                largest[1]);
    EXPECT_LT(largest[1], largest[0]);
}

TEST(Partition, DirichletGivesUpWithAClearError) {
    const auto labels = balanced_labels();
    DirichletOptions o;
    o.alpha = 0.01;
    o.min_size = 550;  // N/K = 600: possible in principle, but not with alpha = 0.01
    o.max_attempts = 5;
    expect_error<PartitionError>([&] { partition_dirichlet(labels, 100, o); },
                                 {"max_attempts = 5", "min_size = 550", "alpha = 0.01", "smallest client"});
}

TEST(Partition, DirichletRejectsBadArguments) {
    const auto labels = balanced_labels(10, 10);
    auto with = [&](std::function<void(DirichletOptions&)> f, std::int64_t k = 5) {
        DirichletOptions o;
        o.min_size = 0;
        f(o);
        return [o, k, &labels] { partition_dirichlet(labels, k, o); };
    };
    using IA = std::invalid_argument;
    expect_error<IA>(with([](auto& o) { o.alpha = 0.0; }), {"alpha = 0"});
    expect_error<IA>(with([](auto& o) { o.alpha = -1.0; }), {"alpha = -1"});
    expect_error<IA>(with([](auto& o) { o.alpha = std::nan(""); }), {"alpha"});
    expect_error<IA>(with([](auto& o) { o.alpha = HUGE_VAL; }), {"alpha"});
    expect_error<IA>(with([](auto& o) { o.min_size = -1; }), {"min_size = -1"});
    expect_error<IA>(with([](auto& o) { o.min_size = 21; }), {"min_size = 21", "impossible"});
    expect_error<IA>(with([](auto& o) { o.max_attempts = 0; }), {"max_attempts = 0"});
    expect_error<IA>(with([](auto&) {}, 0), {"num_clients = 0"});
    expect_error<IA>(with([](auto&) {}, 101), {"num_clients = 101", "100 examples"});
    // min_size exactly N/K is allowed (and may then need luck, so only the argument check is tested here).
    DirichletOptions ok;
    ok.min_size = 0;
    EXPECT_EQ(partition_dirichlet(labels, 100, ok).size(), 100u);
}

TEST(Partition, ByCategoryKeepsCategoriesWhole) {
    // 7 categories of unequal sizes.
    std::vector<std::int64_t> cats;
    const std::int64_t size_of[7] = {50, 400, 30, 30, 200, 10, 90};
    for (std::int64_t c = 0; c < 7; ++c)
        for (std::int64_t i = 0; i < size_of[c]; ++i)
            cats.push_back(c * 10);  // category values need not be 0..C-1
    std::rotate(cats.begin(), cats.begin() + 123, cats.end());
    for (bool balance : {false, true}) {
        SCOPED_TRACE(balance ? "balanced" : "round-robin");
        std::vector<std::vector<std::int64_t>> owned;
        const auto p = partition_by_category(cats, 3, 17, balance, &owned);
        check_partition(p, static_cast<std::int64_t>(cats.size()));
        ASSERT_EQ(owned.size(), 3u);
        std::vector<std::int64_t> all;
        for (std::size_t k = 0; k < 3; ++k) {
            EXPECT_FALSE(owned[k].empty());
            // Every example of client k belongs to one of its categories, and it holds all of them.
            std::size_t expected = 0;
            for (auto c : owned[k])
                expected += static_cast<std::size_t>(size_of[c / 10]);
            EXPECT_EQ(p[k].size(), expected);
            for (auto i : p[k])
                EXPECT_TRUE(std::binary_search(owned[k].begin(), owned[k].end(), cats[static_cast<std::size_t>(i)]));
            all.insert(all.end(), owned[k].begin(), owned[k].end());
        }
        std::sort(all.begin(), all.end());
        EXPECT_EQ(all, (std::vector<std::int64_t>{0, 10, 20, 30, 40, 50, 60}));
        if (!balance) {
            auto n = sizes(owned);
            std::sort(n.begin(), n.end());
            EXPECT_EQ(n, (std::vector<std::size_t>{2, 2, 3}));
        } else {
            // Greedy largest-first: no client exceeds the mean plus the largest category it could have received.
            for (auto s : sizes(p))
                EXPECT_LE(s, 810u / 3 + 400u);
        }
        EXPECT_EQ(partition_by_category(cats, 3, 17, balance), p);
    }
    EXPECT_NE(partition_by_category(cats, 3, 1), partition_by_category(cats, 3, 2));
    expect_error<std::invalid_argument>([&] { partition_by_category(cats, 8, 1); },
                                        {"num_clients = 8", "7 distinct categories"});
    expect_error<std::invalid_argument>([&] { partition_by_category(cats, 0, 1); }, {"num_clients = 0"});
    // One client per category.
    const auto one_each = partition_by_category(cats, 7, 4);
    for (const auto& part : one_each) {
        std::vector<std::int64_t> c;
        for (auto i : part)
            c.push_back(cats[static_cast<std::size_t>(i)]);
        EXPECT_EQ(std::count(c.begin(), c.end(), c.front()), static_cast<long>(c.size()));
    }
}
