#include "fedlora/learn/train.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <set>

#include "fedlora/learn/blas.h"
#include "fedlora/learn/soft.h"

namespace fedlora::learn {
namespace {

namespace F = torch::nn::functional;

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void require(bool ok, const std::string& field, const std::string& what) {
    if (!ok)
        throw std::invalid_argument("train." + field + " " + what);
}

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

// Seeds LibTorch's default CPU generator for the lifetime of the guard and restores its previous state after.
class DefaultGeneratorGuard {
public:
    explicit DefaultGeneratorGuard(std::uint64_t seed) : gen_(at::detail::getDefaultCPUGenerator()) {
        std::lock_guard<std::mutex> lock(gen_.mutex());
        saved_ = gen_.get_state();
        gen_.set_current_seed(seed);
    }
    ~DefaultGeneratorGuard() {
        std::lock_guard<std::mutex> lock(gen_.mutex());
        gen_.set_state(saved_);
    }
    DefaultGeneratorGuard(const DefaultGeneratorGuard&) = delete;
    DefaultGeneratorGuard& operator=(const DefaultGeneratorGuard&) = delete;

private:
    at::Generator gen_;
    at::Tensor saved_;
};

// Mini-batches without replacement from a client's indices, reshuffled (Fisher-Yates with unbiased bounded
// integers from std::mt19937_64, whose sequence the standard fixes) whenever fewer than a batch remain.
class BatchSampler {
public:
    BatchSampler(std::vector<std::int64_t> indices, std::int64_t batch, std::uint64_t seed)
        : order_(std::move(indices)), batch_(batch), eng_(seed) {
        shuffle();
    }
    std::vector<std::int64_t> next() {
        const auto n = static_cast<std::int64_t>(order_.size());
        if (n <= batch_) {
            shuffle();
            return order_;
        }
        if (pos_ + batch_ > n)
            shuffle();
        std::vector<std::int64_t> b(order_.begin() + pos_, order_.begin() + pos_ + batch_);
        pos_ += batch_;
        return b;
    }

private:
    void shuffle() {
        for (std::size_t i = order_.size(); i > 1; --i) {
            const std::uint64_t n = i, max = std::numeric_limits<std::uint64_t>::max();
            std::uint64_t x, r;
            do {
                x = eng_();
                r = x % n;
            } while (x - r > max - (n - 1));
            std::swap(order_[i - 1], order_[r]);
        }
        pos_ = 0;
    }

