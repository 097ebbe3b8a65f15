#include "fedlora/learn/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <sstream>
#include <sys/stat.h>

namespace fedlora::learn {
namespace {

constexpr const char* kVersionKey = "fedlora.checkpoint.version";
constexpr const char* kChecksumKey = "fedlora.checksum";

bool valid_key_name(const std::string& s) {
    if (s.empty())
        return false;
    for (const char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'))
            return false;
    return true;
}

std::string join(const std::vector<std::string>& items) {
    std::string s;
    for (std::size_t i = 0; i < items.size(); ++i)
        s += (i ? "," : "") + items[i];
    return s;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    if (s.empty())
        return out;
    std::size_t b = 0;
    while (true) {
        const auto e = s.find(',', b);
        out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
        if (e == std::string::npos)
            return out;
        b = e + 1;
    }
}

std::vector<std::string> layer_names(const Adapter& a) {
    std::vector<std::string> names;
    for (const auto& l : a.layers)
        names.push_back(l.layer);
    return names;
}

// CRC-32 over every metadata entry but the checksum and every tensor (name, dtype, shape, bytes), in name order,
// each field preceded by its length so that no two different contents give the same byte stream.
std::string content_checksum(const TensorMetadata& meta, const std::map<std::string, at::Tensor>& tensors) {
    uLong crc = crc32(0L, Z_NULL, 0);
    auto feed = [&crc](const void* data, std::size_t n) {
        const auto* p = static_cast<const Bytef*>(data);
        while (n > 0) {
            const auto chunk = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
            crc = crc32(crc, p, chunk);
            p += chunk;
            n -= chunk;
        }
    };
    auto feed_str = [&](const std::string& s) {
        const std::uint64_t n = s.size();
        feed(&n, sizeof n);
        feed(s.data(), s.size());
    };
    for (const auto& [k, v] : meta) {
        if (k == kChecksumKey)
            continue;
        feed_str(k);
        feed_str(v);
    }
    for (const auto& [name, t] : tensors) {
        feed_str(name);
        feed_str(c10::toString(t.scalar_type()));
        std::string shape;
        for (const auto d : t.sizes())
            shape += std::to_string(d) + ",";
        feed_str(shape);
        const at::Tensor c = t.cpu().contiguous();
        const std::uint64_t n = c.nbytes();
        feed(&n, sizeof n);
        if (n > 0)
            feed(c.data_ptr(), static_cast<std::size_t>(n));
    }
    char buf[24];
    std::snprintf(buf, sizeof buf, "crc32:%08lx", static_cast<unsigned long>(crc));
    return buf;
}

class Reader {
public:
    Reader(std::string path, SafetensorsContents contents) : path_(std::move(path)), c_(std::move(contents)) {}

    [[noreturn]] void fail(const std::string& what) const {
        throw CheckpointError(path_ + ": corrupt checkpoint: " + what + "; nothing was loaded");
    }
    const std::string& meta(const std::string& key) const {
        const auto it = c_.metadata.find(key);
        if (it == c_.metadata.end())
            fail("metadata entry '" + key + "' is missing");
        used_meta_.insert(key);
        return it->second;
    }
    std::int64_t integer(const std::string& key) const {
        const auto& s = meta(key);
        std::int64_t v = 0;
        const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec != std::errc() || p != s.data() + s.size())
            fail("metadata entry '" + key + "' = '" + s + "' is not an integer");
        return v;
    }
    const at::Tensor& tensor(const std::string& name) const {
        const auto it = c_.tensors.find(name);
        if (it == c_.tensors.end())
            fail("tensor '" + name + "' is missing");
        used_tensors_.insert(name);
        return it->second;
    }
    Adapter adapter(const std::string& layers_key, const std::string& prefix) const {
        const auto layers = split(meta(layers_key));
        for (const auto& l : layers) {
            tensor(prefix + l + ".lora_A");
            tensor(prefix + l + ".lora_B");
        }
        try {
            return adapter_from_tensors(c_.tensors, layers, prefix);
        } catch (const std::invalid_argument& e) {
            fail(e.what());
        }
    }
    const SafetensorsContents& contents() const { return c_; }
    // Everything in the file must have been read: a stray entry means a file this build does not understand.
    void check_all_used() const {
        for (const auto& [k, v] : c_.metadata)
            if (!used_meta_.count(k) && k != kChecksumKey && k.rfind("engine.", 0) != 0 && k.rfind("info.", 0) != 0)
                fail("unexpected metadata entry '" + k + "'");
        for (const auto& [name, t] : c_.tensors)
            if (!used_tensors_.count(name))
                fail("unexpected tensor '" + name + "'");
    }

private:
    std::string path_;
    SafetensorsContents c_;
    mutable std::set<std::string> used_meta_, used_tensors_;
};

void check_adapter_for_save(const Adapter& a, const std::string& what) {
    std::set<std::string> seen;
    for (const auto& l : a.layers) {
        try {
            l.check();
        } catch (const std::invalid_argument& e) {
            throw CheckpointError("save_checkpoint: " + what + ": " + e.what());
        }
        if (l.A.empty() || l.B.empty())
            throw CheckpointError("save_checkpoint: " + what + ": layer '" + l.layer + "' has no factor data");
        if (l.layer.empty() || l.layer.find(',') != std::string::npos || !seen.insert(l.layer).second)
            throw CheckpointError("save_checkpoint: " + what + ": layer name '" + l.layer +
                                  "' is empty, holds a comma or repeats");
    }
}

std::int64_t generator_state_size() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state().numel();
}

}  // namespace

