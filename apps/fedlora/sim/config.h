// The experiment configuration of `fedlora sim` (and of `fedlora server` / `fedlora client`): every key has a
// default, a YAML file may set any of them, `--set key=value` overrides, and unknown keys or out-of-range values are
// rejected with a ConfigError that names the key. The resolved configuration is written to the run folder as YAML
// (config.yaml) and reads back to the same values.
//
// Keys are dotted paths ("train.lr"); in YAML they nest (train: {lr: 0.003}). The list of keys with their defaults
// and meaning is `config_help()` (printed by `fedlora sim --help-config`) and docs/sim.md.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fedlora::sim {

class ConfigError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct SimConfig {
    std::string task = "vision";  // vision | text
    std::string mode = "aircomp";  // ideal | aircomp | aircomp-analytic | digital
    std::string transport = "inprocess";  // inprocess | flowgraph (radio and clients as separate processes)
    std::uint64_t seed = 1;
    std::int64_t rounds = 50;
    std::int64_t clients = 20;
    std::int64_t clients_per_round = 0;  // 0: every client every round

    struct Data {
        std::string partition = "dirichlet";  // iid | dirichlet | category
        double alpha = 0.5;
        std::int64_t min_size = 10;
        std::string dir;                      // empty: Debian's directory of the task's data
        std::int64_t train_examples = 0;      // 0: the whole fine-tuning pool; N: its first N examples
        std::int64_t test_examples = 0;       // 0: the whole test set; N: its first N examples
        std::int64_t block = 32;              // text: bytes per example
    } data;

    struct Pretrain {
        std::string dir = "pretrained";  // cache of base models (fedlora pretrain)
        std::string path;                // a base checkpoint to use instead (no pretraining)
        std::uint64_t seed = 0;
        std::int64_t steps = 0;  // 0: the recipe's
    } pretrain;

    struct Lora {
        std::int64_t rank = 8;
        double alpha = 16.0;
        double dropout = 0.0;
        std::vector<std::string> targets;  // empty: the task's default
    } lora;

    struct Train {
        std::int64_t local_steps = 10;
        std::int64_t batch = 32;
        std::string optimizer = "adamw";
        double lr = 3e-3;
        double weight_decay = 0.0;
        double clip_norm = 1.0;
        std::int64_t threads = 0;
    } train;

    std::string aggregation = "fedit";  // fedit | ffa | fedsa

    struct Soft {
        double rho = 1.0;
        double lambda = 0.0;
        std::string support = "top";  // top | seeded
    } soft;

    struct Channel {
        double snr_db = 20.0;        // mean receive SNR per subcarrier of a device at full power
        double snr_spread_db = 3.0;  // devices uniformly within ±spread of snr_db (a seeded draw per device)
        std::string profile = "EPA";
        double doppler_hz = 0.0;
        double cfo = 0.05;            // common carrier offset, subcarrier spacings
        double phase_noise_hz = 0.0;  // server oscillator linewidth
        double shadowing_db = 0.0;    // per-round log-normal shadowing of each client's mean SNR (std. dev., dB)
    } channel;

    struct Phy {
        std::int64_t fft = 256;
        std::int64_t cp = 32;
        std::int64_t occupied = 200;
        std::int64_t pilot_spacing = 20;
        std::int64_t pilot_repeats = 2;
        double sample_rate = 15.36e6;
        std::string policy = "mmse";
        std::string estimator = "sparse";
        std::int64_t streams = 0;
        std::int64_t tx = 1;
        std::int64_t rx = 1;
        bool perfect_csi = false;
    } phy;

    struct Digital {
        std::int64_t bits = 8;
        std::string rate = "shannon";  // shannon | mcs
    } digital;

    struct Device {
        double gflops = 20.0;  // sustained training throughput of an edge device (latency model)
        double power = 1.0;    // transmit budget per subcarrier
    } device;

