// fedlora report: compares experiment runs. Reads the run folders `fedlora sim` writes (rounds.csv, summary.json,
// config.yaml; format in docs/report.md), validates them, and writes PNG plots (one line per run) and a markdown
// table into an output folder.
//
// All reading, checking and choosing is done here: which runs go into which plot, with which values, on which axis
// scale. The embedded report_plots.py only draws that list of plots with matplotlib (Agg); it receives it as one
// JSON file in a temporary directory and reads no file of the user's.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "temp_dir.h"
#include "report_plots_py.h"

extern char** environ;

namespace fedlora::app {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();
bool missing(double v) { return std::isnan(v); }

struct ReportOpts {
    std::vector<std::string> runs;
    std::string out = "report";
    std::string python = FEDLORA_PYTHON;
};

// The numeric columns of rounds.csv this command knows. Every cell of them must be a finite number, empty or "nan".
// Other columns (`queue`, columns added later) are not read; `mode` is read as text.
const std::set<std::string>& numeric_columns() {
    static const std::set<std::string> cols = {
        "round",        "clients",          "snr_db",    "nmse_db",   "nmse_analytic_db", "sparsity",
        "subcarriers",  "channel_uses",     "cum_channel_uses",       "airtime_s",        "latency_s",
        "cum_latency_s", "train_loss",      "test_accuracy",          "test_perplexity",  "wall_s"};
    return cols;
}

// Columns whose values can never be negative.
const std::set<std::string>& nonnegative_columns() {
    static const std::set<std::string> cols = {"clients",   "subcarriers", "channel_uses", "cum_channel_uses",
                                               "airtime_s", "latency_s",   "cum_latency_s", "wall_s"};
    return cols;
}

// One run folder, read and checked.
struct Run {
    std::string dir;   // as given on the command line
    std::string name;  // label in plots and table: the folder name
    std::string task, task_source;
    std::string mode;
    std::vector<double> round;
    std::map<std::string, std::vector<double>> num;  // the known numeric columns present, one value per row
    std::vector<std::string> mode_column;            // the `mode` cells, if the column exists

    // Derived per round (kMissing where unknown).
    std::vector<double> metric, cum_channel_uses, latency_s;
    // Derived per run (kMissing where unknown).
    double final_metric = kMissing, best_metric = kMissing, total_channel_uses = kMissing,
           total_latency_s = kMissing, mean_nmse_db = kMissing;

    const std::vector<double>* column(const std::string& c) const {
        const auto it = num.find(c);
        return it == num.end() ? nullptr : &it->second;
    }
};

std::string single_quoted(const std::string& s) { return "'" + s + "'"; }

std::string read_file_text(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f)
        throw std::runtime_error("cannot open " + p.string() + ": " + std::strerror(errno));
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

std::string trim(std::string_view s) {
    const auto b = s.find_first_not_of(" \t");
    if (b == std::string_view::npos)
        return {};
    const auto e = s.find_last_not_of(" \t");
    return std::string(s.substr(b, e - b + 1));
}

std::string lower(std::string s) {
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// Splits one CSV line into trimmed cells. Quoted cells ("a,b", "" for a quote inside) are understood; a quote
// left open is an error. Line breaks inside quotes are not supported (rounds.csv has none).
std::vector<std::string> split_csv(const std::string& line, const std::string& where) {
    std::vector<std::string> cells;
    std::string cell;
    bool in_quotes = false, was_quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        if (in_quotes) {
            if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
                cell += '"';
                ++i;
            } else if (c == '"') {
                in_quotes = false;
            } else {
                cell += c;
            }
        } else if (c == '"' && trim(cell).empty()) {
            in_quotes = was_quoted = true;
            cell.clear();
        } else if (c == ',') {
            cells.push_back(was_quoted ? cell : trim(cell));
            cell.clear();
            was_quoted = false;
        } else {
            cell += c;
        }
    }
    if (in_quotes)
        throw std::runtime_error(where + ": a quoted cell is not closed");
    cells.push_back(was_quoted ? cell : trim(cell));
    return cells;
}

// A cell of a numeric column: a finite number, or kMissing for an empty cell or "nan". Throws naming the cell.
double parse_cell(const std::string& cell, const std::string& where) {
    std::string_view s = cell;
    if (s.empty())
        return kMissing;
    std::string_view body = s;
    if (body.front() == '+' || body.front() == '-')
        body.remove_prefix(1);
    if (lower(std::string(body)) == "nan")
        return kMissing;
    if (s.front() == '+')
        s.remove_prefix(1);
    double v = 0.0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || s.empty())
        throw std::runtime_error(where + ": " + single_quoted(cell) + " is not a number");
    if (!std::isfinite(v))
        throw std::runtime_error(where + ": " + single_quoted(cell) + " is not a finite number");
    return v;
}