// ---- adapters as tensors -------------------------------------------------------------------------------------

NamedTensors adapter_to_tensors(const Adapter& adapter, const std::string& prefix) {
    NamedTensors out;
    for (const auto& l : adapter.layers) {
        l.check();
        for (auto f : {LoraFactor::A, LoraFactor::B}) {
            const auto& v = l.factor(f);
            const std::int64_t rows = f == LoraFactor::A ? l.rank : l.out;
            const std::int64_t cols = f == LoraFactor::A ? l.in : l.rank;
            if (static_cast<std::int64_t>(v.size()) != rows * cols)
                throw std::invalid_argument("adapter_to_tensors: '" + l.tensor_name(f) + "' has no data");
            auto t = at::empty({rows, cols}, at::TensorOptions().dtype(at::kFloat));
            std::memcpy(t.data_ptr<float>(), v.data(), v.size() * sizeof(float));
            out.emplace_back(prefix + l.tensor_name(f), t);
        }
    }
    return out;
}

Adapter adapter_from_tensors(const std::map<std::string, at::Tensor>& tensors, const std::vector<std::string>& layers,
                             const std::string& prefix) {
    Adapter a;
    for (const auto& layer : layers) {
        const std::string na = prefix + layer + ".lora_A", nb = prefix + layer + ".lora_B";
        const auto ia = tensors.find(na), ib = tensors.find(nb);
        if (ia == tensors.end() || ib == tensors.end())
            throw std::invalid_argument("adapter tensor '" + (ia == tensors.end() ? na : nb) + "' is missing");
        const auto &ta = ia->second, &tb = ib->second;
        for (const auto* t : {&ta, &tb})
            if (!t->defined() || t->dim() != 2 || !t->is_floating_point())
                throw std::invalid_argument("adapter tensor '" + (t == &ta ? na : nb) +
                                            "' must be a 2-D floating-point tensor");
        if (ta.size(0) != tb.size(1) || ta.size(0) < 1 || ta.size(1) < 1 || tb.size(0) < 1)
            throw std::invalid_argument("adapter tensors '" + na + "' [" + std::to_string(ta.size(0)) + ", " +
                                        std::to_string(ta.size(1)) + "] and '" + nb + "' [" +
                                        std::to_string(tb.size(0)) + ", " + std::to_string(tb.size(1)) +
                                        "] disagree on the rank");
        LoraLayerFactors l;
        l.layer = layer;
        l.rank = ta.size(0);
        l.in = ta.size(1);
        l.out = tb.size(0);
        const auto fa = ta.detach().to(at::kFloat).cpu().contiguous();
        const auto fb = tb.detach().to(at::kFloat).cpu().contiguous();
        l.A.assign(fa.data_ptr<float>(), fa.data_ptr<float>() + fa.numel());
        l.B.assign(fb.data_ptr<float>(), fb.data_ptr<float>() + fb.numel());
        a.layers.push_back(std::move(l));
    }
    return a;
}

// ---- RNG ---------------------------------------------------------------------------------------------------------

at::Tensor torch_rng_state() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
}

void set_torch_rng_state(const at::Tensor& state) {
    const auto expect = generator_state_size();
    if (!state.defined() || state.scalar_type() != at::kByte || state.dim() != 1 || state.numel() != expect)
        throw CheckpointError("torch generator state must be a 1-D uint8 tensor of " + std::to_string(expect) +
                              " bytes");
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state.contiguous());
}

