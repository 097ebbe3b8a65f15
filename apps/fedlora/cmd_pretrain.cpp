// fedlora pretrain: trains the small base models from scratch on Debian-shipped data (the ViT on a pretext split
// of Fashion-MNIST, the byte-level GPT on the fortunes corpus minus the held-out categories) and writes their base
// weights as safetensors. Cached: a file trained with the same config and seed is reused unless --force.
// The recipe and the splits live in fedlora_learn (pretrain.h); docs/learning.md explains them.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fedlora/learn/pretrain.h"

namespace fedlora::app {

namespace {

struct PretrainCli {
    std::string task;
    learn::PretrainOptions opts;
};

std::string meta_or(const learn::TensorMetadata& m, const std::string& key, const std::string& fallback = "?") {
    const auto it = m.find(key);
    return it == m.end() ? fallback : it->second;
}

double meta_num(const learn::TensorMetadata& m, const std::string& key) {
    const auto it = m.find(key);
    return it == m.end() ? 0.0 : std::strtod(it->second.c_str(), nullptr);
}

void print_summary(const learn::PretrainOptions& o, const learn::PretrainResult& r) {
    const auto& m = r.metadata;
    if (o.task == learn::PretrainTask::Vision) {
        std::string classes;
        for (const auto k : learn::vision_pretext_classes())
            classes += (classes.empty() ? "" : ", ") + learn::fashion_mnist_class_names()[static_cast<std::size_t>(k)];
        std::printf("ViT (dim %s, depth %s, patch %s) pretrained on %s Fashion-MNIST training images (even indices) "
                    "of %s\n",
                    meta_or(m, "vit.dim").c_str(), meta_or(m, "vit.depth").c_str(),
                    meta_or(m, "vit.patch_size").c_str(), meta_or(m, "pretrain.examples").c_str(), classes.c_str());
    } else {
        std::printf("GPT (dim %s, depth %s, context %s bytes) pretrained on %s fortunes blocks (held-out categories "
                    "excluded)\n",
                    meta_or(m, "gpt.dim").c_str(), meta_or(m, "gpt.depth").c_str(), meta_or(m, "gpt.context").c_str(),
                    meta_or(m, "pretrain.examples").c_str());
    }
    std::printf("  %s steps of batch %s, seed %s, final training loss %.4f", meta_or(m, "pretrain.steps").c_str(),
                meta_or(m, "pretrain.batch_size").c_str(), meta_or(m, "pretrain.seed").c_str(),
                meta_num(m, "pretrain.final_loss"));
    if (r.reused)
        std::printf(" (cached: nothing trained)\n");
    else
        std::printf("; training %.1f s, evaluation %.1f s, total %.1f s on %s threads\n", r.train_seconds,
                    r.eval_seconds, r.seconds, meta_or(m, "pretrain.threads").c_str());
    if (o.task == learn::PretrainTask::Vision) {
        std::printf("  frozen base on the %s test images: accuracy %.4f (pretext classes %.4f, held-out classes "
                    "%.4f)\n",
                    meta_or(m, "eval.test_examples").c_str(), meta_num(m, "eval.test_accuracy"),
                    meta_num(m, "eval.test_accuracy_pretext_classes"),
                    meta_num(m, "eval.test_accuracy_heldout_classes"));
    } else {
        std::printf("  frozen base perplexity: %.3f on validation entries of the pretext categories, %.3f on the "
                    "held-out categories' test entries\n",
                    meta_num(m, "eval.val_perplexity"), meta_num(m, "eval.heldout_perplexity"));
    }
    std::printf("  %s: %s\n", r.reused ? "reused" : "wrote", r.path.c_str());
}

}  // namespace

void add_pretrain(CLI::App& app, int& exit_code) {
    auto c = std::make_shared<PretrainCli>();
    auto* cmd = app.add_subcommand(
        "pretrain", "Train the small base models from scratch (ViT on Fashion-MNIST, GPT on fortunes) to safetensors");
    cmd->add_option("--task", c->task, "vision (ViT, Fashion-MNIST pretext split) or text (byte-level GPT, fortunes)")
        ->required()
        ->check(CLI::IsMember({"vision", "text"}));
    cmd->add_option("--out", c->opts.out_dir, "Output directory (created if missing)")->capture_default_str();
    cmd->add_option("--seed", c->opts.seed, "Seed of the initialisation and the batch order")->capture_default_str();
    cmd->add_option("--threads", c->opts.threads, "LibTorch intra-op threads (0: LibTorch's default)")
        ->check(CLI::Range(0, 256))
        ->capture_default_str();
    cmd->add_option("--steps", c->opts.steps, "Optimiser steps (0: the task's default, vision 2000, text 3000)")
        ->check(CLI::Range(static_cast<std::int64_t>(0), static_cast<std::int64_t>(10000000)))
        ->capture_default_str();
    cmd->add_option("--batch", c->opts.batch_size, "Batch size (0: the task's default, vision 128, text 64)")
        ->check(CLI::Range(static_cast<std::int64_t>(0), static_cast<std::int64_t>(65536)))
        ->capture_default_str();
    cmd->add_option("--lr", c->opts.learning_rate, "Peak learning rate (0: the task's default)")
        ->check(CLI::Range(0.0, 10.0))
        ->capture_default_str();
    cmd->add_option("--data-dir", c->opts.data_dir,
                    "Dataset directory (default: /usr/share/datasets/fashion-mnist or /usr/share/games/fortunes)");
    cmd->add_option("--log-every", c->opts.log_every, "Progress line every N steps (0: about 20 lines)")
        ->check(CLI::Range(static_cast<std::int64_t>(0), static_cast<std::int64_t>(10000000)))
        ->capture_default_str();
    cmd->add_flag("--force", c->opts.force, "Retrain even if a file with the same config and seed exists");
    cmd->callback([c, &exit_code] {
        c->opts.task = learn::parse_pretrain_task(c->task);
        const auto r = learn::pretrain(c->opts);
        if (!r.reused)
            spdlog::info("pretraining took {:.1f} s (training {:.1f} s, evaluation {:.1f} s)", r.seconds,
                         r.train_seconds, r.eval_seconds);
        print_summary(c->opts, r);
        exit_code = 0;
    });
}

}  // namespace fedlora::app