// The value of a top-level scalar key of a YAML file ("key: value" starting in column 0), without quotes and
// trailing comment; empty if the key is not there. Enough for `task:` and `mode:` of a resolved config.
std::string yaml_top_level_scalar(const std::string& text, const std::string& key) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.compare(0, key.size() + 1, key + ":") != 0)
            continue;
        std::string v = line.substr(key.size() + 1);
        if (const auto hash = v.find(" #"); hash != std::string::npos)
            v.erase(hash);
        v = trim(v);
        if (!v.empty() && v.back() == '\r')
            v = trim(v.substr(0, v.size() - 1));
        if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front())
            v = v.substr(1, v.size() - 2);
        return v;
    }
    return {};
}

// The label of a run: its folder name ("runs/aircomp/" and "runs/aircomp" give "aircomp").
std::string folder_name(const std::string& given) {
    fs::path p = fs::path(given).lexically_normal();
    if (p.filename().empty())
        p = p.parent_path();
    std::string name = p.filename().string();
    if (name.empty() || name == "." || name == "..") {
        std::error_code ec;
        name = fs::weakly_canonical(fs::absolute(given), ec).filename().string();
    }
    return name.empty() ? given : name;
}

void read_rounds_csv(Run& run) {
    const fs::path csv = fs::path(run.dir) / "rounds.csv";
    std::error_code ec;
    if (!fs::is_regular_file(csv, ec))
        throw std::runtime_error("run folder " + single_quoted(run.dir) + ": no rounds.csv in it (expected " + csv.string() +
                       ", written by fedlora sim)");
    const std::string text = read_file_text(csv);
    std::istringstream in(text);
    std::string line;
    std::size_t line_no = 0;
    std::vector<std::string> header;
    std::vector<std::vector<std::string>> rows;
    std::vector<std::size_t> row_lines;
    while (std::getline(in, line)) {
        ++line_no;
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        if (line_no == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0)  // UTF-8 byte order mark
            line.erase(0, 3);
        if (trim(line).empty())
            continue;
        const std::string where = csv.string() + " line " + std::to_string(line_no);
        auto cells = split_csv(line, where);
        if (header.empty()) {
            header = std::move(cells);
            continue;
        }
        if (cells.size() != header.size())
            throw std::runtime_error(where + " (row " + std::to_string(rows.size() + 1) + "): " + std::to_string(cells.size()) +
                           " cells, but the header has " + std::to_string(header.size()) + " columns");
        rows.push_back(std::move(cells));
        row_lines.push_back(line_no);
    }
    if (header.empty())
        throw std::runtime_error(csv.string() + ": the file is empty (expected a header line, then one row per round)");

    std::map<std::string, std::size_t> index;
    for (std::size_t c = 0; c < header.size(); ++c) {
        if (header[c].empty())
            continue;
        if (!index.emplace(header[c], c).second)
            throw std::runtime_error(csv.string() + ": column " + single_quoted(header[c]) + " appears twice in the header");
    }
    if (!index.count("round"))
        throw std::runtime_error(csv.string() + ": the required column 'round' is missing (header: " + [&] {
            std::string h;
            for (const auto& c : header)
                h += (h.empty() ? "" : ",") + c;
            return h;
        }() + ")");
    if (rows.empty())
        throw std::runtime_error(csv.string() + ": no rounds (the header is the only line)");

    for (const auto& [name, c] : index) {
        if (name == "mode") {
            for (const auto& r : rows)
                run.mode_column.push_back(r[c]);
            continue;
        }
        if (!numeric_columns().count(name))
            continue;  // a column this command does not know: tolerated, not read
        auto& col = run.num[name];
        for (std::size_t r = 0; r < rows.size(); ++r) {
            const std::string where = csv.string() + " line " + std::to_string(row_lines[r]) + " (row " +
                                      std::to_string(r + 1) + "), column " + single_quoted(name);
            const double v = parse_cell(rows[r][c], where);
            if (!missing(v)) {
                if (v < 0.0 && nonnegative_columns().count(name))
                    throw std::runtime_error(where + ": " + rows[r][c] + " is negative");
                if (name == "test_accuracy" && v > 1.0)
                    throw std::runtime_error(where + ": " + rows[r][c] +
                                   " is not a fraction in [0, 1] (test_accuracy is written as a fraction, not in %)");
                if (name == "test_perplexity" && v < 1.0)
                    throw std::runtime_error(where + ": " + rows[r][c] + " is below 1, the least possible perplexity");
            }
            col.push_back(v);
        }
    }

    run.round = run.num.at("round");
    for (std::size_t r = 0; r < rows.size(); ++r) {
        const std::string where = csv.string() + " line " + std::to_string(row_lines[r]) + " (row " +
                                  std::to_string(r + 1) + "), column 'round'";
        const double v = run.round[r];
        if (missing(v))
            throw std::runtime_error(where + ": the round number is empty");
        if (v < 1.0 || v != std::floor(v))
            throw std::runtime_error(where + ": " + rows[r][index.at("round")] + " is not a round number (1, 2, ...)");
        if (r > 0 && v <= run.round[r - 1])
            throw std::runtime_error(where + ": round " + rows[r][index.at("round")] + " does not follow round " +
                           rows[r - 1][index.at("round")]);
    }
    if (const auto* cum = run.column("cum_channel_uses")) {
        double last = kMissing;
        for (std::size_t r = 0; r < cum->size(); ++r) {
            if (missing((*cum)[r]))
                continue;
            if (!missing(last) && (*cum)[r] < last)
                throw std::runtime_error(csv.string() + " line " + std::to_string(row_lines[r]) + " (row " +
                               std::to_string(r + 1) + "), column 'cum_channel_uses': " +
                               rows[r][index.at("cum_channel_uses")] + " is less than the previous round's");
            last = (*cum)[r];
        }
    }
}

