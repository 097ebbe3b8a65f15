// The phases of a waveform-level AirComp round (aircomp_round.h): the streaming receiver gives the same CSI and the
// same payload data bit for bit however its input is cut, does not allocate while consuming samples, and the round
// planner agrees with the power-control policy it wraps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "fedlora/phy/aircomp_round.h"
#include "fedlora/phy/channel.h"
#include "support/alloc_counter.h"

using namespace fedlora::phy;
using cf32 = std::complex<float>;
using cd = std::complex<double>;

namespace {

struct Antennas {
    std::size_t T, R, L;  // L = 0: single stream
};

struct Setup {
    FrameConfig frame;
    AircompReceiverConfig rx;
    ChannelSimConfig channel;
    PowerControlConfig power;
    std::size_t lead = 250;
};

Setup make_setup(Antennas a, std::size_t K) {
    Setup s;
    auto& num = s.frame.numerology;
    num.fft_size = 128;
    num.cp_len = 16;
    num.n_occupied = 96;
    num.pilot_spacing = 12;
    num.sample_rate = 3.84e6;
    s.frame.n_devices = K;
    s.frame.n_tx = a.T;
    s.frame.pilot_repeats = 2;
    s.frame.gap = receiver_min_gap(s.frame, 0);
    s.rx.frame = s.frame;
    s.rx.n_rx = a.R;
    s.rx.estimator.name = "sparse";
    s.rx.pilot_power.assign(K, 1.0 / static_cast<double>(a.T));
    s.channel.sample_rate = num.sample_rate;
    s.channel.noise_variance = 0.01;
    s.channel.n_tx = static_cast<int>(a.T);
    s.channel.n_rx = static_cast<int>(a.R);
    s.channel.seed = 17;
    s.channel.devices.resize(K);
    for (auto& d : s.channel.devices) {
        d.snr_db = 20.0;
        d.profile = "EPA";
        d.cfo_hz = 0.03 * num.subcarrier_spacing();
    }
    s.power.budget.assign(K, 1.0);
    s.power.signal_var.assign(K, 0.5);
    return s;
}

// Appends n samples of every device antenna (tx[k·T + a], each n long) through the channel to rx[r].
void through(MultiUserChannel& ch, const std::vector<std::vector<cf32>>& tx, std::vector<std::vector<cf32>>& rx) {
    const std::size_t n = tx.front().size();
    std::vector<const cf32*> in;
    for (const auto& t : tx)
        in.push_back(t.data());
    std::vector<cf32*> out;
    for (auto& r : rx) {
        r.resize(r.size() + n);
        out.push_back(r.data() + r.size() - n);
    }
    ch.process(in.data(), out.data(), n);
}

// One frame received in one buffer: the stream it produced, and what the receiver made of it.
struct Reference {
    std::vector<std::vector<cf32>> rx;
    RoundPlan plan;
    std::vector<cd> expected;
    std::size_t L = 1, n_ofdm = 0;
    RoundCsi csi;
    std::vector<cf32> data;
    std::uint64_t start = 0;
    double cfo = 0.0, cpe = 0.0, pilot_nmse = 0.0;
};

Reference one_buffer_round(const Setup& s, Antennas a, std::size_t dim, std::uint64_t seed) {
    const std::size_t K = s.frame.n_devices;
    const FrameLayout layout(s.frame);
    MultiUserChannel ch(s.channel);
    AircompReceiver receiver(s.rx);
    Reference ref;
    ref.rx.resize(a.R);

    std::vector<std::vector<cf32>> tx(K * a.T, std::vector<cf32>(s.lead + layout.payload_offset(0), cf32{}));
    std::vector<std::vector<cf32>> one(a.T, std::vector<cf32>(layout.pilots_end()));
    for (std::size_t k = 0; k < K; ++k) {
        DeviceTransmitter dev(s.frame, k, s.rx.pilot_power[k]);
        dev.pilot_burst(one);
        for (std::size_t t = 0; t < a.T; ++t)
            std::copy(one[t].begin(), one[t].end(), tx[k * a.T + t].begin() + static_cast<std::ptrdiff_t>(s.lead));
    }
    through(ch, tx, ref.rx);
    std::vector<const cf32*> at(a.R);
    for (std::size_t r = 0; r < a.R; ++r)
        at[r] = ref.rx[r].data();
    const std::size_t used = receiver.consume(at.data(), ref.rx[0].size());
    EXPECT_EQ(receiver.stage(), AircompReceiver::Stage::NeedPlan);

    PowerControlConfig pc = s.power;
    pc.noise_var = receiver.csi().noise_var;
    pc.csi_error_var = receiver.csi().error_var;
    ref.plan = plan_round(receiver.csi().h, a.L, pc, 20);
    ref.expected = plan_response(ref.plan, receiver.csi().h);
    ref.L = a.L ? a.L : 1;
    AircompCodec codec;
    codec.dim = dim;
    codec.scale = 3.0;
    ref.n_ofdm = payload_ofdm_symbols(codec, s.frame.numerology, ref.L);
    receiver.set_plan(ref.plan.combiner, ref.expected, ref.L, ref.n_ofdm);

    std::mt19937_64 rng(seed);
    std::normal_distribution<float> g;
    std::vector<float> x(dim);
    std::vector<cf32> sym(ref.n_ofdm * ref.L * static_cast<std::size_t>(s.frame.numerology.n_data()));
    std::vector<std::vector<cf32>> wave;
    for (std::size_t k = 0; k < K; ++k) {
        for (auto& v : x)
            v = g(rng);
        std::fill(sym.begin(), sym.end(), cf32{});
        codec.encode(x.data(), 1.0, sym.data());
        DeviceTransmitter dev(s.frame, k, s.rx.pilot_power[k]);
        dev.payload(sym, ref.L, ref.plan.precoders[k], wave);
        for (std::size_t t = 0; t < a.T; ++t)
            tx[k * a.T + t] = wave[t];
    }
    through(ch, tx, ref.rx);
    for (std::size_t r = 0; r < a.R; ++r)
        at[r] = ref.rx[r].data() + used;
    receiver.consume(at.data(), ref.rx[0].size() - used);
    EXPECT_EQ(receiver.stage(), AircompReceiver::Stage::Done);
    ref.csi = receiver.csi();
    ref.data = receiver.data();
    ref.start = receiver.frame_start();
    ref.cfo = receiver.cfo();
    ref.cpe = receiver.mean_cpe_rad();
    ref.pilot_nmse = receiver.pilot_nmse();
    return ref;
}

class RoundReceiver : public ::testing::TestWithParam<Antennas> {};

}  // namespace

