/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_AIRCOMP_TRANSMITTER_IMPL_H
#define INCLUDED_FEDLORA_AIRCOMP_TRANSMITTER_IMPL_H

#include <gnuradio/fedlora/aircomp_transmitter.h>
#include <gnuradio/thread/thread.h>

#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/calibration.h"
#include "fedlora/phy/frame.h"

#include <complex>
#include <cstdint>
#include <deque>
#include <vector>

namespace gr {
namespace fedlora {

// What the calibration file gave the transmitter (make() looks it up): one correction per antenna, and with a
// budget in dBm the TX gain and the linear budget.
struct transmitter_calibration {
    std::string describe;                                       // for the log
    std::vector<::fedlora::phy::TransmitCorrection> corrections; // per antenna; empty: none
    double tx_gain = -1.0;                                      // >= 0: set on the radio by tx_command tags
};

class aircomp_transmitter_impl : public aircomp_transmitter
{
public:
    aircomp_transmitter_impl(const ::fedlora::phy::FrameConfig& frame,
                             std::size_t device,
                             double budget,
                             std::size_t max_dim,
                             double start_time,
                             unsigned long n_rounds,
                             const transmitter_calibration& cal);

    int general_work(int noutput_items,
                     gr_vector_int& ninput_items,
                     gr_vector_const_void_star& input_items,
                     gr_vector_void_star& output_items) override;

    unsigned long rounds_sent() const override;
    double linear_budget() const override { return d_budget; }
    double tx_gain() const override { return d_tx_gain; }
    int advance() const override { return static_cast<int>(d_shift); }

private:
    enum class state { idle, pilots, wait_plan, payload, finished };

    void handle_update(const pmt::pmt_t& msg);
    void handle_plan(const pmt::pmt_t& msg);
    // With d_mutex held: the plan of the current round (checked, then the payload is made).
    void apply_plan(const pmt::pmt_t& msg);
    // Starts the next queued update's round (pilot burst), skipping updates that are not for this device or
    // are malformed (logged). Called with d_mutex held, while idle.
    void next_round();
    bool start_round(const pmt::pmt_t& pdu);
    void start_burst(bool payload);
    void burst_done();

    ::fedlora::phy::FrameLayout d_layout;
    ::fedlora::phy::DeviceTransmitter d_dev;
    const std::size_t d_device, d_T, d_M, d_n_data, d_S, d_max_dim;
    const double d_fs;
    const unsigned long d_n_rounds;
    const double d_budget, d_tx_gain;

    // Calibration: per antenna, the corrector and the corrected bursts (sent d_shift samples early).
    std::vector<::fedlora::phy::TransmitCorrector> d_corr;
    std::size_t d_shift = 0;
    std::vector<std::vector<gr_complex>> d_pilots_tx, d_payload_tx;
    const pmt::pmt_t d_key_command, d_gain_command;

    std::vector<std::vector<gr_complex>> d_pilots;  // per antenna: the pilot burst, up to the payload offset
    std::vector<std::vector<gr_complex>> d_payload; // per antenna: payload symbols and the guard symbol
    std::vector<float> d_update;
    ::fedlora::phy::AircompCodec d_codec;
    double d_weight = 1.0;
    long d_round = -1;
    std::vector<gr_complex> d_symbols;
    std::vector<std::complex<double>> d_precoders;

    state d_state = state::idle;
    bool d_payload_ready = false;
    // Plans that came before their round's update (messages on different ports keep no order between them):
    // each applied once its round starts; at most kMaxEarlyPlans kept (the oldest dropped).
    static constexpr std::size_t kMaxEarlyPlans = 8;
    std::deque<pmt::pmt_t> d_early_plans;
    const std::vector<std::vector<gr_complex>>* d_burst = nullptr;
    std::size_t d_burst_len = 0, d_burst_pos = 0;
    std::uint64_t d_frame = 0, d_next_frame = 0, d_cursor = 0;
    pmt::pmt_t d_burst_time, d_burst_info; // tag values of the current burst, made when it is queued
    const pmt::pmt_t d_key_burst;
    std::deque<pmt::pmt_t> d_queue;
    unsigned long d_rounds_sent = 0;
    mutable gr::thread::mutex d_mutex;
};

} // namespace fedlora
} // namespace gr

#endif
