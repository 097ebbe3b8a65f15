// Federated checkpoints (checkpoint.h): exact round trip of every field; refusal of missing, foreign, future-version,
// truncated and bit-flipped files; a failed save (file-size limit hit mid-write) leaves the previous checkpoint
// intact; and the acceptance test: a tiny federated loop (3 clients, tiny ViT on 300 Fashion-MNIST images) run N
// rounds straight equals, bit for bit, k rounds + save + destroy everything + load + N − k rounds, for each rule.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <sys/resource.h>
#include <vector>

#include "support/scratch_dir.h"
#include "fedlora/learn/aggregate.h"
#include "fedlora/learn/checkpoint.h"
#include "fedlora/learn/data.h"
#include "fedlora/learn/partition.h"
#include "fedlora/learn/soft.h"
#include "fedlora/learn/train.h"

using namespace fedlora::learn;
namespace fs = std::filesystem;

namespace {

using fedlora::test::ScratchDir;

std::string read_bytes(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& p, const std::string& b) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

Adapter small_adapter(std::uint64_t seed, const std::string& prefix = "blocks.0.") {
    std::mt19937_64 eng(seed);
    std::normal_distribution<float> n;
    Adapter a;
    for (auto [name, r, in, out] : {std::tuple<std::string, int, int, int>{"attn.qkv", 4, 16, 48}, {"mlp.fc2", 4, 64, 16}}) {
        auto l = LoraLayerFactors::zeros(prefix + name, r, in, out);
        for (auto& v : l.A)
            v = n(eng);
        for (auto& v : l.B)
            v = n(eng);
        a.layers.push_back(std::move(l));
    }
    return a;
}

bool same_adapter(const Adapter& a, const Adapter& b) {
    if (!a.same_shape(b))
        return false;
    for (std::size_t l = 0; l < a.layers.size(); ++l)
        if (a.layers[l].A != b.layers[l].A || a.layers[l].B != b.layers[l].B)
            return false;
    return true;
}

Checkpoint sample_checkpoint() {
    Checkpoint ck;
    ck.round = 7;
    ck.rule = "fedsa";
    ck.global = small_adapter(1);
    for (int i = 0; i < 3; ++i) {
        ClientState c;
        c.id = 10 + i;
        if (i != 1)
            c.adapter = small_adapter(20 + i);
        if (i == 0) {
            c.optimizer.kind = "adamw";
            c.optimizer.tensors = {{"blocks.0.attn.qkv.lora_A.step", torch::tensor(int64_t{12})},
                                   {"blocks.0.attn.qkv.lora_A.exp_avg", torch::randn({4, 16})},
                                   {"blocks.0.attn.qkv.lora_A.exp_avg_sq", torch::rand({4, 16})}};
        } else if (i == 2) {
            c.optimizer.kind = "sgd";
            c.optimizer.tensors = {{"blocks.0.mlp.fc2.lora_B.momentum_buffer", torch::randn({16, 4}, torch::kDouble)}};
        }
        ck.clients.push_back(std::move(c));
    }
    torch::manual_seed(5);
    torch::randn({3});
    ck.torch_rng = torch_rng_state();
    std::mt19937_64 server(2024);
    server.discard(1000);
    ck.engines.emplace("server", server);
    ck.engines.emplace("channel.noise", std::mt19937_64(7));
    ck.controller_state = std::string("{\"Z\": 1.5, \"rho\": 0.25}\0\xff binary", 34);
    ck.info["config.sha"] = "abc123";
    return ck;
}

void expect_equal(const Checkpoint& a, const Checkpoint& b) {
    EXPECT_EQ(a.round, b.round);
    EXPECT_EQ(a.rule, b.rule);
    EXPECT_TRUE(same_adapter(a.global, b.global));
    ASSERT_EQ(a.clients.size(), b.clients.size());
    for (std::size_t i = 0; i < a.clients.size(); ++i) {
        EXPECT_EQ(a.clients[i].id, b.clients[i].id);
        EXPECT_TRUE(same_adapter(a.clients[i].adapter, b.clients[i].adapter));
        EXPECT_EQ(a.clients[i].optimizer.kind, b.clients[i].optimizer.kind);
        ASSERT_EQ(a.clients[i].optimizer.tensors.size(), b.clients[i].optimizer.tensors.size());
        for (std::size_t j = 0; j < a.clients[i].optimizer.tensors.size(); ++j) {
            EXPECT_EQ(a.clients[i].optimizer.tensors[j].first, b.clients[i].optimizer.tensors[j].first);
            const auto &x = a.clients[i].optimizer.tensors[j].second, &y = b.clients[i].optimizer.tensors[j].second;
            EXPECT_EQ(x.scalar_type(), y.scalar_type());
            EXPECT_TRUE(torch::equal(x, y));
        }
    }
    ASSERT_EQ(a.torch_rng.defined(), b.torch_rng.defined());
    if (a.torch_rng.defined()) {
        EXPECT_TRUE(torch::equal(a.torch_rng, b.torch_rng));
    }
    EXPECT_EQ(a.engines, b.engines);
    EXPECT_EQ(a.controller_state, b.controller_state);
    EXPECT_EQ(a.info, b.info);
}

std::string load_error(const std::string& path) {
    try {
        load_checkpoint(path);
    } catch (const CheckpointError& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("WRONG TYPE: ") + e.what();
    }
    return "";
}

}  // namespace

