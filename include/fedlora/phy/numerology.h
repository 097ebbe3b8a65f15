// OFDM numerology: FFT size, cyclic prefix, which subcarriers carry data, sample rate.
#pragma once

#include <cstddef>
#include <vector>

namespace fedlora::phy {

// Subcarrier indices are signed offsets from DC in [-fft_size/2, fft_size/2). The DC carrier is never used.
// `n_occupied` carriers (even) sit symmetrically around DC, n_occupied/2 on each side; the rest are guards.
struct Numerology {
    int fft_size = 64;
    int cp_len = 16;
    int n_occupied = 48;
    double sample_rate = 1e6;
    // Payload pilots for common-phase tracking: every pilot_spacing-th occupied carrier (0: none).
    int pilot_spacing = 0;

    // Throws std::invalid_argument naming the offending field and value.
    void validate() const;

    int symbol_len() const { return fft_size + cp_len; }
    double subcarrier_spacing() const { return sample_rate / fft_size; }
    // Signed subcarrier offsets, most negative first: -n/2 .. -1, 1 .. n/2.
    std::vector<int> occupied_carriers() const;
    // Positions (indices into occupied_carriers()) of the payload pilots and of the data carriers. Pilot i sits at
    // position pilot_spacing/2 + i·pilot_spacing, so pilots are spread evenly and never at the band edges.
    std::vector<int> pilot_positions() const;
    std::vector<int> data_positions() const;
    int n_data() const { return n_occupied - static_cast<int>(pilot_positions().size()); }
    // FFT bin (0..fft_size-1) of a signed subcarrier offset.
    int bin_of(int carrier) const { return carrier < 0 ? carrier + fft_size : carrier; }
};

}  // namespace fedlora::phy
