#include "fedlora/phy/numerology.h"

#include <sstream>
#include <stdexcept>
#include <string>

namespace fedlora::phy {

namespace {
[[noreturn]] void bad(const std::string& field, double value, const std::string& why) {
    std::ostringstream v;
    v << value;  // 100 rather than 100.000000
    throw std::invalid_argument("OFDM numerology: " + field + " = " + v.str() + " " + why);
}
}  // namespace

void Numerology::validate() const {
    if (fft_size < 8 || fft_size > 65536)
        bad("fft_size", fft_size, "is outside [8, 65536]");
    if (fft_size & (fft_size - 1))
        bad("fft_size", fft_size, "is not a power of two");
    if (cp_len < 0 || cp_len > fft_size)
        bad("cp_len", cp_len, "must be in [0, fft_size=" + std::to_string(fft_size) + "]");
    if (n_occupied < 2 || n_occupied % 2 != 0)
        bad("n_occupied", n_occupied, "must be even and at least 2");
    if (n_occupied > fft_size - 2)
        bad("n_occupied", n_occupied,
            "leaves no DC carrier and guard (must be <= fft_size - 2 = " + std::to_string(fft_size - 2) + ")");
    if (!(sample_rate > 0.0))
        bad("sample_rate", sample_rate, "must be positive");
    if (pilot_spacing < 0 || pilot_spacing == 1 || pilot_spacing > n_occupied)
        bad("pilot_spacing", pilot_spacing,
            "must be 0 (no pilots) or in [2, n_occupied = " + std::to_string(n_occupied) + "]");
}

std::vector<int> Numerology::pilot_positions() const {
    std::vector<int> p;
    if (pilot_spacing <= 0)
        return p;
    for (int i = pilot_spacing / 2; i < n_occupied; i += pilot_spacing)
        p.push_back(i);
    return p;
}

std::vector<int> Numerology::data_positions() const {
    const auto pilots = pilot_positions();
    std::vector<int> d;
    d.reserve(static_cast<std::size_t>(n_occupied));
    std::size_t next = 0;
    for (int i = 0; i < n_occupied; ++i) {
        if (next < pilots.size() && pilots[next] == i) {
            ++next;
            continue;
        }
        d.push_back(i);
    }
    return d;
}

std::vector<int> Numerology::occupied_carriers() const {
    std::vector<int> c;
    c.reserve(static_cast<std::size_t>(n_occupied));
    for (int k = -n_occupied / 2; k <= n_occupied / 2; ++k)
        if (k != 0)
            c.push_back(k);
    return c;
}

}  // namespace fedlora::phy