TEST(Checkpoint, RoundTripIsExact) {
    ScratchDir dir;
    const auto ck = sample_checkpoint();
    save_checkpoint(dir.file("ck.safetensors"), ck);
    const auto back = load_checkpoint(dir.file("ck.safetensors"));
    expect_equal(ck, back);
    // The restored engine continues the same stream.
    auto e1 = ck.engines.at("server"), e2 = back.engines.at("server");
    EXPECT_EQ(e1(), e2());
    // The torch generator state restores the stream.
    set_torch_rng_state(back.torch_rng);
    const auto x = torch::randn({4});
    set_torch_rng_state(ck.torch_rng);
    EXPECT_TRUE(torch::equal(torch::randn({4}), x));
    EXPECT_THROW(set_torch_rng_state(torch::zeros({3}, torch::kByte)), CheckpointError);

    // An empty checkpoint (no clients, no RNG, no blob) also round-trips.
    Checkpoint empty;
    empty.global = small_adapter(3);
    save_checkpoint(dir.file("e.safetensors"), empty);
    expect_equal(empty, load_checkpoint(dir.file("e.safetensors")));
    // It is a plain safetensors file.
    const auto h = read_safetensors_header(dir.file("ck.safetensors"));
    EXPECT_EQ(h.metadata.at("fedlora.checkpoint.version"), "1");
    EXPECT_NE(h.find("global/blocks.0.attn.qkv.lora_A"), nullptr);
}

