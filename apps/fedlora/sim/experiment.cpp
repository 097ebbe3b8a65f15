#include "experiment.h"
#include "workspace.h"

#include <torch/torch.h>

#include <csignal>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fedlora/learn/aggregate.h"
#include "fedlora/learn/checkpoint.h"
#include "fedlora/learn/data.h"
#include "fedlora/learn/flops.h"
#include "fedlora/learn/models.h"
#include "fedlora/learn/partition.h"
#include "fedlora/learn/pretrain.h"
#include "fedlora/learn/soft.h"
#include "fedlora/learn/train.h"
#include "fedlora/control/tsfa.h"
#include "fedlora/phy/digital.h"
#include "fedlora/phy/frame.h"
#include "fedlora/phy/numerology.h"
#include "federation.h"
#include "radio.h"

namespace fs = std::filesystem;

namespace fedlora::sim {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::uint64_t kTagSelect = 0x53454c;  // "SEL"
constexpr double kReceiverNoiseVar = 1e-3;     // the simulated receiver's noise per sample (radio.cpp)

double db(double x) { return std::isfinite(x) && x > 0.0 ? 10.0 * std::log10(x) : (x == 0.0 ? -300.0 : kNaN); }

std::string num(double v, int precision = 6) {
    if (!std::isfinite(v))
        return "";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    return buf;
}

// Uniform integer in [0, n) from the engine without modulo bias (std distributions are not bit-exact portable).
std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n) {
    const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
    std::uint64_t x;
    do
        x = rng();
    while (x >= limit);
    return x % n;
}

// ---- run folder -------------------------------------------------------------------------------------------

void write_file_atomic(const fs::path& path, const std::string& text) {
    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out)
            throw std::runtime_error("cannot write '" + tmp.string() + "'");
        out << text;
        out.flush();
        if (!out)
            throw std::runtime_error("cannot write '" + tmp.string() + "' (disk full?)");
    }
    fs::rename(tmp, path);
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The first key whose value differs between two configurations ("" when none).
std::string first_difference(const SimConfig& a, const SimConfig& b) {
    for (const auto& k : config_keys())
        if (get_key(a, k) != get_key(b, k))
            return k;
    return "";
}

struct Progress {
    bool enabled = false;
    bool tty = false;
    std::int64_t total = 0;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    std::int64_t done_at_start = 0;

    void clients(std::int64_t round, std::size_t n) const {
        if (!enabled || !tty)
            return;
        std::fprintf(stderr, "\r\033[K  round %lld/%lld: %zu clients training", static_cast<long long>(round),
                     static_cast<long long>(total), n);
        std::fflush(stderr);
    }
    void round(const RoundRow& r, bool vision) const {
        if (!enabled)
            return;
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const auto done = r.round - done_at_start;
        const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total - r.round) : 0.0;
        constexpr int width = 20;
        const int filled = static_cast<int>(width * r.round / std::max<std::int64_t>(total, 1));
        std::string bar(static_cast<std::size_t>(filled), '#');
        bar += std::string(static_cast<std::size_t>(width - filled), '.');
        std::string metric = vision ? (std::isfinite(r.test_accuracy) ? "acc " + num(r.test_accuracy, 4) : "acc -")
                                    : (std::isfinite(r.test_perplexity) ? "ppl " + num(r.test_perplexity, 4) : "ppl -");
        std::string nmse = std::isfinite(r.nmse_db) ? "NMSE " + num(r.nmse_db, 3) + " dB" : "NMSE -";
        std::fprintf(stderr, "%s[%s] round %lld/%lld  loss %.4f  %s  %s  uses %llu  %.1f s/round  ETA %.0f s%s\n",
                     tty ? "\r\033[K" : "", bar.c_str(), static_cast<long long>(r.round),
                     static_cast<long long>(total), r.train_loss, metric.c_str(), nmse.c_str(),
                     static_cast<unsigned long long>(r.channel_uses), r.wall_s, eta,
                     r.delivered ? "" : "  (aggregate lost)");
        std::fflush(stderr);
    }
};

// The round's control decision: the fixed settings, or TSFA (fedlora_control) fed with the CSI the receiver
// measured in earlier rounds (never the simulator's channels). Keeps the latency queue for the log either way.
struct RoundDecision {
    double rho = 1.0;
    std::int64_t occupied = 0;        // occupied subcarriers (0: phy.occupied)
    double carrier_budget = 0.0;      // power per occupied carrier (0: device.power)
    std::vector<double> shares;       // digital: per selected client (empty: equal)
};

