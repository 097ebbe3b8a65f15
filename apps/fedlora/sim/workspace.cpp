#include "workspace.h"

#include <torch/torch.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <random>

#include <spdlog/spdlog.h>

#include "fedlora/learn/checkpoint.h"
#include "fedlora/learn/data.h"
#include "fedlora/learn/flops.h"
#include "fedlora/learn/pretrain.h"
#include "fedlora/phy/fft.h"

namespace fs = std::filesystem;

namespace fedlora::sim {

namespace {

constexpr std::uint64_t kTagLoraInit = 0x4c494e;   // "LIN"
constexpr std::uint64_t kTagPartition = 0x505254;  // "PRT"

// Evenly spaced subset of 0..n-1 of size k (all when k == 0 or k >= n).
std::vector<std::int64_t> spaced(std::int64_t n, std::int64_t k) {
    std::vector<std::int64_t> idx;
    if (k == 0 || k >= n) {
        idx.resize(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < n; ++i)
            idx[static_cast<std::size_t>(i)] = i;
        return idx;
    }
    for (std::int64_t i = 0; i < k; ++i)
        idx.push_back(i * n / k);
    return idx;
}

at::Tensor index_tensor(const std::vector<std::int64_t>& idx) {
    return torch::tensor(std::vector<int64_t>(idx.begin(), idx.end()), torch::kLong);
}


void load_task(const SimConfig& cfg, Workspace& t) {
    t.vision = cfg.task == "vision";
    double step_flops = 0.0;
    const int threads = static_cast<int>(cfg.train.threads);
    if (threads > 0)
        torch::set_num_threads(threads);

    // The frozen base: a given file, or the cached pretraining result (trained now if absent).
    if (!cfg.pretrain.path.empty()) {
        if (!fs::exists(cfg.pretrain.path))
            throw std::runtime_error("config key 'pretrain.path': base model file '" + cfg.pretrain.path +
                                     "' does not exist");
        t.base_path = cfg.pretrain.path;
    } else {
        learn::PretrainOptions po;
        po.task = t.vision ? learn::PretrainTask::Vision : learn::PretrainTask::Text;
        po.out_dir = cfg.pretrain.dir;
        po.data_dir = cfg.data.dir;
        po.seed = cfg.pretrain.seed;
        po.threads = threads;
        po.steps = cfg.pretrain.steps;
        const auto r = learn::pretrain(po);
        spdlog::info("base model: {} ({})", r.path, r.reused ? "cached" : "pretrained now");
        t.base_path = r.path;
    }

    learn::LoraConfig lc;
    lc.rank = cfg.lora.rank;
    lc.alpha = cfg.lora.alpha;
    lc.dropout = cfg.lora.dropout;
    // The adapters' initial A is drawn from LibTorch's generator: seed it from the run's seed, then restore it.
    const auto saved_rng = learn::torch_rng_state();
    torch::manual_seed(learn::mix_seed(cfg.seed, kTagLoraInit));
    if (t.vision) {
        t.vit = learn::ViT(learn::pretrain_vit_config()).ptr();
        t.vit->load_base(t.base_path);
        t.model = t.vit;
    } else {
        t.gpt = learn::Gpt(learn::pretrain_gpt_config()).ptr();
        t.gpt->load_base(t.base_path);
        t.model = t.gpt;
    }
    t.model->inject_lora(cfg.lora_targets(), lc);
    learn::set_torch_rng_state(saved_rng);

    if (t.vision) {
        const std::string dir = cfg.data.dir.empty() ? learn::kFashionMnistDir : cfg.data.dir;
        const auto train = learn::load_fashion_mnist(learn::Split::Train, dir);
        const auto test = learn::load_fashion_mnist(learn::Split::Test, dir);
        auto pool_idx = learn::vision_finetune_indices(train.size());
        const auto keep = spaced(static_cast<std::int64_t>(pool_idx.size()), cfg.data.train_examples);
        std::vector<std::int64_t> chosen;
        for (const auto i : keep)
            chosen.push_back(pool_idx[static_cast<std::size_t>(i)]);
        const auto ti = index_tensor(chosen);
        t.pool = learn::TaskData{train.images.index_select(0, ti), train.labels.index_select(0, ti)};
        const auto all_labels = train.label_vector();
        for (const auto i : chosen)
            t.pool_labels.push_back(all_labels[static_cast<std::size_t>(i)]);
        const auto te = index_tensor(spaced(test.size(), cfg.data.test_examples));
        t.test = learn::TaskData{test.images.index_select(0, te), test.labels.index_select(0, te)};
        step_flops = learn::lora_step_flops(*t.vit, cfg.train.batch).total();
    } else {
        if (cfg.data.block > t.gpt->config().context)
            throw ConfigError("config key 'data.block': " + std::to_string(cfg.data.block) +
                              " bytes exceed the GPT's context of " + std::to_string(t.gpt->config().context));
        const std::string dir = cfg.data.dir.empty() ? learn::kFortunesDir : cfg.data.dir;
        const auto split = learn::fortunes_pretrain_split(learn::load_fortunes(dir));
        const auto& ft = split.finetune_train;
        // Blocks per held-out category, so every example keeps its category (the natural non-IID label).
        std::vector<at::Tensor> blocks;
        std::vector<std::int64_t> labels;
        for (std::size_t c = 0; c < ft.names.size(); ++c) {
            std::vector<std::string> texts;
            for (std::size_t i = 0; i < ft.texts.size(); ++i)
                if (ft.labels[i] == static_cast<std::int64_t>(c))
                    texts.push_back(ft.texts[i]);
            if (texts.empty())
                continue;
            const auto td = learn::TaskData::from_texts(texts, cfg.data.block);
            if (td.size() == 0)
                continue;
            blocks.push_back(td.inputs);
            labels.insert(labels.end(), static_cast<std::size_t>(td.size()), static_cast<std::int64_t>(c));
        }
        if (blocks.empty())
            throw std::runtime_error("text task: the fortunes corpus in '" + dir +
                                     "' has none of the held-out categories (apt-get install fortunes)");
        const auto all = torch::cat(blocks, 0);
        const auto keep = spaced(all.size(0), cfg.data.train_examples);
        t.pool = learn::TaskData{all.index_select(0, index_tensor(keep)), at::Tensor()};
        for (const auto i : keep)
            t.pool_labels.push_back(labels[static_cast<std::size_t>(i)]);
        const auto test = learn::TaskData::from_texts(split.finetune_test.texts, cfg.data.block);
        t.test = learn::TaskData{test.inputs.index_select(0, index_tensor(spaced(test.size(), cfg.data.test_examples))),
                                 at::Tensor()};
        step_flops = learn::lora_step_flops(*t.gpt, cfg.train.batch, cfg.data.block).total();
    }
    t.compute_s = static_cast<double>(cfg.train.local_steps) * step_flops / (cfg.device.gflops * 1e9);
}

learn::Partition make_partition(const SimConfig& cfg, const Workspace& t) {
    const auto n = static_cast<std::int64_t>(t.pool_labels.size());
    if (n < cfg.clients)
        throw ConfigError("config key 'clients': " + std::to_string(cfg.clients) + " clients but only " +
                          std::to_string(n) + " fine-tuning examples");
    const auto seed = learn::mix_seed(cfg.seed, kTagPartition);
    if (cfg.data.partition == "iid")
        return learn::partition_iid(n, cfg.clients, seed);
    if (cfg.data.partition == "category")
        return learn::partition_by_category(t.pool_labels, cfg.clients, seed, true);
    learn::DirichletOptions o;
    o.alpha = cfg.data.alpha;
    o.min_size = std::min<std::int64_t>(cfg.data.min_size, n / cfg.clients);
    o.seed = seed;
    o.max_attempts = 100;
    return learn::partition_dirichlet(t.pool_labels, cfg.clients, o);
}

}  // namespace

std::pair<std::int64_t, std::int64_t> fault_kill_point() { return fault_point("FEDLORA_FAULT_KILL_AT"); }

std::pair<std::int64_t, std::int64_t> fault_point(const char* variable) {
    const char* f = std::getenv(variable);
    if (!f)
        return {-1, -1};
    const std::string v = f;
    const auto colon = v.find(':');
    const std::string when = v.substr(0, colon);  // named: `end` points into it
    char* end = nullptr;
    const long long round = colon == std::string::npos ? 0 : std::strtoll(when.c_str(), &end, 10);
    if (colon == std::string::npos || round < 1 || *end)
        throw ConfigError(std::string(variable) + "='" + v + "': expected ROUND:CLIENT or ROUND:server");
    const std::string who = v.substr(colon + 1);
    if (who == "server")
        return {round, kFaultServer};
    const long long client = std::strtoll(who.c_str(), &end, 10);
    if (who.empty() || *end || client < 0)
        throw ConfigError(std::string(variable) + "='" + v + "': expected ROUND:CLIENT or ROUND:server");
    return {round, client};
}

Workspace make_workspace(const SimConfig& cfg) {
    // Bit-reproducible runs (resume, equal seeds, in-process vs client processes): FFT plans that do not depend
    // on timing.
    phy::set_fft_planning(phy::FftPlanning::Estimate);
    Workspace ws;
    ws.cfg = cfg;
    load_task(cfg, ws);
    ws.partition = make_partition(cfg, ws);
    for (const auto& p : ws.partition)
        ws.sizes.push_back(static_cast<std::int64_t>(p.size()));
    ws.rule = learn::make_aggregation_rule(cfg.aggregation);
    auto& to = ws.train;
    to.local_steps = cfg.train.local_steps;
    to.batch_size = cfg.train.batch;
    to.optimizer = cfg.train.optimizer;
    to.learning_rate = cfg.train.lr;
    to.weight_decay = cfg.train.weight_decay;
    to.clip_norm = cfg.train.clip_norm;
    to.threads = static_cast<int>(cfg.train.threads);
    to.soft_lambda = cfg.soft.lambda;
    to.train_lora_A = ws.rule->trains(learn::LoraFactor::A);
    to.train_lora_B = ws.rule->trains(learn::LoraFactor::B);
    to.seed = cfg.seed;
    return ws;
}

learn::Adapter initial_global(Workspace& ws) {
    learn::Adapter global = learn::adapter_from_model(*ws.model);
    ws.rule->initialize(global, learn::mix_seed(ws.cfg.seed, kTagLoraInit, 1));
    return global;
}

ClientResult train_client(Workspace& ws, std::int64_t client, std::int64_t round, const learn::Adapter& global,
                          const learn::Adapter* local, const learn::RankSupport* support) {
    if (client < 0 || client >= static_cast<std::int64_t>(ws.partition.size()))
        throw std::invalid_argument("client " + std::to_string(client) + " does not exist (clients 0.." +
                                    std::to_string(ws.partition.size() - 1) + ")");
    static const auto kill = fault_kill_point();
    if (kill.first == round && kill.second == client) {
        spdlog::warn("fault injection: SIGKILL in round {} before client {} trains", round, client);
        std::raise(SIGKILL);
    }
    ClientResult r;
    r.client = client;
    learn::Adapter start = local ? *local : learn::Adapter{};
    ws.rule->receive(start, global);
    learn::load_adapter(*ws.model, start);
    learn::OptimizerState opt_state;  // reset every round
    const auto res = learn::train_local(*ws.model, ws.pool, ws.partition[static_cast<std::size_t>(client)], ws.train,
                                        client, round, opt_state);
    r.loss = res.mean_loss;
    try {
        r.payload = ws.rule->client_payload(res.update, 1.0, client, support);
        r.ok = true;
    } catch (const learn::AggregationError& e) {
        r.error = e.what();
        r.payload.clear();
    }
    r.trained = learn::adapter_from_model(*ws.model);
    static const auto nan_at = fault_point("FEDLORA_FAULT_NAN_AT");
    if (r.ok && nan_at.first == round && nan_at.second == client) {
        spdlog::warn("fault injection: client {} sends a NaN in its round-{} update", client, round);
        r.payload[r.payload.size() / 2] = std::numeric_limits<float>::quiet_NaN();
    }
    return r;
}

}  // namespace fedlora::sim
