/* -*- c++ -*- */
/* SPDX-License-Identifier: GPL-3.0-or-later */
#include "aircomp_transmitter_impl.h"
#include "aircomp_config.h"
#include "burst_time.h"
#include "pmt_args.h"

#include "fedlora/calib/file.h"
#include "fedlora/phy/aircomp_round.h"

#include <gnuradio/io_signature.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace gr {
namespace fedlora {

namespace phy = ::fedlora::phy;

namespace {

std::string num(double v)
{
    char b[64];
    std::snprintf(b, sizeof b, "%.6g", v);
    return b;
}

// Looks the transmitter's calibration up in the file: the correction of every antenna and, with a budget in dBm,
// the TX gain and the linear budget. Errors name the block, the parameter or (from the file's lookups) the
// serial, the key and the frequency.
transmitter_calibration lookup_calibration(const phy::FrameConfig& frame,
                                           double& budget,
                                           const std::string& file,
                                           const std::string& serial,
                                           int channel,
                                           double frequency,
                                           const std::string& unit,
                                           double tx_gain)
{
    const std::string me = "aircomp_transmitter";
    transmitter_calibration c;
    if (unit != "linear" && unit != "dBm")
        throw std::invalid_argument(me + ": budget_unit = '" + unit + "' must be 'linear' or 'dBm'");
    if (file.empty()) {
        if (unit == "dBm")
            throw std::invalid_argument(me + ": budget_unit = 'dBm' needs a calibration file (its TX power "
                                             "table turns dBm into a gain and a linear budget)");
        return c;
    }
    if (serial.empty())
        throw std::invalid_argument(me + ": calibration = '" + file +
                                    "' needs the radio's serial (parameter 'serial'), which keys the file");
    if (channel < 0 || channel + static_cast<int>(frame.n_tx) > 32)
        throw std::invalid_argument(me + ": channel = " + std::to_string(channel) + " must be in [0, " +
                                    std::to_string(32 - static_cast<int>(frame.n_tx)) + "] for " +
                                    std::to_string(frame.n_tx) + " antenna(s)");
    if (!(frequency > 0.0) || !std::isfinite(frequency))
        throw std::invalid_argument(me + ": frequency = " + num(frequency) + " Hz must be positive");
    if (unit == "dBm" && frame.n_tx != 1)
        throw std::invalid_argument(me + ": budget_unit = 'dBm' needs n_tx = 1 (got " +
                                    std::to_string(frame.n_tx) +
                                    "); give multi-antenna budgets as linear P_k");
    try {
        const auto set = ::fedlora::calib::load_calibration(file);
        const double fs = frame.numerology.sample_rate;
        for (std::size_t a = 0; a < frame.n_tx; ++a)
            c.corrections.push_back(set.correction(serial, channel + static_cast<int>(a), frequency, fs));
        const auto& k = c.corrections.front();
        c.describe = "calibration " + file + ", serial '" + serial + "' channel " + std::to_string(channel) +
                     " at " + phy::format_frequency(frequency) + ": advance " + num(k.advance_samples) +
                     " samples, phase " + num(k.phase_rad) + " rad at sample " +
                     std::to_string(k.reference_sample) + ", CFO " + num(k.cfo_hz) + " Hz";
        if (unit == "dBm") {
            const double dbm = budget;
            if (tx_gain < 0.0) {
                const auto ps = phy::tx_power_setting(set, serial, channel, frequency, dbm);
                c.tx_gain = ps.gain_db;
                budget = ps.linear_budget;
            } else {
                c.tx_gain = tx_gain;
                budget = phy::linear_budget(set, serial, channel, frequency, tx_gain, dbm);
            }
            // The TX power table refers to phy power 1 at the file's digital reference level: the samples are
            // scaled to it, so that the radio radiates the budget.
            for (auto& x : c.corrections)
                x.gain_db = set.tx_reference_dbfs;
            c.describe += "; budget " + num(dbm) + " dBm: TX gain " + num(c.tx_gain) + " dB, linear budget " +
                          num(budget) + ", phy power 1 at " + num(set.tx_reference_dbfs) + " dBFS";
        }
    } catch (const phy::CalibrationError& e) {
        throw phy::CalibrationError(me + ": " + e.what());
    }
    return c;
}

} // namespace

aircomp_transmitter::sptr aircomp_transmitter::make(int n_devices,
                                                    int device,
                                                    int n_tx,
                                                    int fft_size,
                                                    int cp_len,
                                                    int n_occupied,
                                                    int pilot_spacing,
                                                    double sample_rate,
                                                    int gap,
                                                    int pilot_repeats,
                                                    int reference_interval,
                                                    double budget,
                                                    int max_dim,
                                                    double start_time,
                                                    int n_rounds,
                                                    const std::string& calibration,
                                                    const std::string& serial,
                                                    int channel,
                                                    double frequency,
                                                    const std::string& budget_unit,
                                                    double tx_gain)
{
    const char* me = "aircomp_transmitter";
    frame_params p{ n_devices, n_tx,    fft_size, cp_len,        n_occupied,
                    pilot_spacing, sample_rate, gap, pilot_repeats, reference_interval };
    const auto frame = make_frame_config(p, me);
    if (device < 0 || device >= n_devices)
        throw std::invalid_argument(std::string(me) + ": device = " + std::to_string(device) +
                                    " must be in [0, n_devices = " + std::to_string(n_devices) + ")");
    if (budget_unit != "dBm" && (!(budget > 0.0) || !std::isfinite(budget)))
        throw std::invalid_argument(std::string(me) + ": budget = " + std::to_string(budget) +
                                    " must be finite and > 0");
    if (budget_unit == "dBm" && !std::isfinite(budget))
        throw std::invalid_argument(std::string(me) + ": budget = " + std::to_string(budget) +
                                    " dBm is not finite");
    if (max_dim < 1)
        throw std::invalid_argument(std::string(me) + ": max_dim = " + std::to_string(max_dim) +
                                    " must be >= 1");
    if (!(start_time >= 0.0) || !std::isfinite(start_time))
        throw std::invalid_argument(std::string(me) + ": start_time = " + std::to_string(start_time) +
                                    " must be finite and >= 0");
    if (n_rounds < 0)
        throw std::invalid_argument(std::string(me) + ": n_rounds = " + std::to_string(n_rounds) +
                                    " must be >= 0");
    const auto cal = lookup_calibration(
        frame, budget, calibration, serial, channel, frequency, budget_unit, tx_gain);
    return gnuradio::make_block_sptr<aircomp_transmitter_impl>(frame,
                                                               static_cast<std::size_t>(device),
                                                               budget,
                                                               static_cast<std::size_t>(max_dim),
                                                               start_time,
                                                               static_cast<unsigned long>(n_rounds),
                                                               cal);
}

aircomp_transmitter_impl::aircomp_transmitter_impl(const phy::FrameConfig& frame,
                                                   std::size_t device,
                                                   double budget,
                                                   std::size_t max_dim,
                                                   double start_time,
                                                   unsigned long n_rounds,
                                                   const transmitter_calibration& cal)
    : gr::block("aircomp_transmitter",
                gr::io_signature::make(0, 0, 0),
                gr::io_signature::make(static_cast<int>(frame.n_tx),
                                       static_cast<int>(frame.n_tx),
                                       sizeof(gr_complex))),
      d_layout(frame),
      d_dev(frame, device, budget / static_cast<double>(frame.n_tx)),
      d_device(device),
      d_T(frame.n_tx),
      d_M(static_cast<std::size_t>(frame.numerology.n_occupied)),
      d_n_data(static_cast<std::size_t>(frame.numerology.n_data())),
      d_S(d_layout.symbol_len()),
      d_max_dim(max_dim),
      d_fs(frame.numerology.sample_rate),
      d_n_rounds(n_rounds),
      d_budget(budget),
      d_tx_gain(cal.tx_gain),
      d_key_command(pmt::mp("tx_command")),
      d_gain_command(cal.tx_gain >= 0.0
                         ? pmt::dict_add(pmt::make_dict(), pmt::mp("gain"), pmt::from_double(cal.tx_gain))
                         : pmt::PMT_NIL),
      d_burst_time(pmt::PMT_NIL),
      d_burst_info(pmt::PMT_NIL),
      d_key_burst(pmt::mp("fedlora_burst"))
{
    // The pilot burst is the same every round: made once, with the gap as zeros up to the payload offset.
    d_pilots.assign(d_T, std::vector<gr_complex>(d_layout.payload_offset(0), gr_complex{}));
    d_dev.pilot_burst(d_pilots);
    // Largest payload: every symbol on one stream, plus the guard symbol.
    const std::size_t max_symbols = (max_dim + 1) / 2;
    const std::size_t max_ofdm = (max_symbols + d_n_data - 1) / d_n_data;
    d_payload.resize(d_T);
    for (auto& p : d_payload)
        p.reserve((max_ofdm + 1) * d_S);
    d_symbols.reserve(max_symbols + d_T * d_n_data);
    d_precoders.reserve(d_M * d_T * d_T);
    d_update.reserve(max_dim);
    d_codec.support.reserve(max_dim);
    d_next_frame = static_cast<std::uint64_t>(std::llround(start_time * d_fs));

    // Calibration: the corrected bursts keep their lengths and start d_shift samples early, so the silence after
    // each burst's content (the gap after the pilots, the guard symbol after the payload) must hold lead + tail.
    std::size_t tail = 0;
    for (const auto& c : cal.corrections) {
        d_corr.emplace_back(c, d_fs);
        d_shift = std::max(d_shift, d_corr.back().lead());
        tail = std::max(tail, d_corr.back().tail());
    }
    if (!d_corr.empty()) {
        const std::size_t room = d_shift + tail;
        if (frame.gap < room)
            throw std::invalid_argument("aircomp_transmitter: gap = " + std::to_string(frame.gap) +
                                        " samples cannot hold the calibrated bursts' advance and filter tail (" +
                                        std::to_string(d_shift) + " + " + std::to_string(tail) +
                                        " samples); raise the gap");
        if (d_S < room)
            throw std::invalid_argument("aircomp_transmitter: the calibration's timing advance (" +
                                        num(cal.corrections.front().advance_samples) +
                                        " samples) needs " + std::to_string(room) +
                                        " silent samples after the payload, more than its guard symbol (" +
                                        std::to_string(d_S) + ")");
        d_pilots_tx.assign(d_T, std::vector<gr_complex>(d_pilots[0].size(), gr_complex{}));
        d_payload_tx.resize(d_T);
        for (auto& p : d_payload_tx)
            p.reserve((max_ofdm + 1) * d_S);
        d_logger->info("device {}: {}; bursts go out {} samples early", device, cal.describe, d_shift);
    }

    set_tag_propagation_policy(TPP_DONT);
    message_port_register_in(pmt::mp("update"));
    message_port_register_in(pmt::mp("plan"));
    set_msg_handler(pmt::mp("update"), [this](const pmt::pmt_t& msg) { handle_update(msg); });
    set_msg_handler(pmt::mp("plan"), [this](const pmt::pmt_t& msg) { handle_plan(msg); });
    d_logger->debug("device {} of {}: {} antenna(s), pilot section {} samples, payload at +{}",
                    device,
                    frame.n_devices,
                    d_T,
                    d_layout.pilots_end(),
                    d_layout.payload_offset(0));
}

unsigned long aircomp_transmitter_impl::rounds_sent() const
{
    gr::thread::scoped_lock lock(d_mutex);
    return d_rounds_sent;
}

void aircomp_transmitter_impl::handle_update(const pmt::pmt_t& msg)
{
    gr::thread::scoped_lock lock(d_mutex);
    d_queue.push_back(msg);
    if (d_state == state::idle)
        next_round();
}

void aircomp_transmitter_impl::next_round()
{
    while (d_state == state::idle && !d_queue.empty()) {
        const pmt::pmt_t pdu = d_queue.front();
        d_queue.pop_front();
        if (start_round(pdu)) {
            start_burst(false);
            // A plan that came early for this round releases its payload now; those of past rounds go.
            pmt::pmt_t mine = pmt::PMT_NIL;
            for (auto it = d_early_plans.begin(); it != d_early_plans.end();) {
                const long r = dict_integer(*it, "round", -1);
                if (r == d_round && pmt::is_null(mine))
                    mine = *it;
                if (r <= d_round)
                    it = d_early_plans.erase(it);
                else
                    ++it;
            }
            if (!pmt::is_null(mine))
                apply_plan(mine);
        }
    }
}

bool aircomp_transmitter_impl::start_round(const pmt::pmt_t& pdu)
{
    try {
        if (!pmt::is_pair(pdu) || !pmt::is_dict(pmt::car(pdu)))
            throw std::invalid_argument("not a PDU with a meta dictionary");
        const auto meta = pmt::car(pdu);
        if (dict_integer(meta, "device", -1) != static_cast<long>(d_device))
            return false; // another device's update
        const auto vec = pmt::cdr(pdu);
        if (!pmt::is_f32vector(vec))
            throw std::invalid_argument("the update must be an f32 vector");
        std::size_t n = 0;
        const float* x = pmt::f32vector_elements(vec, n);
        if (n == 0 || n > d_max_dim)
            throw std::invalid_argument("update of " + std::to_string(n) + " entries (max_dim = " +
                                        std::to_string(d_max_dim) + ")");
        const double scale = dict_number(meta, "scale", -1.0);
        const double weight = dict_number(meta, "weight", 1.0);
        const long round = dict_integer(meta, "round", -1);
        if (round < 0)
            throw std::invalid_argument("meta 'round' is missing or negative");
        if (!std::isfinite(weight))
            throw std::invalid_argument("meta 'weight' is not finite");
        std::uint64_t frame = d_next_frame;
        const auto ft = pmt::dict_ref(meta, pmt::mp("frame_time"), pmt::PMT_NIL);
        if (!pmt::is_null(ft))
            frame = to_sample(ft, d_fs);
        if (frame < d_cursor)
            throw std::invalid_argument("frame at sample " + std::to_string(frame) +
                                        " starts before the end of the previous burst (" +
                                        std::to_string(d_cursor) + ")");
        if (frame < d_shift)
            throw std::invalid_argument("frame at sample " + std::to_string(frame) +
                                        " is earlier than the calibrated bursts' advance (" +
                                        std::to_string(d_shift) + " samples): start later");
        d_codec.dim = n;
        d_codec.scale = scale;
        dict_indices(meta, "support", d_codec.support);
        d_codec.validate();
        for (std::size_t i = 0; i < n; ++i)
            if (!std::isfinite(x[i]))
                throw std::invalid_argument("update entry " + std::to_string(i) + " is not finite");
        d_update.assign(x, x + n);
        d_weight = weight;
        d_round = round;
        d_frame = frame;
        d_payload_ready = false;
        // The corrected pilot burst: the CFO counter-rotation depends on where it lands on the timeline.
        const std::size_t P = d_pilots[0].size();
        for (std::size_t a = 0; a < d_corr.size(); ++a)
            d_corr[a].apply(d_pilots[a].data(),
                            P,
                            static_cast<std::int64_t>(frame),
                            d_pilots_tx[a].data(),
                            P,
                            static_cast<std::int64_t>(frame - d_shift));
        return true;
    } catch (const std::exception& e) {
        d_logger->error("update dropped: {}", e.what());
        return false;
    }
}

void aircomp_transmitter_impl::start_burst(bool payload)
{
    const std::uint64_t at = (payload ? d_frame + d_layout.payload_offset(0) : d_frame) - d_shift;
    if (d_corr.empty())
        d_burst = payload ? &d_payload : &d_pilots;
    else
        d_burst = payload ? &d_payload_tx : &d_pilots_tx;
    d_burst_len = (*d_burst)[0].size();
    d_burst_pos = 0;
    d_burst_time = to_tx_time(at, d_fs);
    auto info = pmt::make_dict();
    info = pmt::dict_add(info, pmt::mp("round"), pmt::from_long(d_round));
    info = pmt::dict_add(info, pmt::mp("device"), pmt::from_long(static_cast<long>(d_device)));
    info = pmt::dict_add(info, pmt::mp("kind"), pmt::mp(payload ? "payload" : "pilots"));
    d_burst_info = info;
    d_state = payload ? state::payload : state::pilots;
}

void aircomp_transmitter_impl::handle_plan(const pmt::pmt_t& msg)
{
    gr::thread::scoped_lock lock(d_mutex);
    apply_plan(msg);
}

void aircomp_transmitter_impl::apply_plan(const pmt::pmt_t& msg)
{
    try {
        if (!pmt::is_dict(msg))
            throw std::invalid_argument("the plan must be a dictionary");
        const long round = dict_integer(msg, "round", -1);
        const bool started = d_state == state::pilots || d_state == state::wait_plan;
        if (round > d_round) {
            // Its update has not come yet: kept until that round starts.
            d_early_plans.push_back(msg);
            if (d_early_plans.size() > kMaxEarlyPlans) {
                d_logger->warn("more than {} plans ahead of their updates: the oldest is dropped", kMaxEarlyPlans);
                d_early_plans.pop_front();
            }
            d_logger->debug("plan for round {} kept until its update (current round {})", round, d_round);
            return;
        }
        if (!started || round != d_round || d_payload_ready) {
            d_logger->debug("plan for round {} ignored (current round {})", round, d_round);
            return;
        }
        const long L = dict_integer(msg, "n_streams", 1);
        if (dict_integer(msg, "n_devices", -1) != static_cast<long>(d_layout.config().n_devices) ||
            dict_integer(msg, "n_carriers", -1) != static_cast<long>(d_M) ||
            dict_integer(msg, "n_tx", -1) != static_cast<long>(d_T))
            throw std::invalid_argument("the plan is for another frame (n_devices, n_carriers or n_tx differ)");
        if (L < 1 || static_cast<std::size_t>(L) > d_T)
            throw std::invalid_argument("n_streams = " + std::to_string(L) + " must be in [1, n_tx = " +
                                        std::to_string(d_T) + "]");
        const auto prec = pmt::dict_ref(msg, pmt::mp("precoders"), pmt::PMT_NIL);
        if (!pmt::is_c64vector(prec))
            throw std::invalid_argument("'precoders' must be a c64 vector");
        std::size_t n = 0;
        const auto* p = pmt::c64vector_elements(prec, n);
        const std::size_t per = d_M * d_T * static_cast<std::size_t>(L);
        if (n != d_layout.config().n_devices * per)
            throw std::invalid_argument("'precoders' holds " + std::to_string(n) + " values, expected " +
                                        std::to_string(d_layout.config().n_devices * per));
        const double scale = dict_number(msg, "scale", d_codec.scale);
        if (std::abs(scale - d_codec.scale) > 1e-12 * d_codec.scale)
            d_logger->warn("round {}: the plan's scale {} differs from the update's {}", round, scale, d_codec.scale);
        d_precoders.assign(p + d_device * per, p + (d_device + 1) * per);
        const std::size_t Ls = static_cast<std::size_t>(L);
        const std::size_t n_ofdm =
            phy::payload_ofdm_symbols(d_codec, d_layout.config().numerology, Ls);
        d_symbols.assign(n_ofdm * Ls * d_n_data, gr_complex{});
        d_codec.encode(d_update.data(), d_weight, d_symbols.data());
        d_dev.payload(d_symbols, Ls, d_precoders, d_payload);
        for (auto& a : d_payload)
            a.resize(n_ofdm * d_S + d_S); // the guard symbol: zeros
        const std::size_t len = d_payload[0].size();
        const auto at = static_cast<std::int64_t>(d_frame + d_layout.payload_offset(0));
        for (std::size_t a = 0; a < d_corr.size(); ++a) {
            d_payload_tx[a].resize(len);
            d_corr[a].apply(d_payload[a].data(),
                            len,
                            at,
                            d_payload_tx[a].data(),
                            len,
                            at - static_cast<std::int64_t>(d_shift));
        }
        d_payload_ready = true;
        if (d_state == state::wait_plan)
            start_burst(true);
    } catch (const std::exception& e) {
        d_logger->error("plan dropped: {}", e.what());
    }
}

void aircomp_transmitter_impl::burst_done()
{
    d_cursor = d_frame + (d_state == state::payload ? d_layout.payload_offset(0) : 0) + d_burst_len;
    d_burst = nullptr;
    if (d_state == state::pilots) {
        if (d_payload_ready)
            start_burst(true);
        else
            d_state = state::wait_plan;
        return;
    }
    ++d_rounds_sent;
    d_next_frame = d_cursor;
    d_payload_ready = false;
    d_state = (d_n_rounds && d_rounds_sent >= d_n_rounds) ? state::finished : state::idle;
    next_round();
}

int aircomp_transmitter_impl::general_work(int noutput_items,
                                           gr_vector_int&,
                                           gr_vector_const_void_star&,
                                           gr_vector_void_star& output_items)
{
    gr::thread::scoped_lock lock(d_mutex);
    if (d_state == state::finished)
        return WORK_DONE;
    if (!d_burst)
        return 0;
    const std::size_t n =
        std::min(static_cast<std::size_t>(noutput_items), d_burst_len - d_burst_pos);
    for (std::size_t a = 0; a < d_T; ++a) {
        std::memcpy(output_items[a], (*d_burst)[a].data() + d_burst_pos, n * sizeof(gr_complex));
        const std::uint64_t first = nitems_written(static_cast<unsigned>(a));
        if (d_burst_pos == 0) {
            add_item_tag(static_cast<unsigned>(a), first, tag_tx_sob(), pmt::PMT_T);
            add_item_tag(static_cast<unsigned>(a), first, tag_tx_time(), d_burst_time);
            add_item_tag(static_cast<unsigned>(a), first, d_key_burst, d_burst_info);
            if (!pmt::is_null(d_gain_command))
                add_item_tag(static_cast<unsigned>(a), first, d_key_command, d_gain_command);
        }
        if (d_burst_pos + n == d_burst_len)
            add_item_tag(static_cast<unsigned>(a), first + n - 1, tag_tx_eob(), pmt::PMT_T);
    }
    d_burst_pos += n;
    if (d_burst_pos == d_burst_len)
        burst_done();
    return static_cast<int>(n);
}

} /* namespace fedlora */
} /* namespace gr */