    std::vector<std::int64_t> order_;
    std::int64_t batch_;
    std::int64_t pos_ = 0;
    std::mt19937_64 eng_;
};

enum class Task { Classification, LanguageModel };

Task task_of(TransformerModelImpl& model) {
    if (dynamic_cast<ViTImpl*>(&model))
        return Task::Classification;
    if (dynamic_cast<GptImpl*>(&model))
        return Task::LanguageModel;
    throw std::invalid_argument("train: unsupported model type (expected a ViT or a GPT from models.h)");
}

torch::ScalarType model_dtype(TransformerModelImpl& model) {
    for (const auto& p : model.parameters())
        return p.scalar_type();
    return torch::kFloat;
}

void check_data(TransformerModelImpl& model, Task task, const TaskData& d) {
    if (!d.inputs.defined() || d.size() < 1)
        throw std::invalid_argument("train: the data set is empty");
    if (task == Task::Classification) {
        if (d.inputs.dim() != 4 || !d.inputs.is_floating_point())
            throw std::invalid_argument("train: ViT inputs must be a floating tensor [N, C, H, W]");
        if (!d.labels.defined() || d.labels.dim() != 1 || d.labels.size(0) != d.size() ||
            d.labels.scalar_type() != torch::kLong)
            throw std::invalid_argument("train: ViT labels must be an int64 tensor [N] matching the inputs");
    } else {
        auto& gpt = dynamic_cast<GptImpl&>(model);
        if (d.inputs.dim() != 2 || d.inputs.is_floating_point() || d.inputs.size(1) < 2 ||
            d.inputs.size(1) > gpt.config().context)
            throw std::invalid_argument("train: GPT inputs must be integer token ids [N, T] with 2 <= T <= " +
                                        std::to_string(gpt.config().context));
    }
}

void check_indices(const std::vector<std::int64_t>& indices, std::int64_t n) {
    for (const auto i : indices)
        if (i < 0 || i >= n)
            throw std::invalid_argument("train: example index " + std::to_string(i) + " outside [0, " +
                                        std::to_string(n) + ")");
}

torch::Tensor index_tensor(const std::vector<std::int64_t>& idx) {
    return torch::from_blob(const_cast<std::int64_t*>(idx.data()), {static_cast<std::int64_t>(idx.size())},
                            torch::kLong)
        .clone();
}

torch::Tensor batch_loss(TransformerModelImpl& model, Task task, const TaskData& d, const torch::Tensor& idx) {
    if (task == Task::Classification) {
        auto& vit = dynamic_cast<ViTImpl&>(model);
        auto x = d.inputs.index_select(0, idx).to(model_dtype(model));
        auto y = d.labels.index_select(0, idx);
        return F::cross_entropy(vit.forward(x), y);
    }
    auto& gpt = dynamic_cast<GptImpl&>(model);
    auto ids = d.inputs.index_select(0, idx).to(torch::kLong);
    return GptImpl::lm_loss(gpt.forward(ids), ids);
}

void warn_blas_once() {
    static std::once_flag once;
    std::call_once(once, [] { warn_if_reference_blas(); });
}

std::string state_key(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

}  // namespace

// ---- options and data ---------------------------------------------------------------------------------------------

void TrainOptions::validate() const {
    require(local_steps >= 1, "local_steps", "= " + std::to_string(local_steps) + " must be >= 1");
    require(batch_size >= 1, "batch_size", "= " + std::to_string(batch_size) + " must be >= 1");
    require(optimizer == "adamw" || optimizer == "sgd", "optimizer",
            "= '" + optimizer + "' is not one of: adamw, sgd");
    require(std::isfinite(learning_rate) && learning_rate > 0.0, "learning_rate",
            "= " + num(learning_rate) + " must be finite and > 0");
    require(std::isfinite(weight_decay) && weight_decay >= 0.0, "weight_decay",
            "= " + num(weight_decay) + " must be finite and >= 0");
    require(momentum >= 0.0 && momentum < 1.0, "momentum", "= " + num(momentum) + " must be in [0, 1)");
    require(beta1 >= 0.0 && beta1 < 1.0, "beta1", "= " + num(beta1) + " must be in [0, 1)");
    require(beta2 >= 0.0 && beta2 < 1.0, "beta2", "= " + num(beta2) + " must be in [0, 1)");
    require(std::isfinite(eps) && eps > 0.0, "eps", "= " + num(eps) + " must be finite and > 0");
    require(std::isfinite(clip_norm) && clip_norm >= 0.0, "clip_norm",
            "= " + num(clip_norm) + " must be finite and >= 0 (0 disables clipping)");
    require(threads >= 0, "threads", "= " + std::to_string(threads) + " must be >= 0 (0 keeps the current setting)");
    require(std::isfinite(soft_lambda) && soft_lambda >= 0.0, "soft_lambda",
            "= " + num(soft_lambda) + " must be finite and >= 0");
    require(train_lora_A || train_lora_B, "train_lora_A", "and train.train_lora_B are both false: nothing to train");
}

TaskData TaskData::from_images(const ImageDataset& dataset) { return TaskData{dataset.images, dataset.labels}; }

TaskData TaskData::from_texts(const std::vector<std::string>& texts, std::int64_t block) {
    if (block < 2)
        throw std::invalid_argument("TaskData::from_texts: block = " + std::to_string(block) + " must be >= 2");
    std::string all;
    for (std::size_t i = 0; i < texts.size(); ++i)
        all += (i ? "\n" : "") + texts[i];
    const auto n = static_cast<std::int64_t>(all.size()) / block;
    auto ids = torch::empty({n, block}, torch::kLong);
    auto* p = ids.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < n * block; ++i)
        p[i] = static_cast<unsigned char>(all[static_cast<std::size_t>(i)]);
    return TaskData{ids, {}};
}

// ---- adapters <-> model ----------------------------------------------------------------------------------------------

Adapter adapter_from_model(const TransformerModelImpl& model) {
    std::map<std::string, torch::Tensor> by_name;
    for (const auto& [name, t] : model.lora_state_dict())
        by_name.emplace(name, t);
    Adapter a;
    for (const auto& layer : model.lora_layer_names()) {
        const auto& ta = by_name.at(layer + ".lora_A");
        const auto& tb = by_name.at(layer + ".lora_B");
        LoraLayerFactors l;
        l.layer = layer;
        l.rank = ta.size(0);
        l.in = ta.size(1);
        l.out = tb.size(0);
        const auto fa = ta.to(torch::kFloat).contiguous().cpu();
        const auto fb = tb.to(torch::kFloat).contiguous().cpu();
        l.A.assign(fa.data_ptr<float>(), fa.data_ptr<float>() + fa.numel());
        l.B.assign(fb.data_ptr<float>(), fb.data_ptr<float>() + fb.numel());
        a.layers.push_back(std::move(l));
    }
    return a;
}

void load_adapter(TransformerModelImpl& model, const Adapter& adapter) {
    const auto shape = adapter_from_model(model);
    if (shape.empty())
        throw ModelError("load_adapter: the model has no LoRA adapters (call inject_lora first)");
    try {
        shape.check_same_shape(adapter, "load_adapter");
    } catch (const std::invalid_argument& e) {
        throw ModelError(e.what());
    }
    for (const auto& l : adapter.layers)
        for (auto f : {LoraFactor::A, LoraFactor::B})
            for (const float v : l.factor(f))
                if (!std::isfinite(v))
                    throw ModelError("load_adapter: tensor '" + l.tensor_name(f) + "' holds a non-finite value");
    const auto tensors = adapter_to_tensors(adapter);
    model.load_lora_state_dict(std::map<std::string, at::Tensor>(tensors.begin(), tensors.end()), "adapter");
}

// ---- optimiser ------------------------------------------------------------------------------------------------------

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                        const TrainOptions& o) {
    if (o.optimizer == "adamw")
        return std::make_unique<torch::optim::AdamW>(
            params, torch::optim::AdamWOptions(o.learning_rate)
                        .betas(std::make_tuple(o.beta1, o.beta2))
                        .eps(o.eps)
                        .weight_decay(o.weight_decay));
    if (o.optimizer == "sgd")
        return std::make_unique<torch::optim::SGD>(
            params, torch::optim::SGDOptions(o.learning_rate).momentum(o.momentum).weight_decay(o.weight_decay));
    throw std::invalid_argument("train.optimizer = '" + o.optimizer + "' is not one of: adamw, sgd");
}

