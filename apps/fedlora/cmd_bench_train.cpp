// fedlora bench train: one LoRA training step (forward, backward, AdamW over the adapter factors) of the default
// ViT and GPT, in C++ (LibTorch) and in Python torch side by side, on the same weights, batch and thread count.
//
// The C++ side builds the model, injects LoRA, saves every tensor (base and adapters) and the batch as safetensors
// in a temporary directory and starts the embedded bench_train_step.py (an independent plain PyTorch definition of
// the same model) with Debian's /usr/bin/python3 on those files. The two sides then take turns, C++ and Python, for
// a few rounds (a change of machine load hits both alike); steps/s are medians over the rounds. The first step's
// loss is compared to show that both compute the same step. Throughput in GFLOP/s comes from the
// analytic matmul count of flops.h, as a fraction of this machine's measured float32 matmul rate.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "bench_train_step_py.h"
#include "commands.h"
#include "temp_dir.h"
#include "fedlora/learn/blas.h"
#include "fedlora/learn/flops.h"
#include "fedlora/learn/models.h"
#include "fedlora/learn/train.h"

extern char** environ;

namespace fedlora::app {

namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

struct BenchTrainOpts {
    std::string task = "both";
    int threads = 0;
    std::int64_t batch = 32;
    double seconds = 2.0;
    int rounds = 5;
    std::int64_t rank = 8;
    double alpha = 16.0;
    std::string python = FEDLORA_PYTHON;
};

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

std::string last_line(const std::string& text) {
    std::string t = text;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r'))
        t.pop_back();
    const auto nl = t.rfind('\n');
    return nl == std::string::npos ? t : t.substr(nl + 1);
}

struct StepRate {
    std::int64_t steps = 0;
    double seconds = 0.0;
    double per_second() const { return static_cast<double>(steps) / seconds; }
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The Python side, running bench_train_step.py --serve: it loads the model, takes its warm-up steps and then times
// steps on request ("run S" on its stdin, one JSON line back), idle in between. The destructor ends it (closing
// its stdin; SIGKILL if it has not exited 5 s later) and reaps it.
class PythonStepServer {
public:
    PythonStepServer(const BenchTrainOpts& o, const TempDir& dir, const std::string& model, int threads)
        : python_(o.python), err_path_(dir.file(model + ".py.err")) {
        const std::string script = dir.file("bench_train_step.py");
        {
            std::ofstream f(script, std::ios::binary);
            f << kBenchTrainStepPy;
            if (!f)
                throw std::runtime_error("cannot write " + script);
        }
        int in[2], out[2];
        if (::pipe2(in, O_CLOEXEC) != 0)
            throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
        if (::pipe2(out, O_CLOEXEC) != 0) {
            ::close(in[0]);
            ::close(in[1]);
            throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
        }
        const std::vector<std::string> argv = {o.python,    script,
                                               "--model",   model,
                                               "--weights", dir.file(model + ".weights.safetensors"),
                                               "--batch",   dir.file(model + ".batch.safetensors"),
                                               "--threads", std::to_string(threads),
                                               "--serve"};
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
        posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        const int rc = ::posix_spawn(&pid_, o.python.c_str(), &fa, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        ::close(in[0]);
        ::close(out[1]);
        to_child_ = in[1];
        from_child_ = out[0];
        if (rc != 0) {
            pid_ = -1;
            close_pipes();
            throw std::runtime_error("cannot run " + o.python + ": " + std::strerror(rc) +
                                     " (apt-get install python3-torch, or pass --python)");
        }
        const auto hello = read_json();
        first_loss = hello.at("first_loss").get<double>();
        torch_version = hello.at("torch").get<std::string>();
    }
    ~PythonStepServer() {
        close_pipes();  // end of input: the script leaves its loop and exits
        if (pid_ <= 0)
            return;
        int status = 0;
        for (int i = 0; i < 500; ++i) {
            if (::waitpid(pid_, &status, WNOHANG) != 0)
                return;
            ::usleep(10000);
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
    }
    PythonStepServer(const PythonStepServer&) = delete;
    PythonStepServer& operator=(const PythonStepServer&) = delete;

    StepRate run(double seconds) {
        char req[64];
        const int n = std::snprintf(req, sizeof req, "run %.6g\n", seconds);
        if (::write(to_child_, req, static_cast<std::size_t>(n)) != n)
            fail("it stopped reading its requests");
        const auto j = read_json();
        StepRate r;
        r.steps = j.at("steps").get<std::int64_t>();
        r.seconds = j.at("seconds").get<double>();
        return r;
    }

    double first_loss = 0.0;
    std::string torch_version;

private:
    void close_pipes() {
        if (to_child_ >= 0)
            ::close(to_child_);
        if (from_child_ >= 0)
            ::close(from_child_);
        to_child_ = from_child_ = -1;
    }
    // Lets the script finish writing its error, then quotes the last line of its stderr.
    [[noreturn]] void fail(const std::string& what) {
        close_pipes();
        int status = 0;
        if (pid_ > 0 && ::waitpid(pid_, &status, 0) == pid_)
            pid_ = -1;
        std::string detail = last_line(read_text(err_path_));
        if (detail.find("No module named") != std::string::npos)
            detail += " (apt-get install python3-torch python3-numpy)";
        throw std::runtime_error("the Python torch side (" + python_ + ") failed: " +
                                 (detail.empty() ? what : detail));
    }
    nlohmann::json read_json() {
        std::string line;
        char c = 0;
        while (true) {
            const ssize_t n = ::read(from_child_, &c, 1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                fail("it exited without a result");
            if (c == '\n')
                break;
            line += c;
        }
        try {
            return nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception&) {
            fail("unexpected output: " + line);
        }
    }

    std::string python_, err_path_;
    pid_t pid_ = -1;
    int to_child_ = -1, from_child_ = -1;
};

// Times steps of `step` for at least `seconds` (and 2 steps).
template <typename Step>
StepRate time_steps(Step& step, double seconds) {
    StepRate r;
    const auto t0 = std::chrono::steady_clock::now();
    do {
        step();
        ++r.steps;
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (r.seconds < seconds || r.steps < 2);
    return r;
}

// Adapters with a small random B, as after some training (a fresh B = 0 would leave A's gradient zero).
void randomize_lora_B(learn::TransformerModelImpl& model) {
    torch::NoGradGuard ng;
    for (auto& [name, p] : model.named_lora_parameters())
        if (name.size() > 7 && name.compare(name.size() - 7, 7, ".lora_B") == 0)
            p.normal_(0.0, 0.02);
}

void bench_one(const BenchTrainOpts& o, const std::string& task, int threads, double peak_gflops,
               const TempDir& dir) {
    torch::manual_seed(1);
    std::shared_ptr<learn::TransformerModelImpl> model;
    std::string py_model, what;
    std::map<std::string, at::Tensor> batch;
    double flops = 0.0;
    std::function<torch::Tensor()> loss_fn;
    const learn::LoraConfig lora{o.rank, o.alpha, 0.0};
    std::vector<std::string> layers;
    if (task == "vision") {
        auto vit = std::make_shared<learn::ViTImpl>(learn::ViTConfig{});
        layers = vit->inject_lora({"qkv", "proj", "fc1", "fc2"}, lora);
        const auto& c = vit->config();
        batch["pixels"] = torch::rand({o.batch, c.in_channels, c.image_size, c.image_size});
        batch["labels"] = torch::randint(c.num_classes, {o.batch}, torch::kLong);
        flops = learn::lora_step_flops(*vit, o.batch).total();
        what = "ViT dim " + std::to_string(c.dim) + ", depth " + std::to_string(c.depth) + ", " +
               std::to_string(c.num_patches() + 1) + " tokens, batch " + std::to_string(o.batch) + " images";
        loss_fn = [vit, x = batch["pixels"], y = batch["labels"]] { return F::cross_entropy(vit->forward(x), y); };
        model = vit;
        py_model = "vit";
    } else {
        auto gpt = std::make_shared<learn::GptImpl>(learn::GptConfig{});
        layers = gpt->inject_lora({"c_attn", "c_proj", "c_fc"}, lora);
        const auto& c = gpt->config();
        batch["ids"] = torch::randint(c.vocab_size, {o.batch, c.context}, torch::kLong);
        flops = learn::lora_step_flops(*gpt, o.batch, c.context).total();
        what = "GPT dim " + std::to_string(c.dim) + ", depth " + std::to_string(c.depth) + ", batch " +
               std::to_string(o.batch) + " x " + std::to_string(c.context) + " bytes";
        loss_fn = [gpt, ids = batch["ids"]] { return learn::GptImpl::lm_loss(gpt->forward(ids), ids); };
        model = gpt;
        py_model = "gpt2";
    }
    randomize_lora_B(*model);
    model->train(true);
    model->save_full(dir.file(py_model + ".weights.safetensors"));
    learn::save_safetensors(dir.file(py_model + ".batch.safetensors"), batch);

    std::int64_t adapter_params = 0;
    for (const auto& p : model->lora_parameters())
        adapter_params += p.numel();
    auto opt = learn::make_optimizer(model->lora_parameters(), learn::TrainOptions{});  // AdamW lr 1e-3, no decay
    auto step = [&] {
        opt->zero_grad();
        auto loss = loss_fn();
        loss.backward();
        opt->step();
        return loss;
    };
    const double cpp_loss = step().item<double>();
    for (int i = 1; i < 3; ++i)  // warm-up
        step();

    spdlog::info("{}: starting the Python torch side", task);
    PythonStepServer py(o, dir, py_model, threads);
    // Interleaved rounds, C++ then Python, each side seconds / rounds per round; medians over the rounds.
    spdlog::info("{}: timing {} interleaved rounds of {:.3g} s per side", task, o.rounds, o.seconds / o.rounds);
    std::vector<double> cpp_rates, py_rates, ratios;
    StepRate cpp_total, py_total;
    for (int r = 0; r < o.rounds; ++r) {
        const auto c = time_steps(step, o.seconds / o.rounds);
        const auto p = py.run(o.seconds / o.rounds);
        cpp_rates.push_back(c.per_second());
        py_rates.push_back(p.per_second());
        ratios.push_back(c.per_second() / p.per_second());
        cpp_total.steps += c.steps;
        cpp_total.seconds += c.seconds;
        py_total.steps += p.steps;
        py_total.seconds += p.seconds;
    }
    const double cpp_rate = median(cpp_rates), py_rate = median(py_rates);
    const double gf_cpp = flops * cpp_rate / 1e9, gf_py = flops * py_rate / 1e9;

    std::printf("%s: %s, LoRA r=%lld on %zu layers (%lld adapter parameters); %.4f GFLOP per step\n", task.c_str(),
                what.c_str(), static_cast<long long>(o.rank), layers.size(), static_cast<long long>(adapter_params),
                flops / 1e9);
    std::printf("  C++ LibTorch          %8.1f steps/s  %6.2f GFLOP/s = %5.1f%% of matmul peak  (%lld steps in %.2f s)\n",
                cpp_rate, gf_cpp, 100.0 * gf_cpp / peak_gflops, static_cast<long long>(cpp_total.steps),
                cpp_total.seconds);
    std::printf("  Python torch %-9s%8.1f steps/s  %6.2f GFLOP/s = %5.1f%% of matmul peak  (%lld steps in %.2f s)\n",
                py.torch_version.c_str(), py_rate, gf_py, 100.0 * gf_py / peak_gflops,
                static_cast<long long>(py_total.steps), py_total.seconds);
    std::printf("  C++ / Python: %.2fx (median of %d interleaved rounds, range %.2f-%.2f); first-step loss C++ %.6f, "
                "Python %.6f\n",
                median(ratios), o.rounds, *std::min_element(ratios.begin(), ratios.end()),
                *std::max_element(ratios.begin(), ratios.end()), cpp_loss, py.first_loss);
    std::fflush(stdout);
    if (!(std::abs(cpp_loss - py.first_loss) <= 1e-4 * std::max(1.0, std::abs(cpp_loss))))
        throw std::runtime_error(task + ": the C++ and Python steps disagree (first-step loss " +
                                 std::to_string(cpp_loss) + " vs " + std::to_string(py.first_loss) +
                                 "): they are not timing the same computation");
}

}  // namespace

void add_bench_train(CLI::App& bench, int& exit_code) {
    auto o = std::make_shared<BenchTrainOpts>();
    auto* cmd = bench.add_subcommand(
        "train", "One LoRA training step of the default ViT and GPT: C++ LibTorch vs Python torch, steps/s and GFLOP/s");
    cmd->add_option("--task", o->task, "vision (ViT), text (GPT) or both")
        ->check(CLI::IsMember({"vision", "text", "both"}))
        ->capture_default_str();
    cmd->add_option("--threads", o->threads, "Intra-op threads for both sides (0: LibTorch's default)")
        ->check(CLI::Range(0, 256))
        ->capture_default_str();
    cmd->add_option("--batch", o->batch, "Images, resp. sequences, per step")
        ->check(CLI::Range(static_cast<std::int64_t>(1), static_cast<std::int64_t>(4096)))
        ->capture_default_str();
    cmd->add_option("--seconds", o->seconds, "Timing per side and task (after 3 warm-up steps), split into rounds")
        ->check(CLI::Range(0.01, 600.0))
        ->capture_default_str();
    cmd->add_option("--rounds", o->rounds, "Interleaved C++/Python rounds (the figures are medians over them)")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->add_option("--rank", o->rank, "LoRA rank")
        ->check(CLI::Range(static_cast<std::int64_t>(1), static_cast<std::int64_t>(64)))
        ->capture_default_str();
    cmd->add_option("--python", o->python, "Python interpreter with torch")->capture_default_str();
    cmd->callback([o, &exit_code] {
        std::signal(SIGPIPE, SIG_IGN);  // a Python side that died shows up as a failed write, not a killed fedlora
        learn::warn_if_reference_blas();
        if (o->threads > 0)
            torch::set_num_threads(o->threads);
        const int threads = torch::get_num_threads();
        // The machine's matmul rate: the best of three short runs (a busy machine only ever lowers it).
        const double peak_seconds = std::clamp(o->seconds, 0.2, 1.0) / 3.0;
        auto peak = learn::measure_matmul_gflops(1024, peak_seconds, threads);
        for (int i = 0; i < 2; ++i) {
            const auto again = learn::measure_matmul_gflops(1024, peak_seconds, threads);
            if (again.gflops > peak.gflops)
                peak = again;
        }
        std::printf("LoRA training step (forward, backward, AdamW on the adapter factors), %d threads on both sides\n",
                    threads);
        std::printf("matmul peak of this machine: %.2f GFLOP/s (1024x1024 float32, %d threads); GFLOP per step counts "
                    "the step's matrix products analytically (flops.h)\n",
                    peak.gflops, threads);
        std::fflush(stdout);
        TempDir dir("fedlora-bench-train");
        for (const std::string task : {"vision", "text"})
            if (o->task == "both" || o->task == task)
                bench_one(*o, task, threads, peak.gflops, dir);
        exit_code = 0;
    });
}

}  // namespace fedlora::app
