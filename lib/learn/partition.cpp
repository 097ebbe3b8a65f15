#include "fedlora/learn/partition.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>

namespace fedlora::learn {
namespace {

// Sampling built on std::mt19937_64 only (its output sequence is fixed by the C++ standard), so that a seed gives
// the same partition with any standard library.
constexpr double kTwoPi = 6.283185307179586476925286766559;

class Rng {
public:
    explicit Rng(std::uint64_t seed) : eng_(seed) {}

    // Uniform integer in [0, n), n >= 1, without modulo bias (rejection).
    std::uint64_t below(std::uint64_t n) {
        const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
        while (true) {
            const std::uint64_t x = eng_();
            const std::uint64_t r = x % n;
            if (x - r <= max - (n - 1))
                return r;
        }
    }

    // Uniform double in the open interval (0, 1).
    double uniform_open() { return (static_cast<double>(eng_() >> 11) + 0.5) * 0x1.0p-53; }

    // Standard normal (Box-Muller, one value per call).
    double normal() {
        const double u1 = uniform_open(), u2 = uniform_open();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
    }

    // log of a Gamma(shape, 1) variate: Marsaglia-Tsang for shape >= 1, and for shape < 1 the boost
    // Gamma(a) = Gamma(a + 1) · U^(1/a), kept in the log domain so that tiny shapes do not underflow to 0.
    double log_gamma(double shape) {
        if (shape < 1.0)
            return log_gamma(shape + 1.0) + std::log(uniform_open()) / shape;
        const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
        while (true) {
            const double x = normal();
            double v = 1.0 + c * x;
            if (v <= 0.0)
                continue;
            v = v * v * v;
            const double u = uniform_open();
            if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v))
                return std::log(d) + std::log(v);
        }
    }

    // Symmetric Dirichlet(alpha, ..., alpha) of dimension k.
    std::vector<double> dirichlet(double alpha, std::size_t k) {
        std::vector<double> g(k);
        for (auto& x : g)
            x = log_gamma(alpha);
        const double m = *std::max_element(g.begin(), g.end());
        double sum = 0.0;
        for (auto& x : g) {
            x = std::exp(x - m);
            sum += x;
        }
        for (auto& x : g)
            x /= sum;
        return g;
    }

    template <class T>
    void shuffle(std::vector<T>& v) {  // Fisher-Yates
        for (std::size_t i = v.size(); i > 1; --i)
            std::swap(v[i - 1], v[static_cast<std::size_t>(below(i))]);
    }

private:
    std::mt19937_64 eng_;
};

[[noreturn]] void bad(const std::string& fn, const std::string& what) {
    throw std::invalid_argument(fn + ": " + what);
}

std::string num(double x) {
    std::string s = std::to_string(x);
    while (s.size() > 1 && s.back() == '0')
        s.pop_back();
    if (!s.empty() && s.back() == '.')
        s.pop_back();
    return s;
}

std::map<std::int64_t, std::vector<std::int64_t>> group_by_label(const std::vector<std::int64_t>& labels) {
    std::map<std::int64_t, std::vector<std::int64_t>> g;
    for (std::size_t i = 0; i < labels.size(); ++i)
        g[labels[i]].push_back(static_cast<std::int64_t>(i));
    return g;
}

}  // namespace

Partition partition_iid(std::int64_t num_examples, std::int64_t num_clients, std::uint64_t seed) {
    const std::string fn = "partition_iid";
    if (num_clients < 1)
        bad(fn, "num_clients = " + std::to_string(num_clients) + " must be >= 1");
    if (num_examples < num_clients)
        bad(fn, "num_examples = " + std::to_string(num_examples) + " is smaller than num_clients = " +
                    std::to_string(num_clients) + ": every client needs at least one example");
    std::vector<std::int64_t> idx(static_cast<std::size_t>(num_examples));
    for (std::int64_t i = 0; i < num_examples; ++i)
        idx[static_cast<std::size_t>(i)] = i;
    Rng rng(seed);
    rng.shuffle(idx);
    Partition p(static_cast<std::size_t>(num_clients));
    const std::int64_t base = num_examples / num_clients, extra = num_examples % num_clients;
    auto it = idx.begin();
    for (std::int64_t k = 0; k < num_clients; ++k) {
        const std::int64_t n = base + (k < extra ? 1 : 0);
        auto& part = p[static_cast<std::size_t>(k)];
        part.assign(it, it + n);
        it += n;
        std::sort(part.begin(), part.end());
    }
    return p;
}

