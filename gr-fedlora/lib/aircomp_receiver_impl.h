/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#ifndef INCLUDED_FEDLORA_AIRCOMP_RECEIVER_IMPL_H
#define INCLUDED_FEDLORA_AIRCOMP_RECEIVER_IMPL_H

#include <gnuradio/fedlora/aircomp_receiver.h>
#include <gnuradio/thread/thread.h>

#include "fedlora/phy/aircomp.h"
#include "fedlora/phy/aircomp_round.h"

#include <complex>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace gr {
namespace fedlora {

// What the server knows of a round before its payload: the "round" message.
struct round_info {
    long round = 0;
    ::fedlora::phy::AircompCodec codec;
    std::vector<double> weights, rms;
};

class aircomp_receiver_impl : public aircomp_receiver
{
public:
    aircomp_receiver_impl(const ::fedlora::phy::AircompReceiverConfig& cfg,
                          std::size_t n_streams,
                          const ::fedlora::phy::PowerControlConfig& power,
                          int mimo_iterations,
                          std::size_t max_dim);

    int work(int noutput_items,
             gr_vector_const_void_star& input_items,
             gr_vector_void_star& output_items) override;

    unsigned long frames() const override;
    std::string stage() const override;

private:
    void handle_round(const pmt::pmt_t& msg);
    round_info parse_round(const pmt::pmt_t& msg) const;
    // With the CSI in and a round dict queued: plans, publishes csi and plan, and hands the plan to the kernel.
    // Returns false if no round dict is queued. A round that cannot be planned is logged and its frame skipped.
    bool try_plan();
    void finish_frame();
    // Publishes a dict on message port `key` and queues it as a stream tag of the same key for output 0, for the
    // last sample consumed so far in the current work() call (the first one if none yet).
    void publish(const char* key, const pmt::pmt_t& dict);

    ::fedlora::phy::AircompReceiver d_rx;
    const std::size_t d_streams; // 0: single stream
    const ::fedlora::phy::PowerControlConfig d_power;
    const int d_mimo_iterations;
    const std::size_t d_max_dim, d_K, d_M, d_R, d_T;
    std::vector<const gr_complex*> d_in;
    std::vector<float> d_estimate;
    std::deque<round_info> d_rounds;
    round_info d_current;
    double d_truncated = 0.0, d_nmse_predicted = 0.0, d_signal_var = 0.0;
    unsigned long d_frames = 0;
    bool d_tagged_output = false; // output 0 connected: antenna 0's samples, tagged csi / quality
    struct pending_tag {
        pmt::pmt_t key, value;
        std::size_t at; // samples consumed in the work() call when it was published
    };
    std::vector<pending_tag> d_pending_tags;
    std::size_t d_consumed = 0; // samples consumed so far in the current work() call (0 between calls)
    mutable gr::thread::mutex d_mutex;
};

} // namespace fedlora
} // namespace gr

#endif