class Control {
public:
    explicit Control(const SimConfig& cfg) : cfg_(cfg), queue_(cfg.controller.latency_budget_s) {
        // Candidate bandwidths: occupied counts in steps of two pilot spacings (even, whole pilot groups) up to
        // phy.occupied; the controller counts payload data carriers.
        const std::int64_t step = std::max<std::int64_t>(2, 2 * std::max<std::int64_t>(cfg.phy.pilot_spacing, 1));
        for (std::int64_t m = step; m < cfg.phy.occupied; m += step)
            occupied_.push_back(m);
        occupied_.push_back(cfg.phy.occupied);
        for (const auto m : occupied_)
            data_.push_back(static_cast<std::size_t>(round_numerology(cfg_, m).n_data()));
        if (cfg.controller.name == "tsfa")
            tsfa_ = control::make_controller("tsfa", controller_config());
    }

    control::ControllerConfig controller_config() const {
        control::ControllerConfig cc;
        cc.mode = cfg_.mode == "digital" ? control::LinkMode::Digital : control::LinkMode::AirComp;
        cc.v_weight = cfg_.controller.v;
        cc.latency_budget = cfg_.controller.latency_budget_s;
        cc.exact_drift = cfg_.controller.drift == "exact";
        cc.rho_grid = cfg_.rho_grid();
        cc.model.g_th = cfg_.controller.g_th;
        cc.model.support = control::support_rule_from_name(cfg_.soft.support);
        cc.model.quant_bits = static_cast<int>(cfg_.digital.bits);
        const auto rate = phy::rate_model_from_name(cfg_.digital.rate);
        cc.model.spectral_efficiency = [rate](double snr) { return phy::spectral_efficiency(rate, snr); };
        return cc;
    }

    // Airtime arithmetic of a round with `devices` transmitters, for the controller's models.
    control::RoundTiming timing(std::size_t devices) const {
        control::RoundTiming t;
        const auto num = round_numerology(cfg_, cfg_.phy.occupied);
        t.carrier_counts = data_;
        t.symbol_duration = num.symbol_len() / num.sample_rate;
        phy::FrameConfig fc;
        fc.numerology = num;
        fc.n_devices = devices;
        fc.n_tx = static_cast<std::size_t>(cfg_.phy.tx);
        fc.pilot_repeats = static_cast<std::size_t>(cfg_.phy.pilot_repeats);
        t.overhead_symbols =
            static_cast<double>(phy::FrameLayout(fc).payload_offset(0)) / static_cast<double>(num.symbol_len());
        return t;
    }

    // The layers as the controller sees them: rank, reals sent per kept component, SOFT importance.
    static std::vector<control::LayerGeometry> geometry(const Workspace& ws, const learn::Adapter& global) {
        std::vector<control::LayerGeometry> out;
        for (const auto& l : global.layers) {
            control::LayerGeometry g;
            g.rank = static_cast<std::size_t>(l.rank);
            const bool a = ws.rule->shares(learn::LoraFactor::A), b = ws.rule->shares(learn::LoraFactor::B);
            g.values_per_rank = static_cast<std::size_t>((a ? l.in : 0) + (b ? l.out : 0));
            g.importance = learn::rank_importance(l);
            out.push_back(std::move(g));
        }
        return out;
    }

    RoundDecision decide(const Workspace& ws, const learn::Adapter& global, const std::vector<std::int64_t>& selected) {
        RoundDecision d;
        d.rho = cfg_.soft.rho;
        if (!tsfa_)
            return d;
        control::RoundInput in;
        const double total_power = cfg_.device.power * static_cast<double>(cfg_.phy.occupied);
        const std::size_t band = data_.back();
        for (const auto c : selected) {
            control::DeviceReport r;
            r.budget = total_power;
            r.compute_time = ws.compute_s;
            const auto it = csi_.find(c);
            if (it != csi_.end() && !it->second.empty()) {
                // The measured carriers of the band it last used, repeated over the candidate band.
                for (std::size_t m = 0; m < band; ++m)
                    r.gain.push_back(it->second[m % it->second.size()]);
            } else {
                // Not measured yet: the configured mean SNR (per carrier at the full band, power device.power).
                const double snr = std::pow(10.0, client_mean_snr_db(cfg_, c) / 10.0);
                r.gain.assign(band, control::gain_from_snr(snr, kReceiverNoiseVar, cfg_.device.power));
            }
            in.devices.push_back(std::move(r));
        }
        in.noise_var = noise_var_ > 0.0 ? noise_var_ : kReceiverNoiseVar;
        in.layers = geometry(ws, global);
        in.timing = timing(selected.size());
        const auto dec = tsfa_->decide(in);
        d.rho = dec.rho;
        if (cfg_.mode == "digital") {
            d.shares = dec.shares;
        } else {
            const auto pos = std::find(data_.begin(), data_.end(), dec.carriers);
            d.occupied = occupied_[static_cast<std::size_t>(pos - data_.begin())];
            d.carrier_budget = total_power / static_cast<double>(d.occupied);
        }
        return d;
    }

