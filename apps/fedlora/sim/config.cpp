#include "config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>

#include <yaml-cpp/yaml.h>

namespace fedlora::sim {

namespace {

enum class Kind { Int, UInt, Real, Bool, Text, List };

// One configuration key bound to a field of a SimConfig.
struct Field {
    const char* key;
    Kind kind;
    const char* help;
    double lo = -std::numeric_limits<double>::infinity();
    double hi = std::numeric_limits<double>::infinity();
    std::vector<std::string> choices = {};  // Text: allowed values (empty: any)
    std::function<void*(SimConfig&)> ref;
};

template <class M>
std::function<void*(SimConfig&)> field_ref(M SimConfig::*member) {
    return [member](SimConfig& c) -> void* { return &(c.*member); };
}
template <class S, class M>
std::function<void*(SimConfig&)> field_ref(S SimConfig::*section, M S::*member) {
    return [section, member](SimConfig& c) -> void* { return &((c.*section).*member); };
}

constexpr double kInf = std::numeric_limits<double>::infinity();

const std::vector<Field>& fields() {
    static const std::vector<Field> f = {
        {"task", Kind::Text, "vision (ViT on Fashion-MNIST, accuracy) or text (byte-level GPT on fortunes, perplexity)",
         -kInf, kInf, {"vision", "text"}, field_ref(&SimConfig::task)},
        {"mode", Kind::Text,
         "ideal (exact sum), aircomp (waveform level through the simulated channel), aircomp-analytic (effective "
         "noise model), digital (OFDMA, q-bit quantisation)",
         -kInf, kInf, {"ideal", "aircomp", "aircomp-analytic", "digital"}, field_ref(&SimConfig::mode)},
        {"transport", Kind::Text,
         "inprocess (the radio in this process, clients trained in turn) or flowgraph (mode aircomp: the round "
         "through the gr-fedlora loopback flowgraph in a radio process, clients as fedlora client processes)",
         -kInf, kInf, {"inprocess", "flowgraph"}, field_ref(&SimConfig::transport)},
        {"seed", Kind::UInt, "seed of the partition, client selection, channels and training", 0, 1.8e19, {},
         field_ref(&SimConfig::seed)},
        {"rounds", Kind::Int, "federated rounds", 1, 100000, {}, field_ref(&SimConfig::rounds)},
        {"clients", Kind::Int, "number of clients holding data", 1, 10000, {}, field_ref(&SimConfig::clients)},
        {"clients_per_round", Kind::Int, "clients selected each round (0: all)", 0, 10000, {},
         field_ref(&SimConfig::clients_per_round)},

        {"data.partition", Kind::Text, "iid, dirichlet (label skew, alpha) or category (whole classes per client)",
         -kInf, kInf, {"iid", "dirichlet", "category"}, field_ref(&SimConfig::data, &SimConfig::Data::partition)},
        {"data.alpha", Kind::Real, "Dirichlet concentration (smaller: more skewed)", 1e-3, 1e6, {},
         field_ref(&SimConfig::data, &SimConfig::Data::alpha)},
        {"data.min_size", Kind::Int, "smallest client size the Dirichlet partition accepts", 0, 1e9, {},
         field_ref(&SimConfig::data, &SimConfig::Data::min_size)},
        {"data.dir", Kind::Text, "data directory (empty: Debian's, /usr/share/datasets/fashion-mnist or "
                                 "/usr/share/games/fortunes)",
         -kInf, kInf, {}, field_ref(&SimConfig::data, &SimConfig::Data::dir)},
        {"data.train_examples", Kind::Int, "use the first N examples of the fine-tuning pool (0: all)", 0, 1e9, {},
         field_ref(&SimConfig::data, &SimConfig::Data::train_examples)},
        {"data.test_examples", Kind::Int, "evaluate on the first N test examples (0: all)", 0, 1e9, {},
         field_ref(&SimConfig::data, &SimConfig::Data::test_examples)},
        {"data.block", Kind::Int, "text: bytes per example (at most the GPT's context)", 2, 4096, {},
         field_ref(&SimConfig::data, &SimConfig::Data::block)},

        {"pretrain.dir", Kind::Text, "cache directory of the pretrained base models", -kInf, kInf, {},
         field_ref(&SimConfig::pretrain, &SimConfig::Pretrain::dir)},
        {"pretrain.path", Kind::Text, "a base model safetensors file to fine-tune instead (skips pretraining)", -kInf,
         kInf, {}, field_ref(&SimConfig::pretrain, &SimConfig::Pretrain::path)},
        {"pretrain.seed", Kind::UInt, "seed of the base model's pretraining", 0, 1.8e19, {},
         field_ref(&SimConfig::pretrain, &SimConfig::Pretrain::seed)},
        {"pretrain.steps", Kind::Int, "pretraining steps (0: the recipe's)", 0, 1e8, {},
         field_ref(&SimConfig::pretrain, &SimConfig::Pretrain::steps)},

        {"lora.rank", Kind::Int, "LoRA rank r", 1, 1024, {}, field_ref(&SimConfig::lora, &SimConfig::Lora::rank)},
        {"lora.alpha", Kind::Real, "LoRA alpha (scaling alpha / r)", 1e-6, 1e6, {},
         field_ref(&SimConfig::lora, &SimConfig::Lora::alpha)},
        {"lora.dropout", Kind::Real, "dropout on the LoRA branch input", 0, 0.999, {},
         field_ref(&SimConfig::lora, &SimConfig::Lora::dropout)},
        {"lora.targets", Kind::List,
         "adapted layers by name (empty: vision qkv,proj,fc1,fc2,head; text c_attn,c_proj,c_fc)", -kInf, kInf, {},
         field_ref(&SimConfig::lora, &SimConfig::Lora::targets)},

        {"train.local_steps", Kind::Int, "local optimiser steps E per round", 1, 1e6, {},
         field_ref(&SimConfig::train, &SimConfig::Train::local_steps)},
        {"train.batch", Kind::Int, "local mini-batch size", 1, 65536, {},
         field_ref(&SimConfig::train, &SimConfig::Train::batch)},
        {"train.optimizer", Kind::Text, "adamw or sgd (state reset every round)", -kInf, kInf, {"adamw", "sgd"},
         field_ref(&SimConfig::train, &SimConfig::Train::optimizer)},
        {"train.lr", Kind::Real, "local learning rate", 1e-9, 10, {}, field_ref(&SimConfig::train, &SimConfig::Train::lr)},
        {"train.weight_decay", Kind::Real, "weight decay", 0, 10, {},
         field_ref(&SimConfig::train, &SimConfig::Train::weight_decay)},
        {"train.clip_norm", Kind::Real, "global gradient-norm clip (0: off)", 0, 1e6, {},
         field_ref(&SimConfig::train, &SimConfig::Train::clip_norm)},
        {"train.threads", Kind::Int, "LibTorch intra-op threads (0: LibTorch's default)", 0, 256, {},
         field_ref(&SimConfig::train, &SimConfig::Train::threads)},

        {"aggregation", Kind::Text, "fedit (A and B averaged), ffa (A frozen, B sent), fedsa (A sent, B local)",
         -kInf, kInf, {"fedit", "ffa", "fedsa"}, field_ref(&SimConfig::aggregation)},

        {"soft.rho", Kind::Real, "SOFT sparsity: fraction of rank components sent per layer, in (0, 1]", 1e-9, 1, {},
         field_ref(&SimConfig::soft, &SimConfig::Soft::rho)},
        {"soft.lambda", Kind::Real, "SOFT near-orthogonality regulariser weight (0: off)", 0, 1e6, {},
         field_ref(&SimConfig::soft, &SimConfig::Soft::lambda)},
        {"soft.support", Kind::Text, "top (largest importances of the global adapter) or seeded (shared seed)", -kInf,
         kInf, {"top", "seeded"}, field_ref(&SimConfig::soft, &SimConfig::Soft::support)},

        {"channel.snr_db", Kind::Real, "mean receive SNR per subcarrier at full power, dB", -30, 80, {},
         field_ref(&SimConfig::channel, &SimConfig::Channel::snr_db)},
        {"channel.snr_spread_db", Kind::Real, "devices' SNRs spread uniformly within +/- this, dB", 0, 40, {},
         field_ref(&SimConfig::channel, &SimConfig::Channel::snr_spread_db)},
        {"channel.profile", Kind::Text, "power-delay profile (Rayleigh block fading, new per round)", -kInf, kInf,
         {"flat", "EPA", "EVA", "ETU"}, field_ref(&SimConfig::channel, &SimConfig::Channel::profile)},
        {"channel.doppler_hz", Kind::Real, "maximum Doppler shift (0: block fading)", 0, 10000, {},
         field_ref(&SimConfig::channel, &SimConfig::Channel::doppler_hz)},
        {"channel.cfo", Kind::Real, "common carrier frequency offset, subcarrier spacings", -0.45, 0.45, {},
         field_ref(&SimConfig::channel, &SimConfig::Channel::cfo)},
        {"channel.phase_noise_hz", Kind::Real, "server oscillator 3 dB linewidth (0: none)", 0, 1e6, {},
         field_ref(&SimConfig::channel, &SimConfig::Channel::phase_noise_hz)},

        {"channel.shadowing_db", Kind::Real,
         "per-round log-normal shadowing of each client's mean SNR, std. dev. in dB (0: none)", 0, 30, {},
         field_ref(&SimConfig::channel, &SimConfig::Channel::shadowing_db)},

        {"phy.fft", Kind::Int, "FFT size", 16, 65536, {}, field_ref(&SimConfig::phy, &SimConfig::Phy::fft)},
        {"phy.cp", Kind::Int, "cyclic prefix length, samples", 0, 65536, {}, field_ref(&SimConfig::phy, &SimConfig::Phy::cp)},
        {"phy.occupied", Kind::Int, "occupied subcarriers", 2, 65536, {},
         field_ref(&SimConfig::phy, &SimConfig::Phy::occupied)},
        {"phy.pilot_spacing", Kind::Int, "a payload pilot every N occupied carriers (0: none)", 0, 65536, {},
         field_ref(&SimConfig::phy, &SimConfig::Phy::pilot_spacing)},
        {"phy.pilot_repeats", Kind::Int, "pilot symbols per device antenna", 1, 64, {},
         field_ref(&SimConfig::phy, &SimConfig::Phy::pilot_repeats)},
        {"phy.sample_rate", Kind::Real, "sample rate, S/s", 1e3, 1e10, {},
         field_ref(&SimConfig::phy, &SimConfig::Phy::sample_rate)},
        {"phy.policy", Kind::Text, "single-stream power control", -kInf, kInf, {"truncated", "mmse", "full"},
         field_ref(&SimConfig::phy, &SimConfig::Phy::policy)},
        {"phy.estimator", Kind::Text, "channel estimator", -kInf, kInf, {"ls", "dft", "lmmse", "sparse"},
         field_ref(&SimConfig::phy, &SimConfig::Phy::estimator)},
        {"phy.streams", Kind::Int, "spatial streams L (0: single-stream with phy.policy)", 0, 8, {},
         field_ref(&SimConfig::phy, &SimConfig::Phy::streams)},
        {"phy.tx", Kind::Int, "antennas per device", 1, 8, {}, field_ref(&SimConfig::phy, &SimConfig::Phy::tx)},
        {"phy.rx", Kind::Int, "server antennas", 1, 16, {}, field_ref(&SimConfig::phy, &SimConfig::Phy::rx)},
        {"phy.perfect_csi", Kind::Bool, "plan from the true channels (no sync, no estimation)", 0, 1, {},
         field_ref(&SimConfig::phy, &SimConfig::Phy::perfect_csi)},

        {"digital.bits", Kind::Int, "digital mode: bits per update entry (stochastic quantisation)", 1, 32, {},
         field_ref(&SimConfig::digital, &SimConfig::Digital::bits)},
        {"digital.rate", Kind::Text, "digital mode: rate from the SNR by shannon or mcs (practical table)", -kInf,
         kInf, {"shannon", "mcs"}, field_ref(&SimConfig::digital, &SimConfig::Digital::rate)},

        {"device.gflops", Kind::Real, "training throughput of an edge device, GFLOP/s (latency model)", 1e-6, 1e9, {},
         field_ref(&SimConfig::device, &SimConfig::Device::gflops)},
        {"device.power", Kind::Real, "transmit power budget per subcarrier (linear, all antennas)", 1e-9, 1e9, {},
         field_ref(&SimConfig::device, &SimConfig::Device::power)},

        {"radio.calibration", Kind::Text,
         "calibration file (calibration/README.md; empty: none): every client's samples pass through the "
         "transmit correction of its radio's alignment at radio.frequency_hz and phy.sample_rate (mode aircomp, "
         "phy.tx 1). The radios are virtual: the file should describe the impairments of radio.timing_offsets and "
         "radio.cfo_offsets_hz (e.g. fedlora calibrate --timing-offset ... --cfo-hz ...)",
         -kInf, kInf, {}, field_ref(&SimConfig::radio, &SimConfig::Radio::calibration)},
        {"radio.serials", Kind::List,
         "serial of each client's radio in radio.calibration, one per client in client order (empty: the file's "
         "devices aligned at radio.frequency_hz, in file order)",
         -kInf, kInf, {}, field_ref(&SimConfig::radio, &SimConfig::Radio::serials)},
        {"radio.frequency_hz", Kind::Real, "LO frequency of the calibration lookups, Hz", 1e6, 1e11, {},
         field_ref(&SimConfig::radio, &SimConfig::Radio::frequency_hz)},
        {"radio.timing_offsets", Kind::List,
         "virtual radios: each client's timing offset in samples, [0, 4096], injected by the channel (mode "
         "aircomp; empty: none)",
         -kInf, kInf, {}, field_ref(&SimConfig::radio, &SimConfig::Radio::timing_offsets)},
        {"radio.cfo_offsets_hz", Kind::List,
         "virtual radios: each client's carrier offset in Hz on top of channel.cfo (mode aircomp; empty: none)",
         -kInf, kInf, {}, field_ref(&SimConfig::radio, &SimConfig::Radio::cfo_offsets_hz)},

        {"controller.name", Kind::Text,
         "fixed (soft.rho and phy.occupied every round) or tsfa (sparsity and bandwidth per round by Lyapunov "
         "drift-plus-penalty from the measured CSI)",
         -kInf, kInf, {"fixed", "tsfa"}, field_ref(&SimConfig::controller, &SimConfig::Controller::name)},
        {"controller.v", Kind::Real, "TSFA penalty weight V, s^2 (larger: less error, more latency)", 1e-12, 1e12, {},
         field_ref(&SimConfig::controller, &SimConfig::Controller::v)},
        {"controller.latency_budget_s", Kind::Real, "TSFA latency budget: long-term average seconds per round",
         1e-9, 1e9, {}, field_ref(&SimConfig::controller, &SimConfig::Controller::latency_budget_s)},
        {"controller.rho_grid", Kind::List, "TSFA candidate sparsity ratios in (0, 1] (empty: 1/r, 2/r, ..., 1)",
         -kInf, kInf, {}, field_ref(&SimConfig::controller, &SimConfig::Controller::rho_grid)},
        {"controller.g_th", Kind::Real, "truncation threshold of TSFA's AirComp error model (relative to mean gain)",
         1e-9, 100, {}, field_ref(&SimConfig::controller, &SimConfig::Controller::g_th)},

        {"controller.drift", Kind::Text,
         "TSFA drift term: exact (weighs latency even with an empty queue) or linear (Z*T, Neely's bound)", -kInf,
         kInf, {"exact", "linear"}, field_ref(&SimConfig::controller, &SimConfig::Controller::drift)},
        {"controller.rank_candidates", Kind::List,
         "TSFA offline stage: LoRA ranks to choose from by the bound proxy (empty: keep lora.rank)", -kInf, kInf, {},
         field_ref(&SimConfig::controller, &SimConfig::Controller::rank_candidates)},

        {"server.round_deadline_s", Kind::Real, "fedlora server: seconds a round waits for the clients' updates",
         1e-3, 1e7, {}, field_ref(&SimConfig::server, &SimConfig::Server::round_deadline_s)},
        {"server.join_timeout_s", Kind::Real, "fedlora server: seconds to wait for all clients to join", 1e-3, 1e7,
         {}, field_ref(&SimConfig::server, &SimConfig::Server::join_timeout_s)},
        {"server.heartbeat_s", Kind::Real, "heartbeat period, s (silent for 5 periods: gone)", 1e-3, 3600, {},
         field_ref(&SimConfig::server, &SimConfig::Server::heartbeat_s)},

        {"eval.every", Kind::Int, "evaluate every N rounds (the last round always)", 1, 1e6, {},
         field_ref(&SimConfig::eval, &SimConfig::Eval::every)},
        {"eval.batch", Kind::Int, "evaluation batch size", 1, 65536, {}, field_ref(&SimConfig::eval, &SimConfig::Eval::batch)},
        {"checkpoint.every", Kind::Int, "write the checkpoint every N rounds (the last round always)", 1, 1e6, {},
         field_ref(&SimConfig::checkpoint, &SimConfig::Checkpoint::every)},
    };
    return f;
}

const Field* find_field(const std::string& key) {
    for (const auto& f : fields())
        if (key == f.key)
            return &f;
    return nullptr;
}

[[noreturn]] void unknown_key(const std::string& key) {
    // List the keys of the same section ("train.*" for "train.lrr"), or every key when the section is unknown.
    const auto dot = key.find('.');
    const std::string section = dot == std::string::npos ? "" : key.substr(0, dot + 1);
    std::string known;
    for (const auto& f : fields())
        if (!section.empty() && std::string(f.key).rfind(section, 0) == 0)
            known += (known.empty() ? "" : ", ") + std::string(f.key);
    if (known.empty())
        for (const auto& f : fields())
            known += (known.empty() ? "" : ", ") + std::string(f.key);
    throw ConfigError("unknown config key '" + key + "' (known keys: " + known + ")");
}

std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos)
        return "";
    const auto e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

std::string format_real(double v) {
    std::ostringstream os;
    os.precision(17);
    os << v;
    // Shortest text that reads back to the same double.
    for (int p = 1; p <= 17; ++p) {
        std::ostringstream t;
        t.precision(p);
        t << v;
        if (std::strtod(t.str().c_str(), nullptr) == v)
            return t.str();
    }
    return os.str();
}

std::string range_text(const Field& f) {
    auto fmt = [&](double v) { return f.kind == Kind::Real ? format_real(v) : std::to_string(static_cast<long long>(v)); };
    return "[" + fmt(f.lo) + ", " + fmt(f.hi) + "]";
}

void set_field(SimConfig& cfg, const Field& f, const std::string& raw) {
    const std::string value = trim(raw);
    void* p = f.ref(cfg);
    const std::string key = f.key;
    auto bad = [&](const std::string& why) -> ConfigError {
        return ConfigError("config key '" + key + "': " + why);
    };
    switch (f.kind) {
    case Kind::Int:
    case Kind::UInt: {
        if (value.empty())
            throw bad("empty value (expected an integer)");
        errno = 0;
        char* end = nullptr;
        if (f.kind == Kind::UInt) {
            if (value[0] == '-')
                throw bad("'" + value + "' is negative (expected an unsigned integer)");
            const unsigned long long v = std::strtoull(value.c_str(), &end, 10);
            if (errno || *end)
                throw bad("'" + value + "' is not an unsigned integer");
            *static_cast<std::uint64_t*>(p) = v;
        } else {
            const long long v = std::strtoll(value.c_str(), &end, 10);
            if (errno || *end)
                throw bad("'" + value + "' is not an integer");
            if (static_cast<double>(v) < f.lo || static_cast<double>(v) > f.hi)
                throw bad(value + " is out of range " + range_text(f));
            *static_cast<std::int64_t*>(p) = v;
        }
        return;
    }
    case Kind::Real: {
        if (value.empty())
            throw bad("empty value (expected a number)");
        char* end = nullptr;
        const double v = std::strtod(value.c_str(), &end);
        if (*end || !std::isfinite(v))
            throw bad("'" + value + "' is not a finite number");
        if (v < f.lo || v > f.hi)
            throw bad(value + " is out of range " + range_text(f));
        *static_cast<double*>(p) = v;
        return;
    }
    case Kind::Bool: {
        std::string v = value;
        std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (v == "true" || v == "yes" || v == "on" || v == "1")
            *static_cast<bool*>(p) = true;
        else if (v == "false" || v == "no" || v == "off" || v == "0")
            *static_cast<bool*>(p) = false;
        else
            throw bad("'" + value + "' is not a boolean (true or false)");
        return;
    }
    case Kind::Text: {
        if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), value) == f.choices.end()) {
            std::string c;
            for (const auto& s : f.choices)
                c += (c.empty() ? "" : ", ") + s;
            throw bad("'" + value + "' is not one of " + c);
        }
        *static_cast<std::string*>(p) = value;
        return;
    }
    case Kind::List: {
        std::vector<std::string> items;
        std::string v = value;
        if (v.size() >= 2 && v.front() == '[' && v.back() == ']')
            v = v.substr(1, v.size() - 2);
        std::stringstream ss(v);
        std::string item;
        while (std::getline(ss, item, ',')) {
            item = trim(item);
            if (item.empty())
                continue;
            items.push_back(item);
        }
        *static_cast<std::vector<std::string>*>(p) = items;
        return;
    }
    }
}

