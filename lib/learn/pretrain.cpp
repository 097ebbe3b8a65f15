#include "fedlora/learn/pretrain.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>

#include "fedlora/learn/blas.h"
#include "fedlora/learn/train.h"

namespace fedlora::learn {
namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

// Bump when the training procedure changes in a way that changes the weights: old files are then retrained.
constexpr const char* kRecipeVersion = "1";

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

std::string join_ints(const std::vector<std::int64_t>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i)
        s += (i ? "," : "") + std::to_string(v[i]);
    return s;
}

std::string join_strings(const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i)
        s += (i ? "," : "") + v[i];
    return s;
}

// Seeds LibTorch's default CPU generator (model initialisation draws from it) and restores its state on exit, so
// that pretraining leaves the caller's random stream as it was.
class SeededDefaultGenerator {
public:
    explicit SeededDefaultGenerator(std::uint64_t seed) : gen_(at::detail::getDefaultCPUGenerator()) {
        std::lock_guard<std::mutex> lock(gen_.mutex());
        saved_ = gen_.get_state();
        gen_.set_current_seed(seed);
    }
    ~SeededDefaultGenerator() {
        std::lock_guard<std::mutex> lock(gen_.mutex());
        gen_.set_state(saved_);
    }
    SeededDefaultGenerator(const SeededDefaultGenerator&) = delete;
    SeededDefaultGenerator& operator=(const SeededDefaultGenerator&) = delete;

private:
    at::Generator gen_;
    at::Tensor saved_;
};

// Epochs over a fixed index list, each in a fresh seeded order (Fisher-Yates with rejection-sampled bounded
// integers: std::mt19937_64's output is fixed by the standard, so the order is the same on every platform).
class EpochSampler {
public:
    EpochSampler(std::vector<std::int64_t> pool, std::uint64_t seed)
        : pool_(std::move(pool)), pos_(pool_.size()), rng_(seed) {}  // the first batch starts with a shuffle

    torch::Tensor next(std::int64_t batch) {
        std::vector<std::int64_t> out;
        out.reserve(static_cast<std::size_t>(batch));
        while (static_cast<std::int64_t>(out.size()) < batch) {
            if (pos_ == pool_.size())
                reshuffle();
            out.push_back(pool_[pos_++]);
        }
        return torch::tensor(out, torch::kLong);
    }

private:
    std::uint64_t below(std::uint64_t n) {  // uniform in [0, n)
        const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
        std::uint64_t x;
        do
            x = rng_();
        while (x >= limit);
        return x % n;
    }
    void reshuffle() {
        for (std::size_t i = pool_.size(); i > 1; --i)
            std::swap(pool_[i - 1], pool_[below(i)]);
        pos_ = 0;
    }

    std::vector<std::int64_t> pool_;
    std::size_t pos_;
    std::mt19937_64 rng_;
};