OptimizerState export_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& kind,
                                      const NamedTensors& named_params) {
    OptimizerState s;
    s.kind = kind;
    auto& st = optimizer.state();
    for (const auto& [name, p] : named_params) {
        const auto it = st.find(state_key(p));
        if (it == st.end())
            continue;
        if (kind == "adamw") {
            const auto& a = static_cast<const torch::optim::AdamWParamState&>(*it->second);
            s.tensors.emplace_back(name + ".step", torch::tensor(a.step(), torch::kLong));
            s.tensors.emplace_back(name + ".exp_avg", a.exp_avg().detach().clone());
            s.tensors.emplace_back(name + ".exp_avg_sq", a.exp_avg_sq().detach().clone());
        } else if (kind == "sgd") {
            const auto& g = static_cast<const torch::optim::SGDParamState&>(*it->second);
            if (g.momentum_buffer().defined())
                s.tensors.emplace_back(name + ".momentum_buffer", g.momentum_buffer().detach().clone());
        } else {
            throw std::invalid_argument("export_optimizer_state: unknown kind '" + kind + "'");
        }
    }
    return s;
}

void import_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& kind,
                            const NamedTensors& named_params, const OptimizerState& state) {
    if (state.empty())
        return;
    if (state.kind != kind)
        throw std::invalid_argument("optimizer state is for '" + state.kind + "' but the optimiser is '" + kind + "'");
    std::map<std::string, torch::Tensor> given(state.tensors.begin(), state.tensors.end());
    std::map<std::string, torch::Tensor> params(named_params.begin(), named_params.end());
    const std::vector<std::string> fields = kind == "adamw"
                                                ? std::vector<std::string>{".step", ".exp_avg", ".exp_avg_sq"}
                                                : std::vector<std::string>{".momentum_buffer"};
    // Validate everything first.
    std::set<std::string> used;
    for (const auto& [name, p] : named_params) {
        std::size_t present = 0;
        for (const auto& f : fields) {
            const auto it = given.find(name + f);
            if (it == given.end())
                continue;
            ++present;
            used.insert(it->first);
            const auto& t = it->second;
            if (f == ".step") {
                if (!t.defined() || t.numel() != 1 || t.is_floating_point() || t.item<std::int64_t>() < 0)
                    throw std::invalid_argument("optimizer state '" + it->first + "' must be a non-negative integer");
            } else if (!t.defined() || t.sizes() != p.sizes() || !t.is_floating_point()) {
                throw std::invalid_argument("optimizer state '" + it->first + "' does not match parameter '" + name +
                                            "' (shape or dtype)");
            }
        }
        if (present != 0 && present != fields.size())
            throw std::invalid_argument("optimizer state for parameter '" + name + "' is incomplete");
    }
    for (const auto& [n, t] : given)
        if (!used.count(n))
            throw std::invalid_argument("optimizer state tensor '" + n +
                                        "' belongs to no trained parameter (another rule or model?)");
    auto& st = optimizer.state();
    for (const auto& [name, p] : named_params) {
        if (kind == "adamw") {
            const auto it = given.find(name + ".step");
            if (it == given.end())
                continue;
            auto s = std::make_unique<torch::optim::AdamWParamState>();
            s->step(it->second.item<std::int64_t>());
            s->exp_avg(given.at(name + ".exp_avg").to(p.options()).clone());
            s->exp_avg_sq(given.at(name + ".exp_avg_sq").to(p.options()).clone());
            st[state_key(p)] = std::move(s);
        } else {
            const auto it = given.find(name + ".momentum_buffer");
            if (it == given.end())
                continue;
            auto s = std::make_unique<torch::optim::SGDParamState>();
            s->momentum_buffer(it->second.to(p.options()).clone());
            st[state_key(p)] = std::move(s);
        }
    }
}