TEST_P(RoundReceiver, ChunkedInputGivesTheSameResultsBitForBit) {
    const Antennas a = GetParam();
    const auto s = make_setup(a, 3);
    const auto ref = one_buffer_round(s, a, 1500, 5);
    EXPECT_NEAR(static_cast<double>(ref.start), static_cast<double>(s.lead), 4.0);
    EXPECT_NEAR(ref.cfo, 0.03, 0.005);
    EXPECT_LT(ref.pilot_nmse, 0.2);

    std::mt19937_64 rng(99);
    for (std::size_t max_chunk : {1u, 7u, 100u, 5000u}) {
        AircompReceiver receiver(s.rx);
        std::uniform_int_distribution<std::size_t> pick(1, max_chunk);
        std::vector<const cf32*> at(a.R);
        std::size_t pos = 0;
        const std::size_t total = ref.rx[0].size();
        while (pos < total && receiver.stage() != AircompReceiver::Stage::Done) {
            if (receiver.stage() == AircompReceiver::Stage::NeedPlan) {
                ASSERT_EQ(receiver.csi().h.h, ref.csi.h.h) << "max chunk " << max_chunk;
                ASSERT_EQ(receiver.csi().noise_var, ref.csi.noise_var);
                ASSERT_EQ(receiver.csi().error_var, ref.csi.error_var);
                ASSERT_EQ(receiver.csi().snr_db, ref.csi.snr_db);
                receiver.set_plan(ref.plan.combiner, ref.expected, ref.L, ref.n_ofdm);
            }
            const std::size_t n = std::min(pick(rng), total - pos);
            for (std::size_t r = 0; r < a.R; ++r)
                at[r] = ref.rx[r].data() + pos;
            pos += receiver.consume(at.data(), n);
        }
        ASSERT_EQ(receiver.stage(), AircompReceiver::Stage::Done) << "max chunk " << max_chunk;
        EXPECT_EQ(receiver.frame_start(), ref.start);
        EXPECT_EQ(receiver.cfo(), ref.cfo);
        EXPECT_EQ(receiver.mean_cpe_rad(), ref.cpe);
        EXPECT_EQ(receiver.pilot_nmse(), ref.pilot_nmse);
        EXPECT_EQ(receiver.data(), ref.data) << "max chunk " << max_chunk;
    }
}