    void measured(const std::vector<std::int64_t>& clients, const RadioReport& rep) {
        for (std::size_t k = 0; k < clients.size() && k < rep.device_csi.size(); ++k)
            if (!rep.device_csi[k].empty())
                csi_[clients[k]] = rep.device_csi[k];
        if (std::isfinite(rep.noise_var) && rep.noise_var > 0.0)
            noise_var_ = rep.noise_var;
    }

    // The realised latency of the round; returns the queue backlog after it.
    double observe(double latency_s) {
        if (tsfa_)
            return tsfa_->observe_latency(latency_s);
        return queue_.push(latency_s);
    }

    // Everything a resumed run needs to decide as the uninterrupted one: the controller's queue and the CSI it
    // remembers per client (JSON; doubles are written with enough digits to read back exactly).
    std::string state() const {
        if (!tsfa_)
            return "";
        nlohmann::json j;
        j["controller"] = tsfa_->serialize();
        j["noise_var"] = noise_var_;
        for (const auto& [c, g] : csi_)
            j["csi"][std::to_string(c)] = g;
        return j.dump();
    }
    void restore(const std::string& blob) {
        if (!tsfa_ || blob.empty())
            return;
        try {
            const auto j = nlohmann::json::parse(blob);
            tsfa_->deserialize(j.at("controller").get<std::string>());
            noise_var_ = j.at("noise_var").get<double>();
            csi_.clear();
            if (j.contains("csi"))
                for (const auto& [c, g] : j.at("csi").items())
                    csi_[std::stoll(c)] = g.get<std::vector<double>>();
        } catch (const nlohmann::json::exception& e) {
            throw std::runtime_error(std::string("checkpoint: the controller state is not readable: ") + e.what());
        }
    }

private:
    SimConfig cfg_;
    control::VirtualQueue queue_;
    std::unique_ptr<control::Controller> tsfa_;
    std::vector<std::int64_t> occupied_;
    std::vector<std::size_t> data_;
    std::map<std::int64_t, std::vector<double>> csi_;  // per client: |ĥ|² on the carriers it last used
    double noise_var_ = 0.0;
};

// Digital shares for the clients that actually answered: their decided shares (clients that dropped out give
// their share back to no one: the band stays partly idle, as it would on air).
std::vector<double> equal_shares_of(const RoundDecision& d, const std::vector<std::int64_t>& selected,
                                    const std::vector<std::int64_t>& sending) {
    std::vector<double> s;
    for (const auto c : sending) {
        const auto it = std::find(selected.begin(), selected.end(), c);
        s.push_back(d.shares[static_cast<std::size_t>(it - selected.begin())]);
    }
    return s;
}

// The clients' halves in this process, one after another on the workspace's model.
class LocalPool final : public ClientPool {
public:
    explicit LocalPool(Workspace& ws) : ws_(ws) {}
    std::vector<ClientResult> run_round(std::int64_t round, const std::vector<std::int64_t>& selected,
                                        const learn::Adapter& global, const learn::RankSupport* support,
                                        const std::map<std::int64_t, learn::Adapter>& local) override {
        std::vector<ClientResult> out;
        for (const auto c : selected) {
            const auto it = local.find(c);
            out.push_back(train_client(ws_, c, round, global, it == local.end() ? nullptr : &it->second, support));
        }
        return out;
    }

private:
    Workspace& ws_;
};

}  // namespace