std::string field_text(const SimConfig& cfg, const Field& f) {
    void* p = f.ref(const_cast<SimConfig&>(cfg));
    switch (f.kind) {
    case Kind::Int:
        return std::to_string(*static_cast<std::int64_t*>(p));
    case Kind::UInt:
        return std::to_string(*static_cast<std::uint64_t*>(p));
    case Kind::Real:
        return format_real(*static_cast<double*>(p));
    case Kind::Bool:
        return *static_cast<bool*>(p) ? "true" : "false";
    case Kind::Text:
        return *static_cast<std::string*>(p);
    case Kind::List: {
        std::string s;
        for (const auto& i : *static_cast<std::vector<std::string>*>(p))
            s += (s.empty() ? "" : ",") + i;
        return s;
    }
    }
    return "";
}

void load_node(SimConfig& cfg, const YAML::Node& node, const std::string& prefix, const std::string& origin) {
    if (!node.IsMap())
        throw ConfigError(origin + ": " + (prefix.empty() ? std::string("the document") : "'" + prefix + "'") +
                          " must be a map of keys");
    for (const auto& kv : node) {
        const std::string name = kv.first.as<std::string>();
        const std::string key = prefix.empty() ? name : prefix + "." + name;
        const Field* f = find_field(key);
        if (!f) {
            if (kv.second.IsMap()) {
                bool section = false;
                for (const auto& g : fields())
                    section = section || std::string(g.key).rfind(key + ".", 0) == 0;
                if (section) {
                    load_node(cfg, kv.second, key, origin);
                    continue;
                }
            }
            try {
                unknown_key(key);
            } catch (const ConfigError& e) {
                throw ConfigError(origin + ": " + e.what());
            }
        }
        try {
            if (f->kind == Kind::List && kv.second.IsSequence()) {
                std::string joined;
                for (const auto& item : kv.second)
                    joined += (joined.empty() ? "" : ",") + item.as<std::string>();
                set_field(cfg, *f, joined);
            } else if (kv.second.IsScalar()) {
                set_field(cfg, *f, kv.second.as<std::string>());
            } else if (kv.second.IsNull()) {
                set_field(cfg, *f, "");
            } else {
                throw ConfigError("config key '" + key + "': expected a single value");
            }
        } catch (const ConfigError& e) {
            throw ConfigError(origin + ": " + e.what());
        }
    }
}

}  // namespace