// ---- training -------------------------------------------------------------------------------------------------------

LocalResult train_local(TransformerModelImpl& model, const TaskData& data, const std::vector<std::int64_t>& indices,
                        const TrainOptions& options, std::int64_t client, std::int64_t round,
                        OptimizerState& optimizer_state) {
    warn_blas_once();
    options.validate();
    if (!model.has_lora())
        throw ModelError("train_local: the model has no LoRA adapters (call inject_lora first)");
    const Task task = task_of(model);
    check_data(model, task, data);
    if (indices.empty())
        throw std::invalid_argument("train_local: client " + std::to_string(client) + " has no examples");
    check_indices(indices, data.size());
    for (const auto& p : model.named_parameters(true))
        if (p.value().requires_grad() && !ends_with(p.key(), ".lora_A") && !ends_with(p.key(), ".lora_B"))
            throw std::invalid_argument("train_local: base parameter '" + p.key() +
                                        "' requires grad; the base must be frozen (freeze_base)");
    if (options.threads > 0)
        torch::set_num_threads(options.threads);

    const bool was_merged = model.lora_merged();
    model.unmerge_lora();
    const auto named = model.named_lora_parameters();
    std::vector<bool> grad_before;
    NamedTensors trained;
    std::vector<torch::Tensor> params;
    for (const auto& [name, p] : named) {
        grad_before.push_back(p.requires_grad());
        const bool on = ends_with(name, ".lora_A") ? options.train_lora_A : options.train_lora_B;
        p.set_requires_grad(on);
        if (on) {
            trained.emplace_back(name, p);
            params.push_back(p);
        }
    }
    const bool was_training = model.is_training();
    auto restore = [&] {
        for (std::size_t i = 0; i < named.size(); ++i)
            named[i].second.set_requires_grad(grad_before[i]);
        model.train(was_training);
        if (was_merged)
            model.merge_lora();
    };

    LocalResult res;
    try {
        const Adapter before = adapter_from_model(model);
        auto opt = make_optimizer(params, options);
        import_optimizer_state(*opt, options.optimizer, trained, optimizer_state);

        const auto c = static_cast<std::uint64_t>(client), r = static_cast<std::uint64_t>(round);
        DefaultGeneratorGuard gen_guard(mix_seed(options.seed, c, r, 1));  // dropout
        BatchSampler sampler(indices, options.batch_size, mix_seed(options.seed, c, r, 0));
        model.train(true);
        double loss_sum = 0.0, reg_sum = 0.0, norm_sum = 0.0;
        for (std::int64_t step = 0; step < options.local_steps; ++step) {
            const auto batch = sampler.next();
            opt->zero_grad();
            auto loss = batch_loss(model, task, data, index_tensor(batch));
            auto total = loss;
            if (options.soft_lambda > 0.0) {
                auto reg = soft_regularizer(named, options.soft_lambda);
                reg_sum += reg.item<double>();
                total = loss + reg;
            }
            total.backward();
            double gn = 0.0;
            if (options.clip_norm > 0.0) {
                gn = torch::nn::utils::clip_grad_norm_(params, options.clip_norm);
                if (gn > options.clip_norm)
                    ++res.clipped_steps;
            } else {
                double s = 0.0;
                for (const auto& p : params)
                    if (p.grad().defined())
                        s += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
                gn = std::sqrt(s);
            }
            opt->step();
            loss_sum += loss.item<double>();
            norm_sum += gn;
            res.examples += static_cast<std::int64_t>(batch.size());
        }
        opt->zero_grad();
        res.steps = options.local_steps;
        res.mean_loss = loss_sum / static_cast<double>(res.steps);
        res.mean_regularizer = reg_sum / static_cast<double>(res.steps);
        res.mean_grad_norm = norm_sum / static_cast<double>(res.steps);
        res.update = adapter_difference(adapter_from_model(model), before);
        optimizer_state = export_optimizer_state(*opt, options.optimizer, trained);
    } catch (...) {
        restore();
        throw;
    }
    restore();
    return res;
}

