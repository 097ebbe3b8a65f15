// The experiment's configuration and uplink models (apps/fedlora/sim): keys, YAML, validation; the radios of the
// four modes against independent references (exact sums in long double, the analytic variance of stochastic
// quantisation, the power-control policy's analytic NMSE).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sim/config.h"
#include "sim/process.h"
#include "sim/radio.h"

using namespace fedlora::sim;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

RadioRound random_round(std::size_t K, std::size_t d, std::uint64_t seed, std::int64_t round = 1) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> g;
    RadioRound r;
    r.round = round;
    double total = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
        r.clients.push_back(static_cast<std::int64_t>(k));
        std::vector<float> x(d);
        const float scale = 0.5f + static_cast<float>(k % 3);  // clients with different update sizes
        for (auto& v : x)
            v = scale * g(rng);
        r.payloads.push_back(std::move(x));
        r.weights.push_back(1.0 + static_cast<double>(k));
        total += r.weights.back();
    }
    for (auto& w : r.weights)
        w /= total;
    return r;
}

std::vector<long double> exact(const RadioRound& r) {
    std::vector<long double> s(r.payloads[0].size(), 0.0L);
    for (std::size_t k = 0; k < r.payloads.size(); ++k)
        for (std::size_t i = 0; i < s.size(); ++i)
            s[i] += static_cast<long double>(r.weights[k]) * r.payloads[k][i];
    return s;
}

double nmse(const std::vector<float>& est, const std::vector<long double>& ref) {
    long double e = 0, p = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        e += (est[i] - ref[i]) * (est[i] - ref[i]);
        p += ref[i] * ref[i];
    }
    return static_cast<double>(e / p);
}

}  // namespace

TEST(SimConfig, DefaultsAreValidAndTheDocumentedExperiment) {
    SimConfig c;
    EXPECT_NO_THROW(c.validate());
    EXPECT_EQ(c.task, "vision");
    EXPECT_EQ(c.mode, "aircomp");
    EXPECT_EQ(c.clients, 20);
    EXPECT_EQ(c.data.partition, "dirichlet");
    EXPECT_DOUBLE_EQ(c.data.alpha, 0.5);
    EXPECT_GE(c.channel.snr_db, 10.0);
    EXPECT_EQ(c.lora_targets(), (std::vector<std::string>{"qkv", "proj", "fc1", "fc2", "head"}));
    c.task = "text";
    EXPECT_EQ(c.lora_targets(), (std::vector<std::string>{"c_attn", "c_proj", "c_fc"}));
}

TEST(SimConfig, EveryKeyRoundTripsThroughYaml) {
    // Change every key to a non-default value where one can be derived, write YAML, read it into defaults.
    SimConfig a;
    set_key(a, "task", "text");
    set_key(a, "mode", "digital");
    set_key(a, "seed", "18446744073709551615");
    set_key(a, "rounds", "17");
    set_key(a, "train.lr", "0.000123456789");
    set_key(a, "channel.snr_db", "-3.25");
    set_key(a, "lora.targets", "qkv, fc2");
    set_key(a, "phy.perfect_csi", "yes");
    set_key(a, "data.dir", "/some/where with spaces: and colon");
    set_key(a, "soft.rho", "0.1");
    set_key(a, "pretrain.path", "");
    SimConfig b;
    load_yaml_text(b, to_yaml(a), "round trip");
    for (const auto& k : config_keys())
        EXPECT_EQ(get_key(a, k), get_key(b, k)) << k;
    EXPECT_EQ(b.seed, 18446744073709551615ULL);
    EXPECT_EQ(b.train.lr, 0.000123456789);
    EXPECT_TRUE(b.phy.perfect_csi);
    EXPECT_EQ(b.lora.targets, (std::vector<std::string>{"qkv", "fc2"}));
}

