#include "fedlora/calib/file.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <initializer_list>
#include <sstream>

namespace fedlora::calib {

using phy::CalibrationError;
using phy::CalibrationSet;

namespace {

// What a node holds, for "expected ..., got ..." messages.
std::string show(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull())
        return "nothing";
    if (n.IsScalar())
        return "'" + n.Scalar() + "'";
    if (n.IsSequence())
        return "a list";
    return "a mapping";
}

class Reader {
public:
    explicit Reader(std::string source) : source_(std::move(source)) {}

    [[noreturn]] void fail(const std::string& path, const YAML::Node& n, const std::string& what) const {
        std::string where = source_ + ": " + path;
        if (n.IsDefined() && !n.Mark().is_null())
            where += " (line " + std::to_string(n.Mark().line + 1) + ")";
        throw CalibrationError(where + ": " + what);
    }

    // Every key of the mapping `m` at `path` must be one of `known`.
    void only(const YAML::Node& m, const std::string& path, std::initializer_list<const char*> known) const {
        if (!m.IsMap())
            fail(path, m, "expected a mapping (key: value), got " + show(m));
        for (auto it = m.begin(); it != m.end(); ++it) {
            const std::string key = it->first.IsScalar() ? it->first.Scalar() : "?";
            bool ok = false;
            std::string list;
            for (const char* k : known) {
                ok |= key == k;
                list += (list.empty() ? "" : ", ") + std::string(k);
            }
            if (!ok)
                fail(path.empty() ? key : path + "." + key, it->first,
                     "unknown key '" + key + "' (known here: " + list + ")");
        }
    }

    YAML::Node need(const YAML::Node& m, const std::string& path, const char* key) const {
        const YAML::Node v = m[key];
        if (!v.IsDefined())
            fail(path.empty() ? std::string("top level") : path, m, std::string("missing key '") + key + "'");
        return v;
    }

    double number(const YAML::Node& n, const std::string& path) const {
        if (!n.IsScalar())
            fail(path, n, "expected a number, got " + show(n));
        try {
            return n.as<double>();
        } catch (const YAML::Exception&) {
            fail(path, n, "expected a number, got " + show(n));
        }
    }

    long long integer(const YAML::Node& n, const std::string& path) const {
        if (!n.IsScalar())
            fail(path, n, "expected an integer, got " + show(n));
        try {
            return n.as<long long>();
        } catch (const YAML::Exception&) {
            fail(path, n, "expected an integer, got " + show(n));
        }
    }

    std::string text(const YAML::Node& n, const std::string& path) const {
        if (!n.IsScalar())
            fail(path, n, "expected a text value, got " + show(n));
        return n.Scalar();
    }

    std::vector<double> numbers(const YAML::Node& n, const std::string& path) const {
        if (!n.IsSequence())
            fail(path, n, "expected a list of numbers, got " + show(n));
        std::vector<double> v;
        for (std::size_t i = 0; i < n.size(); ++i)
            v.push_back(number(n[i], path + "[" + std::to_string(i) + "]"));
        return v;
    }

    const std::string& source() const { return source_; }

private:
    std::string source_;
};

phy::TxPowerTable read_tx_power(const Reader& r, const YAML::Node& n, const std::string& path) {
    r.only(n, path, {"frequencies_hz", "gains_db", "power_dbm"});
    phy::TxPowerTable t;
    t.frequencies_hz = r.numbers(r.need(n, path, "frequencies_hz"), path + ".frequencies_hz");
    t.gains_db = r.numbers(r.need(n, path, "gains_db"), path + ".gains_db");
    const YAML::Node rows = r.need(n, path, "power_dbm");
    const std::string rp = path + ".power_dbm";
    if (!rows.IsSequence())
        r.fail(rp, rows, "expected a list of rows (one per frequency), got " + show(rows));
    if (rows.size() != t.frequencies_hz.size())
        r.fail(rp, rows, std::to_string(rows.size()) + " rows for " + std::to_string(t.frequencies_hz.size()) +
                             " frequencies (one row per entry of frequencies_hz)");
    for (std::size_t f = 0; f < rows.size(); ++f) {
        const auto row = r.numbers(rows[f], rp + "[" + std::to_string(f) + "]");
        if (row.size() != t.gains_db.size())
            r.fail(rp + "[" + std::to_string(f) + "]", rows[f],
                   std::to_string(row.size()) + " values for " + std::to_string(t.gains_db.size()) +
                       " gains (one column per entry of gains_db)");
        t.power_dbm.insert(t.power_dbm.end(), row.begin(), row.end());
    }
    return t;
}

phy::NoiseFloorTable read_noise(const Reader& r, const YAML::Node& n, const std::string& path) {
    r.only(n, path, {"gain_db", "frequencies_hz", "dbfs"});
    phy::NoiseFloorTable t;
    t.gain_db = r.number(r.need(n, path, "gain_db"), path + ".gain_db");
    t.frequencies_hz = r.numbers(r.need(n, path, "frequencies_hz"), path + ".frequencies_hz");
    t.dbfs = r.numbers(r.need(n, path, "dbfs"), path + ".dbfs");
    return t;
}

phy::AlignmentRecord read_alignment(const Reader& r, const YAML::Node& n, const std::string& path) {
    r.only(n, path,
           {"frequency_hz", "sample_rate_hz", "timing_offset_samples", "phase_rad", "reference_time_s", "cfo_hz",
            "tx_gain_db"});
    phy::AlignmentRecord a;
    a.frequency_hz = r.number(r.need(n, path, "frequency_hz"), path + ".frequency_hz");
    a.sample_rate_hz = r.number(r.need(n, path, "sample_rate_hz"), path + ".sample_rate_hz");
    a.timing_offset_samples = r.number(r.need(n, path, "timing_offset_samples"), path + ".timing_offset_samples");
    a.phase_rad = r.number(r.need(n, path, "phase_rad"), path + ".phase_rad");
    a.reference_time_s = r.number(r.need(n, path, "reference_time_s"), path + ".reference_time_s");
    a.cfo_hz = r.number(r.need(n, path, "cfo_hz"), path + ".cfo_hz");
    if (const YAML::Node g = n["tx_gain_db"])
        a.tx_gain_db = r.number(g, path + ".tx_gain_db");
    return a;
}

}  // namespace

