// Datasets from Debian packages: Fashion-MNIST (the real files of dataset-fashion-mnist) and fortunes, plus the
// IDX validation on crafted files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "support/scratch_dir.h"
#include "fedlora/learn/data.h"
#include "fedlora/learn/partition.h"

using namespace fedlora::learn;
namespace fs = std::filesystem;

namespace {

using fedlora::test::ScratchDir;

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// An uncompressed IDX file: magic 0 0 type ndims, big-endian dims, then `payload`.
std::string idx(unsigned char type, std::vector<std::uint32_t> dims, const std::string& payload) {
    std::string s = {'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
    for (auto d : dims)
        for (int sh = 24; sh >= 0; sh -= 8)
            s += static_cast<char>((d >> sh) & 0xff);
    return s + payload;
}

template <class E>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
    try {
        fn();
        ADD_FAILURE() << "nothing was thrown";
    } catch (const E& e) {
        const std::string msg = e.what();
        for (const auto& p : parts)
            EXPECT_NE(msg.find(p), std::string::npos) << "message '" << msg << "' lacks '" << p << "'";
    } catch (const std::exception& e) {
        ADD_FAILURE() << "wrong exception type: " << e.what();
    }
}

class FashionMnist : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        train_ = new ImageDataset(load_fashion_mnist(Split::Train));
        test_ = new ImageDataset(load_fashion_mnist(Split::Test));
    }
    static void TearDownTestSuite() {
        delete train_;
        delete test_;
        train_ = test_ = nullptr;
    }
    static ImageDataset* train_;
    static ImageDataset* test_;
};
ImageDataset* FashionMnist::train_ = nullptr;
ImageDataset* FashionMnist::test_ = nullptr;

}  // namespace

// ---- Fashion-MNIST (real files) -----------------------------------------------------------------------------

TEST_F(FashionMnist, CountsShapesAndDtypes) {
    for (auto [ds, n] : {std::pair{train_, 60000}, std::pair{test_, 10000}}) {
        EXPECT_EQ(ds->size(), n);
        EXPECT_EQ(ds->images.sizes(), (std::vector<std::int64_t>{n, 1, 28, 28}));
        EXPECT_EQ(ds->images.scalar_type(), at::kFloat);
        EXPECT_EQ(ds->labels.sizes(), (std::vector<std::int64_t>{n}));
        EXPECT_EQ(ds->labels.scalar_type(), at::kLong);
        EXPECT_EQ(ds->num_classes, 10);
        ASSERT_EQ(ds->class_names.size(), 10u);
        EXPECT_EQ(ds->class_names[0], "T-shirt/top");
        EXPECT_EQ(ds->class_names[9], "Ankle boot");
    }
}

TEST_F(FashionMnist, BalancedLabelsInRange) {
    // A documented property of Fashion-MNIST: 6000 training and 1000 test images per class.
    for (auto [ds, per_class] : {std::pair{train_, 6000}, std::pair{test_, 1000}}) {
        EXPECT_EQ(ds->labels.min().item<std::int64_t>(), 0);
        EXPECT_EQ(ds->labels.max().item<std::int64_t>(), 9);
        const auto counts = at::bincount(ds->labels, {}, 10);
        for (int c = 0; c < 10; ++c)
            EXPECT_EQ(counts[c].item<std::int64_t>(), per_class) << "class " << c;
        const auto v = ds->label_vector();
        ASSERT_EQ(static_cast<std::int64_t>(v.size()), ds->size());
        EXPECT_EQ(v[17], ds->labels[17].item<std::int64_t>());
    }
}

TEST_F(FashionMnist, PixelsScaledToUnitInterval) {
    for (auto* ds : {train_, test_}) {
        EXPECT_EQ(ds->images.min().item<float>(), 0.0f);
        EXPECT_EQ(ds->images.max().item<float>(), 1.0f);
        // Every value is k/255 for an integer k.
        const auto scaled = ds->images * 255.0;
        EXPECT_LT((scaled - scaled.round()).abs().max().item<float>(), 1e-4f);
    }
    // Mean training pixel of Fashion-MNIST is about 0.286 (the normalisation constant used everywhere).
    EXPECT_NEAR(train_->images.mean().item<double>(), 0.286, 0.002);
    // The first training image is not blank and the two splits differ.
    EXPECT_GT(train_->images[0].sum().item<double>(), 10.0);
    EXPECT_FALSE(at::equal(train_->images.slice(0, 0, 100), test_->images.slice(0, 0, 100)));
}

TEST_F(FashionMnist, DirichletPartitionOfRealLabels) {
    const auto labels = train_->label_vector();
    DirichletOptions o;
    o.alpha = 0.5;
    const auto p = partition_dirichlet(labels, 10, o);
    check_partition(p, static_cast<std::int64_t>(labels.size()));
    for (const auto& part : p)
        EXPECT_GE(static_cast<std::int64_t>(part.size()), o.min_size);
}