// Warm-up then cosine decay (the learning rate of step s, 0-based).
double scheduled_lr(const PretrainRecipe& r, std::int64_t step) {
    const std::int64_t warmup = std::min(r.warmup_steps, r.steps / 10);
    if (step < warmup)
        return r.learning_rate * static_cast<double>(step + 1) / static_cast<double>(warmup);
    const double span = static_cast<double>(std::max<std::int64_t>(1, r.steps - warmup));
    const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
    const double floor = r.min_lr_ratio * r.learning_rate;
    return floor + 0.5 * (r.learning_rate - floor) * (1.0 + std::cos(M_PI * progress));
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string format_seconds(double s) {
    char buf[32];
    if (s < 60.0)
        std::snprintf(buf, sizeof buf, "%.1f s", s);
    else
        std::snprintf(buf, sizeof buf, "%dm%04.1fs", static_cast<int>(s / 60.0), std::fmod(s, 60.0));
    return buf;
}

// Creates the output directory and proves it writable with a probe file, before any training is spent.
void prepare_output_dir(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
        throw std::runtime_error("cannot create output directory '" + dir + "': " + ec.message());
    if (!fs::is_directory(dir, ec))
        throw std::runtime_error("output path '" + dir + "' is not a directory");
    std::string probe = (fs::path(dir) / ".fedlora-write-probe-XXXXXX").string();
    std::vector<char> buf(probe.begin(), probe.end());
    buf.push_back('\0');
    const int fd = ::mkstemp(buf.data());
    if (fd < 0)
        throw std::runtime_error("output directory '" + dir + "' is not writable: " + std::strerror(errno));
    ::close(fd);
    ::unlink(buf.data());
}

PretrainRecipe resolved_recipe(const PretrainOptions& o) {
    auto r = default_pretrain_recipe(o.task);
    if (o.steps > 0)
        r.steps = o.steps;
    if (o.batch_size > 0)
        r.batch_size = o.batch_size;
    if (o.learning_rate > 0.0)
        r.learning_rate = o.learning_rate;
    return r;
}

std::string data_dir_of(const PretrainOptions& o) {
    if (!o.data_dir.empty())
        return o.data_dir;
    return o.task == PretrainTask::Vision ? kFashionMnistDir : kFortunesDir;
}

std::string split_description(PretrainTask task) {
    if (task == PretrainTask::Vision)
        return "fashion-mnist train images with even index and label in {" + join_ints(vision_pretext_classes()) +
               "}; fine-tuning pool: odd indices, all classes; test (t10k) never trained on";
    return "fortunes minus held-out categories {" + join_strings(text_heldout_categories()) +
           "}; validation: entries j % 20 == 19 of the pretext categories";
}

std::shared_ptr<TransformerModelImpl> make_model(PretrainTask task) {
    if (task == PretrainTask::Vision)
        return std::make_shared<ViTImpl>(pretrain_vit_config());
    return std::make_shared<GptImpl>(pretrain_gpt_config());
}

TensorMetadata identity_of(const PretrainOptions& o, const TransformerModelImpl& model) {
    const auto r = resolved_recipe(o);
    TensorMetadata m = model.metadata();
    m["format"] = "pt";
    m["pretrain.task"] = to_string(o.task);
    m["pretrain.recipe"] = kRecipeVersion;
    m["pretrain.seed"] = std::to_string(o.seed);
    m["pretrain.steps"] = std::to_string(r.steps);
    m["pretrain.batch_size"] = std::to_string(r.batch_size);
    m["pretrain.learning_rate"] = num(r.learning_rate);
    m["pretrain.min_lr_ratio"] = num(r.min_lr_ratio);
    m["pretrain.warmup_steps"] = std::to_string(std::min(r.warmup_steps, r.steps / 10));
    m["pretrain.weight_decay"] = num(r.weight_decay);
    m["pretrain.clip_norm"] = num(r.clip_norm);
    m["pretrain.optimizer"] = "adamw";
    m["pretrain.data_dir"] = data_dir_of(o);
    m["pretrain.split"] = split_description(o.task);
    return m;
}

// The first identity key whose value differs in `have` (empty when all match).
std::string first_mismatch(const TensorMetadata& want, const TensorMetadata& have) {
    for (const auto& [k, v] : want) {
        const auto it = have.find(k);
        if (it == have.end())
            return k + " (absent)";
        if (it->second != v)
            return k + " ('" + it->second + "', wanted '" + v + "')";
    }
    return {};
}

struct TrainStats {
    double final_loss = 0.0;
    std::int64_t examples = 0;
};

// Full-parameter training of `model` with AdamW: loss_of(batch indices) gives the batch loss.
template <typename LossFn>
TrainStats train_all(TransformerModelImpl& model, const PretrainRecipe& r, const std::vector<std::int64_t>& pool,
                     std::uint64_t seed, std::int64_t log_every, LossFn loss_of) {
    std::vector<torch::Tensor> decay, no_decay;
    for (const auto& p : model.named_parameters(true)) {
        p.value().set_requires_grad(true);
        const bool matrix = p.value().dim() >= 2 && p.key() != "cls_token" && p.key() != "pos_embed";
        (matrix ? decay : no_decay).push_back(p.value());
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(r.learning_rate).weight_decay(r.weight_decay)));
    groups.emplace_back(no_decay,
                        std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(r.learning_rate).weight_decay(0.0)));
    torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(r.learning_rate));
    std::vector<torch::Tensor> all = decay;
    all.insert(all.end(), no_decay.begin(), no_decay.end());

    // The batch order's seed is decorrelated from the initialisation's (same user seed, another stream).
    EpochSampler sampler(pool, seed ^ 0x9E3779B97F4A7C15ull);
    model.train(true);
    const std::int64_t every = log_every > 0 ? log_every : std::max<std::int64_t>(1, r.steps / 20);
    const std::int64_t tail = std::max<std::int64_t>(1, (r.steps + 9) / 10);  // final loss: mean of the last 10%
    double interval_sum = 0.0, tail_sum = 0.0;
    std::int64_t interval_n = 0;
    TrainStats st;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::int64_t step = 0; step < r.steps; ++step) {
        const double lr = scheduled_lr(r, step);
        for (auto& g : opt.param_groups())
            static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
        opt.zero_grad();
        torch::Tensor loss = loss_of(sampler.next(r.batch_size));
        loss.backward();
        if (r.clip_norm > 0.0)
            torch::nn::utils::clip_grad_norm_(all, r.clip_norm);
        opt.step();
        const double l = loss.item<double>();
        if (!std::isfinite(l))
            throw std::runtime_error("pretraining diverged: loss " + num(l) + " at step " + std::to_string(step + 1) +
                                     " (try a smaller --lr)");
        interval_sum += l;
        ++interval_n;
        if (step >= r.steps - tail)
            tail_sum += l;
        st.examples += r.batch_size;
        if ((step + 1) % every == 0 || step + 1 == r.steps) {
            const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double eta = elapsed / static_cast<double>(step + 1) * static_cast<double>(r.steps - step - 1);
            spdlog::info("step {:>{}}/{}  loss {:.4f}  lr {:.2e}  elapsed {}  ETA {}", step + 1,
                         std::to_string(r.steps).size(), r.steps, interval_sum / static_cast<double>(interval_n), lr,
                         format_seconds(elapsed), format_seconds(eta));
            interval_sum = 0.0;
            interval_n = 0;
        }
    }
    opt.zero_grad();
    for (auto& p : all)
        p.mutable_grad() = torch::Tensor();
    st.final_loss = tail_sum / static_cast<double>(std::min(tail, r.steps));
    return st;
}

