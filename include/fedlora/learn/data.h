// Datasets shipped by Debian: Fashion-MNIST (package dataset-fashion-mnist, IDX files compressed with gzip) and
// the text of the fortune cookie databases (package fortunes; its categories make a natural non-IID split).
//
// Every loader validates what it reads (magic numbers, dimensions, counts, label range) and throws DataError with a
// message naming the file and the problem; a missing directory or file names the Debian package to install.
// This header includes only <ATen/core/Tensor.h>; the fortune and IDX parts need no LibTorch at all.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace fedlora::learn {

class DataError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// ---- IDX (the MNIST file format) ---------------------------------------------------------------------------

// An IDX array: magic 0x00 0x00 <type> <ndims>, ndims big-endian uint32 dimensions, then the elements
// (big-endian for multi-byte types). Type codes: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64.
struct IdxArray {
    std::uint8_t type = 0x08;
    std::vector<std::int64_t> dims;
    std::vector<std::uint8_t> bytes;  // raw element bytes, as stored
    std::int64_t count() const;       // product of dims
};

// Largest IDX payload accepted (the size is checked before anything is allocated).
inline constexpr std::uint64_t kIdxMaxBytes = 1ull << 31;

// Reads an IDX file, gzip-compressed or not (zlib detects which). Errors: missing or unreadable file, bad magic,
// unknown type code, dimensions declaring more than kIdxMaxBytes, truncated data, trailing bytes, corrupt gzip stream.
IdxArray read_idx_file(const std::string& path);

// ---- Fashion-MNIST -----------------------------------------------------------------------------------------

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

enum class Split { Train, Test };
const char* to_string(Split s);

struct ImageDataset {
    at::Tensor images;  // float32 [N, 1, H, W] in [0, 1] (pixel / 255)
    at::Tensor labels;  // int64 [N] in [0, num_classes)
    std::int64_t num_classes = 0;
    std::vector<std::string> class_names;
    std::int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
    std::vector<std::int64_t> label_vector() const;  // labels as a std::vector (for the partitioners)
};

// Loads an image/label pair of IDX files: u8 images [N, H, W], u8 labels [N] with values below num_classes.
ImageDataset load_idx_image_dataset(const std::string& images_path, const std::string& labels_path,
                                    std::int64_t num_classes);

// Fashion-MNIST's train (60000) or test (10000) split from `dir` (files train-images-idx3-ubyte.gz,
// train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz); images are 28×28, 10 classes.
// A missing directory or file gives a DataError that says "apt-get install dataset-fashion-mnist".
ImageDataset load_fashion_mnist(Split split, const std::string& dir = kFashionMnistDir);

const std::vector<std::string>& fashion_mnist_class_names();  // "T-shirt/top", "Trouser", ..., "Ankle boot"

// ---- fortunes (text corpus) --------------------------------------------------------------------------------

inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";

// Splits a fortune database into entries: entries are separated by lines that contain only "%". Each entry keeps
// its inner newlines but not the newline before the separator; empty or whitespace-only entries are dropped.
// Bytes are kept as they are (no decoding: non-UTF-8 input survives unchanged, for byte-level models).
std::vector<std::string> split_fortunes(std::string_view text);

// Category names in a fortunes directory (sorted): regular files (or links to them) except *.dat, *.u8 and hidden
// files; subdirectories (e.g. off/) are skipped.
std::vector<std::string> fortune_categories(const std::string& dir = kFortunesDir);

// Entries per category. `categories` empty: every category in the directory. A missing directory, or a directory
// with no category, says "apt-get install fortunes"; an unknown category lists the available ones.
std::map<std::string, std::vector<std::string>> load_fortunes(const std::string& dir = kFortunesDir,
                                                              const std::vector<std::string>& categories = {});

// A corpus flattened into examples with a category label (index into `names`), for partition_by_category.
struct LabelledTexts {
    std::vector<std::string> texts;
    std::vector<std::int64_t> labels;
    std::vector<std::string> names;
};
LabelledTexts flatten_corpus(const std::map<std::string, std::vector<std::string>>& corpus);

}  // namespace fedlora::learn
