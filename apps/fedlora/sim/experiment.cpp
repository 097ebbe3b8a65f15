#include "experiment.h"

#include <torch/torch.h>

#include <csignal>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fedlora/learn/aggregate.h"
#include "fedlora/learn/checkpoint.h"
#include "fedlora/learn/data.h"
#include "fedlora/learn/flops.h"
#include "fedlora/learn/models.h"
#include "fedlora/learn/partition.h"
#include "fedlora/learn/pretrain.h"
#include "fedlora/learn/soft.h"
#include "fedlora/learn/train.h"
#include "radio.h"

namespace fs = std::filesystem;

namespace fedlora::sim {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::uint64_t kTagSelect = 0x53454c;   // "SEL"
constexpr std::uint64_t kTagLoraInit = 0x4c494e;  // "LIN"
constexpr std::uint64_t kTagPartition = 0x505254;  // "PRT"

double db(double x) { return std::isfinite(x) && x > 0.0 ? 10.0 * std::log10(x) : (x == 0.0 ? -300.0 : kNaN); }

std::string num(double v, int precision = 6) {
    if (!std::isfinite(v))
        return "";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    return buf;
}

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

// Uniform integer in [0, n) from the engine without modulo bias (std distributions are not bit-exact portable).
std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n) {
    const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
    std::uint64_t x;
    do
        x = rng();
    while (x >= limit);
    return x % n;
}

// ---- the learning task: model, data, partition ------------------------------------------------------------

struct Task {
    bool vision = true;
    std::shared_ptr<learn::TransformerModelImpl> model;
    std::shared_ptr<learn::ViTImpl> vit;
    std::shared_ptr<learn::GptImpl> gpt;
    learn::TaskData pool;  // the fine-tuning pool the clients share out
    learn::TaskData test;
    std::vector<std::int64_t> pool_labels;  // class (vision) or category (text) per pool example
    std::string base_path;
    double step_flops = 0.0;  // one local training step, analytic
};

Task make_task(const SimConfig& cfg) {
    Task t;
    t.vision = cfg.task == "vision";
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
        t.step_flops = learn::lora_step_flops(*t.vit, cfg.train.batch).total();
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
        t.step_flops = learn::lora_step_flops(*t.gpt, cfg.train.batch, cfg.data.block).total();
    }
    return t;
}

learn::Partition make_partition(const SimConfig& cfg, const Task& t) {
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

// ---- run folder -------------------------------------------------------------------------------------------

void write_file_atomic(const fs::path& path, const std::string& text) {
    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out)
            throw std::runtime_error("cannot write '" + tmp.string() + "'");
        out << text;
        out.flush();
        if (!out)
            throw std::runtime_error("cannot write '" + tmp.string() + "' (disk full?)");
    }
    fs::rename(tmp, path);
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The first key whose value differs between two configurations ("" when none).
std::string first_difference(const SimConfig& a, const SimConfig& b) {
    for (const auto& k : config_keys())
        if (get_key(a, k) != get_key(b, k))
            return k;
    return "";
}

struct Progress {
    bool enabled = false;
    bool tty = false;
    std::int64_t total = 0;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    std::int64_t done_at_start = 0;

    void client(std::int64_t round, std::size_t i, std::size_t n) const {
        if (!enabled || !tty)
            return;
        std::fprintf(stderr, "\r\033[K  round %lld/%lld: training client %zu/%zu", static_cast<long long>(round),
                     static_cast<long long>(total), i + 1, n);
        std::fflush(stderr);
    }
    void round(const RoundRow& r, bool vision) const {
        if (!enabled)
            return;
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const auto done = r.round - done_at_start;
        const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total - r.round) : 0.0;
        constexpr int width = 20;
        const int filled = static_cast<int>(width * r.round / std::max<std::int64_t>(total, 1));
        std::string bar(static_cast<std::size_t>(filled), '#');
        bar += std::string(static_cast<std::size_t>(width - filled), '.');
        std::string metric = vision ? (std::isfinite(r.test_accuracy) ? "acc " + num(r.test_accuracy, 4) : "acc -")
                                    : (std::isfinite(r.test_perplexity) ? "ppl " + num(r.test_perplexity, 4) : "ppl -");
        std::string nmse = std::isfinite(r.nmse_db) ? "NMSE " + num(r.nmse_db, 3) + " dB" : "NMSE -";
        std::fprintf(stderr, "%s[%s] round %lld/%lld  loss %.4f  %s  %s  uses %llu  %.1f s/round  ETA %.0f s%s\n",
                     tty ? "\r\033[K" : "", bar.c_str(), static_cast<long long>(r.round),
                     static_cast<long long>(total), r.train_loss, metric.c_str(), nmse.c_str(),
                     static_cast<unsigned long long>(r.channel_uses), r.wall_s, eta,
                     r.delivered ? "" : "  (aggregate lost)");
        std::fflush(stderr);
    }
};

}  // namespace

