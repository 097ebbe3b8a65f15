// The uplink of a federated round as the experiment sees it: K selected clients each hand over one payload (the
// shared LoRA coordinates of their update, unweighted) and the server gets back an estimate of the weighted sum
// Σ_k p_k x_k plus what the receiver measured. One implementation per `mode`:
//   ideal             the exact sum (double accumulation), no channel
//   aircomp           the waveform-level AirComp round of fedlora_phy (preamble, pilots, estimation, power
//                     control, superposition through the impaired multi-user channel, reception)
//   aircomp-analytic  the same round on the effective-noise model (aircomp_round_effective)
//   digital           OFDMA: each device quantises its payload to q bits (stochastic, unbiased) and gets a share
//                     of the band; the rate follows from its SNR; the server sums the dequantised payloads
// Every round draws a new block-fading channel from (seed, round); a client's mean SNR is its own for the whole run
// (a seeded draw within ±snr_spread_db of channel.snr_db), so a resumed run sees the same channels.
// With `transport: flowgraph` (mode aircomp only) the same round runs in a radio process, through the gr-fedlora
// loopback flowgraph (radio_flowgraph.cpp), with the same configuration and channel seed: the same estimate.
// No LibTorch here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "fedlora/phy/aircomp_waveform.h"
#include "fedlora/phy/calibration.h"
#include "fedlora/phy/channel.h"
#include "fedlora/phy/numerology.h"

namespace fedlora::sim {

struct RadioRound {
    std::int64_t round = 0;                      // 1-based
    std::vector<std::int64_t> clients;           // ids of the transmitting clients
    std::vector<std::vector<float>> payloads;    // one per client, all the same length
    std::vector<double> weights;                 // aggregation weights p_k
    std::int64_t subcarriers = 0;                // occupied subcarriers this round (0: phy.occupied)
    std::vector<double> shares;                  // digital: bandwidth shares β_k (empty: equal)
    double carrier_budget = 0.0;                 // power budget per occupied carrier (0: device.power)
};

struct RadioReport {
    bool delivered = true;          // false: the receiver found no frame (the round's aggregate is lost)
    std::string failure;            // why, when not delivered
    double nmse = 0.0;              // measured ‖ŝ − s‖² / ‖s‖² (NaN in ideal mode)
    double nmse_analytic = 0.0;     // the policy's analytic NMSE (NaN where there is none)
    double snr_db = 0.0;            // mean per-device receive SNR the server measured (dB; NaN in ideal mode)
    std::vector<double> device_snr_db;       // per transmitting client, as measured
    std::vector<double> device_gain;         // per client: mean |h|² over the occupied carriers (measured CSI)
    std::vector<std::vector<double>> device_csi;  // per client: |ĥ[m]|² on each occupied carrier (measured)
    double noise_var = 0.0;                  // measured noise variance per subcarrier
    std::int64_t subcarriers = 0;
    std::uint64_t channel_uses = 0;  // resource elements the round occupies (OFDM symbols × occupied carriers)
    std::uint64_t ofdm_symbols = 0;
    double airtime_s = 0.0;
    double truncated_fraction = 0.0;
};

class Radio {
public:
    virtual ~Radio() = default;
    virtual std::string mode() const = 0;
    // Fills `estimate` (payload length) with the estimate of Σ p_k x_k. A payload holding a NaN or an infinity is
    // rejected before anything is sent (std::invalid_argument naming the client).
    virtual RadioReport aggregate(const RadioRound& round, std::vector<float>& estimate) = 0;
};

// The radio of cfg.mode (and cfg.transport). Throws ConfigError for a physical layer the configuration cannot build
// (naming the key); with transport flowgraph, std::runtime_error when the radio process cannot start.
std::unique_ptr<Radio> make_radio(const SimConfig& cfg);
// The flowgraph transport's radio: a gr-fedlora radio process (gnuradio.fedlora.radio_server) started by this
// object and ended when it goes (radio_flowgraph.cpp).
std::unique_ptr<Radio> make_flowgraph_radio(const SimConfig& cfg);

// A round's physical layer as the in-process radios build it (and the flowgraph transport sends it): the
// numerology with `subcarriers` occupied carriers (0: phy.occupied; ConfigError naming phy.* if invalid), the
// multi-user channel of the round's clients (their round SNRs, the common CFO, the channel seed from (seed,
// round)) and the waveform round's frame, power control, estimator and lead.
phy::Numerology round_numerology(const SimConfig& cfg, std::int64_t subcarriers);
phy::ChannelSimConfig round_channel_config(const SimConfig& cfg, const RadioRound& round, const phy::Numerology& num);
phy::WaveformRoundConfig round_waveform_config(const SimConfig& cfg, const RadioRound& round,
                                               const phy::Numerology& num);
// The calibration of the clients' radios (radio.calibration): the file and each client's serial in it.
struct RadioCalibration {
    std::string path;                  // as given
    std::string absolute_path;         // for the radio process
    phy::CalibrationSet set;
    std::vector<std::string> serials;  // per client
};
// Loads radio.calibration (nullptr when it is empty) and checks that every client's radio has an alignment at
// radio.frequency_hz and phy.sample_rate whose correction fits the round's lead; ConfigError naming
// radio.calibration or radio.serials, with the file's own message (serial, key, frequency).
std::shared_ptr<const RadioCalibration> load_radio_calibration(const SimConfig& cfg);
// The round's per-device corrections (its clients' radios), for WaveformRoundConfig::corrections.
std::vector<phy::TransmitCorrection> round_corrections(const SimConfig& cfg, const RadioCalibration& cal,
                                                       const RadioRound& round);

// The checks every radio makes on a round before sending (std::invalid_argument naming the client).
void check_radio_round(const RadioRound& round);

// The mean receive SNR (dB) of a client for the whole run: channel.snr_db + U(−spread, spread) from (seed, client).
double client_mean_snr_db(const SimConfig& cfg, std::int64_t client);
// Its mean SNR in one round: the above plus N(0, shadowing_db²) shadowing drawn from (seed, client, round).
double client_round_snr_db(const SimConfig& cfg, std::int64_t client, std::int64_t round);

}  // namespace fedlora::sim