Partition partition_dirichlet(const std::vector<std::int64_t>& labels, std::int64_t num_clients,
                              const DirichletOptions& o) {
    const std::string fn = "partition_dirichlet";
    const auto n = static_cast<std::int64_t>(labels.size());
    if (num_clients < 1)
        bad(fn, "num_clients = " + std::to_string(num_clients) + " must be >= 1");
    if (n < num_clients)
        bad(fn, "num_clients = " + std::to_string(num_clients) + " exceeds the " + std::to_string(n) +
                    " examples (labels.size())");
    if (!(o.alpha > 0.0) || !std::isfinite(o.alpha))
        bad(fn, "alpha = " + num(o.alpha) + " must be finite and > 0");
    if (o.min_size < 0)
        bad(fn, "min_size = " + std::to_string(o.min_size) + " must be >= 0");
    if (o.max_attempts < 1)
        bad(fn, "max_attempts = " + std::to_string(o.max_attempts) + " must be >= 1");
    if (o.min_size > n / num_clients)
        bad(fn, "min_size = " + std::to_string(o.min_size) + " is impossible: " + std::to_string(num_clients) +
                    " clients of at least that size need more than the " + std::to_string(n) + " examples");

    auto classes = group_by_label(labels);
    Rng rng(o.seed);
    for (auto& [label, idx] : classes)
        rng.shuffle(idx);
    const auto K = static_cast<std::size_t>(num_clients);
    const double fair_share = static_cast<double>(n) / static_cast<double>(num_clients);

    std::int64_t best_smallest = -1;
    for (int attempt = 1; attempt <= o.max_attempts; ++attempt) {
        Partition parts(K);
        for (const auto& [label, idx] : classes) {
            std::vector<double> p = rng.dirichlet(o.alpha, K);
            if (o.self_balancing) {
                std::vector<double> q = p;
                double sum = 0.0;
                for (std::size_t j = 0; j < K; ++j) {
                    if (static_cast<double>(parts[j].size()) > fair_share)
                        q[j] = 0.0;
                    sum += q[j];
                }
                if (sum > 0.0) {
                    for (auto& x : q)
                        x /= sum;
                    p = std::move(q);
                }
            }
            const auto nc = static_cast<std::int64_t>(idx.size());
            double acc = 0.0;
            std::int64_t from = 0;
            for (std::size_t j = 0; j < K; ++j) {
                acc += p[j];
                const auto share = static_cast<std::int64_t>(std::floor(acc * static_cast<double>(nc)));
                const std::int64_t cut = j + 1 == K ? nc : std::min(nc, share);
                parts[j].insert(parts[j].end(), idx.begin() + from, idx.begin() + cut);
                from = cut;
            }
        }
        std::int64_t smallest = std::numeric_limits<std::int64_t>::max();
        for (const auto& part : parts)
            smallest = std::min(smallest, static_cast<std::int64_t>(part.size()));
        if (smallest >= o.min_size) {
            for (auto& part : parts)
                std::sort(part.begin(), part.end());
            return parts;
        }
        best_smallest = std::max(best_smallest, smallest);
    }
    throw PartitionError(fn + ": after max_attempts = " + std::to_string(o.max_attempts) +
                         " Dirichlet draws with alpha = " + num(o.alpha) + " over " + std::to_string(num_clients) +
                         " clients, some client always held fewer than min_size = " + std::to_string(o.min_size) +
                         " examples (best draw: smallest client " + std::to_string(best_smallest) +
                         "); raise alpha, lower min_size, use fewer clients or allow more attempts");
}