const std::vector<std::string>& round_columns() {
    static const std::vector<std::string> c = {
        "round",     "mode",       "clients",     "snr_db",       "nmse_db",    "nmse_analytic_db",
        "sparsity",  "subcarriers", "channel_uses", "cum_channel_uses", "airtime_s", "latency_s",
        "cum_latency_s", "train_loss", "test_accuracy", "test_perplexity", "queue", "wall_s",
        "covariance", "payload",   "dropped",     "delivered"};
    return c;
}

std::string round_csv_line(const RoundRow& r) {
    std::string s;
    auto add = [&](const std::string& v) { s += (s.empty() ? "" : ",") + v; };
    add(std::to_string(r.round));
    add(r.mode);
    add(std::to_string(r.clients));
    add(num(r.snr_db, 5));
    add(num(r.nmse_db, 5));
    add(num(r.nmse_analytic_db, 5));
    add(num(r.sparsity, 6));
    add(std::to_string(r.subcarriers));
    add(std::to_string(r.channel_uses));
    add(std::to_string(r.cum_channel_uses));
    add(num(r.airtime_s, 6));
    add(num(r.latency_s, 6));
    add(num(r.cum_latency_s, 8));
    add(num(r.train_loss, 6));
    add(num(r.test_accuracy, 6));
    add(num(r.test_perplexity, 6));
    add(num(r.queue, 6));
    add(num(r.wall_s, 4));
    add(num(r.covariance, 6));
    add(std::to_string(r.payload));
    add(std::to_string(r.dropped));
    add(r.delivered ? "1" : "0");
    return s;
}

