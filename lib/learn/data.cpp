#include "fedlora/learn/data.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sys/stat.h>

namespace fedlora::learn {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
    throw DataError(origin + ": " + what);
}

const char* kFashionPackageHint = "install the Debian package dataset-fashion-mnist "
                                  "(apt-get install dataset-fashion-mnist)";
const char* kFortunesPackageHint = "install the Debian package fortunes (apt-get install fortunes)";

bool is_directory(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0;
}

class GzReader {
public:
    explicit GzReader(const std::string& path) : path_(path) {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            const int err = errno;
            fail(path, err == ENOENT ? std::string("file not found") : std::string(std::strerror(err)));
        }
        if (!S_ISREG(st.st_mode))
            fail(path, "is not a regular file");
        f_ = ::gzopen(path.c_str(), "rb");
        if (!f_)
            fail(path, std::string("cannot open: ") + std::strerror(errno ? errno : ENOMEM));
        ::gzbuffer(f_, 1 << 17);
    }
    GzReader(const GzReader&) = delete;
    GzReader& operator=(const GzReader&) = delete;
    ~GzReader() {
        if (f_)
            ::gzclose(f_);
    }

    // Reads up to n bytes; returns how many were read (fewer only at the end of the stream).
    std::size_t read_some(void* dst, std::size_t n) {
        auto* p = static_cast<char*>(dst);
        std::size_t done = 0;
        while (done < n) {
            const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
            const int got = ::gzread(f_, p + done, chunk);
            if (got < 0) {
                int code = 0;
                const char* msg = ::gzerror(f_, &code);
                fail(path_, std::string("corrupt or truncated gzip stream: ") + (msg ? msg : "unknown zlib error"));
            }
            if (got == 0)
                break;
            done += static_cast<std::size_t>(got);
        }
        return done;
    }

    void read_exact(void* dst, std::size_t n, const std::string& what) {
        const std::size_t got = read_some(dst, n);
        if (got != n)
            fail(path_, "truncated: " + what + " needs " + std::to_string(n) + " bytes but only " +
                            std::to_string(got) + " remain");
    }

private:
    std::string path_;
    gzFile f_ = nullptr;
};

std::size_t idx_element_size(std::uint8_t type) {
    switch (type) {
    case 0x08:
    case 0x09:
        return 1;
    case 0x0B:
        return 2;
    case 0x0C:
    case 0x0D:
        return 4;
    case 0x0E:
        return 8;
    default:
        return 0;
    }
}

std::string hex_byte(unsigned v) {
    static const char* hex = "0123456789abcdef";
    return std::string("0x") + hex[(v >> 4) & 15] + hex[v & 15];
}

}  // namespace

// ---- IDX ---------------------------------------------------------------------------------------------------

std::int64_t IdxArray::count() const {
    std::int64_t n = 1;
    for (auto d : dims)
        n *= d;
    return n;
}

IdxArray read_idx_file(const std::string& path) {
    GzReader in(path);
    unsigned char magic[4];
    in.read_exact(magic, 4, "the IDX magic number");
    if (magic[0] != 0 || magic[1] != 0)
        fail(path, "bad IDX magic number: first two bytes are " + hex_byte(magic[0]) + " " + hex_byte(magic[1]) +
                       ", expected 0x00 0x00 (not an IDX file)");
    IdxArray a;
    a.type = magic[2];
    const std::size_t esize = idx_element_size(a.type);
    if (esize == 0)
        fail(path, "unknown IDX element type " + hex_byte(a.type) +
                       " (known: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64)");
    const unsigned ndims = magic[3];
    if (ndims == 0)
        fail(path, "IDX header declares 0 dimensions");
    std::vector<unsigned char> dimbytes(4 * ndims);
    in.read_exact(dimbytes.data(), dimbytes.size(), "the IDX dimensions");
    std::uint64_t total = esize;
    for (unsigned i = 0; i < ndims; ++i) {
        const std::uint64_t d = (std::uint64_t{dimbytes[4 * i]} << 24) | (std::uint64_t{dimbytes[4 * i + 1]} << 16) |
                                (std::uint64_t{dimbytes[4 * i + 2]} << 8) | std::uint64_t{dimbytes[4 * i + 3]};
        a.dims.push_back(static_cast<std::int64_t>(d));
        if (__builtin_mul_overflow(total, d, &total) || total > kIdxMaxBytes)
            fail(path, "IDX dimensions declare more than " + std::to_string(kIdxMaxBytes) +
                           " bytes of data (corrupt header?)");
    }
    a.bytes.resize(static_cast<std::size_t>(total));
    in.read_exact(a.bytes.data(), a.bytes.size(), "the IDX data");
    unsigned char extra;
    if (in.read_some(&extra, 1) != 0)
        fail(path, "trailing bytes after the " + std::to_string(total) + " bytes of IDX data the header declares");
    return a;
}