CalibrationSet parse_calibration(const std::string& yaml_text, const std::string& source) {
    const Reader r(source);
    YAML::Node root;
    try {
        root = YAML::Load(yaml_text);
    } catch (const YAML::Exception& e) {
        throw CalibrationError(source + ": not valid YAML: " + e.what());
    }
    if (!root.IsDefined() || root.IsNull())
        throw CalibrationError(source + ": the file is empty");
    if (!root.IsMap())
        throw CalibrationError(source + ": the top level must be a mapping (key: value), got " + show(root));
    r.only(root, "", {"fedlora_calibration", "date", "conditions", "reference", "tx_reference_dbfs", "devices"});
    CalibrationSet s;
    s.source = source;
    const long long version = r.integer(r.need(root, "", "fedlora_calibration"), "fedlora_calibration");
    if (version != CalibrationSet::kVersion)
        r.fail("fedlora_calibration", root["fedlora_calibration"],
               std::to_string(version) + " is not a version this build reads (" +
                   std::to_string(CalibrationSet::kVersion) + ")");
    s.version = static_cast<int>(version);
    s.date = r.text(r.need(root, "", "date"), "date");
    if (const YAML::Node c = root["conditions"])
        s.conditions = r.text(c, "conditions");
    s.reference = r.text(r.need(root, "", "reference"), "reference");
    if (const YAML::Node t = root["tx_reference_dbfs"])
        s.tx_reference_dbfs = r.number(t, "tx_reference_dbfs");
    const YAML::Node devs = r.need(root, "", "devices");
    if (!devs.IsSequence())
        r.fail("devices", devs, "expected a list of devices, got " + show(devs));
    for (std::size_t d = 0; d < devs.size(); ++d) {
        const std::string dp = "devices[" + std::to_string(d) + "]";
        const YAML::Node dn = devs[d];
        r.only(dn, dp, {"serial", "product", "channels"});
        phy::DeviceCalibration dev;
        dev.serial = r.text(r.need(dn, dp, "serial"), dp + ".serial");
        if (const YAML::Node p = dn["product"])
            dev.product = r.text(p, dp + ".product");
        const std::string dps = dp + " (serial '" + dev.serial + "')";
        const YAML::Node chans = r.need(dn, dps, "channels");
        if (!chans.IsSequence())
            r.fail(dps + ".channels", chans, "expected a list of channels, got " + show(chans));
        for (std::size_t c = 0; c < chans.size(); ++c) {
            const std::string cp = dps + ".channels[" + std::to_string(c) + "]";
            const YAML::Node cn = chans[c];
            r.only(cn, cp, {"channel", "tx_power", "rx_noise_floor", "alignment"});
            phy::ChannelCalibration ch;
            const long long idx = r.integer(r.need(cn, cp, "channel"), cp + ".channel");
            if (idx < 0 || idx > 31)
                r.fail(cp + ".channel", cn["channel"], std::to_string(idx) + " must be in [0, 31]");
            ch.channel = static_cast<int>(idx);
            if (const YAML::Node t = cn["tx_power"])
                ch.tx_power = read_tx_power(r, t, cp + ".tx_power");
            if (const YAML::Node t = cn["rx_noise_floor"])
                ch.rx_noise = read_noise(r, t, cp + ".rx_noise_floor");
            if (const YAML::Node al = cn["alignment"]) {
                if (!al.IsSequence())
                    r.fail(cp + ".alignment", al, "expected a list of entries (one per frequency), got " + show(al));
                for (std::size_t i = 0; i < al.size(); ++i)
                    ch.alignment.push_back(read_alignment(r, al[i], cp + ".alignment[" + std::to_string(i) + "]"));
            }
            dev.channels.push_back(std::move(ch));
        }
        s.devices.push_back(std::move(dev));
    }
    s.validate();
    return s;
}