TEST(Checkpoint, BadFilesAreRefusedWithClearErrors) {
    ScratchDir dir;
    std::string msg = load_error(dir.file("missing.safetensors"));
    EXPECT_NE(msg.find("missing.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;

    // A safetensors file that is not a checkpoint.
    save_safetensors(dir.file("model.safetensors"), NamedTensors{{"w", torch::ones({2})}});
    msg = load_error(dir.file("model.safetensors"));
    EXPECT_NE(msg.find("not a fedlora checkpoint"), std::string::npos) << msg;

    // A future version.
    TensorMetadata meta = {{"fedlora.checkpoint.version", "2"}, {"fedlora.checksum", "crc32:00000000"}};
    save_safetensors(dir.file("v2.safetensors"), NamedTensors{{"w", torch::ones({2})}}, meta);
    msg = load_error(dir.file("v2.safetensors"));
    EXPECT_NE(msg.find("version '2' is not supported"), std::string::npos) << msg;

    // Truncations of a real checkpoint.
    const std::string path = dir.file("ck.safetensors");
    save_checkpoint(path, sample_checkpoint());
    const std::string good = read_bytes(path);
    const std::string bad = dir.file("bad.safetensors");
    for (std::size_t keep : {std::size_t{0}, std::size_t{4}, std::size_t{8}, std::size_t{200}, good.size() / 2,
                             good.size() - 1}) {
        write_bytes(bad, good.substr(0, keep));
        msg = load_error(bad);
        EXPECT_NE(msg.find("corrupt"), std::string::npos) << "truncated to " << keep << ": " << msg;
    }
    // Flipped bits: every byte of the length field, a stride through the JSON header (the stride is prime, so it
    // meets every kind of field) and through the data, and the last byte; alternately the low and the high bit.
    const std::uint64_t header_len = *reinterpret_cast<const std::uint64_t*>(good.data());
    std::vector<std::size_t> positions;
    for (std::size_t i = 0; i < 8; ++i)
        positions.push_back(i);
    for (std::size_t i = 8; i < 8 + header_len; i += 11)
        positions.push_back(i);
    for (std::size_t i = 8 + header_len; i < good.size(); i += 61)
        positions.push_back(i);
    positions.push_back(good.size() - 1);
    int refused = 0;
    for (std::size_t pos : positions)
        for (unsigned char mask : {pos % 2 ? 0x01 : 0x80}) {
            std::string b = good;
            b[pos] = static_cast<char>(b[pos] ^ mask);
            write_bytes(bad, b);
            msg = load_error(bad);
            if (msg.empty() || msg.rfind("WRONG TYPE", 0) == 0)
                ADD_FAILURE() << "byte " << pos << " ^ " << int(mask) << " accepted or wrong error: " << msg;
            else
                ++refused;
        }
    std::printf("checkpoint of %zu bytes (header %llu): %d single-bit corruptions tried, %d refused\n", good.size(),
                static_cast<unsigned long long>(header_len), static_cast<int>(positions.size()), refused);
    write_bytes(bad, good);
    EXPECT_EQ(load_error(bad), "") << "the pristine copy loads";
}

TEST(Checkpoint, FailedSaveLeavesPreviousCheckpoint) {
    ScratchDir dir;
    const std::string path = dir.file("ck.safetensors");
    const auto first = sample_checkpoint();
    save_checkpoint(path, first);
    const std::string before = read_bytes(path);

    // An invalid checkpoint is refused before anything is written.
    auto dup = sample_checkpoint();
    dup.clients[1].id = dup.clients[0].id;
    EXPECT_THROW(save_checkpoint(path, dup), CheckpointError);
    auto badname = sample_checkpoint();
    badname.engines.emplace("no spaces", std::mt19937_64(1));
    EXPECT_THROW(save_checkpoint(path, badname), CheckpointError);

    // An I/O failure in the middle of the write: a file-size limit below the new checkpoint's size.
    auto bigger = sample_checkpoint();
    bigger.controller_state.assign(1 << 20, 'x');
    bigger.round = 8;
    struct rlimit old {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 64 * 1024;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &lim), 0);
    std::string msg;
    try {
        save_checkpoint(path, bigger);
    } catch (const CheckpointError& e) {
        msg = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    EXPECT_FALSE(msg.empty()) << "the save must fail";
    EXPECT_NE(msg.find("previous checkpoint is intact"), std::string::npos) << msg;
    EXPECT_EQ(read_bytes(path), before) << "previous checkpoint survives byte for byte";
    EXPECT_EQ(dir.entries(), 1u) << "no temporary file left behind";
    expect_equal(first, load_checkpoint(path));
    // Without the limit the same save succeeds and replaces it.
    save_checkpoint(path, bigger);
    EXPECT_EQ(load_checkpoint(path).round, 8);
}

// ---- resume: N rounds straight == k rounds, checkpoint, fresh process state, N − k rounds ----------------------

namespace {

struct Loop {
    std::string rule_name;
    std::unique_ptr<AggregationRule> rule;
    ViT model{nullptr};
    Adapter global;
    std::vector<ClientState> clients;
    Partition partition;
    std::vector<double> weights;
    std::mt19937_64 server{0};  // client selection
    std::int64_t round = 0;
    TrainOptions opts;
    const TaskData* data = nullptr;

    static constexpr std::uint64_t kSeed = 777;

    Loop(const std::string& rule_name_, const TaskData& d) : rule_name(rule_name_), data(&d) {
        rule = make_aggregation_rule(rule_name);
        // The "pretrained" base: the same on every start (a real run loads it from a file).
        torch::manual_seed(31337);
        ViTConfig c;
        c.dim = 32;
        c.depth = 1;
        c.heads = 2;
        model = ViT(c);
        LoraConfig l;
        l.rank = 4;
        l.alpha = 8;
        l.dropout = 0.1;  // exercises the dropout RNG
        model->inject_lora({"qkv", "fc1"}, l);
        opts.local_steps = 3;
        opts.batch_size = 16;
        opts.learning_rate = 5e-3;
        opts.weight_decay = 0.01;
        opts.threads = 1;  // robust timing on a shared 2-core machine (OpenMP barriers under contention)
        opts.soft_lambda = 1e-3;
        opts.seed = kSeed;
        opts.train_lora_A = rule->trains(LoraFactor::A);
        opts.train_lora_B = rule->trains(LoraFactor::B);
        partition = partition_iid(d.size(), 3, kSeed);
        std::vector<std::int64_t> sizes;
        for (const auto& p : partition)
            sizes.push_back(static_cast<std::int64_t>(p.size()));
        weights = aggregation_weights(sizes);
    }

    void start() {
        global = adapter_from_model(*model);
        rule->initialize(global, kSeed);
        for (int k = 0; k < 3; ++k) {
            ClientState c;
            c.id = k;
            clients.push_back(std::move(c));
        }
        server.seed(kSeed);
        torch::manual_seed(kSeed);  // the loop's own torch stream (channel noise)
    }

    void run_round() {
        // Two of the three clients per round, chosen by the server's engine.
        const int skip = static_cast<int>(server() % 3);
        const auto support = select_support_seeded(global, 0.5, kSeed, round);
        std::vector<std::vector<float>> payloads;
        for (int k = 0; k < 3; ++k) {
            if (k == skip)
                continue;
            auto& c = clients[static_cast<std::size_t>(k)];
            rule->receive(c.adapter, global);
            load_adapter(*model, c.adapter);
            auto r = train_local(*model, *data, partition[static_cast<std::size_t>(k)], opts, k, round, c.optimizer);
            c.adapter = adapter_from_model(*model);
            payloads.push_back(rule->client_payload(r.update, weights[static_cast<std::size_t>(k)] * 1.5, k, &support));
        }
        auto sum = sum_payloads(payloads);
        // aircomp-analytic style receiver noise from the default torch generator.
        auto noise = torch::randn({static_cast<std::int64_t>(sum.size())}) * 1e-4;
        for (std::size_t i = 0; i < sum.size(); ++i)
            sum[i] += noise[static_cast<std::int64_t>(i)].item<float>();
        rule->apply(global, sum, &support);
        ++round;
    }

    Checkpoint checkpoint() const {
        Checkpoint ck;
        ck.round = round;
        ck.rule = rule_name;
        ck.global = global;
        ck.clients = clients;
        ck.torch_rng = torch_rng_state();
        ck.engines.emplace("server", server);
        ck.controller_state = "{\"Z\": 0}";
        return ck;
    }

    void restore(const Checkpoint& ck) {
        ASSERT_EQ(ck.rule, rule_name);
        round = ck.round;
        global = ck.global;
        clients = ck.clients;
        server = ck.engines.at("server");
        set_torch_rng_state(ck.torch_rng);
    }
};

const TaskData& fmnist300() {
    static const TaskData d = [] {
        auto ds = load_fashion_mnist(Split::Test);
        return TaskData{ds.images.slice(0, 0, 300).clone(), ds.labels.slice(0, 0, 300).clone()};
    }();
    return d;
}

}  // namespace

class CheckpointResume : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckpointResume, ResumedRunIsBitIdentical) {
    const int N = 4, k = 2;
    ScratchDir dir;
    const std::string path = dir.file("round.ckpt");

    Adapter straight_global;
    std::vector<ClientState> straight_clients;
    double straight_acc = 0;
    {
        Loop a(GetParam(), fmnist300());
        a.start();
        for (int t = 0; t < N; ++t)
            a.run_round();
        straight_global = a.global;
        straight_clients = a.clients;
        load_adapter(*a.model, a.global);
        straight_acc = evaluate(*a.model, fmnist300()).accuracy;
    }
    {
        auto b = std::make_unique<Loop>(GetParam(), fmnist300());
        b->start();
        for (int t = 0; t < k; ++t)
            b->run_round();
        save_checkpoint(path, b->checkpoint());
    }  // everything destroyed
    torch::manual_seed(0);  // disturb the global stream: the checkpoint must restore it
    torch::randn({100});
    Loop c(GetParam(), fmnist300());
    c.restore(load_checkpoint(path));
    EXPECT_EQ(c.round, k);
    for (int t = k; t < N; ++t)
        c.run_round();

    ASSERT_TRUE(c.global.same_shape(straight_global));
    for (const auto& [name, t] : adapter_to_tensors(c.global)) {
        const auto s = adapter_to_tensors(straight_global);
        bool found = false;
        for (const auto& [n2, t2] : s)
            if (n2 == name) {
                found = true;
                EXPECT_TRUE(torch::equal(t, t2)) << GetParam() << ": global " << name << " differs after resume";
            }
        EXPECT_TRUE(found);
    }
    for (std::size_t i = 0; i < 3; ++i) {
        EXPECT_TRUE(same_adapter(c.clients[i].adapter, straight_clients[i].adapter)) << "client " << i;
        const auto &x = c.clients[i].optimizer.tensors, &y = straight_clients[i].optimizer.tensors;
        ASSERT_EQ(x.size(), y.size());
        for (std::size_t j = 0; j < x.size(); ++j)
            EXPECT_TRUE(torch::equal(x[j].second, y[j].second)) << "client " << i << " " << x[j].first;
    }
    load_adapter(*c.model, c.global);
    const double acc = evaluate(*c.model, fmnist300()).accuracy;
    EXPECT_EQ(acc, straight_acc);
    // The global adapter moved away from its start.
    Loop fresh(GetParam(), fmnist300());
    fresh.start();
    EXPECT_FALSE(same_adapter(fresh.global, c.global));
    std::printf("%s: %d rounds straight vs %d + resume + %d: global adapter bit-identical, train-set accuracy %.3f\n",
                GetParam().c_str(), N, k, N - k, acc);
}

INSTANTIATE_TEST_SUITE_P(Rules, CheckpointResume, ::testing::Values("fedit", "ffa", "fedsa"));