TEST_P(RoundReceiver, ConsumeDoesNotAllocate) {
    // Two frames back to back through one receiver; the second is received under the allocation counter (the
    // first warms up the estimator and sizes the data grid).
    const Antennas a = GetParam();
    const auto s = make_setup(a, 2);
    const auto ref = one_buffer_round(s, a, 800, 6);
    std::vector<std::vector<cf32>> stream(a.R);
    for (std::size_t r = 0; r < a.R; ++r) {
        stream[r] = ref.rx[r];
        stream[r].insert(stream[r].end(), ref.rx[r].begin(), ref.rx[r].end());
    }
    AircompReceiver receiver(s.rx);
    std::vector<const cf32*> at(a.R);
    std::size_t pos = 0, frames = 0;
    long allocations = 0;
    while (pos < stream[0].size() && frames < 2) {
        if (receiver.stage() == AircompReceiver::Stage::NeedPlan)
            receiver.set_plan(ref.plan.combiner, ref.expected, ref.L, ref.n_ofdm);
        if (receiver.stage() == AircompReceiver::Stage::Done) {
            ++frames;
            receiver.next_frame();
            continue;
        }
        for (std::size_t r = 0; r < a.R; ++r)
            at[r] = stream[r].data() + pos;
        const std::size_t n = std::min<std::size_t>(333, stream[0].size() - pos);
        if (frames == 1) {
            fedlora::test::CountAllocations counter;
            pos += receiver.consume(at.data(), n);
            allocations += counter.count().total();
        } else {
            pos += receiver.consume(at.data(), n);
        }
    }
    EXPECT_EQ(frames, 2u);
    EXPECT_EQ(allocations, 0);
}

INSTANTIATE_TEST_SUITE_P(Antennas, RoundReceiver,
                         ::testing::Values(Antennas{1, 1, 0}, Antennas{2, 2, 2}, Antennas{2, 3, 1}),
                         [](const ::testing::TestParamInfo<Antennas>& i) {
                             return std::to_string(i.param.T) + "x" + std::to_string(i.param.R) + "_L" +
                                    std::to_string(i.param.L);
                         });

TEST(RoundPlanner, SingleStreamIsThePolicyPlanAndItsMse) {
    // plan_round on one link per device is plan_power: precoders b_k[m], combiner 1/√η_m; its response is
    // Σ_k h_k b_k / √η_m and its per-carrier error energy equals plan_mse_per_carrier.
    const std::size_t K = 4, M = 64;
    std::mt19937_64 rng(3);
    std::normal_distribution<double> g(0.0, std::sqrt(0.5));
    LinkChannels h;
    h.resize(K, 1, 1, M);
    std::vector<cd> hk(K * M);
    for (std::size_t k = 0; k < K; ++k)
        for (std::size_t m = 0; m < M; ++m)
            hk[k * M + m] = h.at(k, 0, 0, m) = cd(g(rng), g(rng));
    for (auto policy : {PowerPolicy::Truncated, PowerPolicy::Mmse, PowerPolicy::Full}) {
        PowerControlConfig pc;
        pc.policy = policy;
        pc.noise_var = 0.05;
        pc.budget = {1.0, 2.0, 0.5, 1.0};
        pc.signal_var = {0.5, 1.0, 0.25, 2.0};
        const auto pp = plan_power(hk, K, M, pc);
        const auto plan = plan_round(h, 0, pc, 1);
        ASSERT_EQ(plan.eta, pp.eta);
        EXPECT_EQ(plan.truncated_fraction, pp.truncated_fraction);
        const auto g_resp = plan_response(plan, h);
        const auto e = plan_stream_mse(plan, h, pc.signal_var, pc.noise_var);
        const auto want = plan_mse_per_carrier(pp, hk, pc);
        for (std::size_t m = 0; m < M; ++m) {
            cd sum = 0.0;
            for (std::size_t k = 0; k < K; ++k) {
                EXPECT_EQ(plan.precoders[k][m], pp.b(k, m));
                sum += hk[k * M + m] * pp.b(k, m);
            }
            EXPECT_EQ(plan.combiner[m], 1.0 / std::sqrt(pp.eta[m]));
            EXPECT_NEAR(std::abs(g_resp[m] - sum / std::sqrt(pp.eta[m])), 0.0, 1e-12);
            EXPECT_NEAR(e[m], want[m], 1e-9 * want[m]) << to_string(policy) << " carrier " << m;
        }
    }
}

TEST(RoundPlanner, RejectsBadShapesByName) {
    LinkChannels h;
    h.resize(2, 2, 2, 8);
    PowerControlConfig pc;
    pc.budget = {1.0, 1.0};
    EXPECT_THROW(
        {
            try {
                plan_round(h, 0, pc, 1);
            } catch (const std::invalid_argument& e) {
                EXPECT_NE(std::string(e.what()).find("n_tx = n_rx = 1"), std::string::npos) << e.what();
                throw;
            }
        },
        std::invalid_argument);
    h.h.pop_back();
    EXPECT_THROW(plan_round(h, 2, pc, 1), std::invalid_argument);
    AircompReceiverConfig rc;
    rc.frame.numerology.pilot_spacing = 8;
    rc.pilot_power = {1.0, 1.0};  // frame for one device
    try {
        AircompReceiver r(rc);
        ADD_FAILURE() << "a pilot_power list of the wrong length was accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("pilot_power"), std::string::npos) << e.what();
    }
}