// ---- evaluation -----------------------------------------------------------------------------------------------------

EvalResult evaluate(TransformerModelImpl& model, const TaskData& data, std::int64_t batch_size,
                    const std::vector<std::int64_t>& indices, int threads) {
    if (batch_size < 1)
        throw std::invalid_argument("evaluate: batch_size = " + std::to_string(batch_size) + " must be >= 1");
    if (threads < 0)
        throw std::invalid_argument("evaluate: threads = " + std::to_string(threads) + " must be >= 0");
    const Task task = task_of(model);
    check_data(model, task, data);
    check_indices(indices, data.size());
    if (threads > 0)
        torch::set_num_threads(threads);
    std::vector<std::int64_t> all = indices;
    if (all.empty()) {
        all.resize(static_cast<std::size_t>(data.size()));
        std::iota(all.begin(), all.end(), 0);
    }
    torch::NoGradGuard ng;
    const bool was_training = model.is_training();
    model.eval();
    EvalResult res;
    double loss_sum = 0.0;
    std::int64_t correct = 0;
    try {
        for (std::size_t b = 0; b < all.size(); b += static_cast<std::size_t>(batch_size)) {
            const std::vector<std::int64_t> chunk(
                all.begin() + static_cast<std::ptrdiff_t>(b),
                all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), b + static_cast<std::size_t>(batch_size))));
            const auto idx = index_tensor(chunk);
            if (task == Task::Classification) {
                auto& vit = dynamic_cast<ViTImpl&>(model);
                auto logits = vit.forward(data.inputs.index_select(0, idx).to(model_dtype(model)));
                auto y = data.labels.index_select(0, idx);
                loss_sum += F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().reduction(torch::kSum))
                                .item<double>();
                correct += logits.argmax(1).eq(y).sum().item<std::int64_t>();
            } else {
                auto& gpt = dynamic_cast<GptImpl&>(model);
                auto ids = data.inputs.index_select(0, idx).to(torch::kLong);
                auto logits = gpt.forward(ids);
                const auto t = ids.size(1), v = logits.size(2);
                loss_sum += F::cross_entropy(logits.slice(1, 0, t - 1).reshape({-1, v}),
                                             ids.slice(1, 1, t).reshape({-1}),
                                             F::CrossEntropyFuncOptions().reduction(torch::kSum))
                                .item<double>();
                res.tokens += ids.size(0) * (t - 1);
            }
            res.examples += static_cast<std::int64_t>(chunk.size());
        }
    } catch (...) {
        model.train(was_training);
        throw;
    }
    model.train(was_training);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    if (task == Task::Classification) {
        res.loss = loss_sum / static_cast<double>(res.examples);
        res.accuracy = static_cast<double>(correct) / static_cast<double>(res.examples);
        res.perplexity = nan;
    } else {
        res.loss = loss_sum / static_cast<double>(res.tokens);
        res.accuracy = nan;
        res.perplexity = std::exp(res.loss);
    }
    return res;
}

}  // namespace fedlora::learn