TEST(SimConfig, BadValuesNameTheKey) {
    SimConfig c;
    EXPECT_NE(error_of([&] { set_key(c, "train.lr", "fast"); }).find("'train.lr'"), std::string::npos);
    EXPECT_NE(error_of([&] { set_key(c, "train.lr", "nan"); }).find("not a finite number"), std::string::npos);
    const auto range = error_of([&] { set_key(c, "soft.rho", "1.5"); });
    EXPECT_NE(range.find("'soft.rho'"), std::string::npos) << range;
    EXPECT_NE(range.find("out of range"), std::string::npos) << range;
    EXPECT_NE(error_of([&] { set_key(c, "rounds", "2.5"); }).find("not an integer"), std::string::npos);
    EXPECT_NE(error_of([&] { set_key(c, "seed", "-1"); }).find("negative"), std::string::npos);
    EXPECT_NE(error_of([&] { set_key(c, "mode", "analog"); }).find("ideal, aircomp, aircomp-analytic, digital"),
              std::string::npos);
    EXPECT_NE(error_of([&] { set_key(c, "phy.perfect_csi", "maybe"); }).find("boolean"), std::string::npos);
    const auto unknown = error_of([&] { set_key(c, "train.lrr", "1"); });
    EXPECT_NE(unknown.find("unknown config key 'train.lrr'"), std::string::npos);
    EXPECT_NE(unknown.find("train.lr,"), std::string::npos) << "lists the section's keys: " << unknown;
    EXPECT_EQ(unknown.find("phy.fft"), std::string::npos) << "only the section's keys: " << unknown;
    EXPECT_NE(error_of([&] { apply_override(c, "rounds"); }).find("key=value"), std::string::npos);
    // A failed set leaves the value unchanged.
    EXPECT_DOUBLE_EQ(c.train.lr, SimConfig{}.train.lr);
}

TEST(SimConfig, YamlErrorsNameOriginKeyAndLine) {
    SimConfig c;
    const auto nested = error_of([&] { load_yaml_text(c, "train:\n  lr: 0.1\n  momentum: 3\n", "exp.yaml"); });
    EXPECT_NE(nested.find("exp.yaml"), std::string::npos) << nested;
    EXPECT_NE(nested.find("train.momentum"), std::string::npos) << nested;
    const auto syntax = error_of([&] { load_yaml_text(c, "rounds: [1,\n", "exp.yaml"); });
    EXPECT_NE(syntax.find("line"), std::string::npos) << syntax;
    const auto shape = error_of([&] { load_yaml_text(c, "rounds: {a: 1}\n", "exp.yaml"); });
    EXPECT_NE(shape.find("rounds"), std::string::npos) << shape;
    EXPECT_NO_THROW(load_yaml_text(c, "", "empty.yaml"));
}

TEST(SimConfig, CombinationsAreChecked) {
    SimConfig c;
    c.clients_per_round = 21;
    EXPECT_NE(error_of([&] { c.validate(); }).find("clients_per_round"), std::string::npos);
    c = SimConfig{};
    c.phy.streams = 2;
    EXPECT_NE(error_of([&] { c.validate(); }).find("phy.streams"), std::string::npos);
    c.phy.tx = 2;
    c.phy.rx = 2;
    EXPECT_NO_THROW(c.validate());
    c = SimConfig{};
    c.aggregation = "fedsa";
    c.soft.rho = 0.5;
    EXPECT_NE(error_of([&] { c.validate(); }).find("soft.support"), std::string::npos);
    c.soft.support = "seeded";
    EXPECT_NO_THROW(c.validate());
    c = SimConfig{};
    c.train.lr = -1.0;  // set in code, bypassing set_key: validate still catches it
    EXPECT_NE(error_of([&] { c.validate(); }).find("train.lr"), std::string::npos);
}

TEST(SimConfig, FlowgraphTransportNeedsWaveformAircomp) {
    SimConfig c;
    set_key(c, "transport", "flowgraph");
    EXPECT_NO_THROW(c.validate());
    EXPECT_NE(error_of([&] { set_key(c, "transport", "carrier-pigeon"); }).find("inprocess, flowgraph"),
              std::string::npos);
    for (const char* mode : {"ideal", "aircomp-analytic", "digital"}) {
        SimConfig m = c;
        m.mode = mode;
        const auto e = error_of([&] { m.validate(); });
        EXPECT_NE(e.find("config key 'transport'"), std::string::npos) << e;
        EXPECT_NE(e.find(mode), std::string::npos) << e;
        // make_radio refuses it too (a configuration filled in code, never validated), before starting anything.
        EXPECT_NE(error_of([&] { (void)make_radio(m); }).find("config key 'transport'"), std::string::npos);
    }
    SimConfig p = c;
    p.phy.perfect_csi = true;
    EXPECT_NE(error_of([&] { p.validate(); }).find("config key 'phy.perfect_csi'"), std::string::npos);
    SimConfig f = c;
    f.aggregation = "fedsa";
    EXPECT_NE(error_of([&] { f.validate(); }).find("config key 'aggregation'"), std::string::npos);
    EXPECT_EQ(get_key(SimConfig{}, "transport"), "inprocess");
}