TEST(FashionMnistErrors, MissingDirectoryOrFileNamesThePackage) {
    expect_error<DataError>([] { load_fashion_mnist(Split::Train, "/nonexistent/fashion-mnist"); },
                            {"/nonexistent/fashion-mnist", "apt-get install dataset-fashion-mnist"});
    ScratchDir dir;
    expect_error<DataError>([&] { load_fashion_mnist(Split::Test, dir.str()); },
                            {"t10k-images-idx3-ubyte.gz", "not found", "apt-get install dataset-fashion-mnist"});
}

// ---- IDX validation ----------------------------------------------------------------------------------------

TEST(Idx, ReadsPlainAndGzipFiles) {
    ScratchDir dir;
    write_bytes(dir.file("a.idx"), idx(0x08, {2, 3}, "abcdef"));
    const auto a = read_idx_file(dir.file("a.idx"));
    EXPECT_EQ(a.type, 0x08);
    EXPECT_EQ(a.dims, (std::vector<std::int64_t>{2, 3}));
    EXPECT_EQ(a.count(), 6);
    EXPECT_EQ(std::string(a.bytes.begin(), a.bytes.end()), "abcdef");
    const auto l = read_idx_file(std::string(kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz");
    EXPECT_EQ(l.dims, (std::vector<std::int64_t>{10000}));
}

TEST(Idx, CorruptFilesAreRejectedWithReasons) {
    ScratchDir dir;
    const std::string px(2 * 2 * 2, '\x7f');
    struct Case {
        std::string images, labels;
        std::vector<std::string> expect;
    };
    const std::string good_images = idx(0x08, {2, 2, 2}, px), good_labels = idx(0x08, {2}, std::string("\x01\x09", 2));
    const std::vector<Case> cases = {
        {"\x01" + good_images.substr(1), good_labels, {"bad IDX magic number", "img"}},
        {idx(0x07, {2, 2, 2}, px), good_labels, {"unknown IDX element type 0x07"}},
        {idx(0x08, {}, ""), good_labels, {"0 dimensions"}},
        {idx(0x08, {2, 2, 2}, px.substr(0, 5)), good_labels, {"truncated", "IDX data", "needs 8 bytes", "only 5"}},
        {idx(0x08, {2, 2, 2}, px + "zz"), good_labels, {"trailing bytes"}},
        {good_images.substr(0, 10), good_labels, {"truncated", "dimensions"}},
        {std::string("\0\0", 2), good_labels, {"truncated", "magic"}},
        {idx(0x08, {65535, 65535, 65535}, px), good_labels, {"more than"}},
        {idx(0x08, {2, 4}, px), good_labels, {"expected an IDX image file", "2 dimensions"}},
        {idx(0x0C, {2, 1, 1}, px), good_labels, {"expected an IDX image file", "type 0x0c"}},
        {good_images, idx(0x08, {3}, "\x01\x02\x03"), {"lbl", "holds 3 labels", "2 images"}},
        {good_images, idx(0x08, {2}, std::string("\x01\x0a", 2)), {"lbl", "label 1 is 10", "outside [0, 10)"}},
        {good_images, idx(0x08, {2, 1}, "ab"), {"expected an IDX label file"}},
    };
    for (std::size_t i = 0; i < cases.size(); ++i) {
        SCOPED_TRACE("case " + std::to_string(i));
        write_bytes(dir.file("img"), cases[i].images);
        write_bytes(dir.file("lbl"), cases[i].labels);
        expect_error<DataError>([&] { load_idx_image_dataset(dir.file("img"), dir.file("lbl"), 10); },
                                cases[i].expect);
    }
    // The crafted pair itself is fine.
    write_bytes(dir.file("img"), good_images);
    write_bytes(dir.file("lbl"), good_labels);
    const auto ds = load_idx_image_dataset(dir.file("img"), dir.file("lbl"), 10);
    EXPECT_EQ(ds.images.sizes(), (std::vector<std::int64_t>{2, 1, 2, 2}));
    EXPECT_FLOAT_EQ(ds.images[1][0][1][1].item<float>(), 127.0f / 255.0f);
    EXPECT_EQ(ds.labels[1].item<std::int64_t>(), 9);
    // A truncated gzip stream (the real file cut in half) and a missing file.
    const auto gz = read_bytes(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz");
    write_bytes(dir.file("cut.gz"), gz.substr(0, gz.size() / 2));
    expect_error<DataError>([&] { read_idx_file(dir.file("cut.gz")); }, {"cut.gz", "truncated"});
    expect_error<DataError>([&] { read_idx_file(dir.file("absent.gz")); }, {"absent.gz", "file not found"});
    expect_error<std::invalid_argument>(
        [&] { load_idx_image_dataset(dir.file("img"), dir.file("lbl"), 0); }, {"num_classes"});
}

// ---- fortunes ----------------------------------------------------------------------------------------------

TEST(Fortunes, SplitsOnPercentLines) {
    EXPECT_EQ(split_fortunes("a\n%\nb\nc\n%\n"), (std::vector<std::string>{"a", "b\nc"}));
    EXPECT_EQ(split_fortunes("a\n%\n\n  \n%\nlast line, no newline"),
              (std::vector<std::string>{"a", "last line, no newline"}));
    EXPECT_EQ(split_fortunes("%\n%\n"), std::vector<std::string>{});
    EXPECT_EQ(split_fortunes(""), std::vector<std::string>{});
    // Only a line that is exactly "%" separates; "%%" or "100%" do not. CRLF files work.
    EXPECT_EQ(split_fortunes("x 100%\n%%\n%\ny\r\n%\r\nz"), (std::vector<std::string>{"x 100%\n%%", "y\r", "z"}));
    // Leading blank lines inside an entry are kept (ASCII art), bytes are not decoded.
    const std::string raw = std::string("\n  /\\\n \xff\xfe\x80 latin1 caf\xe9\n%\n", 25);
    const auto e = split_fortunes(raw);
    ASSERT_EQ(e.size(), 1u);
    EXPECT_EQ(e[0], raw.substr(0, raw.size() - 3));
}

TEST(Fortunes, DirectoryScanSkipsIndexFilesAndKeepsRawBytes) {
    ScratchDir dir;
    write_bytes(dir.file("zeta"), "one\n%\ntwo\n%\n");
    write_bytes(dir.file("alpha"), std::string("caf\xe9\n%\n\xff\xfe\n", 10));
    write_bytes(dir.file("alpha.dat"), std::string(24, '\0'));
    fs::create_symlink("alpha", dir.file("alpha.u8"));
    write_bytes(dir.file(".hidden"), "x\n");
    fs::create_directory(dir.file("off"));
    write_bytes(dir.file("off/rude"), "y\n");
    EXPECT_EQ(fortune_categories(dir.str()), (std::vector<std::string>{"alpha", "zeta"}));
    const auto all = load_fortunes(dir.str());
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all.at("zeta"), (std::vector<std::string>{"one", "two"}));
    EXPECT_EQ(all.at("alpha"), (std::vector<std::string>{std::string("caf\xe9", 4), std::string("\xff\xfe", 2)}));
    const auto flat = flatten_corpus(all);
    EXPECT_EQ(flat.names, (std::vector<std::string>{"alpha", "zeta"}));
    EXPECT_EQ(flat.labels, (std::vector<std::int64_t>{0, 0, 1, 1}));
    EXPECT_EQ(flat.texts[2], "one");
    expect_error<DataError>([&] { load_fortunes(dir.str(), {"alpha", "nope"}); },
                            {"category 'nope' not found", "available: alpha, zeta"});
    ScratchDir empty;
    expect_error<DataError>([&] { load_fortunes(empty.str()); }, {"no fortune categories", "apt-get install fortunes"});
    expect_error<DataError>([] { load_fortunes("/nonexistent/fortunes"); },
                            {"/nonexistent/fortunes", "apt-get install fortunes"});
}

TEST(Fortunes, DebianCorpusMatchesStrfileCounts) {
    const auto cats = fortune_categories();
    ASSERT_FALSE(cats.empty());
    EXPECT_TRUE(std::find(cats.begin(), cats.end(), "fortunes") != cats.end());
    const auto corpus = load_fortunes();
    ASSERT_EQ(corpus.size(), cats.size());
    std::size_t total = 0;
    for (const auto& [name, entries] : corpus) {
        SCOPED_TRACE(name);
        EXPECT_EQ(name.find('.'), std::string::npos);
        // strfile's index (<category>.dat) stores the entry count as a big-endian uint32 at byte 4.
        const auto dat = read_bytes(std::string(kFortunesDir) + "/" + name + ".dat");
        ASSERT_GE(dat.size(), 8u);
        std::uint32_t numstr = 0;
        for (int i = 4; i < 8; ++i)
            numstr = (numstr << 8) | static_cast<unsigned char>(dat[static_cast<std::size_t>(i)]);
        EXPECT_EQ(entries.size(), numstr);
        for (const auto& e : entries) {
            EXPECT_FALSE(e.empty());
            EXPECT_EQ(("\n" + e + "\n").find("\n%\n"), std::string::npos);
        }
        total += entries.size();
    }
    EXPECT_GT(total, 1000u);
    const auto some = load_fortunes(kFortunesDir, {"fortunes"});
    EXPECT_EQ(some.size(), 1u);
    EXPECT_EQ(some.at("fortunes"), corpus.at("fortunes"));
}