CalibrationSet load_calibration(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw CalibrationError(path + ": cannot read the calibration file");
    std::ostringstream ss;
    ss << in.rdbuf();
    return parse_calibration(ss.str(), path);
}

std::string to_yaml(const CalibrationSet& s) {
    YAML::Emitter out;
    out.SetDoublePrecision(15);
    out << YAML::Comment("fedlora calibration file; calibration/README.md describes every key") << YAML::Newline;
    out << YAML::BeginMap;
    out << YAML::Key << "fedlora_calibration" << YAML::Value << s.version;
    out << YAML::Key << "date" << YAML::Value << YAML::DoubleQuoted << s.date;
    out << YAML::Key << "conditions" << YAML::Value << YAML::DoubleQuoted << s.conditions;
    out << YAML::Key << "reference" << YAML::Value << s.reference;
    out << YAML::Key << "tx_reference_dbfs" << YAML::Value << s.tx_reference_dbfs;
    out << YAML::Key << "devices" << YAML::Value << YAML::BeginSeq;
    auto flow = [&](const std::vector<double>& v) {
        out << YAML::Flow << YAML::BeginSeq;
        for (double x : v)
            out << x;
        out << YAML::EndSeq;
    };
    for (const auto& d : s.devices) {
        out << YAML::BeginMap;
        out << YAML::Key << "serial" << YAML::Value << YAML::DoubleQuoted << d.serial;
        if (!d.product.empty())
            out << YAML::Key << "product" << YAML::Value << d.product;
        out << YAML::Key << "channels" << YAML::Value << YAML::BeginSeq;
        for (const auto& c : d.channels) {
            out << YAML::BeginMap << YAML::Key << "channel" << YAML::Value << c.channel;
            if (!c.tx_power.empty()) {
                const auto& t = c.tx_power;
                out << YAML::Key << "tx_power" << YAML::Value << YAML::BeginMap;
                out << YAML::Key << "frequencies_hz" << YAML::Value;
                flow(t.frequencies_hz);
                out << YAML::Key << "gains_db" << YAML::Value;
                flow(t.gains_db);
                out << YAML::Key << "power_dbm" << YAML::Value << YAML::BeginSeq;
                const std::size_t G = t.gains_db.size();
                for (std::size_t f = 0; f < t.frequencies_hz.size(); ++f)
                    flow(std::vector<double>(t.power_dbm.begin() + static_cast<std::ptrdiff_t>(f * G),
                                             t.power_dbm.begin() + static_cast<std::ptrdiff_t>((f + 1) * G)));
                out << YAML::EndSeq << YAML::EndMap;
            }
            if (!c.rx_noise.empty()) {
                out << YAML::Key << "rx_noise_floor" << YAML::Value << YAML::BeginMap;
                out << YAML::Key << "gain_db" << YAML::Value << c.rx_noise.gain_db;
                out << YAML::Key << "frequencies_hz" << YAML::Value;
                flow(c.rx_noise.frequencies_hz);
                out << YAML::Key << "dbfs" << YAML::Value;
                flow(c.rx_noise.dbfs);
                out << YAML::EndMap;
            }
            if (!c.alignment.empty()) {
                out << YAML::Key << "alignment" << YAML::Value << YAML::BeginSeq;
                for (const auto& a : c.alignment) {
                    out << YAML::BeginMap;
                    out << YAML::Key << "frequency_hz" << YAML::Value << a.frequency_hz;
                    out << YAML::Key << "sample_rate_hz" << YAML::Value << a.sample_rate_hz;
                    out << YAML::Key << "timing_offset_samples" << YAML::Value << a.timing_offset_samples;
                    out << YAML::Key << "phase_rad" << YAML::Value << a.phase_rad;
                    out << YAML::Key << "reference_time_s" << YAML::Value << a.reference_time_s;
                    out << YAML::Key << "cfo_hz" << YAML::Value << a.cfo_hz;
                    out << YAML::Key << "tx_gain_db" << YAML::Value << a.tx_gain_db;
                    out << YAML::EndMap;
                }
                out << YAML::EndSeq;
            }
            out << YAML::EndMap;
        }
        out << YAML::EndSeq << YAML::EndMap;
    }
    out << YAML::EndSeq << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
}

void save_calibration(const CalibrationSet& s, const std::string& path) {
    s.validate();
    const std::string text = to_yaml(s);
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out)
            throw CalibrationError(path + ": cannot write the calibration file (" + tmp + ")");
        out << text;
        if (!out.flush())
            throw CalibrationError(path + ": writing failed");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw CalibrationError(path + ": cannot replace the calibration file");
    }
}

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char b[32];
    std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

}  // namespace fedlora::calib