TEST(SimRadio, IdealIsTheExactSum) {
    SimConfig c;
    c.mode = "ideal";
    auto radio = make_radio(c);
    const auto r = random_round(7, 1001, 3);
    std::vector<float> est;
    const auto rep = radio->aggregate(r, est);
    const auto ref = exact(r);
    ASSERT_EQ(est.size(), ref.size());
    // Accumulated in double and rounded once: within one float ulp of the long-double sum.
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const float r = static_cast<float>(ref[i]);
        const double ulp = std::nextafter(std::abs(r), INFINITY) - std::abs(r);
        EXPECT_LE(std::abs(static_cast<double>(est[i] - ref[i])), ulp) << i;
    }
    EXPECT_TRUE(std::isnan(rep.nmse));
    EXPECT_EQ(rep.channel_uses, 0u);
}

TEST(SimRadio, NonFinitePayloadIsRejectedNamingTheClient) {
    for (const char* mode : {"ideal", "aircomp", "aircomp-analytic", "digital"}) {
        SimConfig c;
        c.mode = mode;
        auto radio = make_radio(c);
        auto r = random_round(4, 100, 5);
        r.clients[2] = 17;
        r.payloads[2][40] = std::nanf("");
        std::vector<float> est;
        const auto e = error_of([&] { radio->aggregate(r, est); });
        EXPECT_NE(e.find("client 17"), std::string::npos) << mode << ": " << e;
        EXPECT_NE(e.find("entry 40"), std::string::npos) << mode << ": " << e;
    }
}

TEST(SimRadio, DigitalErrorMatchesStochasticQuantisationVariance) {
    // Stochastic rounding to a grid of step Δ_k = 2 r_k / (2^q − 1): entry i has variance Δ² f(1 − f), f its
    // fractional position; the sum's expected error energy is Σ_k p_k² Σ_i Δ_k² f_ki (1 − f_ki).
    SimConfig c;
    c.mode = "digital";
    c.digital.bits = 4;
    auto radio = make_radio(c);
    double measured = 0.0, expected = 0.0;
    for (int trial = 0; trial < 8; ++trial) {
        const auto r = random_round(5, 4000, 100 + static_cast<std::uint64_t>(trial), trial + 1);
        std::vector<float> est;
        const auto rep = radio->aggregate(r, est);
        const auto ref = exact(r);
        for (std::size_t i = 0; i < ref.size(); ++i)
            measured += static_cast<double>((est[i] - ref[i]) * (est[i] - ref[i]));
        for (std::size_t k = 0; k < r.payloads.size(); ++k) {
            double range = 0.0;
            for (const float v : r.payloads[k])
                range = std::max(range, std::abs(static_cast<double>(v)));
            const double step = 2.0 * range / 15.0;
            for (const float v : r.payloads[k]) {
                const double pos = (v + range) / step;
                const double f = pos - std::floor(pos);
                expected += r.weights[k] * r.weights[k] * step * step * f * (1.0 - f);
            }
        }
        EXPECT_GT(rep.channel_uses, 0u);
        EXPECT_GT(rep.airtime_s, 0.0);
    }
    EXPECT_NEAR(measured / expected, 1.0, 0.05) << measured << " vs " << expected;
}

TEST(SimRadio, AircompAnalyticMatchesThePolicyAndDigitalNeedsMoreChannelUses) {
    // The effective-noise round at 15 dB: measured NMSE near the policy's analytic NMSE on average; an 8-bit
    // digital upload of the same payloads occupies far more resource elements.
    SimConfig c;
    c.mode = "aircomp-analytic";
    c.channel.snr_db = 15.0;
    auto air = make_radio(c);
    c.mode = "digital";
    auto dig = make_radio(c);
    double m = 0.0, a = 0.0;
    for (int t = 1; t <= 6; ++t) {
        const auto r = random_round(10, 20000, 7 + static_cast<std::uint64_t>(t), t);
        std::vector<float> est;
        const auto rep = air->aggregate(r, est);
        EXPECT_NEAR(rep.nmse, nmse(est, exact(r)), 1e-6 + 1e-4 * rep.nmse);
        m += rep.nmse / 6;
        a += rep.nmse_analytic / 6;
        const auto d = dig->aggregate(r, est);
        EXPECT_GT(d.channel_uses, 10 * rep.channel_uses) << "round " << t;
        // Analog: ceil(d/2) symbols on the data carriers (200 occupied, one pilot every 20).
        EXPECT_EQ(rep.channel_uses, static_cast<std::uint64_t>(std::ceil(10000.0 / 190.0)) * 200u);
    }
    EXPECT_NEAR(10 * std::log10(m), 10 * std::log10(a), 0.5);
}