void pretrain_vision(ViTImpl& model, const PretrainOptions& o, const PretrainRecipe& r, TensorMetadata& meta,
                     PretrainResult& res) {
    const std::string dir = data_dir_of(o);
    const auto train = load_fashion_mnist(Split::Train, dir);
    const auto test = load_fashion_mnist(Split::Test, dir);
    const auto pool = vision_pretrain_indices(train.label_vector());
    if (pool.empty())
        throw DataError(dir + ": no training image of a pretext class");
    spdlog::info("pretraining the ViT on {} Fashion-MNIST training images (even indices, classes {}), {} steps of {}",
                 pool.size(), join_ints(vision_pretext_classes()), r.steps, r.batch_size);
    const auto& images = train.images;
    const auto& labels = train.labels;
    auto t = std::chrono::steady_clock::now();
    const auto st = train_all(model, r, pool, o.seed, o.log_every, [&](const torch::Tensor& idx) {
        return F::cross_entropy(model.forward(images.index_select(0, idx)), labels.index_select(0, idx));
    });
    res.train_seconds = seconds_since(t);
    t = std::chrono::steady_clock::now();
    // Evaluate the frozen base on the whole test set, split by class group.
    std::vector<std::int64_t> pretext_idx, heldout_idx;
    const auto test_labels = test.label_vector();
    for (std::size_t i = 0; i < test_labels.size(); ++i)
        (is_vision_pretext_class(test_labels[i]) ? pretext_idx : heldout_idx).push_back(static_cast<std::int64_t>(i));
    const auto data = TaskData::from_images(test);
    const auto ep = evaluate(model, data, 500, pretext_idx, o.threads);
    EvalResult eh;
    if (!heldout_idx.empty())
        eh = evaluate(model, data, 500, heldout_idx, o.threads);
    const double n = static_cast<double>(ep.examples + eh.examples);
    meta["pretrain.examples"] = std::to_string(pool.size());
    meta["pretrain.examples_seen"] = std::to_string(st.examples);
    meta["pretrain.final_loss"] = num(st.final_loss);
    meta["eval.test_examples"] = std::to_string(ep.examples + eh.examples);
    meta["eval.test_accuracy"] = num((ep.accuracy * static_cast<double>(ep.examples) +
                                      (eh.examples ? eh.accuracy * static_cast<double>(eh.examples) : 0.0)) / n);
    meta["eval.test_loss"] = num((ep.loss * static_cast<double>(ep.examples) +
                                  (eh.examples ? eh.loss * static_cast<double>(eh.examples) : 0.0)) / n);
    meta["eval.test_accuracy_pretext_classes"] = num(ep.accuracy);
    meta["eval.test_accuracy_heldout_classes"] = num(eh.examples ? eh.accuracy : 0.0);
    res.eval_seconds = seconds_since(t);
}

