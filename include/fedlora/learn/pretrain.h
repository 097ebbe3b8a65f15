// Pretraining the small base models from scratch on Debian-shipped data, and the fixed data splits that keep
// pretraining apart from federated fine-tuning and from its evaluation (docs/learning.md explains the choices).
//
// Vision: the default ViT (models.h) on Fashion-MNIST. Pretext split: the training images with an EVEN index whose
// label is one of six pretext classes (T-shirt/top, Trouser, Pullover, Dress, Sandal, Bag: 18000 images). The four
// other classes (Coat, Shirt, Sneaker, Ankle boot) are never seen, so the frozen base never predicts them and
// fine-tuning has clear headroom. Fine-tuning pool: the ODD training indices (30000 images, all ten classes),
// disjoint from the pretext images; evaluation: the 10000 test images, never used for training.
//
// Text: the default byte-level GPT on the fortunes corpus. Ten categories are held out for fine-tuning
// (text_heldout_categories); the rest pretrain, with every 20th entry (j % 20 == 19) of each pretext category kept
// for validation. Held-out categories split their entries 9:1 (j % 10 == 9 is the fine-tuning test set).
//
// The splits depend on no seed: every run and every tool (pretrain, sim) agrees on them. The seed sets the model's
// initialisation (LibTorch's default CPU generator, restored afterwards) and the mini-batch order (own
// Fisher-Yates on std::mt19937_64), so the same seed, steps and thread count give a bit-identical file.
//
// Checkpoints are the model's base_state_dict in safetensors (GPT-2 / timm names), written atomically, with the
// model's architecture metadata plus "pretrain.*" (recipe, seed, steps, data split) and "eval.*" (results). A file
// whose "identity" keys (architecture, recipe, seed, steps, data) match the request is reused unless `force`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fedlora/learn/data.h"
#include "fedlora/learn/models.h"
#include "fedlora/learn/safetensors.h"

namespace fedlora::learn {

enum class PretrainTask { Vision, Text };
const char* to_string(PretrainTask t);                   // "vision", "text"
PretrainTask parse_pretrain_task(const std::string& s);  // throws std::invalid_argument listing the choices

// ---- fixed splits -------------------------------------------------------------------------------------------------

std::vector<std::int64_t> vision_pretext_classes();  // {0, 1, 2, 3, 5, 8}
std::vector<std::int64_t> vision_heldout_classes();  // {4, 6, 7, 9}
bool is_vision_pretext_class(std::int64_t label);
// Indices (ascending) of the training images used for pretraining: even index and a pretext label.
std::vector<std::int64_t> vision_pretrain_indices(const std::vector<std::int64_t>& train_labels);
// Indices (ascending) of the training images left for fine-tuning: every odd index, all classes.
std::vector<std::int64_t> vision_finetune_indices(std::int64_t train_size);

// The fortunes categories held out of pretraining (sorted): computers, debian, law, linux, linuxcookie, medicine,
// perl, science, sports, startrek.
const std::vector<std::string>& text_heldout_categories();

struct FortunesSplit {
    std::vector<std::string> pretrain_train;  // entries of the pretext categories with j % 20 != 19
    std::vector<std::string> pretrain_val;    // j % 20 == 19
    LabelledTexts finetune_train;             // held-out categories, entries with j % 10 != 9
    LabelledTexts finetune_test;              // j % 10 == 9 (same `names` as finetune_train)
};
// Splits a corpus (load_fortunes) as above; categories absent from the corpus are simply not there.
FortunesSplit fortunes_pretrain_split(const std::map<std::string, std::vector<std::string>>& corpus);

// ---- pretraining --------------------------------------------------------------------------------------------------

// Training hyper-parameters of a task (what the defaults are; options may override steps, batch and rate).
struct PretrainRecipe {
    std::int64_t steps = 0;
    std::int64_t batch_size = 0;
    double learning_rate = 0.0;  // peak; linear warm-up, then cosine decay to min_lr_ratio · peak
    double min_lr_ratio = 0.1;
    std::int64_t warmup_steps = 0;  // min(this, steps / 10)
    double weight_decay = 0.0;      // AdamW, on matrices only (dim >= 2, not cls_token / pos_embed)
    double clip_norm = 1.0;         // global gradient L2 norm
};
PretrainRecipe default_pretrain_recipe(PretrainTask task);

// The architectures pretrained: the models' defaults (ViTConfig{}, GptConfig{}).
ViTConfig pretrain_vit_config();
GptConfig pretrain_gpt_config();

struct PretrainOptions {
    PretrainTask task = PretrainTask::Vision;
    std::string out_dir = "pretrained";
    std::string data_dir;  // empty: Debian's directory (kFashionMnistDir, kFortunesDir)
    std::uint64_t seed = 0;
    int threads = 0;                // LibTorch intra-op threads; 0 keeps the current setting
    std::int64_t steps = 0;         // 0: the recipe's
    std::int64_t batch_size = 0;    // 0: the recipe's
    double learning_rate = 0.0;     // 0: the recipe's
    std::int64_t log_every = 0;     // progress line every N steps; 0: about 20 lines per run
    bool force = false;             // retrain even if a matching file exists
    void validate() const;          // throws std::invalid_argument naming the field ("pretrain.<field>")
};

// "vit-fashion-mnist.safetensors" / "gpt-fortunes.safetensors"
std::string pretrained_file_name(PretrainTask task);
std::string pretrained_path(const PretrainOptions& options);  // out_dir / file name

struct PretrainResult {
    std::string path;
    bool reused = false;     // a matching file was there (nothing trained)
    double seconds = 0.0;        // wall time of the whole call (data loading, training, evaluation, writing)
    double train_seconds = 0.0;  // the optimisation steps alone
    double eval_seconds = 0.0;   // evaluating the result
    TensorMetadata metadata;  // the file's metadata (identity, "pretrain.*" and "eval.*" results)
};

// Pretrains (or reuses) the base model of `options.task` and returns where it is. Progress goes to spdlog (a line
// every log_every steps: step, loss, learning rate, elapsed, ETA). Errors: std::invalid_argument for bad options,
// DataError for missing data (naming the Debian package), std::runtime_error for an output directory that cannot
// be created or written (checked before any training).
PretrainResult pretrain(const PretrainOptions& options);

// The metadata keys that decide whether an existing file can be reused for `options` (the model's architecture,
// "format", and every "pretrain.*" key except results and thread count).
TensorMetadata pretrain_identity(const PretrainOptions& options);

}  // namespace fedlora::learn