// ---- Fashion-MNIST -----------------------------------------------------------------------------------------

const char* to_string(Split s) { return s == Split::Train ? "train" : "test"; }

std::vector<std::int64_t> ImageDataset::label_vector() const {
    if (!labels.defined())
        return {};
    const auto l = labels.to(at::kLong).contiguous();
    const auto* p = l.data_ptr<std::int64_t>();
    return std::vector<std::int64_t>(p, p + l.numel());
}

ImageDataset load_idx_image_dataset(const std::string& images_path, const std::string& labels_path,
                                    std::int64_t num_classes) {
    if (num_classes < 1 || num_classes > 256)
        throw std::invalid_argument("num_classes = " + std::to_string(num_classes) + " must be in [1, 256]");
    const IdxArray img = read_idx_file(images_path);
    if (img.type != 0x08 || img.dims.size() != 3)
        fail(images_path, "expected an IDX image file (magic 0x00000803: u8, 3 dimensions), found type " +
                              hex_byte(img.type) + " with " + std::to_string(img.dims.size()) + " dimensions");
    const IdxArray lab = read_idx_file(labels_path);
    if (lab.type != 0x08 || lab.dims.size() != 1)
        fail(labels_path, "expected an IDX label file (magic 0x00000801: u8, 1 dimension), found type " +
                              hex_byte(lab.type) + " with " + std::to_string(lab.dims.size()) + " dimensions");
    const std::int64_t n = img.dims[0], h = img.dims[1], w = img.dims[2];
    if (n == 0 || h == 0 || w == 0)
        fail(images_path, "empty image set (dimensions " + std::to_string(n) + " x " + std::to_string(h) + " x " +
                              std::to_string(w) + ")");
    if (lab.dims[0] != n)
        fail(labels_path, "holds " + std::to_string(lab.dims[0]) + " labels but '" + images_path + "' holds " +
                              std::to_string(n) + " images");
    for (std::size_t i = 0; i < lab.bytes.size(); ++i)
        if (lab.bytes[i] >= num_classes)
            fail(labels_path, "label " + std::to_string(i) + " is " + std::to_string(lab.bytes[i]) +
                                  ", outside [0, " + std::to_string(num_classes) + ")");

    ImageDataset ds;
    ds.num_classes = num_classes;
    auto raw = at::from_blob(const_cast<std::uint8_t*>(img.bytes.data()), {n, 1, h, w}, at::kByte);
    ds.images = raw.to(at::kFloat).div_(255.0);
    ds.labels = at::empty({n}, at::kLong);
    auto* lp = ds.labels.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < n; ++i)
        lp[i] = lab.bytes[static_cast<std::size_t>(i)];
    return ds;
}

const std::vector<std::string>& fashion_mnist_class_names() {
    static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    return names;
}