void pretrain_text(GptImpl& model, const PretrainOptions& o, const PretrainRecipe& r, TensorMetadata& meta,
                   PretrainResult& res) {
    const std::string dir = data_dir_of(o);
    const auto corpus = load_fortunes(dir);
    const auto split = fortunes_pretrain_split(corpus);
    const std::int64_t block = model.config().context;
    const auto train = TaskData::from_texts(split.pretrain_train, block);
    if (train.size() < 1)
        throw DataError(dir + ": the pretext categories hold less than one block of text");
    std::vector<std::int64_t> pool(static_cast<std::size_t>(train.size()));
    for (std::size_t i = 0; i < pool.size(); ++i)
        pool[i] = static_cast<std::int64_t>(i);
    spdlog::info("pretraining the GPT on {} blocks of {} bytes from {} fortunes entries ({} categories held out), "
                 "{} steps of {}",
                 train.size(), block, split.pretrain_train.size(), split.finetune_train.names.size(), r.steps,
                 r.batch_size);
    const auto& ids = train.inputs;
    auto t = std::chrono::steady_clock::now();
    const auto st = train_all(model, r, pool, o.seed, o.log_every, [&](const torch::Tensor& idx) {
        const auto batch = ids.index_select(0, idx);
        return GptImpl::lm_loss(model.forward(batch), batch);
    });
    res.train_seconds = seconds_since(t);
    t = std::chrono::steady_clock::now();
    meta["pretrain.examples"] = std::to_string(train.size());
    meta["pretrain.examples_seen"] = std::to_string(st.examples);
    meta["pretrain.final_loss"] = num(st.final_loss);
    const auto val = TaskData::from_texts(split.pretrain_val, block);
    if (val.size() > 0) {
        const auto e = evaluate(model, val, 256, {}, o.threads);
        meta["eval.val_perplexity"] = num(e.perplexity);
        meta["eval.val_tokens"] = std::to_string(e.tokens);
    }
    const auto held = TaskData::from_texts(split.finetune_test.texts, block);
    if (held.size() > 0) {
        const auto e = evaluate(model, held, 256, {}, o.threads);
        meta["eval.heldout_perplexity"] = num(e.perplexity);
        meta["eval.heldout_tokens"] = std::to_string(e.tokens);
    }
    res.eval_seconds = seconds_since(t);
}

}  // namespace

// ---- tasks and splits -----------------------------------------------------------------------------------------------

const char* to_string(PretrainTask t) { return t == PretrainTask::Vision ? "vision" : "text"; }

PretrainTask parse_pretrain_task(const std::string& s) {
    if (s == "vision")
        return PretrainTask::Vision;
    if (s == "text")
        return PretrainTask::Text;
    throw std::invalid_argument("pretrain.task = '" + s + "' is not one of: vision, text");
}

std::vector<std::int64_t> vision_pretext_classes() { return {0, 1, 2, 3, 5, 8}; }
std::vector<std::int64_t> vision_heldout_classes() { return {4, 6, 7, 9}; }

bool is_vision_pretext_class(std::int64_t label) {
    const auto c = vision_pretext_classes();
    return std::find(c.begin(), c.end(), label) != c.end();
}

std::vector<std::int64_t> vision_pretrain_indices(const std::vector<std::int64_t>& train_labels) {
    std::vector<std::int64_t> out;
    for (std::size_t i = 0; i < train_labels.size(); i += 2)
        if (is_vision_pretext_class(train_labels[i]))
            out.push_back(static_cast<std::int64_t>(i));
    return out;
}

std::vector<std::int64_t> vision_finetune_indices(std::int64_t train_size) {
    std::vector<std::int64_t> out;
    for (std::int64_t i = 1; i < train_size; i += 2)
        out.push_back(i);
    return out;
}

const std::vector<std::string>& text_heldout_categories() {
    static const std::vector<std::string> c = {"computers", "debian",   "law",     "linux",  "linuxcookie",
                                               "medicine",  "perl",     "science", "sports", "startrek"};
    return c;
}

FortunesSplit fortunes_pretrain_split(const std::map<std::string, std::vector<std::string>>& corpus) {
    const auto& held = text_heldout_categories();
    FortunesSplit s;
    for (const auto& [name, entries] : corpus) {
        if (std::binary_search(held.begin(), held.end(), name)) {
            const auto label = static_cast<std::int64_t>(s.finetune_train.names.size());
            s.finetune_train.names.push_back(name);
            s.finetune_test.names.push_back(name);
            for (std::size_t j = 0; j < entries.size(); ++j) {
                auto& part = j % 10 == 9 ? s.finetune_test : s.finetune_train;
                part.texts.push_back(entries[j]);
                part.labels.push_back(label);
            }
        } else {
            for (std::size_t j = 0; j < entries.size(); ++j)
                (j % 20 == 19 ? s.pretrain_val : s.pretrain_train).push_back(entries[j]);
        }
    }
    return s;
}