void apply_offline_rank(Workspace& ws) {
    const auto candidates = ws.cfg.rank_candidates();
    if (candidates.empty())
        return;
    // TSFA's offline stage: the structural rank from the clients' mean SNRs (the channel statistics the
    // configuration states) and the latency budget, by the bound proxy of docs/math.md.
    Control probe(ws.cfg);
    const auto shape = initial_global(ws);
    control::OfflineInput in;
    in.reference_carriers = probe.timing(1).carrier_counts.back();
    for (std::int64_t c = 0; c < ws.cfg.clients; ++c) {
        in.mean_snr.push_back(std::pow(10.0, client_mean_snr_db(ws.cfg, c) / 10.0));
        in.compute_time.push_back(ws.compute_s);
    }
    const auto geo = Control::geometry(ws, shape);
    for (std::size_t l = 0; l < shape.layers.size(); ++l)
        in.layers.push_back(control::OfflineLayer{static_cast<std::size_t>(shape.layers[l].in),
                                                  static_cast<std::size_t>(shape.layers[l].out),
                                                  geo[l].values_per_rank});
    in.timing = probe.timing(static_cast<std::size_t>(ws.cfg.clients));
    for (const auto r : candidates)
        in.rank_candidates.push_back(static_cast<std::size_t>(r));
    const auto choice = control::choose_rank(in, probe.controller_config());
    nlohmann::json j;
    j["chosen_rank"] = choice.rank;
    j["proxy"] = choice.proxy;
    for (const auto& c : choice.candidates) {
        j["candidates"].push_back({{"rank", c.rank}, {"proxy", c.proxy}, {"truncation_error", c.truncation_error},
                                   {"aggregation_nmse", c.aggregation_nmse}, {"latency_s", c.latency},
                                   {"carriers", c.carriers}});
        spdlog::info("offline rank stage: rank {:>3}: proxy {:.4g} (truncation {:.3g}, aggregation NMSE {:.3g}, "
                     "latency {:.4g} s)", c.rank, c.proxy, c.truncation_error, c.aggregation_nmse, c.latency);
    }
    spdlog::info("offline rank stage: structural rank {} (configured lora.rank {})", choice.rank, ws.cfg.lora.rank);
    if (static_cast<std::int64_t>(choice.rank) != ws.cfg.lora.rank) {
        SimConfig cfg = ws.cfg;
        cfg.lora.rank = static_cast<std::int64_t>(choice.rank);
        ws = make_workspace(cfg);
    }
    ws.offline_rank = j.dump();
}

const std::vector<std::string>& round_columns() {
    static const std::vector<std::string> c = {
        "round",     "mode",       "clients",     "snr_db",       "nmse_db",    "nmse_analytic_db",
        "sparsity",  "subcarriers", "channel_uses", "cum_channel_uses", "airtime_s", "latency_s",
        "cum_latency_s", "train_loss", "test_accuracy", "test_perplexity", "queue", "wall_s",
        "covariance", "payload",   "dropped",     "delivered"};
    return c;
}

std::string round_csv_line(const RoundRow& r) {
    std::string s;
    auto add = [&](const std::string& v) { s += (s.empty() ? "" : ",") + v; };
    add(std::to_string(r.round));
    add(r.mode);
    add(std::to_string(r.clients));
    add(num(r.snr_db, 5));
    add(num(r.nmse_db, 5));
    add(num(r.nmse_analytic_db, 5));
    add(num(r.sparsity, 6));
    add(std::to_string(r.subcarriers));
    add(std::to_string(r.channel_uses));
    add(std::to_string(r.cum_channel_uses));
    add(num(r.airtime_s, 6));
    add(num(r.latency_s, 6));
    add(num(r.cum_latency_s, 8));
    add(num(r.train_loss, 6));
    add(num(r.test_accuracy, 6));
    add(num(r.test_perplexity, 6));
    add(num(r.queue, 6));
    add(num(r.wall_s, 4));
    add(num(r.covariance, 6));
    add(std::to_string(r.payload));
    add(std::to_string(r.dropped));
    add(r.delivered ? "1" : "0");
    return s;
}

void check_run_folder(const RunOptions& opt) {
    if (opt.out_dir.empty())
        throw ConfigError("no run folder given (--out)");
    const fs::path out(opt.out_dir);
    if (opt.resume && !fs::exists(out / "config.yaml"))
        throw ConfigError("cannot resume: '" + out.string() + "' holds no config.yaml (not a run folder)");
    if (!opt.resume && !opt.force && fs::exists(out) && !fs::is_empty(out))
        throw ConfigError("run folder '" + out.string() + "' exists; use --resume to continue it or --force to replace it");
}