// ---- save ----------------------------------------------------------------------------------------------------------

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
    if (ck.round < 0)
        throw CheckpointError("save_checkpoint: round " + std::to_string(ck.round) + " must be >= 0");
    if (ck.rule.find(',') != std::string::npos)
        throw CheckpointError("save_checkpoint: rule name '" + ck.rule + "' holds a comma");
    check_adapter_for_save(ck.global, "global adapter");

    NamedTensors tensors;
    TensorMetadata meta;
    meta[kVersionKey] = std::to_string(kCheckpointVersion);
    meta["round"] = std::to_string(ck.round);
    meta["rule"] = ck.rule;
    meta["global.layers"] = join(layer_names(ck.global));
    for (auto& t : adapter_to_tensors(ck.global, "global/"))
        tensors.push_back(std::move(t));

    meta["clients"] = std::to_string(ck.clients.size());
    std::set<std::int64_t> ids;
    for (std::size_t i = 0; i < ck.clients.size(); ++i) {
        const auto& c = ck.clients[i];
        const std::string key = "client." + std::to_string(i);
        const std::string prefix = "client/" + std::to_string(i) + "/";
        if (!ids.insert(c.id).second)
            throw CheckpointError("save_checkpoint: client id " + std::to_string(c.id) + " appears twice");
        check_adapter_for_save(c.adapter, "client " + std::to_string(c.id) + " adapter");
        meta[key + ".id"] = std::to_string(c.id);
        meta[key + ".layers"] = join(layer_names(c.adapter));
        for (auto& t : adapter_to_tensors(c.adapter, prefix))
            tensors.push_back(std::move(t));
        const auto& opt = c.optimizer;
        if (!opt.kind.empty() && opt.kind != "adamw" && opt.kind != "sgd")
            throw CheckpointError("save_checkpoint: client " + std::to_string(c.id) + ": unknown optimiser kind '" +
                                  opt.kind + "'");
        meta[key + ".optimizer"] = opt.kind;
        std::vector<std::string> names;
        std::set<std::string> seen;
        for (const auto& [name, t] : opt.tensors) {
            if (name.empty() || name.find(',') != std::string::npos || !seen.insert(name).second)
                throw CheckpointError("save_checkpoint: client " + std::to_string(c.id) +
                                      ": optimiser tensor name '" + name + "' is empty, holds a comma or repeats");
            if (!t.defined())
                throw CheckpointError("save_checkpoint: client " + std::to_string(c.id) + ": optimiser tensor '" +
                                      name + "' is undefined");
            names.push_back(name);
            tensors.emplace_back(prefix + "opt/" + name, t.detach().cpu().contiguous());
        }
        meta[key + ".optimizer.tensors"] = join(names);
    }

    if (ck.torch_rng.defined()) {
        if (ck.torch_rng.scalar_type() != at::kByte || ck.torch_rng.dim() != 1 ||
            ck.torch_rng.numel() != generator_state_size())
            throw CheckpointError("save_checkpoint: torch_rng must be a 1-D uint8 generator state of " +
                                  std::to_string(generator_state_size()) + " bytes");
        tensors.emplace_back("rng/torch", ck.torch_rng.cpu().contiguous());
    }
    meta["rng.torch"] = ck.torch_rng.defined() ? "1" : "0";
    for (const auto& [name, eng] : ck.engines) {
        if (!valid_key_name(name))
            throw CheckpointError("save_checkpoint: engine name '" + name + "' must match [A-Za-z0-9_.-]+");
        std::ostringstream os;
        os << eng;
        meta["engine." + name] = os.str();
    }
    meta["controller.bytes"] = std::to_string(ck.controller_state.size());
    if (!ck.controller_state.empty()) {
        auto t = at::empty({static_cast<std::int64_t>(ck.controller_state.size())},
                           at::TensorOptions().dtype(at::kByte));
        std::memcpy(t.data_ptr(), ck.controller_state.data(), ck.controller_state.size());
        tensors.emplace_back("controller", t);
    }
    for (const auto& [k, v] : ck.info) {
        if (!valid_key_name(k))
            throw CheckpointError("save_checkpoint: info key '" + k + "' must match [A-Za-z0-9_.-]+");
        meta["info." + k] = v;
    }

    const std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
    if (by_name.size() != tensors.size())
        throw CheckpointError("save_checkpoint: two tensors share a name");
    meta[kChecksumKey] = content_checksum(meta, by_name);
    try {
        save_safetensors(path, tensors, meta);
    } catch (const SafetensorsError& e) {
        throw CheckpointError(std::string("save_checkpoint: ") + e.what() + " (any previous checkpoint is intact)");
    }
}

// ---- load ----------------------------------------------------------------------------------------------------------