// ---- recipe and options -----------------------------------------------------------------------------------------------

PretrainRecipe default_pretrain_recipe(PretrainTask task) {
    PretrainRecipe r;
    if (task == PretrainTask::Vision) {
        r.steps = 2000;
        r.batch_size = 128;
        r.learning_rate = 2e-3;
        r.warmup_steps = 100;
        r.weight_decay = 0.05;
    } else {
        r.steps = 3000;
        r.batch_size = 64;
        r.learning_rate = 3e-3;
        r.warmup_steps = 100;
        r.weight_decay = 0.01;
    }
    return r;
}

ViTConfig pretrain_vit_config() { return ViTConfig{}; }
GptConfig pretrain_gpt_config() { return GptConfig{}; }

void PretrainOptions::validate() const {
    auto bad = [](const std::string& field, const std::string& what) {
        throw std::invalid_argument("pretrain." + field + " " + what);
    };
    if (out_dir.empty())
        bad("out_dir", "is empty");
    if (threads < 0)
        bad("threads", "= " + std::to_string(threads) + " must be >= 0");
    if (steps < 0)
        bad("steps", "= " + std::to_string(steps) + " must be >= 0 (0: the default)");
    if (batch_size < 0)
        bad("batch_size", "= " + std::to_string(batch_size) + " must be >= 0 (0: the default)");
    if (!(learning_rate >= 0.0) || !std::isfinite(learning_rate))
        bad("learning_rate", "= " + num(learning_rate) + " must be finite and >= 0 (0: the default)");
    if (log_every < 0)
        bad("log_every", "= " + std::to_string(log_every) + " must be >= 0");
}

std::string pretrained_file_name(PretrainTask task) {
    return task == PretrainTask::Vision ? "vit-fashion-mnist.safetensors" : "gpt-fortunes.safetensors";
}

std::string pretrained_path(const PretrainOptions& options) {
    return (fs::path(options.out_dir) / pretrained_file_name(options.task)).string();
}

TensorMetadata pretrain_identity(const PretrainOptions& options) {
    SeededDefaultGenerator guard(options.seed);  // building the model draws random numbers
    const auto model = make_model(options.task);
    return identity_of(options, *model);
}

PretrainResult pretrain(const PretrainOptions& o) {
    o.validate();
    warn_if_reference_blas();
    const auto t0 = std::chrono::steady_clock::now();
    PretrainResult res;
    res.path = pretrained_path(o);
    prepare_output_dir(o.out_dir);
    const auto want = pretrain_identity(o);

    std::error_code ec;
    if (fs::exists(res.path, ec)) {
        if (o.force) {
            spdlog::info("{} exists; retraining it (--force)", res.path);
        } else {
            try {
                const auto header = read_safetensors_header(res.path);
                const auto diff = first_mismatch(want, header.metadata);
                if (diff.empty()) {
                    spdlog::info("reusing {}: same config and seed {} (--force retrains)", res.path, o.seed);
                    res.reused = true;
                    res.metadata = header.metadata;
                    return res;
                }
                spdlog::info("{} was trained differently ({}); retraining", res.path, diff);
            } catch (const SafetensorsError& e) {
                spdlog::warn("{} is not a readable checkpoint ({}); retraining", res.path, e.what());
            }
        }
    }

    if (o.threads > 0)
        torch::set_num_threads(o.threads);
    const auto recipe = resolved_recipe(o);
    SeededDefaultGenerator guard(o.seed);
    auto model = make_model(o.task);
    auto meta = identity_of(o, *model);
    meta["pretrain.threads"] = std::to_string(torch::get_num_threads());
    if (o.task == PretrainTask::Vision)
        pretrain_vision(dynamic_cast<ViTImpl&>(*model), o, recipe, meta, res);
    else
        pretrain_text(dynamic_cast<GptImpl&>(*model), o, recipe, meta, res);
    for (auto& p : model->parameters())
        p.set_requires_grad(false);
    save_safetensors(res.path, model->base_state_dict(), meta);
    res.metadata = std::move(meta);
    res.seconds = seconds_since(t0);
    return res;
}

}  // namespace fedlora::learn