std::vector<double> SimConfig::rho_grid() const {
    std::vector<double> g;
    for (const auto& t : controller.rho_grid) {
        char* end = nullptr;
        const double v = std::strtod(t.c_str(), &end);
        if (*end || !(v > 0.0 && v <= 1.0))
            throw ConfigError("config key 'controller.rho_grid': '" + t + "' is not a ratio in (0, 1]");
        g.push_back(v);
    }
    return g;
}

std::vector<std::int64_t> SimConfig::rank_candidates() const {
    std::vector<std::int64_t> r;
    for (const auto& t : controller.rank_candidates) {
        char* end = nullptr;
        const long long v = std::strtoll(t.c_str(), &end, 10);
        if (*end || v < 1 || v > 1024)
            throw ConfigError("config key 'controller.rank_candidates': '" + t + "' is not a rank in [1, 1024]");
        if (std::find(r.begin(), r.end(), v) != r.end())
            throw ConfigError("config key 'controller.rank_candidates': rank " + t + " is listed twice");
        r.push_back(v);
    }
    return r;
}

namespace {

// A per-client list of numbers: empty, or one value per client, each in [lo, hi].
std::vector<double> per_client(const std::vector<std::string>& items, const char* key, std::int64_t clients,
                               double lo, double hi) {
    std::vector<double> v;
    for (const auto& t : items) {
        char* end = nullptr;
        const double x = std::strtod(t.c_str(), &end);
        if (t.empty() || *end || !std::isfinite(x))
            throw ConfigError(std::string("config key '") + key + "': '" + t + "' is not a number");
        if (x < lo || x > hi)
            throw ConfigError(std::string("config key '") + key + "': " + t + " is out of range [" + format_real(lo) +
                              ", " + format_real(hi) + "]");
        v.push_back(x);
    }
    if (!v.empty() && static_cast<std::int64_t>(v.size()) != clients)
        throw ConfigError(std::string("config key '") + key + "': " + std::to_string(v.size()) + " values for " +
                          std::to_string(clients) + " clients (give one per client, or none)");
    return v;
}

}  // namespace