// Task and mode: summary.json first, then config.yaml, then the data. Also warns where summary.json and
// rounds.csv disagree on the number of rounds (an interrupted run, or a run still going).
void read_task_and_mode(Run& run) {
    const fs::path summary_path = fs::path(run.dir) / "summary.json";
    const fs::path config_path = fs::path(run.dir) / "config.yaml";
    std::error_code ec;
    std::string summary_task, summary_mode, config_task, config_mode;
    if (fs::exists(summary_path, ec)) {
        json s;
        try {
            s = json::parse(read_file_text(summary_path));
        } catch (const json::exception& e) {
            throw std::runtime_error(summary_path.string() + ": not valid JSON (" + e.what() + ")");
        }
        if (!s.is_object())
            throw std::runtime_error(summary_path.string() + ": expected a JSON object");
        auto text_field = [&](const char* key) -> std::string {
            if (!s.contains(key) || s[key].is_null())
                return {};
            if (!s[key].is_string())
                throw std::runtime_error(summary_path.string() + ": " + key + " is " + s[key].dump() + ", expected a string");
            return s[key].get<std::string>();
        };
        summary_task = text_field("task");
        summary_mode = text_field("mode");
        if (s.contains("rounds") && s["rounds"].is_number()) {
            const double n = s["rounds"].get<double>();
            if (n != run.round.back())
                spdlog::warn("{}: summary.json says {} rounds, rounds.csv ends at round {} (interrupted run?); "
                             "the report uses rounds.csv",
                             run.dir, n, run.round.back());
        }
    } else {
        spdlog::warn("{}: no summary.json (the run may not have finished); using rounds.csv", run.dir);
    }
    if (fs::exists(config_path, ec)) {
        const std::string cfg = read_file_text(config_path);
        config_task = yaml_top_level_scalar(cfg, "task");
        config_mode = yaml_top_level_scalar(cfg, "mode");
    }

    const auto* acc = run.column("test_accuracy");
    const auto* ppl = run.column("test_perplexity");
    auto has_values = [](const std::vector<double>* c) {
        return c && std::any_of(c->begin(), c->end(), [](double v) { return !missing(v); });
    };
    if (!summary_task.empty()) {
        run.task = summary_task;
        run.task_source = "summary.json";
    } else if (!config_task.empty()) {
        run.task = config_task;
        run.task_source = "config.yaml";
    } else if (has_values(acc) && has_values(ppl)) {
        throw std::runtime_error("run folder " + single_quoted(run.dir) +
                       ": no task in summary.json or config.yaml, and rounds.csv has both test_accuracy and "
                       "test_perplexity values");
    } else if (has_values(acc) || has_values(ppl)) {
        run.task = has_values(acc) ? "vision" : "text";
        run.task_source = "rounds.csv";
    } else {
        throw std::runtime_error("run folder " + single_quoted(run.dir) +
                       ": no task in summary.json or config.yaml, and no test_accuracy or test_perplexity values "
                       "in rounds.csv to tell it from");
    }
    if (run.task != "vision" && run.task != "text")
        throw std::runtime_error("run folder " + single_quoted(run.dir) + ": task " + single_quoted(run.task) + " in " + run.task_source +
                       " is neither 'vision' nor 'text'");
    const std::string metric_col = run.task == "vision" ? "test_accuracy" : "test_perplexity";
    if (!run.column(metric_col))
        throw std::runtime_error("run folder " + single_quoted(run.dir) + ": a " + run.task + " run (" + run.task_source +
                       "), but rounds.csv has no " + metric_col + " column");
    if (!has_values(run.column(metric_col)))
        spdlog::warn("{}: no {} values in rounds.csv; the run is left out of the {} plots", run.dir, metric_col,
                     metric_col);

    if (!summary_mode.empty()) {
        run.mode = summary_mode;
    } else if (!config_mode.empty()) {
        run.mode = config_mode;
    } else {
        std::vector<std::string> modes;
        for (const auto& m : run.mode_column)
            if (!m.empty() && std::find(modes.begin(), modes.end(), m) == modes.end())
                modes.push_back(m);
        for (const auto& m : modes)
            run.mode += (run.mode.empty() ? "" : "/") + m;
    }
}

