/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include "aircomp_receiver_impl.h"
#include "aircomp_config.h"
#include "pmt_args.h"

#include <gnuradio/io_signature.h>

#include <cstring>

#include <cmath>

namespace gr {
namespace fedlora {

namespace phy = ::fedlora::phy;

namespace {

pmt::pmt_t f64(const std::vector<double>& v) { return pmt::init_f64vector(v.size(), v.data()); }

} // namespace

aircomp_receiver::sptr aircomp_receiver::make(int n_devices,
                                              int n_tx,
                                              int n_rx,
                                              int fft_size,
                                              int cp_len,
                                              int n_occupied,
                                              int pilot_spacing,
                                              double sample_rate,
                                              int gap,
                                              int pilot_repeats,
                                              int reference_interval,
                                              int n_streams,
                                              const std::vector<double>& budget,
                                              const std::string& policy,
                                              double g_th,
                                              const std::string& estimator,
                                              int timing_backoff,
                                              int mimo_iterations,
                                              int max_dim)
{
    const char* me = "aircomp_receiver";
    frame_params p{ n_devices, n_tx,    fft_size, cp_len,        n_occupied,
                    pilot_spacing, sample_rate, gap, pilot_repeats, reference_interval };
    phy::AircompReceiverConfig rc;
    rc.frame = make_frame_config(p, me);
    if (n_rx < 1)
        throw std::invalid_argument(std::string(me) + ": n_rx = " + std::to_string(n_rx) + " must be >= 1");
    if (n_streams < 0)
        throw std::invalid_argument(std::string(me) + ": n_streams = " + std::to_string(n_streams) +
                                    " must be >= 0 (0: single stream)");
    if (n_streams == 0 && (n_tx != 1 || n_rx != 1))
        throw std::invalid_argument(std::string(me) + ": n_streams = 0 (single stream) needs n_tx = n_rx = 1; "
                                                      "set n_streams for multi-antenna AirComp");
    if (n_streams > 0 && (n_streams > n_tx || n_streams > n_rx))
        throw std::invalid_argument(std::string(me) + ": n_streams = " + std::to_string(n_streams) +
                                    " needs n_tx and n_rx >= n_streams");
    if (timing_backoff < -1 || timing_backoff > cp_len)
        throw std::invalid_argument(std::string(me) + ": timing_backoff = " + std::to_string(timing_backoff) +
                                    " must be -1 or in [0, cp_len]");
    if (mimo_iterations < 1)
        throw std::invalid_argument(std::string(me) + ": mimo_iterations = " + std::to_string(mimo_iterations) +
                                    " must be >= 1");
    if (max_dim < 1)
        throw std::invalid_argument(std::string(me) + ": max_dim = " + std::to_string(max_dim) +
                                    " must be >= 1");
    const auto budgets = make_budgets(budget, n_devices, me);
    rc.n_rx = static_cast<std::size_t>(n_rx);
    rc.estimator.name = estimator;
    rc.timing_backoff = timing_backoff;
    rc.pilot_power = pilot_powers(budgets, n_tx);
    phy::PowerControlConfig pc;
    try {
        pc.policy = phy::power_policy_from_name(policy);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string(me) + ": policy: " + e.what());
    }
    pc.g_th = g_th;
    pc.budget = budgets;
    pc.validate(static_cast<std::size_t>(n_devices));
    try {
        // Builds the estimator once to name a bad one here (the kernel builds its own).
        phy::make_channel_estimator(rc.frame.numerology, rc.estimator);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string(me) + ": estimator: " + e.what());
    }
    return gnuradio::make_block_sptr<aircomp_receiver_impl>(
        rc, static_cast<std::size_t>(n_streams), pc, mimo_iterations, static_cast<std::size_t>(max_dim));
}