Checkpoint load_checkpoint(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw CheckpointError(path + ": cannot open checkpoint: " + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
        throw CheckpointError(path + ": checkpoint is not a regular file");
    SafetensorsContents contents;
    try {
        contents = load_safetensors(path, SafetensorsLoadOptions{false});
    } catch (const SafetensorsError& e) {
        throw CheckpointError(path + ": corrupt checkpoint (" + e.what() + "); nothing was loaded");
    }
    const auto vit = contents.metadata.find(kVersionKey);
    if (vit == contents.metadata.end())
        throw CheckpointError(path + ": not a fedlora checkpoint (no '" + std::string(kVersionKey) +
                              "' metadata entry)");
    // The version first: another version may checksum differently.
    if (vit->second != std::to_string(kCheckpointVersion))
        throw CheckpointError(path + ": checkpoint version '" + vit->second + "' is not supported (this build reads " +
                              "version " + std::to_string(kCheckpointVersion) + "); nothing was loaded");
    const auto cit = contents.metadata.find(kChecksumKey);
    if (cit == contents.metadata.end())
        throw CheckpointError(path + ": corrupt checkpoint: no checksum; nothing was loaded");
    const auto sum = content_checksum(contents.metadata, contents.tensors);
    if (cit->second != sum)
        throw CheckpointError(path + ": corrupt checkpoint: checksum mismatch (file says " + cit->second +
                              ", contents give " + sum + "); nothing was loaded");

    Reader rd(path, std::move(contents));
    rd.meta(kVersionKey);
    Checkpoint ck;
    ck.round = rd.integer("round");
    if (ck.round < 0)
        rd.fail("round " + std::to_string(ck.round) + " is negative");
    ck.rule = rd.meta("rule");
    ck.global = rd.adapter("global.layers", "global/");

    const auto n = rd.integer("clients");
    if (n < 0 || n > (1 << 24))
        rd.fail("client count " + std::to_string(n) + " is out of range");
    std::set<std::int64_t> ids;
    for (std::int64_t i = 0; i < n; ++i) {
        const std::string key = "client." + std::to_string(i);
        const std::string prefix = "client/" + std::to_string(i) + "/";
        ClientState c;
        c.id = rd.integer(key + ".id");
        if (!ids.insert(c.id).second)
            rd.fail("client id " + std::to_string(c.id) + " appears twice");
        c.adapter = rd.adapter(key + ".layers", prefix);
        c.optimizer.kind = rd.meta(key + ".optimizer");
        if (!c.optimizer.kind.empty() && c.optimizer.kind != "adamw" && c.optimizer.kind != "sgd")
            rd.fail("client " + std::to_string(c.id) + " has unknown optimiser kind '" + c.optimizer.kind + "'");
        for (const auto& name : split(rd.meta(key + ".optimizer.tensors")))
            c.optimizer.tensors.emplace_back(name, rd.tensor(prefix + "opt/" + name));
        ck.clients.push_back(std::move(c));
    }

    const auto& has_rng = rd.meta("rng.torch");
    if (has_rng == "1") {
        const auto& t = rd.tensor("rng/torch");
        if (t.scalar_type() != at::kByte || t.dim() != 1 || t.numel() != generator_state_size())
            rd.fail("torch generator state is not a 1-D uint8 tensor of " + std::to_string(generator_state_size()) +
                    " bytes");
        ck.torch_rng = t;
    } else if (has_rng != "0") {
        rd.fail("metadata entry 'rng.torch' = '" + has_rng + "' is neither 0 nor 1");
    }
    for (const auto& [k, v] : rd.contents().metadata) {
        if (k.rfind("engine.", 0) == 0) {
            const std::string name = k.substr(7);
            if (!valid_key_name(name))
                rd.fail("engine name '" + name + "' is invalid");
            std::istringstream is(v);
            std::mt19937_64 eng;
            is >> eng;
            if (is.fail() || !(is >> std::ws).eof())
                rd.fail("engine '" + name + "' has an unreadable std::mt19937_64 state");
            ck.engines.emplace(name, eng);
        } else if (k.rfind("info.", 0) == 0) {
            ck.info.emplace(k.substr(5), v);
        }
    }
    const auto blob = rd.integer("controller.bytes");
    if (blob < 0)
        rd.fail("controller.bytes is negative");
    if (blob > 0) {
        const auto& t = rd.tensor("controller");
        if (t.scalar_type() != at::kByte || t.dim() != 1 || t.numel() != blob)
            rd.fail("controller blob is not a 1-D uint8 tensor of " + std::to_string(blob) + " bytes");
        ck.controller_state.assign(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(blob));
    }
    rd.check_all_used();
    return ck;
}

}  // namespace fedlora::learn