// Per-round and per-run figures from the columns.
void derive(Run& run) {
    const std::size_t n = run.round.size();
    const bool vision = run.task == "vision";
    run.metric = *run.column(vision ? "test_accuracy" : "test_perplexity");
    for (double v : run.metric) {
        if (missing(v))
            continue;
        run.final_metric = v;
        if (missing(run.best_metric) || (vision ? v > run.best_metric : v < run.best_metric))
            run.best_metric = v;
    }

    // Cumulative channel uses: the cum_channel_uses column, else the running sum of channel_uses.
    run.cum_channel_uses.assign(n, kMissing);
    if (const auto* cum = run.column("cum_channel_uses");
        cum && std::any_of(cum->begin(), cum->end(), [](double v) { return !missing(v); })) {
        run.cum_channel_uses = *cum;
    } else if (const auto* per = run.column("channel_uses")) {
        double sum = 0.0;
        bool any = false;
        for (std::size_t r = 0; r < n; ++r) {
            if (!missing((*per)[r])) {
                sum += (*per)[r];
                any = true;
            }
            if (any)
                run.cum_channel_uses[r] = sum;
        }
    }
    for (double v : run.cum_channel_uses)
        if (!missing(v))
            run.total_channel_uses = v;

    // Latency per round: the latency_s column, else the steps of cum_latency_s.
    const auto* lat = run.column("latency_s");
    const auto* cum_lat = run.column("cum_latency_s");
    run.latency_s.assign(n, kMissing);
    if (lat) {
        run.latency_s = *lat;
    } else if (cum_lat) {
        for (std::size_t r = 0; r < n; ++r)
            if (!missing((*cum_lat)[r]) && (r == 0 || !missing((*cum_lat)[r - 1])))
                run.latency_s[r] = (*cum_lat)[r] - (r == 0 ? 0.0 : (*cum_lat)[r - 1]);
    }
    // Total latency: the last cum_latency_s, else the sum of latency_s.
    if (cum_lat)
        for (double v : *cum_lat)
            if (!missing(v))
                run.total_latency_s = v;
    if (missing(run.total_latency_s) && lat) {
        double sum = 0.0;
        bool any = false;
        for (double v : *lat)
            if (!missing(v)) {
                sum += v;
                any = true;
            }
        if (any)
            run.total_latency_s = sum;
    }

    if (const auto* nmse = run.column("nmse_db")) {
        double sum = 0.0;
        int count = 0;
        for (double v : *nmse)
            if (!missing(v)) {
                sum += v;
                ++count;
            }
        if (count > 0)
            run.mean_nmse_db = sum / count;
    }
}

Run load_run(const std::string& dir) {
    Run run;
    run.dir = dir;
    run.name = folder_name(dir);
    std::error_code ec;
    const auto st = fs::status(dir, ec);
    if (!fs::exists(st))
        throw std::runtime_error("run folder " + single_quoted(dir) + " does not exist");
    if (!fs::is_directory(st))
        throw std::runtime_error("run folder " + single_quoted(dir) + " is not a directory");
    read_rounds_csv(run);
    read_task_and_mode(run);
    derive(run);
    return run;
}

// ---- formatting -------------------------------------------------------------------------------------------------

constexpr const char* kNone = "n/a";

std::string printf_string(const char* fmt, double v, int decimals = -1) {
    char buf[64];
    if (decimals >= 0)
        std::snprintf(buf, sizeof buf, fmt, decimals, v);
    else
        std::snprintf(buf, sizeof buf, fmt, v);
    return buf;
}

// Four significant digits in fixed notation: 12.35, 0.01230, 1235.
std::string sig4(double v) {
    if (v == 0.0)
        return "0";
    const int decimals = std::clamp(3 - static_cast<int>(std::floor(std::log10(std::abs(v)))), 0, 12);
    return printf_string("%.*f", v, decimals);
}