std::vector<double> SimConfig::radio_timing_offsets() const {
    return per_client(radio.timing_offsets, "radio.timing_offsets", clients, 0.0, 4096.0);
}

std::vector<double> SimConfig::radio_cfo_offsets_hz() const {
    return per_client(radio.cfo_offsets_hz, "radio.cfo_offsets_hz", clients, -0.45 * phy.sample_rate,
                      0.45 * phy.sample_rate);
}

std::vector<std::string> SimConfig::lora_targets() const {
    if (!lora.targets.empty())
        return lora.targets;
    if (task == "text")
        return {"c_attn", "c_proj", "c_fc"};
    return {"qkv", "proj", "fc1", "fc2", "head"};
}

void SimConfig::validate() const {
    // Each value was range-checked when set; re-check them all (a struct may have been filled in code), then the
    // combinations.
    SimConfig copy = *this;
    for (const auto& f : fields())
        set_field(copy, f, field_text(*this, f));
    if (clients_per_round > clients)
        throw ConfigError("config key 'clients_per_round': " + std::to_string(clients_per_round) +
                          " is more than clients (" + std::to_string(clients) + ")");
    if (data.train_examples != 0 && data.train_examples < clients)
        throw ConfigError("config key 'data.train_examples': " + std::to_string(data.train_examples) +
                          " examples cannot be shared by " + std::to_string(clients) + " clients");
    if (phy.cp >= phy.fft)
        throw ConfigError("config key 'phy.cp': " + std::to_string(phy.cp) + " must be shorter than phy.fft (" +
                          std::to_string(phy.fft) + ")");
    if (phy.occupied >= phy.fft)
        throw ConfigError("config key 'phy.occupied': " + std::to_string(phy.occupied) +
                          " must be below phy.fft (" + std::to_string(phy.fft) + ")");
    if (phy.streams > 0 && (phy.tx < phy.streams || phy.rx < phy.streams))
        throw ConfigError("config key 'phy.streams': " + std::to_string(phy.streams) +
                          " streams need phy.tx and phy.rx >= streams (tx " + std::to_string(phy.tx) + ", rx " +
                          std::to_string(phy.rx) + ")");
    if (phy.streams == 0 && (phy.tx != 1 || phy.rx != 1))
        throw ConfigError("config key 'phy.streams': single-stream AirComp (0) needs phy.tx = phy.rx = 1; set "
                          "phy.streams >= 1 for multi-antenna operation");
    (void)rho_grid();
    if (!rank_candidates().empty() && controller.name != "tsfa")
        throw ConfigError("config key 'controller.rank_candidates': the offline rank stage belongs to "
                          "controller.name=tsfa");
    if (controller.name == "tsfa" && phy.streams > 0)
        throw ConfigError("config key 'controller.name': tsfa models single-stream AirComp (phy.streams = 0)");
    if (controller.name == "tsfa" && mode == "ideal")
        throw ConfigError("config key 'controller.name': tsfa needs a channel (mode aircomp, aircomp-analytic or "
                          "digital), not mode ideal");
    if (transport == "flowgraph") {
        if (mode != "aircomp")
            throw ConfigError("config key 'transport': flowgraph runs the waveform-level AirComp round through "
                              "gr-fedlora's blocks, so it needs mode aircomp, not mode '" + mode + "'");
        if (phy.perfect_csi)
            throw ConfigError("config key 'phy.perfect_csi': the flowgraph transport's receiver estimates the "
                              "channels from the pilots; perfect CSI exists only with transport inprocess");
        if (aggregation == "fedsa")
            throw ConfigError("config key 'aggregation': fedsa keeps each client's B on the client, and with "
                              "transport flowgraph the clients are separate processes whose B the run cannot "
                              "checkpoint; use fedit or ffa (or transport inprocess)");
    }
    const bool impaired = !radio_timing_offsets().empty() || !radio_cfo_offsets_hz().empty();
    if (impaired && mode != "aircomp")
        throw ConfigError(std::string("config key '") +
                          (radio.timing_offsets.empty() ? "radio.cfo_offsets_hz" : "radio.timing_offsets") +
                          "': per-client timing offsets and CFOs exist only in the waveform-level round (mode "
                          "aircomp), not mode '" + mode + "'");
    if (!radio.calibration.empty()) {
        if (mode != "aircomp")
            throw ConfigError("config key 'radio.calibration': the transmit corrections act on waveforms (mode "
                              "aircomp), not mode '" + mode + "'");
        if (phy.tx != 1)
            throw ConfigError("config key 'radio.calibration': the simulator applies one radio channel's "
                              "correction per client (phy.tx 1), not phy.tx " + std::to_string(phy.tx));
    } else if (!radio.serials.empty()) {
        throw ConfigError("config key 'radio.serials': names devices of a calibration file, but radio.calibration "
                          "is empty");
    }
    if (!radio.serials.empty() && static_cast<std::int64_t>(radio.serials.size()) != clients)
        throw ConfigError("config key 'radio.serials': " + std::to_string(radio.serials.size()) + " serials for " +
                          std::to_string(clients) + " clients (give one per client, or none)");
    if (aggregation == "fedsa" && soft.rho < 1.0 && soft.support == "top")
        throw ConfigError("config key 'soft.support': 'top' ranks components by the global adapter, which fedsa "
                          "does not have (B stays local); use soft.support=seeded with fedsa");
}