TEST(SimRadio, ClientSnrIsPerClientStableAndWithinTheSpread) {
    SimConfig c;
    std::vector<double> s;
    for (int k = 0; k < 200; ++k) {
        const double v = client_mean_snr_db(c, k);
        EXPECT_GE(v, c.channel.snr_db - c.channel.snr_spread_db);
        EXPECT_LE(v, c.channel.snr_db + c.channel.snr_spread_db);
        EXPECT_EQ(v, client_mean_snr_db(c, k));
        s.push_back(v);
    }
    double mean = 0.0;
    for (const double v : s)
        mean += v / static_cast<double>(s.size());
    EXPECT_NEAR(mean, c.channel.snr_db, 0.5);  // uniform on ±3 dB: standard error of the mean 0.12 dB
    c.seed = 2;
    EXPECT_NE(client_mean_snr_db(c, 0), s[0]);
}

// The child-process helper of the flowgraph transport: pipes, exit status, ending a child that will not stop.
TEST(SimProcess, PipesStatusAndTermination) {
    ChildProcess::Options o;
    o.program = "/bin/sh";
    o.argv = {"sh", "-c", "read line; echo \"got $line $FEDLORA_TEST_VAR\"; echo oops >&2; exit 3"};
    o.env = {"FEDLORA_TEST_VAR=from-the-parent"};
    o.pipe_stdin = o.pipe_stdout = o.pipe_stderr = true;
    ChildProcess p(o);
    ASSERT_EQ(::write(p.stdin_fd(), "hello\n", 6), 6);
    const auto st = p.wait_for(std::chrono::seconds(30));
    ASSERT_TRUE(st.has_value());
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 3) << ChildProcess::describe(*st);
    EXPECT_EQ(ChildProcess::describe(*st), "exited with status 3");
    std::string out, err;
    while (read_available(p.stdout_fd(), out)) {
        pollfd pf{p.stdout_fd(), POLLIN, 0};
        ::poll(&pf, 1, 1000);
    }
    while (read_available(p.stderr_fd(), err)) {
        pollfd pf{p.stderr_fd(), POLLIN, 0};
        ::poll(&pf, 1, 1000);
    }
    EXPECT_EQ(out, "got hello from-the-parent\n");
    EXPECT_EQ(err, "oops\n");

    // A child that waits for its stdin forever: closing it ends `cat`; a child ignoring that is terminated.
    ChildProcess::Options c;
    c.program = "/bin/cat";
    c.argv = {"cat"};
    c.pipe_stdin = true;
    ChildProcess cat(c);
    EXPECT_FALSE(cat.wait_for(std::chrono::milliseconds(50)).has_value());
    cat.close_stdin();
    const auto cst = cat.wait_for(std::chrono::seconds(30));
    ASSERT_TRUE(cst.has_value());
    EXPECT_TRUE(WIFEXITED(*cst) && WEXITSTATUS(*cst) == 0);
    ChildProcess::Options t;
    t.program = "/bin/sh";
    t.argv = {"sh", "-c", "trap '' TERM; echo ready; read never"};
    t.pipe_stdin = t.pipe_stdout = true;
    ChildProcess stubborn(t);
    std::string ready;  // SIGTERM is ignored from here on
    while (ready.find('\n') == std::string::npos && read_available(stubborn.stdout_fd(), ready)) {
        pollfd pf{stubborn.stdout_fd(), POLLIN, 0};
        ::poll(&pf, 1, 1000);
    }
    ASSERT_EQ(ready, "ready\n");
    const int tst = stubborn.terminate(std::chrono::milliseconds(200));
    EXPECT_TRUE(WIFSIGNALED(tst) && WTERMSIG(tst) == SIGKILL) << ChildProcess::describe(tst);

    ChildProcess::Options missing;
    missing.program = "/nonexistent/python3";
    missing.argv = {"python3"};
    const auto e = error_of([&] { ChildProcess m(missing); });
    EXPECT_NE(e.find("/nonexistent/python3"), std::string::npos) << e;
    EXPECT_NE(e.find("No such file"), std::string::npos) << e;
}