// A whole number with thousands separators (1,234,567); other numbers with four significant digits.
std::string count(double v) {
    if (v != std::floor(v) || std::abs(v) >= 1e15)
        return sig4(v);
    std::string digits = printf_string("%.0f", std::abs(v));
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0)
            out += ',';
        out += digits[i];
    }
    return (v < 0 ? "-" : "") + out;
}

std::string format_metric(double v, bool vision) {
    if (missing(v))
        return kNone;
    return vision ? printf_string("%.2f%%", 100.0 * v) : sig4(v);
}

std::string md_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '|')
            out += '\\';
        out += c;
    }
    return out;
}

// ---- plots ------------------------------------------------------------------------------------------------------

struct Series {
    std::string label;
    std::vector<double> x, y;
    bool dashed = false;
    int color = 0;
};

struct Plot {
    std::string file, title, xlabel, ylabel;
    std::string xscale = "linear", yscale = "linear";
    bool x_integer = false;  // whole-number ticks (rounds)
    std::vector<Series> series;
    std::vector<std::string> left_out;  // "run (why)"
};

// A series of the points where both x and y are known (and positive on a log axis); empty if none.
Series make_series(const std::string& label, const std::vector<double>& x, const std::vector<double>& y,
                   double y_scale, bool log_x, bool log_y, int color, bool dashed = false) {
    Series s;
    s.label = label;
    s.color = color;
    s.dashed = dashed;
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
        const double xv = x[i], yv = y[i] * y_scale;
        if (missing(xv) || missing(yv) || (log_x && xv <= 0.0) || (log_y && yv <= 0.0))
            continue;
        s.x.push_back(xv);
        s.y.push_back(yv);
    }
    return s;
}

std::vector<Plot> make_plots(const std::vector<Run>& runs, const fs::path& out) {
    const bool vision = runs.front().task == "vision";
    const std::string metric_name = vision ? "Test accuracy" : "Test perplexity";
    const std::string metric_axis = vision ? "Test accuracy (%)" : "Test perplexity (lower is better)";
    const std::string metric_file = vision ? "accuracy" : "perplexity";
    const double metric_scale = vision ? 100.0 : 1.0;
    const std::string uses_axis = "Cumulative channel uses (complex symbols, log scale)";
    std::vector<Plot> plots;

    {
        Plot p;
        p.file = (out / (metric_file + "_vs_round.png")).string();
        p.title = metric_name + " vs round";
        p.xlabel = "Round";
        p.ylabel = metric_axis;
        p.x_integer = true;
        for (std::size_t i = 0; i < runs.size(); ++i) {
            auto s = make_series(runs[i].name, runs[i].round, runs[i].metric, metric_scale, false, false,
                                 static_cast<int>(i));
            if (s.x.empty())
                p.left_out.push_back(runs[i].name + " (no " + (vision ? "test_accuracy" : "test_perplexity") +
                                     " values)");
            else
                p.series.push_back(std::move(s));
        }
        plots.push_back(std::move(p));
    }
    {
        Plot p;
        p.file = (out / "nmse_vs_round.png").string();
        p.title = "Aggregation NMSE vs round (solid: measured, dashed: analytic)";
        p.xlabel = "Round";
        p.ylabel = "NMSE of the aggregate (dB)";
        p.x_integer = true;
        for (std::size_t i = 0; i < runs.size(); ++i) {
            bool any = false;
            for (const auto& [col, dashed, what] : {std::tuple{"nmse_db", false, "measured"},
                                                    std::tuple{"nmse_analytic_db", true, "analytic"}}) {
                const auto* c = runs[i].column(col);
                if (!c)
                    continue;
                auto s = make_series(runs[i].name + " (" + what + ")", runs[i].round, *c, 1.0, false, false,
                                     static_cast<int>(i), dashed);
                if (!s.x.empty()) {
                    p.series.push_back(std::move(s));
                    any = true;
                }
            }
            if (!any)
                p.left_out.push_back(runs[i].name + " (no NMSE values" +
                                     (runs[i].mode.empty() ? "" : ", mode " + runs[i].mode) + ")");
        }
        plots.push_back(std::move(p));
    }
    {
        Plot p;
        p.file = (out / "channel_uses_vs_round.png").string();
        p.title = "Cumulative channel uses vs round";
        p.xlabel = "Round";
        p.ylabel = uses_axis;
        p.yscale = "log";
        p.x_integer = true;
        for (std::size_t i = 0; i < runs.size(); ++i) {
            auto s = make_series(runs[i].name, runs[i].round, runs[i].cum_channel_uses, 1.0, false, true,
                                 static_cast<int>(i));
            if (s.x.empty())
                p.left_out.push_back(runs[i].name + " (no positive channel uses)");
            else
                p.series.push_back(std::move(s));
        }
        plots.push_back(std::move(p));
    }
    {
        Plot p;
        p.file = (out / "latency_per_round.png").string();
        p.title = "Latency per round";
        p.xlabel = "Round";
        p.ylabel = "Latency per round (s)";
        p.x_integer = true;
        double lo = std::numeric_limits<double>::infinity(), hi = 0.0;
        for (const auto& r : runs)
            for (double v : r.latency_s)
                if (!missing(v) && v > 0.0) {
                    lo = std::min(lo, v);
                    hi = std::max(hi, v);
                }
        const bool log_y = hi > 0.0 && hi / lo > 100.0;  // runs more than two decades apart
        if (log_y) {
            p.yscale = "log";
            p.ylabel = "Latency per round (s, log scale)";
        }
        for (std::size_t i = 0; i < runs.size(); ++i) {
            auto s = make_series(runs[i].name, runs[i].round, runs[i].latency_s, 1.0, false, log_y,
                                 static_cast<int>(i));
            if (s.x.empty())
                p.left_out.push_back(runs[i].name + " (no latency values)");
            else
                p.series.push_back(std::move(s));
        }
        plots.push_back(std::move(p));
    }
    {
        Plot p;
        p.file = (out / (metric_file + "_vs_channel_uses.png")).string();
        p.title = metric_name + " vs cumulative channel uses";
        p.xlabel = uses_axis;
        p.ylabel = metric_axis;
        p.xscale = "log";
        for (std::size_t i = 0; i < runs.size(); ++i) {
            auto s = make_series(runs[i].name, runs[i].cum_channel_uses, runs[i].metric, metric_scale, true, false,
                                 static_cast<int>(i));
            if (s.x.empty())
                p.left_out.push_back(runs[i].name + " (no rounds with both " +
                                     (vision ? "test_accuracy" : "test_perplexity") + " and channel uses)");
            else
                p.series.push_back(std::move(s));
        }
        plots.push_back(std::move(p));
    }
    return plots;
}