aircomp_receiver_impl::aircomp_receiver_impl(const phy::AircompReceiverConfig& cfg,
                                             std::size_t n_streams,
                                             const phy::PowerControlConfig& power,
                                             int mimo_iterations,
                                             std::size_t max_dim)
    : gr::sync_block("aircomp_receiver",
                     gr::io_signature::make(static_cast<int>(cfg.n_rx),
                                            static_cast<int>(cfg.n_rx),
                                            sizeof(gr_complex)),
                     gr::io_signature::make(0, 1, sizeof(gr_complex))),
      d_rx(cfg),
      d_streams(n_streams),
      d_power(power),
      d_mimo_iterations(mimo_iterations),
      d_max_dim(max_dim),
      d_K(cfg.frame.n_devices),
      d_M(static_cast<std::size_t>(cfg.frame.numerology.n_occupied)),
      d_R(cfg.n_rx),
      d_T(cfg.frame.n_tx),
      d_in(cfg.n_rx),
      d_estimate(max_dim)
{
    d_pending_tags.reserve(8);
    message_port_register_in(pmt::mp("round"));
    message_port_register_out(pmt::mp("plan"));
    message_port_register_out(pmt::mp("csi"));
    message_port_register_out(pmt::mp("quality"));
    message_port_register_out(pmt::mp("aggregate"));
    set_msg_handler(pmt::mp("round"), [this](const pmt::pmt_t& msg) { handle_round(msg); });
    d_logger->debug("{} devices x {} tx -> {} rx, {} stream(s), detection latency {} samples",
                    d_K,
                    d_T,
                    d_R,
                    d_streams ? d_streams : 1,
                    d_rx.max_latency());
}

unsigned long aircomp_receiver_impl::frames() const
{
    gr::thread::scoped_lock lock(d_mutex);
    return d_frames;
}

std::string aircomp_receiver_impl::stage() const
{
    gr::thread::scoped_lock lock(d_mutex);
    return phy::to_string(d_rx.stage());
}

round_info aircomp_receiver_impl::parse_round(const pmt::pmt_t& msg) const
{
    if (!pmt::is_dict(msg))
        throw std::invalid_argument("the round message must be a dictionary");
    round_info r;
    r.round = dict_integer(msg, "round", -1);
    if (r.round < 0)
        throw std::invalid_argument("'round' is missing or negative");
    const long dim = dict_integer(msg, "dim", 0);
    if (dim < 1 || static_cast<std::size_t>(dim) > d_max_dim)
        throw std::invalid_argument("'dim' = " + std::to_string(dim) + " must be in [1, max_dim = " +
                                    std::to_string(d_max_dim) + "]");
    r.codec.dim = static_cast<std::size_t>(dim);
    r.codec.scale = dict_number(msg, "scale", -1.0);
    dict_indices(msg, "support", r.codec.support);
    r.codec.validate();
    dict_reals(msg, "weights", r.weights);
    dict_reals(msg, "rms", r.rms);
    if (r.weights.size() != d_K || r.rms.size() != d_K)
        throw std::invalid_argument("'weights' and 'rms' need " + std::to_string(d_K) + " values each (got " +
                                    std::to_string(r.weights.size()) + " and " + std::to_string(r.rms.size()) +
                                    ")");
    for (std::size_t k = 0; k < d_K; ++k)
        if (!std::isfinite(r.weights[k]) || !std::isfinite(r.rms[k]) || r.rms[k] < 0.0)
            throw std::invalid_argument("weights[" + std::to_string(k) + "] or rms[" + std::to_string(k) +
                                        "] is not a finite (non-negative) number");
    return r;
}

void aircomp_receiver_impl::handle_round(const pmt::pmt_t& msg)
{
    gr::thread::scoped_lock lock(d_mutex);
    try {
        d_rounds.push_back(parse_round(msg));
    } catch (const std::exception& e) {
        d_logger->error("round message dropped: {}", e.what());
        return;
    }
    if (d_rx.stage() == phy::AircompReceiver::Stage::NeedPlan)
        try_plan();
}