void set_key(SimConfig& cfg, const std::string& key, const std::string& value) {
    const Field* f = find_field(key);
    if (!f)
        unknown_key(key);
    set_field(cfg, *f, value);
}

void apply_override(SimConfig& cfg, const std::string& assignment) {
    const auto eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0)
        throw ConfigError("--set '" + assignment + "': expected key=value, e.g. --set train.lr=0.001");
    set_key(cfg, trim(assignment.substr(0, eq)), assignment.substr(eq + 1));
}

void load_yaml_text(SimConfig& cfg, const std::string& text, const std::string& origin) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        throw ConfigError(origin + ": YAML error at line " + std::to_string(e.mark.line + 1) + ", column " +
                          std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
    if (root.IsNull())
        return;  // an empty file sets nothing
    load_node(cfg, root, "", origin);
}

void load_yaml_file(SimConfig& cfg, const std::string& path) {
    std::ifstream in(path);
    if (!in)
        throw ConfigError("config file '" + path + "' cannot be read (missing or no permission)");
    std::stringstream ss;
    ss << in.rdbuf();
    load_yaml_text(cfg, ss.str(), path);
}

std::string to_yaml(const SimConfig& cfg) {
    YAML::Emitter out;
    out << YAML::BeginMap;
    std::string open;  // the section whose map is open
    for (const auto& f : fields()) {
        const std::string key = f.key;
        const auto dot = key.find('.');
        const std::string section = dot == std::string::npos ? "" : key.substr(0, dot);
        const std::string leaf = dot == std::string::npos ? key : key.substr(dot + 1);
        if (section != open) {
            if (!open.empty())
                out << YAML::EndMap;
            if (!section.empty())
                out << YAML::Key << section << YAML::Value << YAML::BeginMap;
            open = section;
        }
        out << YAML::Key << leaf << YAML::Value;
        const std::string text = field_text(cfg, f);
        if (f.kind == Kind::List) {
            out << YAML::Flow << YAML::BeginSeq;
            for (const auto& i : *static_cast<std::vector<std::string>*>(f.ref(const_cast<SimConfig&>(cfg))))
                out << i;
            out << YAML::EndSeq;
        } else if (f.kind == Kind::Text) {
            out << YAML::DoubleQuoted << text;
        } else {
            out << text;
        }
    }
    if (!open.empty())
        out << YAML::EndMap;
    out << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
}

SimConfig resolve_config(const ConfigSources& src) {
    SimConfig cfg;
    if (!src.file.empty())
        load_yaml_file(cfg, src.file);
    if (!src.mode.empty())
        set_key(cfg, "mode", src.mode);
    if (!src.task.empty())
        set_key(cfg, "task", src.task);
    if (src.seed)
        cfg.seed = *src.seed;
    for (const auto& s : src.sets)
        apply_override(cfg, s);
    cfg.validate();
    return cfg;
}

std::string config_help() {
    SimConfig defaults;
    std::string s;
    for (const auto& f : fields()) {
        std::string d = field_text(defaults, f);
        s += std::string("  ") + f.key + " (default " + (d.empty() ? "\"\"" : d) + "): " + f.help + "\n";
    }
    return s;
}

std::vector<std::string> config_keys() {
    std::vector<std::string> k;
    for (const auto& f : fields())
        k.push_back(f.key);
    return k;
}

std::string get_key(const SimConfig& cfg, const std::string& key) {
    const Field* f = find_field(key);
    if (!f)
        unknown_key(key);
    return field_text(cfg, *f);
}

}  // namespace fedlora::sim