void write_text(const fs::path& p, const std::string& text) {
    std::ofstream f(p, std::ios::binary);
    f << text;
    f.close();
    if (!f)
        throw std::runtime_error("cannot write " + p.string());
}

// Exit status of the plotting script when it cannot import matplotlib.
constexpr int kNoMatplotlib = 3;

// Draws `plots` (those with at least one series) with the embedded script.
void draw(const std::vector<Plot>& plots, const std::string& python) {
    TempDir dir("fedlora-report");
    const fs::path script = dir.file("report_plots.py"), data = dir.file("plots.json"), log = dir.file("python.log");
    write_text(script, kReportPlotsPy);
    json spec;
    spec["width_in"] = 8.0;
    spec["height_in"] = 5.0;
    spec["dpi"] = 100;
    spec["plots"] = json::array();
    for (const auto& p : plots) {
        if (p.series.empty())
            continue;
        json jp = {{"file", p.file},     {"title", p.title},   {"xlabel", p.xlabel},       {"ylabel", p.ylabel},
                   {"xscale", p.xscale}, {"yscale", p.yscale}, {"x_integer", p.x_integer}, {"series", json::array()}};
        for (const auto& s : p.series)
            jp["series"].push_back(
                {{"label", s.label}, {"x", s.x}, {"y", s.y}, {"dashed", s.dashed}, {"color", s.color}});
        spec["plots"].push_back(std::move(jp));
    }
    write_text(data, spec.dump());

    const std::vector<std::string> argv = {python, script.string(), data.string()};
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    pid_t pid = -1;
    const int rc = ::posix_spawnp(&pid, python.c_str(), &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        throw std::runtime_error("cannot run " + python + " to draw the plots: " + std::strerror(rc) +
                                 " (apt-get install python3-matplotlib)");
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            throw std::runtime_error(std::string("waiting for the plotting script: ") + std::strerror(errno));

    std::string output = read_file_text(log);
    while (!output.empty() && (output.back() == '\n' || output.back() == '\r'))
        output.pop_back();
    const auto nl = output.rfind('\n');
    const std::string last = nl == std::string::npos ? output : output.substr(nl + 1);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        if (!output.empty())
            spdlog::debug("plotting script said: {}", output);
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == kNoMatplotlib)
        throw std::runtime_error("cannot draw the plots: " + python +
                                 " has no matplotlib (apt-get install python3-matplotlib)");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        throw std::runtime_error("cannot run " + python + " to draw the plots (apt-get install python3-matplotlib)");
    const std::string how = WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                              : "was killed by signal " + std::to_string(WTERMSIG(status));
    throw std::runtime_error("the plotting script (" + python + ") " + how + (last.empty() ? "" : ": " + last));
}