RunSummary run_rounds(const RunOptions& opt, Workspace& ws, ClientPool& pool, std::unique_ptr<Radio> radio) {
    const auto wall_start = std::chrono::steady_clock::now();
    const SimConfig& cfg = ws.cfg;
    check_run_folder(opt);
    const fs::path out(opt.out_dir);
    const fs::path ck_dir = out / "checkpoints";
    const fs::path ck_path = ck_dir / "latest.safetensors";
    const fs::path csv_path = out / "rounds.csv";

    // ---- the run folder: new, replaced, or resumed -------------------------------------------------------
    std::int64_t start_round = 0;
    std::optional<learn::Checkpoint> resumed;
    if (opt.resume) {
        if (!fs::exists(out / "config.yaml"))
            throw ConfigError("cannot resume: '" + out.string() + "' holds no config.yaml (not a run folder)");
        SimConfig stored;
        load_yaml_file(stored, (out / "config.yaml").string());
        const auto diff = first_difference(stored, cfg);
        if (!diff.empty())
            throw ConfigError("cannot resume '" + out.string() + "': it was run with " + diff + " = " +
                              get_key(stored, diff) + ", now " + get_key(cfg, diff) +
                              " (resume with the same configuration, or start a new run folder)");
        if (fs::exists(ck_path)) {
            resumed = learn::load_checkpoint(ck_path.string());
            start_round = resumed->round;
        }
    } else if (fs::exists(out) && !fs::is_empty(out)) {
        if (!opt.force)
            throw ConfigError("run folder '" + out.string() +
                              "' exists; use --resume to continue it or --force to replace it");
        for (const char* name : {"config.yaml", "rounds.csv", "summary.json", "adapter.safetensors"})
            fs::remove(out / name);
        fs::remove_all(ck_dir);
    }
    fs::create_directories(ck_dir);
    write_file_atomic(out / "config.yaml", to_yaml(cfg));

    // ---- radio, rule, controller --------------------------------------------------------------------------
    if (!radio)
        radio = make_radio(cfg);
    const auto& rule = ws.rule;
    const auto& sizes = ws.sizes;
    auto& task = ws;
    Control control(cfg);
    spdlog::info("{} task, {} clients ({} partition, sizes {}..{}), mode {}, rule {}, {} rounds", cfg.task,
                 cfg.clients, cfg.data.partition, *std::min_element(sizes.begin(), sizes.end()),
                 *std::max_element(sizes.begin(), sizes.end()), cfg.mode, cfg.aggregation, cfg.rounds);

    learn::Adapter global = initial_global(ws);
    std::map<std::int64_t, learn::Adapter> local;  // clients' own adapters (fedsa's B)
    std::uint64_t cum_uses = 0;
    double cum_latency = 0.0;
    if (resumed) {
        resumed->global.check_same_shape(global, "checkpoint '" + ck_path.string() + "'");
        global = resumed->global;
        for (auto& c : resumed->clients)
            local[c.id] = std::move(c.adapter);
        cum_uses = std::stoull(resumed->info.at("cum_channel_uses"));
        cum_latency = std::strtod(resumed->info.at("cum_latency_s").c_str(), nullptr);
        control.restore(resumed->controller_state);
        spdlog::info("resuming '{}' after round {}", out.string(), start_round);
    }

    // rounds.csv: the header and the rows of the rounds already done (later rows are run again).
    {
        std::string text;
        for (const auto& c : round_columns())
            text += (text.empty() ? "" : ",") + c;
        text += "\n";
        if (resumed && fs::exists(csv_path)) {
            std::istringstream in(read_file(csv_path));
            std::string line;
            std::getline(in, line);  // header
            while (std::getline(in, line)) {
                const auto comma = line.find(',');
                if (comma == std::string::npos)
                    continue;
                const long long r = std::strtoll(line.substr(0, comma).c_str(), nullptr, 10);
                if (r >= 1 && r <= start_round)
                    text += line + "\n";
            }
        }
        write_file_atomic(csv_path, text);
    }
    std::FILE* csv = std::fopen(csv_path.c_str(), "a");
    if (!csv)
        throw std::runtime_error("cannot append to '" + csv_path.string() + "'");
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> csv_guard(csv, std::fclose);

    auto eval_adapter = [&](const learn::Adapter& g) {
        if (!rule->keeps_local(learn::LoraFactor::B) || local.empty())
            return g;
        // fedsa: the global A with the data-weighted mean of the clients' own B (a single model to evaluate).
        learn::Adapter a = g;
        for (auto& l : a.layers)
            std::fill(l.B.begin(), l.B.end(), 0.0f);
        std::int64_t total = 0;
        for (const auto& [id, ad] : local)
            total += sizes[static_cast<std::size_t>(id)];
        for (const auto& [id, ad] : local) {
            learn::Adapter b = ad;
            for (std::size_t l = 0; l < b.layers.size(); ++l)
                std::fill(b.layers[l].A.begin(), b.layers[l].A.end(), 0.0f);
            learn::adapter_add_scaled(a, b, static_cast<double>(sizes[static_cast<std::size_t>(id)]) / total);
        }
        return a;
    };
    auto evaluate_global = [&]() {
        learn::load_adapter(*task.model, eval_adapter(global));
        return learn::evaluate(*task.model, task.test, cfg.eval.batch, {}, static_cast<int>(cfg.train.threads));
    };

    RunSummary sum;
    sum.out_dir = out.string();
    sum.resumed_from = start_round;
    {
        // The frozen base: the adapter's product is zero before training (B = 0), so this is the base model.
        const auto base = learn::evaluate(*task.model, task.test, cfg.eval.batch, {}, static_cast<int>(cfg.train.threads));
        sum.base_test_accuracy = task.vision ? base.accuracy : kNaN;
        sum.base_test_perplexity = task.vision ? kNaN : base.perplexity;
        spdlog::info("frozen base on {} test examples: {}", task.test.size(),
                     task.vision ? "accuracy " + num(base.accuracy, 4) : "perplexity " + num(base.perplexity, 4));
    }

    const double compute_s = ws.compute_s;

    const auto [kill_round, kill_client] = fault_kill_point();

    Progress progress;
    progress.enabled = opt.progress;
    progress.tty = opt.progress && isatty(STDERR_FILENO);
    progress.total = cfg.rounds;
    progress.done_at_start = start_round;

    sum.best_test_accuracy = kNaN;
    sum.best_test_perplexity = kNaN;
    sum.final_test_accuracy = kNaN;
    sum.final_test_perplexity = kNaN;
    for (std::int64_t round = start_round + 1; round <= cfg.rounds; ++round) {
        const auto t0 = std::chrono::steady_clock::now();
        RoundRow row;
        row.round = round;
        row.mode = cfg.mode;

        // Selection: every client, or a seeded draw without replacement.
        std::vector<std::int64_t> selected;
        if (cfg.clients_per_round == 0 || cfg.clients_per_round == cfg.clients) {
            for (std::int64_t c = 0; c < cfg.clients; ++c)
                selected.push_back(c);
        } else {
            std::vector<std::int64_t> all(static_cast<std::size_t>(cfg.clients));
            for (std::int64_t c = 0; c < cfg.clients; ++c)
                all[static_cast<std::size_t>(c)] = c;
            std::mt19937_64 rng(learn::mix_seed(cfg.seed, kTagSelect, static_cast<std::uint64_t>(round)));
            for (std::int64_t i = 0; i < cfg.clients_per_round; ++i) {
                const auto j = static_cast<std::size_t>(i) +
                               uniform_index(rng, static_cast<std::uint64_t>(cfg.clients - i));
                std::swap(all[static_cast<std::size_t>(i)], all[j]);
            }
            selected.assign(all.begin(), all.begin() + cfg.clients_per_round);
            std::sort(selected.begin(), selected.end());
        }

        // This round's sparsity and bandwidth (fixed, or TSFA from the CSI measured so far), and the support every
        // client sends (SOFT).
        const auto decision = control.decide(ws, global, selected);
        std::optional<learn::RankSupport> support;
        if (decision.rho < 1.0)
            support = cfg.soft.support == "top"
                          ? learn::select_support_top(global, decision.rho)
                          : learn::select_support_seeded(global, decision.rho, cfg.seed, round);
        const learn::RankSupport* sp = support ? &*support : nullptr;

        // Clients: local training from the global adapter, payload of the shared coordinates.
        if (round == kill_round && kill_client == kFaultServer) {
            spdlog::warn("fault injection: SIGKILL of the server in round {}", round);
            std::raise(SIGKILL);
        }
        progress.clients(round, selected.size());
        const auto results = pool.run_round(round, selected, global, sp, local);
        RadioRound rr;
        rr.round = round;
        rr.subcarriers = decision.occupied;
        rr.carrier_budget = decision.carrier_budget;
        rr.shares = decision.shares;
        std::vector<learn::Adapter> trained;
        std::vector<std::int64_t> kept_sizes;
        std::vector<double> losses;
        std::vector<std::int64_t> trained_ids;
        row.dropped = static_cast<std::int64_t>(selected.size() - results.size());
        for (const auto& res : results) {
            if (!res.ok) {
                spdlog::warn("round {}: client {} left out: {}", round, res.client, res.error);
                ++row.dropped;
                continue;
            }
            const auto bad = std::find_if(res.payload.begin(), res.payload.end(),
                                          [](float v) { return !std::isfinite(v); });
            if (bad != res.payload.end() || (!rr.payloads.empty() && res.payload.size() != rr.payloads[0].size())) {
                spdlog::warn("round {}: client {} left out: {}", round, res.client,
                             bad != res.payload.end()
                                 ? "its update is not finite (entry " +
                                       std::to_string(bad - res.payload.begin()) + ")"
                                 : "its update has " + std::to_string(res.payload.size()) + " values, expected " +
                                       std::to_string(rr.payloads[0].size()));
                ++row.dropped;
                continue;
            }
            rr.clients.push_back(res.client);
            rr.payloads.push_back(res.payload);
            kept_sizes.push_back(sizes[static_cast<std::size_t>(res.client)]);
            losses.push_back(res.loss);
            if (!res.trained.empty()) {
                trained.push_back(res.trained);
                trained_ids.push_back(res.client);
            }
        }
        if (!rr.shares.empty() && rr.shares.size() != rr.clients.size())
            rr.shares = equal_shares_of(decision, selected, rr.clients);

        RadioReport rep;
        if (!rr.payloads.empty()) {
            rr.weights = learn::aggregation_weights(kept_sizes);
            row.payload = static_cast<std::int64_t>(rr.payloads[0].size());
            std::vector<float> estimate;
            rep = radio->aggregate(rr, estimate);
            if (rep.delivered) {
                rule->apply(global, estimate, sp);
                if (rule->keeps_local(learn::LoraFactor::B))
                    for (std::size_t i = 0; i < trained.size(); ++i)
                        local[trained_ids[i]] = trained[i];
                control.measured(rr.clients, rep);
            } else {
                spdlog::warn("round {}: the receiver lost the aggregate ({}); the global adapter is unchanged", round,
                             rep.failure);
            }
            for (std::size_t i = 0; i < losses.size(); ++i)
                row.train_loss += rr.weights[i] * losses[i];
            // What separate averaging loses, from the clients' trained adapters (those trained in this process).
            row.covariance = trained.size() == rr.clients.size() && !trained.empty()
                                 ? learn::factor_covariance(trained, rr.weights).total
                                 : kNaN;
        } else {
            rep.delivered = false;
            spdlog::warn("round {}: no client update to aggregate; the global adapter is unchanged", round);
        }
        row.delivered = rep.delivered && !rr.payloads.empty();
        row.clients = static_cast<std::int64_t>(rr.payloads.size());
        row.snr_db = rep.snr_db;
        row.nmse_db = db(rep.nmse);
        row.nmse_analytic_db = db(rep.nmse_analytic);
        row.subcarriers = rep.subcarriers;
        row.channel_uses = rep.channel_uses;
        cum_uses += rep.channel_uses;
        row.cum_channel_uses = cum_uses;
        row.airtime_s = rep.airtime_s;
        row.latency_s = compute_s + rep.airtime_s;
        row.sparsity = decision.rho;
        row.queue = control.observe(row.latency_s);
        cum_latency += row.latency_s;
        row.cum_latency_s = cum_latency;

        row.test_accuracy = kNaN;
        row.test_perplexity = kNaN;
        if (round % cfg.eval.every == 0 || round == cfg.rounds) {
            const auto ev = evaluate_global();
            if (task.vision)
                row.test_accuracy = ev.accuracy;
            else
                row.test_perplexity = ev.perplexity;
        }
        row.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

        std::fputs((round_csv_line(row) + "\n").c_str(), csv);
        std::fflush(csv);
        fsync(fileno(csv));
        if (round % cfg.checkpoint.every == 0 || round == cfg.rounds) {
            learn::Checkpoint ck;
            ck.round = round;
            ck.rule = rule->name();
            ck.global = global;
            for (const auto& [id, ad] : local)
                ck.clients.push_back(learn::ClientState{id, ad, {}});
            ck.info["cum_channel_uses"] = std::to_string(cum_uses);
            char buf[40];
            std::snprintf(buf, sizeof buf, "%.17g", cum_latency);
            ck.info["cum_latency_s"] = buf;
            ck.info["mode"] = cfg.mode;
            ck.controller_state = control.state();
            learn::save_checkpoint(ck_path.string(), ck);
        }
        progress.round(row, task.vision);
        if (opt.on_round)
            opt.on_round(row);
        if (task.vision && std::isfinite(row.test_accuracy)) {
            sum.final_test_accuracy = row.test_accuracy;
            sum.best_test_accuracy = std::isfinite(sum.best_test_accuracy)
                                         ? std::max(sum.best_test_accuracy, row.test_accuracy)
                                         : row.test_accuracy;
        }
        if (!task.vision && std::isfinite(row.test_perplexity)) {
            sum.final_test_perplexity = row.test_perplexity;
            sum.best_test_perplexity = std::isfinite(sum.best_test_perplexity)
                                           ? std::min(sum.best_test_perplexity, row.test_perplexity)
                                           : row.test_perplexity;
        }
    }
    csv_guard.reset();

    // A resumed run that had nothing left to do still reports its final figures.
    if (start_round >= cfg.rounds || (!std::isfinite(sum.final_test_accuracy) && !std::isfinite(sum.final_test_perplexity))) {
        const auto ev = evaluate_global();
        sum.final_test_accuracy = task.vision ? ev.accuracy : kNaN;
        sum.final_test_perplexity = task.vision ? kNaN : ev.perplexity;
    }
    // Best and mean figures over the whole run, including rounds done before a resume: from rounds.csv.
    {
        std::istringstream in(read_file(csv_path));
        std::string line;
        std::getline(in, line);
        double nsum = 0.0;
        std::int64_t nn = 0;
        auto column = [](const char* name) {
            const auto& c = round_columns();
            return static_cast<std::size_t>(std::find(c.begin(), c.end(), name) - c.begin());
        };
        const std::size_t c_nmse = column("nmse_db"), c_acc = column("test_accuracy"),
                          c_ppl = column("test_perplexity");
        while (std::getline(in, line)) {
            std::vector<std::string> cells;
            std::stringstream ls(line);
            std::string cell;
            while (std::getline(ls, cell, ','))
                cells.push_back(cell);
            cells.resize(round_columns().size());
            if (!cells[c_nmse].empty()) {
                nsum += std::strtod(cells[c_nmse].c_str(), nullptr);
                ++nn;
            }
            if (task.vision && !cells[c_acc].empty()) {
                const double a = std::strtod(cells[c_acc].c_str(), nullptr);
                sum.best_test_accuracy = std::isfinite(sum.best_test_accuracy) ? std::max(sum.best_test_accuracy, a) : a;
            }
            if (!task.vision && !cells[c_ppl].empty()) {
                const double p = std::strtod(cells[c_ppl].c_str(), nullptr);
                sum.best_test_perplexity =
                    std::isfinite(sum.best_test_perplexity) ? std::min(sum.best_test_perplexity, p) : p;
            }
        }
        sum.mean_nmse_db = nn > 0 ? nsum / static_cast<double>(nn) : kNaN;
    }

    sum.rounds = cfg.rounds;
    sum.total_channel_uses = cum_uses;
    sum.total_latency_s = cum_latency;
    sum.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    learn::load_adapter(*task.model, global);
    sum.adapter_path = (out / "adapter.safetensors").string();
    task.model->save_lora(sum.adapter_path);

    auto jnum = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
    nlohmann::json j;
    j["run"] = out.filename().string().empty() ? out.parent_path().filename().string() : out.filename().string();
    j["mode"] = cfg.mode;
    j["task"] = cfg.task;
    j["rounds"] = cfg.rounds;
    j["clients"] = cfg.clients;
    j["seed"] = cfg.seed;
    j["aggregation"] = cfg.aggregation;
    j["base_test_accuracy"] = jnum(sum.base_test_accuracy);
    j["base_test_perplexity"] = jnum(sum.base_test_perplexity);
    j["final_test_accuracy"] = jnum(sum.final_test_accuracy);
    j["final_test_perplexity"] = jnum(sum.final_test_perplexity);
    j["best_test_accuracy"] = jnum(sum.best_test_accuracy);
    j["best_test_perplexity"] = jnum(sum.best_test_perplexity);
    j["total_channel_uses"] = sum.total_channel_uses;
    j["total_latency_s"] = sum.total_latency_s;
    j["mean_nmse_db"] = jnum(sum.mean_nmse_db);
    j["wall_s"] = sum.wall_s;
    j["resumed_from_round"] = sum.resumed_from;
    j["base_model"] = fs::absolute(task.base_path).string();
    j["adapter"] = sum.adapter_path;
    j["lora_rank"] = cfg.lora.rank;
    if (!ws.offline_rank.empty())
        j["offline_rank"] = nlohmann::json::parse(ws.offline_rank);
    write_file_atomic(out / "summary.json", j.dump(2) + "\n");
    pool.finish();
    return sum;
}

RunSummary run_simulation(const RunOptions& opt) {
    opt.config.validate();
    if (opt.config.transport == "flowgraph")
        return run_sim_with_processes(opt);  // radio and clients as separate processes (federation.cpp)
    check_run_folder(opt);  // before any pretraining: a wrong folder fails at once
    Workspace ws = make_workspace(opt.config);
    apply_offline_rank(ws);
    LocalPool pool(ws);
    return run_rounds(opt, ws, pool);
}

}  // namespace fedlora::sim