bool aircomp_receiver_impl::try_plan()
{
    if (d_rounds.empty())
        return false;
    d_current = std::move(d_rounds.front());
    d_rounds.pop_front();
    const auto& csi = d_rx.csi();
    const auto& num = d_rx.config().frame.numerology;
    try {
        phy::PowerControlConfig pc = d_power;
        pc.signal_var.resize(d_K);
        for (std::size_t k = 0; k < d_K; ++k)
            pc.signal_var[k] = phy::symbol_power(d_current.weights[k], d_current.rms[k], d_current.codec.scale);
        pc.noise_var = csi.noise_var;
        pc.csi_error_var = csi.error_var;
        const std::size_t L = d_streams ? d_streams : 1;
        const auto plan = phy::plan_round(csi.h, d_streams, pc, d_mimo_iterations);
        const std::size_t n_ofdm = phy::payload_ofdm_symbols(d_current.codec, num, L);

        // The plan's MSE on the estimated channels, over the symbols the payload uses, against the expected
        // energy of the sum of independent updates.
        const auto e = phy::plan_stream_mse(plan, csi.h, pc.signal_var, pc.noise_var);
        const auto data_pos = num.data_positions();
        const std::size_t n_sym = d_current.codec.n_symbols(), n_data = data_pos.size();
        double err = 0.0, v = 0.0;
        for (std::size_t s = 0; s < n_sym; ++s)
            err += e[static_cast<std::size_t>(data_pos[s % n_data]) * L + (s / n_data) % L];
        for (double x : pc.signal_var)
            v += x;
        d_signal_var = v;
        d_nmse_predicted = v > 0.0 ? err / (static_cast<double>(n_sym) * v) : 0.0;
        d_truncated = plan.truncated_fraction;

        d_rx.set_plan(plan.combiner, phy::plan_response(plan, csi.h), L, n_ofdm);

        const auto gain = csi.h.gains();
        std::vector<double> snr(gain.size());
        const double links = static_cast<double>(d_R * d_T);
        for (std::size_t k = 0; k < d_K; ++k)
            for (std::size_t m = 0; m < d_M; ++m)
                snr[k * d_M + m] = 10.0 * std::log10(gain[k * d_M + m] / links *
                                                     d_rx.config().pilot_power[k] / csi.noise_var);
        auto c = pmt::make_dict();
        c = pmt::dict_add(c, pmt::mp("round"), pmt::from_long(d_current.round));
        c = pmt::dict_add(c, pmt::mp("frame_start"), pmt::from_uint64(d_rx.frame_start()));
        c = pmt::dict_add(c, pmt::mp("n_devices"), pmt::from_long(static_cast<long>(d_K)));
        c = pmt::dict_add(c, pmt::mp("n_carriers"), pmt::from_long(static_cast<long>(d_M)));
        c = pmt::dict_add(c, pmt::mp("gain"), f64(gain));
        c = pmt::dict_add(c, pmt::mp("snr_db"), f64(snr));
        c = pmt::dict_add(c, pmt::mp("device_snr_db"), f64(csi.snr_db));
        c = pmt::dict_add(c, pmt::mp("error_var"), f64(csi.error_var));
        c = pmt::dict_add(c, pmt::mp("noise_var"), pmt::from_double(csi.noise_var));
        publish("csi", c);

        std::vector<std::complex<double>> prec;
        prec.reserve(d_K * d_M * d_T * L);
        for (const auto& pk : plan.precoders)
            prec.insert(prec.end(), pk.begin(), pk.end());
        auto p = pmt::make_dict();
        p = pmt::dict_add(p, pmt::mp("round"), pmt::from_long(d_current.round));
        p = pmt::dict_add(p, pmt::mp("n_devices"), pmt::from_long(static_cast<long>(d_K)));
        p = pmt::dict_add(p, pmt::mp("n_carriers"), pmt::from_long(static_cast<long>(d_M)));
        p = pmt::dict_add(p, pmt::mp("n_tx"), pmt::from_long(static_cast<long>(d_T)));
        p = pmt::dict_add(p, pmt::mp("n_rx"), pmt::from_long(static_cast<long>(d_R)));
        p = pmt::dict_add(p, pmt::mp("n_streams"), pmt::from_long(static_cast<long>(L)));
        p = pmt::dict_add(p, pmt::mp("n_ofdm"), pmt::from_long(static_cast<long>(n_ofdm)));
        p = pmt::dict_add(p, pmt::mp("scale"), pmt::from_double(d_current.codec.scale));
        p = pmt::dict_add(p, pmt::mp("eta"), f64(plan.eta));
        p = pmt::dict_add(p, pmt::mp("precoders"), pmt::init_c64vector(prec.size(), prec.data()));
        p = pmt::dict_add(p, pmt::mp("truncated_fraction"), pmt::from_double(plan.truncated_fraction));
        message_port_pub(pmt::mp("plan"), p);
        d_logger->debug("round {}: frame at {}, planned {} payload symbols", d_current.round, d_rx.frame_start(), n_ofdm);
    } catch (const std::exception& e) {
        d_logger->error("round {}: frame at {} skipped, no plan: {}", d_current.round, d_rx.frame_start(), e.what());
        d_rx.skip_frame();
    }
    return true;
}