ImageDataset load_fashion_mnist(Split split, const std::string& dir) {
    if (!is_directory(dir))
        fail(dir, std::string("Fashion-MNIST directory not found: ") + kFashionPackageHint);
    const std::string prefix = dir + "/" + (split == Split::Train ? "train" : "t10k");
    const std::string images = prefix + "-images-idx3-ubyte.gz", labels = prefix + "-labels-idx1-ubyte.gz";
    for (const auto& f : {images, labels})
        if (!exists(f))
            fail(f, std::string("Fashion-MNIST file not found: ") + kFashionPackageHint);
    ImageDataset ds = load_idx_image_dataset(images, labels, 10);
    if (ds.images.size(2) != 28 || ds.images.size(3) != 28)
        fail(images, "Fashion-MNIST images must be 28 x 28, found " + std::to_string(ds.images.size(2)) + " x " +
                         std::to_string(ds.images.size(3)));
    ds.class_names = fashion_mnist_class_names();
    return ds;
}

// ---- fortunes ----------------------------------------------------------------------------------------------

std::vector<std::string> split_fortunes(std::string_view text) {
    std::vector<std::string> out;
    std::string cur;
    bool any_line = false;
    auto flush = [&] {
        const bool blank = std::all_of(cur.begin(), cur.end(), [](char c) {
            return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
        });
        if (!blank)
            out.push_back(cur);
        cur.clear();
        any_line = false;
    };
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos)
            nl = text.size();
        const std::string_view line = text.substr(pos, nl - pos);
        if (line == "%" || line == "%\r") {
            flush();
        } else {
            if (any_line)
                cur += '\n';
            cur.append(line.data(), line.size());
            any_line = true;
        }
        pos = nl + 1;
    }
    flush();
    return out;
}

std::vector<std::string> fortune_categories(const std::string& dir) {
    if (!is_directory(dir))
        fail(dir, std::string("fortunes directory not found: ") + kFortunesPackageHint);
    std::vector<std::string> names;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.empty() || name[0] == '.')
            continue;
        const auto ends_with = [&](const char* suffix) {
            const std::size_t n = std::strlen(suffix);
            return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
        };
        if (ends_with(".dat") || ends_with(".u8"))
            continue;
        std::error_code sec;
        if (!fs::is_regular_file(it->path(), sec))  // follows links; skips directories such as off/
            continue;
        names.push_back(name);
    }
    if (ec)
        fail(dir, "cannot list directory: " + ec.message());
    std::sort(names.begin(), names.end());
    return names;
}

std::map<std::string, std::vector<std::string>> load_fortunes(const std::string& dir,
                                                              const std::vector<std::string>& categories) {
    const auto available = fortune_categories(dir);
    if (available.empty())
        fail(dir, std::string("no fortune categories found: ") + kFortunesPackageHint);
    std::vector<std::string> wanted = categories.empty() ? available : categories;
    std::map<std::string, std::vector<std::string>> out;
    for (const auto& c : wanted) {
        if (!std::binary_search(available.begin(), available.end(), c)) {
            std::string list;
            for (const auto& a : available)
                list += (list.empty() ? "" : ", ") + a;
            fail(dir, "fortune category '" + c + "' not found (available: " + list + ")");
        }
        const std::string path = dir + "/" + c;
        std::ifstream f(path, std::ios::binary);
        if (!f)
            fail(path, std::string("cannot open: ") + std::strerror(errno));
        const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        if (f.bad())
            fail(path, "read error");
        out[c] = split_fortunes(text);
    }
    return out;
}

LabelledTexts flatten_corpus(const std::map<std::string, std::vector<std::string>>& corpus) {
    LabelledTexts out;
    for (const auto& [name, entries] : corpus) {
        const auto label = static_cast<std::int64_t>(out.names.size());
        out.names.push_back(name);
        for (const auto& e : entries) {
            out.texts.push_back(e);
            out.labels.push_back(label);
        }
    }
    return out;
}

}  // namespace fedlora::learn