RunSummary run_simulation(const RunOptions& opt) {
    const auto wall_start = std::chrono::steady_clock::now();
    SimConfig cfg = opt.config;
    cfg.validate();
    if (opt.out_dir.empty())
        throw ConfigError("no run folder given (--out)");
    const fs::path out(opt.out_dir);
    const fs::path ck_dir = out / "checkpoints";
    const fs::path ck_path = ck_dir / "latest.safetensors";
    const fs::path csv_path = out / "rounds.csv";

    // ---- the run folder: new, replaced, or resumed -------------------------------------------------------
    std::int64_t start_round = 0;
    std::optional<learn::Checkpoint> resumed;
    if (opt.resume) {
        if (!fs::exists(out / "config.yaml"))
            throw ConfigError("cannot resume: '" + out.string() + "' holds no config.yaml (not a run folder)");
        SimConfig stored;
        load_yaml_file(stored, (out / "config.yaml").string());
        const auto diff = first_difference(stored, cfg);
        if (!diff.empty())
            throw ConfigError("cannot resume '" + out.string() + "': it was run with " + diff + " = " +
                              get_key(stored, diff) + ", now " + get_key(cfg, diff) +
                              " (resume with the same configuration, or start a new run folder)");
        if (fs::exists(ck_path)) {
            resumed = learn::load_checkpoint(ck_path.string());
            start_round = resumed->round;
        }
    } else if (fs::exists(out) && !fs::is_empty(out)) {
        if (!opt.force)
            throw ConfigError("run folder '" + out.string() +
                              "' exists; use --resume to continue it or --force to replace it");
        for (const char* name : {"config.yaml", "rounds.csv", "summary.json", "adapter.safetensors"})
            fs::remove(out / name);
        fs::remove_all(ck_dir);
    }
    fs::create_directories(ck_dir);
    write_file_atomic(out / "config.yaml", to_yaml(cfg));

    // ---- task, partition, radio ------------------------------------------------------------------------
    Task task = make_task(cfg);
    const auto partition = make_partition(cfg, task);
    auto radio = make_radio(cfg);
    const auto rule = learn::make_aggregation_rule(cfg.aggregation);
    std::vector<std::int64_t> sizes;
    for (const auto& p : partition)
        sizes.push_back(static_cast<std::int64_t>(p.size()));
    spdlog::info("{} task, {} clients ({} partition, sizes {}..{}), mode {}, rule {}, {} rounds", cfg.task,
                 cfg.clients, cfg.data.partition, *std::min_element(sizes.begin(), sizes.end()),
                 *std::max_element(sizes.begin(), sizes.end()), cfg.mode, cfg.aggregation, cfg.rounds);

    learn::Adapter global = learn::adapter_from_model(*task.model);
    rule->initialize(global, learn::mix_seed(cfg.seed, kTagLoraInit, 1));
    std::map<std::int64_t, learn::Adapter> local;  // clients' own adapters (fedsa's B)
    std::uint64_t cum_uses = 0;
    double cum_latency = 0.0;
    if (resumed) {
        resumed->global.check_same_shape(global, "checkpoint '" + ck_path.string() + "'");
        global = resumed->global;
        for (auto& c : resumed->clients)
            local[c.id] = std::move(c.adapter);
        cum_uses = std::stoull(resumed->info.at("cum_channel_uses"));
        cum_latency = std::strtod(resumed->info.at("cum_latency_s").c_str(), nullptr);
        spdlog::info("resuming '{}' after round {}", out.string(), start_round);
    }

    // rounds.csv: the header and the rows of the rounds already done (later rows are run again).
    {
        std::string text;
        for (const auto& c : round_columns())
            text += (text.empty() ? "" : ",") + c;
        text += "\n";
        if (resumed && fs::exists(csv_path)) {
            std::istringstream in(read_file(csv_path));
            std::string line;
            std::getline(in, line);  // header
            while (std::getline(in, line)) {
                const auto comma = line.find(',');
                if (comma == std::string::npos)
                    continue;
                char* end = nullptr;
                const long long r = std::strtoll(line.substr(0, comma).c_str(), &end, 10);
                if (r >= 1 && r <= start_round)
                    text += line + "\n";
            }
        }
        write_file_atomic(csv_path, text);
    }
    std::FILE* csv = std::fopen(csv_path.c_str(), "a");
    if (!csv)
        throw std::runtime_error("cannot append to '" + csv_path.string() + "'");
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> csv_guard(csv, std::fclose);

    auto eval_adapter = [&](const learn::Adapter& g) {
        if (!rule->keeps_local(learn::LoraFactor::B) || local.empty())
            return g;
        // fedsa: the global A with the data-weighted mean of the clients' own B (a single model to evaluate).
        learn::Adapter a = g;
        for (auto& l : a.layers)
            std::fill(l.B.begin(), l.B.end(), 0.0f);
        std::int64_t total = 0;
        for (const auto& [id, ad] : local)
            total += sizes[static_cast<std::size_t>(id)];
        for (const auto& [id, ad] : local) {
            learn::Adapter b = ad;
            for (std::size_t l = 0; l < b.layers.size(); ++l)
                std::fill(b.layers[l].A.begin(), b.layers[l].A.end(), 0.0f);
            learn::adapter_add_scaled(a, b, static_cast<double>(sizes[static_cast<std::size_t>(id)]) / total);
        }
        return a;
    };
    auto evaluate_global = [&]() {
        learn::load_adapter(*task.model, eval_adapter(global));
        return learn::evaluate(*task.model, task.test, cfg.eval.batch, {}, static_cast<int>(cfg.train.threads));
    };

    RunSummary sum;
    sum.out_dir = out.string();
    sum.resumed_from = start_round;
    {
        // The frozen base: the adapter's product is zero before training (B = 0), so this is the base model.
        const auto base = learn::evaluate(*task.model, task.test, cfg.eval.batch, {}, static_cast<int>(cfg.train.threads));
        sum.base_test_accuracy = task.vision ? base.accuracy : kNaN;
        sum.base_test_perplexity = task.vision ? kNaN : base.perplexity;
        spdlog::info("frozen base on {} test examples: {}", task.test.size(),
                     task.vision ? "accuracy " + num(base.accuracy, 4) : "perplexity " + num(base.perplexity, 4));
    }

    learn::TrainOptions to;
    to.local_steps = cfg.train.local_steps;
    to.batch_size = cfg.train.batch;
    to.optimizer = cfg.train.optimizer;
    to.learning_rate = cfg.train.lr;
    to.weight_decay = cfg.train.weight_decay;
    to.clip_norm = cfg.train.clip_norm;
    to.threads = static_cast<int>(cfg.train.threads);
    to.soft_lambda = cfg.soft.lambda;
    to.train_lora_A = rule->trains(learn::LoraFactor::A);
    to.train_lora_B = rule->trains(learn::LoraFactor::B);
    to.seed = cfg.seed;
    const double compute_s = static_cast<double>(cfg.train.local_steps) * task.step_flops / (cfg.device.gflops * 1e9);

    // Fault injection for the resume tests: FEDLORA_FAULT_KILL_AT="R:C" kills this process with SIGKILL just
    // before client C trains in round R (mid-round: the round's earlier clients have trained, nothing is saved).
    std::int64_t kill_round = -1, kill_client = -1;
    if (const char* f = std::getenv("FEDLORA_FAULT_KILL_AT")) {
        if (std::sscanf(f, "%lld:%lld", reinterpret_cast<long long*>(&kill_round),
                        reinterpret_cast<long long*>(&kill_client)) != 2)
            throw ConfigError(std::string("FEDLORA_FAULT_KILL_AT='") + f + "': expected ROUND:CLIENT");
    }

    Progress progress;
    progress.enabled = opt.progress;
    progress.tty = opt.progress && isatty(STDERR_FILENO);
    progress.total = cfg.rounds;
    progress.done_at_start = start_round;

    sum.best_test_accuracy = kNaN;
    sum.best_test_perplexity = kNaN;
    sum.final_test_accuracy = kNaN;
    sum.final_test_perplexity = kNaN;
    for (std::int64_t round = start_round + 1; round <= cfg.rounds; ++round) {
        const auto t0 = std::chrono::steady_clock::now();
        RoundRow row;
        row.round = round;
        row.mode = cfg.mode;

        // Selection: every client, or a seeded draw without replacement.
        std::vector<std::int64_t> selected;
        if (cfg.clients_per_round == 0 || cfg.clients_per_round == cfg.clients) {
            for (std::int64_t c = 0; c < cfg.clients; ++c)
                selected.push_back(c);
        } else {
            std::vector<std::int64_t> all(static_cast<std::size_t>(cfg.clients));
            for (std::int64_t c = 0; c < cfg.clients; ++c)
                all[static_cast<std::size_t>(c)] = c;
            std::mt19937_64 rng(learn::mix_seed(cfg.seed, kTagSelect, static_cast<std::uint64_t>(round)));
            for (std::int64_t i = 0; i < cfg.clients_per_round; ++i) {
                const auto j = static_cast<std::size_t>(i) +
                               uniform_index(rng, static_cast<std::uint64_t>(cfg.clients - i));
                std::swap(all[static_cast<std::size_t>(i)], all[j]);
            }
            selected.assign(all.begin(), all.begin() + cfg.clients_per_round);
            std::sort(selected.begin(), selected.end());
        }

        // The support every client sends this round (SOFT).
        std::optional<learn::RankSupport> support;
        if (cfg.soft.rho < 1.0)
            support = cfg.soft.support == "top"
                          ? learn::select_support_top(global, cfg.soft.rho)
                          : learn::select_support_seeded(global, cfg.soft.rho, cfg.seed, round);
        const learn::RankSupport* sp = support ? &*support : nullptr;
        row.sparsity = support ? static_cast<double>(support->kept_count()) /
                                     static_cast<double>(global.layers.size() * static_cast<std::size_t>(cfg.lora.rank))
                               : 1.0;

        // Clients: local training from the global adapter, payload of the shared coordinates.
        RadioRound rr;
        rr.round = round;
        std::vector<learn::Adapter> trained;
        std::vector<std::int64_t> kept_sizes;
        std::vector<double> losses;
        for (std::size_t i = 0; i < selected.size(); ++i) {
            const auto c = selected[i];
            if (round == kill_round && c == kill_client) {
                spdlog::warn("fault injection: SIGKILL in round {} before client {} trains", round, c);
                std::raise(SIGKILL);
            }
            progress.client(round, i, selected.size());
            learn::Adapter start = local.count(c) ? local[c] : learn::Adapter{};
            rule->receive(start, global);
            learn::load_adapter(*task.model, start);
            learn::OptimizerState opt_state;
            const auto res = learn::train_local(*task.model, task.pool, partition[static_cast<std::size_t>(c)], to, c,
                                                round, opt_state);
            std::vector<float> payload;
            try {
                payload = rule->client_payload(res.update, 1.0, c, sp);
            } catch (const learn::AggregationError& e) {
                spdlog::warn("round {}: client {} left out: {}", round, c, e.what());
                ++row.dropped;
                continue;
            }
            rr.clients.push_back(c);
            rr.payloads.push_back(std::move(payload));
            kept_sizes.push_back(static_cast<std::int64_t>(partition[static_cast<std::size_t>(c)].size()));
            losses.push_back(res.mean_loss);
            trained.push_back(learn::adapter_from_model(*task.model));
        }

        RadioReport rep;
        if (!rr.payloads.empty()) {
            rr.weights = learn::aggregation_weights(kept_sizes);
            row.payload = static_cast<std::int64_t>(rr.payloads[0].size());
            std::vector<float> estimate;
            rep = radio->aggregate(rr, estimate);
            if (rep.delivered) {
                rule->apply(global, estimate, sp);
                for (std::size_t i = 0; i < rr.clients.size(); ++i)
                    if (rule->keeps_local(learn::LoraFactor::B))
                        local[rr.clients[i]] = trained[i];
            } else {
                spdlog::warn("round {}: the receiver lost the aggregate ({}); the global adapter is unchanged", round,
                             rep.failure);
            }
            for (std::size_t i = 0; i < losses.size(); ++i)
                row.train_loss += rr.weights[i] * losses[i];
            row.covariance = learn::factor_covariance(trained, rr.weights).total;
        } else {
            rep.delivered = false;
            spdlog::warn("round {}: no client update to aggregate; the global adapter is unchanged", round);
        }
        row.delivered = rep.delivered && !rr.payloads.empty();
        row.clients = static_cast<std::int64_t>(rr.payloads.size());
        row.snr_db = rep.snr_db;
        row.nmse_db = db(rep.nmse);
        row.nmse_analytic_db = db(rep.nmse_analytic);
        row.subcarriers = rep.subcarriers;
        row.channel_uses = rep.channel_uses;
        cum_uses += rep.channel_uses;
        row.cum_channel_uses = cum_uses;
        row.airtime_s = rep.airtime_s;
        row.latency_s = compute_s + rep.airtime_s;
        cum_latency += row.latency_s;
        row.cum_latency_s = cum_latency;

        row.test_accuracy = kNaN;
        row.test_perplexity = kNaN;
        if (round % cfg.eval.every == 0 || round == cfg.rounds) {
            const auto ev = evaluate_global();
            if (task.vision)
                row.test_accuracy = ev.accuracy;
            else
                row.test_perplexity = ev.perplexity;
        }
        row.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

        std::fputs((round_csv_line(row) + "\n").c_str(), csv);
        std::fflush(csv);
        fsync(fileno(csv));
        if (round % cfg.checkpoint.every == 0 || round == cfg.rounds) {
            learn::Checkpoint ck;
            ck.round = round;
            ck.rule = rule->name();
            ck.global = global;
            for (const auto& [id, ad] : local)
                ck.clients.push_back(learn::ClientState{id, ad, {}});
            ck.info["cum_channel_uses"] = std::to_string(cum_uses);
            char buf[40];
            std::snprintf(buf, sizeof buf, "%.17g", cum_latency);
            ck.info["cum_latency_s"] = buf;
            ck.info["mode"] = cfg.mode;
            learn::save_checkpoint(ck_path.string(), ck);
        }
        progress.round(row, task.vision);
        if (opt.on_round)
            opt.on_round(row);
        if (task.vision && std::isfinite(row.test_accuracy)) {
            sum.final_test_accuracy = row.test_accuracy;
            sum.best_test_accuracy = std::isfinite(sum.best_test_accuracy)
                                         ? std::max(sum.best_test_accuracy, row.test_accuracy)
                                         : row.test_accuracy;
        }
        if (!task.vision && std::isfinite(row.test_perplexity)) {
            sum.final_test_perplexity = row.test_perplexity;
            sum.best_test_perplexity = std::isfinite(sum.best_test_perplexity)
                                           ? std::min(sum.best_test_perplexity, row.test_perplexity)
                                           : row.test_perplexity;
        }
    }
    csv_guard.reset();

    // A resumed run that had nothing left to do still reports its final figures.
    if (start_round >= cfg.rounds || (!std::isfinite(sum.final_test_accuracy) && !std::isfinite(sum.final_test_perplexity))) {
        const auto ev = evaluate_global();
        sum.final_test_accuracy = task.vision ? ev.accuracy : kNaN;
        sum.final_test_perplexity = task.vision ? kNaN : ev.perplexity;
    }
    // Best and mean figures over the whole run, including rounds done before a resume: from rounds.csv.
    {
        std::istringstream in(read_file(csv_path));
        std::string line;
        std::getline(in, line);
        double nsum = 0.0;
        std::int64_t nn = 0;
        while (std::getline(in, line)) {
            std::vector<std::string> cells;
            std::stringstream ls(line);
            std::string cell;
            while (std::getline(ls, cell, ','))
                cells.push_back(cell);
            cells.resize(round_columns().size());
            if (!cells[4].empty()) {
                nsum += std::strtod(cells[4].c_str(), nullptr);
                ++nn;
            }
            if (task.vision && !cells[14].empty()) {
                const double a = std::strtod(cells[14].c_str(), nullptr);
                sum.best_test_accuracy = std::isfinite(sum.best_test_accuracy) ? std::max(sum.best_test_accuracy, a) : a;
            }
            if (!task.vision && !cells[15].empty()) {
                const double p = std::strtod(cells[15].c_str(), nullptr);
                sum.best_test_perplexity =
                    std::isfinite(sum.best_test_perplexity) ? std::min(sum.best_test_perplexity, p) : p;
            }
        }
        sum.mean_nmse_db = nn > 0 ? nsum / static_cast<double>(nn) : kNaN;
    }

    sum.rounds = cfg.rounds;
    sum.total_channel_uses = cum_uses;
    sum.total_latency_s = cum_latency;
    sum.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    learn::load_adapter(*task.model, global);
    sum.adapter_path = (out / "adapter.safetensors").string();
    task.model->save_lora(sum.adapter_path);

    auto jnum = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
    nlohmann::json j;
    j["run"] = out.filename().string().empty() ? out.parent_path().filename().string() : out.filename().string();
    j["mode"] = cfg.mode;
    j["task"] = cfg.task;
    j["rounds"] = cfg.rounds;
    j["clients"] = cfg.clients;
    j["seed"] = cfg.seed;
    j["aggregation"] = cfg.aggregation;
    j["base_test_accuracy"] = jnum(sum.base_test_accuracy);
    j["base_test_perplexity"] = jnum(sum.base_test_perplexity);
    j["final_test_accuracy"] = jnum(sum.final_test_accuracy);
    j["final_test_perplexity"] = jnum(sum.final_test_perplexity);
    j["best_test_accuracy"] = jnum(sum.best_test_accuracy);
    j["best_test_perplexity"] = jnum(sum.best_test_perplexity);
    j["total_channel_uses"] = sum.total_channel_uses;
    j["total_latency_s"] = sum.total_latency_s;
    j["mean_nmse_db"] = jnum(sum.mean_nmse_db);
    j["wall_s"] = sum.wall_s;
    j["resumed_from_round"] = sum.resumed_from;
    j["base_model"] = fs::absolute(task.base_path).string();
    j["adapter"] = sum.adapter_path;
    write_file_atomic(out / "summary.json", j.dump(2) + "\n");
    return sum;
}

}  // namespace fedlora::sim