void aircomp_receiver_impl::finish_frame()
{
    const auto& codec = d_current.codec;
    codec.decode(d_rx.data().data(), d_estimate.data());
    auto meta = pmt::make_dict();
    meta = pmt::dict_add(meta, pmt::mp("round"), pmt::from_long(d_current.round));
    meta = pmt::dict_add(meta, pmt::mp("dim"), pmt::from_long(static_cast<long>(codec.dim)));
    meta = pmt::dict_add(meta, pmt::mp("scale"), pmt::from_double(codec.scale));
    message_port_pub(pmt::mp("aggregate"),
                     pmt::cons(meta, pmt::init_f32vector(codec.dim, d_estimate.data())));
    auto q = pmt::make_dict();
    q = pmt::dict_add(q, pmt::mp("round"), pmt::from_long(d_current.round));
    q = pmt::dict_add(q, pmt::mp("pilot_mse"), pmt::from_double(d_rx.pilot_mse()));
    // The pilots' error against the expected energy of the sum of the updates: the measured NMSE where noise
    // dominates (the noise is the same on pilots and data; plan mismatch weighs pilots at unit power).
    const double nmse_pilots = d_signal_var > 0.0 ? d_rx.pilot_mse() / d_signal_var : 0.0;
    q = pmt::dict_add(q, pmt::mp("nmse_pilots"), pmt::from_double(nmse_pilots));
    q = pmt::dict_add(q, pmt::mp("nmse_predicted"), pmt::from_double(d_nmse_predicted));
    q = pmt::dict_add(q, pmt::mp("truncated_fraction"), pmt::from_double(d_truncated));
    q = pmt::dict_add(q, pmt::mp("cfo"), pmt::from_double(d_rx.cfo()));
    q = pmt::dict_add(q, pmt::mp("detected_start"), pmt::from_uint64(d_rx.frame_start()));
    q = pmt::dict_add(q, pmt::mp("mean_cpe_rad"), pmt::from_double(d_rx.mean_cpe_rad()));
    q = pmt::dict_add(q, pmt::mp("noise_var"), pmt::from_double(d_rx.csi().noise_var));
    q = pmt::dict_add(q, pmt::mp("skipped_detections"), pmt::from_uint64(d_rx.skipped_detections()));
    publish("quality", q);
    ++d_frames;
}

void aircomp_receiver_impl::publish(const char* key, const pmt::pmt_t& dict)
{
    const auto port = pmt::mp(key);
    message_port_pub(port, dict);
    if (d_tagged_output)
        d_pending_tags.push_back({ port, dict, d_consumed });
}

int aircomp_receiver_impl::work(int noutput_items,
                                gr_vector_const_void_star& input_items,
                                gr_vector_void_star& output_items)
{
    gr::thread::scoped_lock lock(d_mutex);
    d_tagged_output = !output_items.empty();
    const auto n = static_cast<std::size_t>(noutput_items);
    std::size_t done = 0;
    // The tagged output: antenna 0's samples, unchanged, with each csi and quality dict as a tag on the last
    // sample consumed when it was published (a dict published before any sample of this call, e.g. when a round
    // message let a waiting frame be planned, goes on the call's first sample). A call that consumes nothing keeps
    // its tags for the next one.
    auto finish = [&]() {
        d_consumed = 0;
        if (!d_tagged_output || done == 0)
            return static_cast<int>(done);
        std::memcpy(output_items[0], input_items[0], done * sizeof(gr_complex));
        for (const auto& t : d_pending_tags)
            add_item_tag(0, nitems_written(0) + (t.at ? t.at - 1 : 0), t.key, t.value, alias_pmt());
        d_pending_tags.clear();
        return static_cast<int>(done);
    };
    for (;;) {
        for (std::size_t r = 0; r < d_R; ++r)
            d_in[r] = static_cast<const gr_complex*>(input_items[r]) + done;
        done += d_rx.consume(d_in.data(), n - done);
        d_consumed = done;
        switch (d_rx.stage()) {
        case phy::AircompReceiver::Stage::NeedPlan:
            if (!try_plan())
                return finish(); // waits for the round message
            break;
        case phy::AircompReceiver::Stage::Done:
            finish_frame();
            d_rx.next_frame();
            break;
        default:
            if (done == n)
                return finish();
            break;
        }
    }
}

} /* namespace fedlora */
} /* namespace gr */