// ---- report.md --------------------------------------------------------------------------------------------------

std::string make_markdown(const std::vector<Run>& runs, const std::vector<Plot>& plots) {
    const bool vision = runs.front().task == "vision";
    const std::string metric = vision ? "accuracy" : "perplexity";
    const Run& first = runs.front();
    // The reference of the channel-use ratio: the first run with channel uses (ideal runs have none).
    const Run* ref = nullptr;
    for (const auto& r : runs)
        if (!ref && !missing(r.total_channel_uses) && r.total_channel_uses > 0.0)
            ref = &r;
    std::ostringstream md;
    md << "# Run comparison\n\n";
    md << "Task: " << first.task << " (" << (vision ? "test accuracy, higher is better" : "test perplexity, lower is better")
       << "). " << runs.size() << (runs.size() == 1 ? " run" : " runs") << ", written by `fedlora report` from:\n\n";
    for (const auto& r : runs)
        md << "- `" << r.dir << "`\n";
    md << "\n| run | mode | rounds | final " << metric << " | best " << metric
       << " | channel uses | relative | mean NMSE | latency |\n";
    md << "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for (const auto& r : runs) {
        std::string rel = kNone;
        if (ref && !missing(r.total_channel_uses))
            rel = sig4(r.total_channel_uses / ref->total_channel_uses) + "×";
        md << "| " << md_escape(r.name) << " | " << md_escape(r.mode.empty() ? kNone : r.mode) << " | "
           << count(r.round.back()) << " | " << format_metric(r.final_metric, vision) << " | "
           << format_metric(r.best_metric, vision) << " | "
           << (missing(r.total_channel_uses) ? kNone : count(r.total_channel_uses)) << " | " << rel << " | "
           << (missing(r.mean_nmse_db) ? kNone : printf_string("%.2f dB", r.mean_nmse_db)) << " | "
           << (missing(r.total_latency_s) ? kNone : sig4(r.total_latency_s) + " s") << " |\n";
    }
    md << "\n*rounds*: the last round in rounds.csv. *final*: the " << metric
       << " at the last round that has one; *best*: the " << (vision ? "highest" : "lowest")
       << " over all rounds. *channel uses*: cumulative complex symbols sent over all rounds; *relative*: "
       << (ref ? "their ratio to those of `" + md_escape(ref->name) + "`, the first run given that has channel uses"
               : std::string("n/a, since no run has channel uses"))
       << ". *mean NMSE*: the mean of the per-round NMSE in dB (n/a: no NMSE, e.g. ideal aggregation). "
          "*latency*: total over all rounds. Format and meaning of the inputs: docs/report.md in the fedlora "
          "sources.\n";
    for (const auto& p : plots) {
        md << "\n## " << p.title << "\n\n";
        const std::string file = fs::path(p.file).filename().string();
        if (p.series.empty()) {
            md << "Not drawn: no run has values for it (";
            for (std::size_t i = 0; i < p.left_out.size(); ++i)
                md << (i ? ", " : "") << md_escape(p.left_out[i]);
            md << ").\n";
            continue;
        }
        md << "![" << p.title << "](" << file << ")\n";
        if (!p.left_out.empty()) {
            md << "\nNot in this plot: ";
            for (std::size_t i = 0; i < p.left_out.size(); ++i)
                md << (i ? ", " : "") << md_escape(p.left_out[i]);
            md << ".\n";
        }
    }
    return md.str();
}