    // The devices' radios. Calibration: every transmitting client's samples pass through the TransmitCorrector of
    // its radio's alignment in the calibration file (as the gr-fedlora aircomp_transmitter applies it). The
    // simulator has no hardware: its radios are virtual, with the per-client timing offsets and CFOs below
    // injected by the channel simulator, and the file is expected to describe those radios (e.g. written by
    // `fedlora calibrate` with the same impairments). Mode aircomp only.
    struct Radio {
        std::string calibration;                  // calibration file (empty: none)
        std::vector<std::string> serials;         // serial of client c's radio: entry c (empty: the file's order)
        double frequency_hz = 2.45e9;             // LO frequency of the calibration's lookups
        std::vector<std::string> timing_offsets;  // per client, samples (empty: none)
        std::vector<std::string> cfo_offsets_hz;  // per client, Hz on top of channel.cfo (empty: none)
    } radio;

    struct Controller {
        std::string name = "fixed";         // fixed | tsfa
        double v = 1.0;                     // TSFA penalty weight V (s²)
        double latency_budget_s = 1.0;      // T̄: long-term average latency per round
        std::vector<std::string> rho_grid;  // candidate ρ (empty: 1/r, 2/r, ..., 1)
        double g_th = 0.1;                  // truncation threshold of the controller's AirComp model
        std::string drift = "exact";        // exact (½ max(Z + T − T̄, 0)²) | linear (Z·T, Neely's bound)
        std::vector<std::string> rank_candidates;  // TSFA offline stage: ranks to choose from (empty: lora.rank)
    } controller;

    struct Server {
        double round_deadline_s = 120.0;  // clients that have not answered by then are left out of the round
        double join_timeout_s = 300.0;    // how long the server waits for the clients to join
        double heartbeat_s = 1.0;         // heartbeat period; a client silent for 5 periods counts as gone
    } server;

    struct Eval {
        std::int64_t every = 1;
        std::int64_t batch = 500;
    } eval;

    struct Checkpoint {
        std::int64_t every = 1;
    } checkpoint;

    // controller.rho_grid and controller.rank_candidates as numbers (ConfigError naming the key otherwise).
    std::vector<double> rho_grid() const;
    std::vector<std::int64_t> rank_candidates() const;
    // radio.timing_offsets and radio.cfo_offsets_hz as numbers, one per client or none (ConfigError naming the key).
    std::vector<double> radio_timing_offsets() const;
    std::vector<double> radio_cfo_offsets_hz() const;
    // The LoRA targets in force (lora.targets or the task's default).
    std::vector<std::string> lora_targets() const;
    // Checks every value and the combinations (e.g. clients_per_round <= clients); throws ConfigError naming the key.
    void validate() const;
};

// Sets one key from its textual value ("train.lr", "0.001"; lists comma-separated). Throws ConfigError naming the
// key: unknown key (with the known keys of its section), unparsable or out-of-range value.
void set_key(SimConfig& cfg, const std::string& key, const std::string& value);
// "key=value" as given to --set.
void apply_override(SimConfig& cfg, const std::string& assignment);
// Reads a YAML file over `cfg` (keys absent from the file keep their values). Throws ConfigError naming the file
// and the key or the YAML error (line, column).
void load_yaml_file(SimConfig& cfg, const std::string& path);
void load_yaml_text(SimConfig& cfg, const std::string& text, const std::string& origin = "config");
// The whole configuration as YAML (nested maps, every key).
std::string to_yaml(const SimConfig& cfg);
// The configuration from its layers, as the CLI gives them: defaults < YAML file < the --mode / --task / --seed
// shortcuts < --set overrides (in order); validated. Empty strings and a null seed leave a layer out.
struct ConfigSources {
    std::string file;
    std::string mode;
    std::string task;
    const std::uint64_t* seed = nullptr;
    std::vector<std::string> sets;
};
SimConfig resolve_config(const ConfigSources& sources);

// One line per key: "key (default): meaning".
std::string config_help();
// Every key, in order.
std::vector<std::string> config_keys();
// The textual value of a key (as to_yaml writes it).
std::string get_key(const SimConfig& cfg, const std::string& key);

}  // namespace fedlora::sim