Partition partition_by_category(const std::vector<std::int64_t>& categories, std::int64_t num_clients,
                                std::uint64_t seed, bool balance_sizes,
                                std::vector<std::vector<std::int64_t>>* client_categories) {
    const std::string fn = "partition_by_category";
    if (num_clients < 1)
        bad(fn, "num_clients = " + std::to_string(num_clients) + " must be >= 1");
    const auto groups = group_by_label(categories);
    if (static_cast<std::int64_t>(groups.size()) < num_clients)
        bad(fn, "num_clients = " + std::to_string(num_clients) + " exceeds the " + std::to_string(groups.size()) +
                    " distinct categories: every client needs at least one whole category");
    std::vector<std::int64_t> order;
    for (const auto& g : groups)
        order.push_back(g.first);
    Rng rng(seed);
    rng.shuffle(order);

    const auto K = static_cast<std::size_t>(num_clients);
    std::vector<std::vector<std::int64_t>> cats(K);
    if (balance_sizes) {
        std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
            return groups.at(a).size() > groups.at(b).size();
        });
        std::vector<std::size_t> load(K, 0);
        for (const auto c : order) {
            const auto j = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
            cats[j].push_back(c);
            load[j] += groups.at(c).size();
        }
    } else {
        for (std::size_t i = 0; i < order.size(); ++i)
            cats[i % K].push_back(order[i]);
    }
    Partition parts(K);
    for (std::size_t j = 0; j < K; ++j) {
        std::sort(cats[j].begin(), cats[j].end());
        for (const auto c : cats[j]) {
            const auto& idx = groups.at(c);
            parts[j].insert(parts[j].end(), idx.begin(), idx.end());
        }
        std::sort(parts[j].begin(), parts[j].end());
    }
    if (client_categories)
        *client_categories = std::move(cats);
    return parts;
}

std::vector<std::vector<std::int64_t>> label_histograms(const Partition& partition,
                                                        const std::vector<std::int64_t>& labels,
                                                        std::int64_t num_classes) {
    const std::string fn = "label_histograms";
    if (num_classes < 1)
        bad(fn, "num_classes = " + std::to_string(num_classes) + " must be >= 1");
    std::vector<std::vector<std::int64_t>> h(partition.size(),
                                             std::vector<std::int64_t>(static_cast<std::size_t>(num_classes), 0));
    for (std::size_t k = 0; k < partition.size(); ++k)
        for (const auto i : partition[k]) {
            if (i < 0 || i >= static_cast<std::int64_t>(labels.size()))
                bad(fn, "client " + std::to_string(k) + " holds index " + std::to_string(i) + ", outside the " +
                            std::to_string(labels.size()) + " labels");
            const auto c = labels[static_cast<std::size_t>(i)];
            if (c < 0 || c >= num_classes)
                bad(fn, "label of example " + std::to_string(i) + " is " + std::to_string(c) + ", outside [0, " +
                            std::to_string(num_classes) + ")");
            ++h[k][static_cast<std::size_t>(c)];
        }
    return h;
}

void check_partition(const Partition& partition, std::int64_t num_examples) {
    if (num_examples < 0)
        bad("check_partition", "num_examples = " + std::to_string(num_examples) + " must be >= 0");
    std::vector<std::int64_t> owner(static_cast<std::size_t>(num_examples), -1);
    for (std::size_t k = 0; k < partition.size(); ++k)
        for (const auto i : partition[k]) {
            if (i < 0 || i >= num_examples)
                throw PartitionError("check_partition: client " + std::to_string(k) + " holds index " +
                                     std::to_string(i) + ", outside [0, " + std::to_string(num_examples) + ")");
            auto& o = owner[static_cast<std::size_t>(i)];
            if (o >= 0)
                throw PartitionError("check_partition: example " + std::to_string(i) + " is held by client " +
                                     std::to_string(o) + " and by client " + std::to_string(k));
            o = static_cast<std::int64_t>(k);
        }
    for (std::int64_t i = 0; i < num_examples; ++i)
        if (owner[static_cast<std::size_t>(i)] < 0)
            throw PartitionError("check_partition: example " + std::to_string(i) + " belongs to no client");
}

}  // namespace fedlora::learn
