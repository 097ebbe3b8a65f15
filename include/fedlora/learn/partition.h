// Partitioners: which example indices each of K clients holds. Deterministic by seed on every platform (own
// Mersenne-Twister-based sampling: std::mt19937_64's sequence is fixed by the standard, the std distributions are
// not, so none of them is used). No LibTorch here: labels come as std::vector<int64_t>.
//
// A Partition lists, per client, the indices it holds in ascending order; the lists are disjoint and cover
// 0..N-1. Order within a client carries no information (the training loop shuffles every epoch).
// Bad arguments throw std::invalid_argument naming the argument.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fedlora::learn {

using Partition = std::vector<std::vector<std::int64_t>>;

// IID: a seeded shuffle of 0..num_examples-1 cut into num_clients parts whose sizes differ by at most 1 (the
// first num_examples % num_clients clients get one more). Requires 1 <= num_clients <= num_examples.
Partition partition_iid(std::int64_t num_examples, std::int64_t num_clients, std::uint64_t seed);

// Label skew by Dirichlet sampling, following the convention of Flower's DirichletPartitioner (flwr-datasets;
// see docs/math.md): for each class, in ascending label order, draw proportions p ~ Dir(alpha·1_K) over the
// clients and cut that class's (seed-shuffled) indices at floor(n_c · cumsum(p)); with self_balancing, clients
// already holding more than N/K examples get no share of the class (p renormalised over the others). When some
// client ends with fewer than min_size examples, everything is drawn again, up to max_attempts draws in all;
// after that a PartitionError reports the smallest client size reached. Small alpha: few classes per client;
// large alpha: every client close to the global label mix.
struct DirichletOptions {
    double alpha = 0.5;          // concentration, > 0 and finite
    std::int64_t min_size = 10;  // smallest client size accepted, >= 0 (Flower's min_partition_size)
    std::uint64_t seed = 42;
    int max_attempts = 10;       // Dirichlet draws before giving up, >= 1
    bool self_balancing = false;
};

class PartitionError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

Partition partition_dirichlet(const std::vector<std::int64_t>& labels, std::int64_t num_clients,
                              const DirichletOptions& options = {});

// By category (e.g. fortunes domains): every category goes whole to one client and every client gets at least one.
// Categories are visited in a seed-shuffled order and dealt round-robin (clients get ⌊C/K⌋ or ⌈C/K⌉ categories);
// with balance_sizes they go largest first to the client holding the fewest examples so far. Requires
// 1 <= num_clients <= number of distinct categories. client_categories, when given, receives each client's
// category values (ascending).
Partition partition_by_category(const std::vector<std::int64_t>& categories, std::int64_t num_clients,
                                std::uint64_t seed, bool balance_sizes = false,
                                std::vector<std::vector<std::int64_t>>* client_categories = nullptr);

// Per-client label counts: result[k][c] = number of examples of client k with label c, labels in [0, num_classes).
std::vector<std::vector<std::int64_t>> label_histograms(const Partition& partition,
                                                        const std::vector<std::int64_t>& labels,
                                                        std::int64_t num_classes);

// Throws PartitionError unless the partition's lists are disjoint, in range and cover 0..num_examples-1.
void check_partition(const Partition& partition, std::int64_t num_examples);

}  // namespace fedlora::learn