void run_report(const ReportOpts& o, int& exit_code) {
    std::vector<Run> runs;
    int bad = 0;
    for (const auto& dir : o.runs) {
        try {
            runs.push_back(load_run(dir));
        } catch (const std::runtime_error& e) {  // the message names the run folder or its file
            spdlog::error("{}", e.what());
            ++bad;
        }
    }
    if (bad > 0) {
        exit_code = 1;
        return;
    }

    // The same folder twice, and labels that collide: the label becomes the path as given.
    std::map<std::string, std::string> seen;
    for (const auto& r : runs) {
        std::error_code ec;
        const std::string canon = fs::weakly_canonical(fs::absolute(r.dir), ec).string();
        if (const auto it = seen.find(canon); it != seen.end())
            throw std::runtime_error("run folder " + single_quoted(r.dir) + " is given twice (also as " +
                                     single_quoted(it->second) + ")");
        seen.emplace(canon, r.dir);
    }
    std::map<std::string, int> name_count;
    for (const auto& r : runs)
        ++name_count[r.name];
    for (auto& r : runs)
        if (name_count[r.name] > 1) {
            fs::path p = fs::path(r.dir).lexically_normal();
            r.name = (p.filename().empty() ? p.parent_path() : p).string();
        }

    for (const auto& r : runs)
        if (r.task != runs.front().task) {
            std::string list;
            for (const auto& x : runs)
                list += (list.empty() ? "" : ", ") + single_quoted(x.dir) + " is " + x.task + " (" + x.task_source + ")";
            throw std::runtime_error("runs of different tasks cannot be compared: " + list +
                                     "; report vision and text runs separately");
        }

    const fs::path out = o.out;
    std::error_code ec;
    fs::create_directories(out, ec);
    if (ec || !fs::is_directory(out))
        throw std::runtime_error("cannot create the output directory " + single_quoted(o.out) +
                                 (ec ? ": " + ec.message() : ": a file of that name exists"));

    // Every file a report can write goes first, so that none is left from an earlier report into the same folder.
    for (const char* name : {"accuracy_vs_round.png", "perplexity_vs_round.png", "nmse_vs_round.png",
                             "channel_uses_vs_round.png", "latency_per_round.png", "accuracy_vs_channel_uses.png",
                             "perplexity_vs_channel_uses.png", "report.md"}) {
        fs::remove(out / name, ec);
        if (ec)
            throw std::runtime_error("cannot replace " + (out / name).string() + ": " + ec.message());
    }
    const auto plots = make_plots(runs, out);
    draw(plots, o.python);
    std::vector<std::string> written;
    for (const auto& p : plots) {
        if (p.series.empty()) {
            spdlog::info("{} not drawn: no run has values for it", fs::path(p.file).filename().string());
            continue;
        }
        if (!fs::is_regular_file(p.file, ec) || fs::file_size(p.file, ec) == 0)
            throw std::runtime_error("the plotting script did not write " + p.file);
        written.push_back(p.file);
    }
    const fs::path md = out / "report.md";
    write_text(md, make_markdown(runs, plots));
    written.push_back(md.string());
    std::printf("report of %zu %s run%s:\n", runs.size(), runs.front().task.c_str(), runs.size() == 1 ? "" : "s");
    for (const auto& w : written)
        std::printf("  wrote %s\n", w.c_str());
    std::fflush(stdout);
    exit_code = 0;
}

}  // namespace

void add_report(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<ReportOpts>();
    auto* cmd = app.add_subcommand(
        "report", "Compare experiment runs: PNG plots (accuracy or perplexity, NMSE, channel uses, latency) and a "
                  "markdown table");
    cmd->add_option("runs", o->runs,
                    "Run folders written by `fedlora sim`, in the order of the table and legends")
        ->required()
        ->type_name("RUN");
    cmd->add_option("--out", o->out, "Output folder, created if missing; an earlier report's files in it are replaced")
        ->capture_default_str();
    cmd->add_option("--python", o->python, "Python interpreter with matplotlib (Debian: python3-matplotlib)")
        ->capture_default_str();
    cmd->footer(
        "Inputs, in each RUN folder:\n"
        "  rounds.csv    a header line, then one row per round; columns are found by name (`round` is required,\n"
        "                unknown ones are ignored); empty cells and nan are missing values\n"
        "  summary.json  task (vision or text) and mode; config.yaml is read for them when it is absent\n"
        "All runs must be of one task. Outputs in --out, one line per run labelled by the run folder's name\n"
        "(METRIC is accuracy for vision runs, perplexity for text runs):\n"
        "  METRIC_vs_round.png           test accuracy (%) or perplexity per round\n"
        "  nmse_vs_round.png             NMSE of the aggregate (dB), measured solid, analytic dashed\n"
        "  channel_uses_vs_round.png     cumulative channel uses (log y)\n"
        "  latency_per_round.png         latency of each round (s)\n"
        "  METRIC_vs_channel_uses.png    the metric against cumulative channel uses (log x)\n"
        "  report.md                     one table row per run (final and best metric, total channel uses and\n"
        "                                their ratio to the first run that has any, mean NMSE, total latency)\n"
        "                                and links to the plots\n"
        "A plot that no run has values for is not drawn. The paths written are printed.\n"
        "Exit status: 0 report written; 1 a run folder missing or malformed (each problem named), runs of\n"
        "different tasks, or plots not drawn; 2 usage error. Details: docs/report.md.");
    cmd->callback([o, &exit_code] { run_report(*o, exit_code); });
}

}  // namespace fedlora::app
