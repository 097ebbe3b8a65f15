#include "fedlora/phy/chanest.h"

#include <Eigen/Dense>

#include "fft_plan.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <stdexcept>

namespace fedlora::phy {

std::vector<std::complex<float>> zadoff_chu(std::size_t n, unsigned root) {
    if (n == 0)
        throw std::invalid_argument("zadoff_chu: length 0");
    // Odd length N_zc ≥ n (cyclically extended when n is larger than an odd N_zc would be).
    std::size_t nzc = n % 2 ? n : n + 1;
    if (std::gcd(static_cast<std::size_t>(root), nzc) != 1)
        throw std::invalid_argument("zadoff_chu: root " + std::to_string(root) + " is not coprime with length " +
                                    std::to_string(nzc));
    std::vector<std::complex<float>> z(n);
    for (std::size_t m = 0; m < n; ++m) {
        const double ph = -M_PI * root * static_cast<double>(m) * static_cast<double>(m + 1) / nzc;
        z[m] = std::complex<float>(std::polar(1.0, ph));
    }
    return z;
}

namespace {

using Mat = Eigen::MatrixXcd;
// Per-call work runs in single precision (the samples are float; the basis is built in double and rounded once).
using MatF = Eigen::MatrixXcf;
using VecF = Eigen::VectorXcf;
using cf = std::complex<float>;

// Common part: the LS estimate and an orthonormal basis U (M × r) of the delay window's subspace, from the
// delay-domain matrix F (M × L), F[i, t] = exp(−j2π k_i τ_t / N), τ_t = t − pre. With FᴴF = V S² Vᴴ,
// U = F V S⁻¹ (columns with negligible s dropped). Projection: U Uᴴ; the uniform-PDP correlation R = F Fᴴ / L
// has the same eigenvectors with eigenvalues s²/L. U is never formed: products with F and Fᴴ are FFTs, so a call
// costs two N-point FFTs and two r × L products.
class WindowedEstimator : public ChannelEstimator {
public:
    WindowedEstimator(const Numerology& num, int pre, int max) : m_(static_cast<std::size_t>(num.n_occupied)) {
        const auto carriers = num.occupied_carriers();
        const int L = pre + max;
        if (L < 1 || static_cast<std::size_t>(L) >= m_)
            throw std::invalid_argument("channel estimator: delay window of " + std::to_string(L) +
                                        " taps must be in [1, n_occupied = " + std::to_string(m_) + ")");
        Mat& f = f_;
        f.resize(static_cast<Eigen::Index>(m_), L);
        for (std::size_t i = 0; i < m_; ++i)
            for (int t = 0; t < L; ++t) {
                const double tau = t - pre;  // delay in samples
                f(static_cast<Eigen::Index>(i), t) = std::polar(1.0, -2.0 * M_PI * carriers[i] * tau / num.fft_size);
            }
        Eigen::SelfAdjointEigenSolver<Mat> eig(f.adjoint() * f);
        const auto& s2 = eig.eigenvalues();  // ascending
        const double keep = 1e-9 * s2.maxCoeff();
        std::vector<Eigen::Index> cols;
        for (Eigen::Index j = 0; j < s2.size(); ++j)
            if (s2(j) > keep)
                cols.push_back(j);
        r_ = cols.size();
        lambda_.resize(static_cast<Eigen::Index>(r_));
        for (std::size_t c = 0; c < r_; ++c)
            lambda_(static_cast<Eigen::Index>(c)) = s2(cols[c]) / L;
        // U = F V S⁻¹, so Uᴴx = S⁻¹Vᴴ(Fᴴx) and Uc = F(V S⁻¹c): the products with F and Fᴴ are an FFT each (the
        // occupied carriers are bins of the N-point DFT, the window's delays are time indices), leaving only the
        // small r × L matrices. to_coef_ = S⁻¹Vᴴ, from_coef_ = V S⁻¹.
        to_coef_.resize(static_cast<Eigen::Index>(r_), L);
        from_coef_.resize(L, static_cast<Eigen::Index>(r_));
        for (std::size_t c = 0; c < r_; ++c) {
            const auto j = cols[c];
            const double inv_s = 1.0 / std::sqrt(s2(j));
            to_coef_.row(static_cast<Eigen::Index>(c)) = (eig.eigenvectors().col(j).adjoint() * inv_s).cast<cf>();
            from_coef_.col(static_cast<Eigen::Index>(c)) = (eig.eigenvectors().col(j) * inv_s).cast<cf>();
        }
        n_ = num.fft_size;
        for (int k : carriers)
            bins_.push_back(num.bin_of(k));
        for (int t = 0; t < L; ++t)
            delay_bins_.push_back(((t - pre) % n_ + n_) % n_);
        to_delay_ = std::make_unique<FftPlan>(n_, FFTW_BACKWARD);
        to_freq_ = std::make_unique<FftPlan>(n_, FFTW_FORWARD);
        ls_.resize(static_cast<Eigen::Index>(m_));
        z_.resize(L);
        g_.resize(L);
        coef_.resize(static_cast<Eigen::Index>(r_));
        proj_.resize(static_cast<Eigen::Index>(m_));
    }

protected:
    void least_squares(const std::complex<float>* y, const std::complex<float>* pilot) {
        for (std::size_t i = 0; i < m_; ++i) {
            // y / p written out: std::complex division calls a library routine that also handles inf and NaN.
            const cf p = pilot[i];
            const float inv = 1.0f / std::norm(p);
            ls_(static_cast<Eigen::Index>(i)) = y[i] * std::conj(p) * inv;
        }
        coefficients(ls_, coef_);
        from_coefficients(coef_, proj_);
    }
    // z = Fᴴx (the window's delay taps of x): one inverse FFT.
    void delay_taps(const VecF& x, VecF& z) {
        cf* b = to_delay_->input();
        std::fill(b, b + n_, cf{});
        for (std::size_t i = 0; i < m_; ++i)
            b[bins_[i]] = x(static_cast<Eigen::Index>(i));
        to_delay_->execute();
        const cf* r = to_delay_->output();
        for (std::size_t t = 0; t < delay_bins_.size(); ++t)
            z(static_cast<Eigen::Index>(t)) = r[delay_bins_[t]];
    }
    // c = Uᴴx.
    void coefficients(const VecF& x, VecF& c) {
        delay_taps(x, z_);
        c.noalias() = to_coef_ * z_;
    }
    // x = Uc: one forward FFT of the window's taps V S⁻¹ c.
    void from_coefficients(const VecF& c, VecF& x) {
        g_.noalias() = from_coef_ * c;
        cf* b = to_freq_->input();
        std::fill(b, b + n_, cf{});
        for (std::size_t t = 0; t < delay_bins_.size(); ++t)
            b[delay_bins_[t]] = g_(static_cast<Eigen::Index>(t));
        to_freq_->execute();
        const cf* r = to_freq_->output();
        for (std::size_t i = 0; i < m_; ++i)
            x(static_cast<Eigen::Index>(i)) = r[bins_[i]];
    }
    // The residual outside the window subspace is noise only, with M − r complex degrees of freedom.
    double residual_noise_var() const {
        return static_cast<double>((ls_ - proj_).squaredNorm()) / static_cast<double>(m_ - r_);
    }
    // Channel power per carrier: the projection's energy less the noise it keeps (r/M of σ²).
    double channel_gain(double noise_var) const {
        return std::max(static_cast<double>(proj_.squaredNorm()) / static_cast<double>(m_) -
                            noise_var * static_cast<double>(r_) / static_cast<double>(m_),
                        1e-30);
    }
    template <typename V>
    void finish(const V& h, double noise_var, ChannelEstimate& out) const {
        out.h.resize(m_);
        for (std::size_t i = 0; i < m_; ++i)
            out.h[i] = std::complex<float>(h(static_cast<Eigen::Index>(i)));
        out.noise_var = noise_var;
        out.snr_db = 10.0 * std::log10(channel_gain(noise_var) / std::max(noise_var, 1e-30));
    }

    std::size_t m_;
    std::size_t r_ = 0;
    Mat f_;  // delay-domain columns of the window
    Eigen::VectorXd lambda_;  // eigenvalues of the uniform-profile correlation R = F Fᴴ / L on the basis U
    MatF to_coef_, from_coef_;
    int n_ = 0;
    std::vector<int> bins_, delay_bins_;
    std::unique_ptr<FftPlan> to_delay_, to_freq_;
    VecF ls_, z_, g_, coef_, proj_;
};

class LsEstimator final : public WindowedEstimator {
public:
    using WindowedEstimator::WindowedEstimator;
    const char* name() const override { return "ls"; }
    void estimate(const std::complex<float>* y, const std::complex<float>* pilot, double,
                  ChannelEstimate& out) override {
        least_squares(y, pilot);
        finish(ls_, residual_noise_var(), out);
        out.error_var = out.noise_var;
    }
};

class DftEstimator final : public WindowedEstimator {
public:
    using WindowedEstimator::WindowedEstimator;
    const char* name() const override { return "dft"; }
    void estimate(const std::complex<float>* y, const std::complex<float>* pilot, double,
                  ChannelEstimate& out) override {
        least_squares(y, pilot);
        finish(proj_, residual_noise_var(), out);
        out.error_var = out.noise_var * static_cast<double>(r_) / static_cast<double>(m_);
    }
};

class LmmseEstimator final : public WindowedEstimator {
public:
    LmmseEstimator(const Numerology& num, int pre, int max) : WindowedEstimator(num, pre, max) {
        out_.resize(static_cast<Eigen::Index>(m_));
    }
    const char* name() const override { return "lmmse"; }
    void estimate(const std::complex<float>* y, const std::complex<float>* pilot, double known_noise_var,
                  ChannelEstimate& out) override {
        least_squares(y, pilot);
        const double noise = known_noise_var > 0.0 ? known_noise_var : residual_noise_var();
        // R scaled to the measured channel gain g: W = U diag(gλ / (gλ + σ²)) Uᴴ.
        const double g = channel_gain(noise);
        double err = 0.0;
        for (Eigen::Index c = 0; c < coef_.size(); ++c) {
            coef_(c) *= static_cast<float>(g * lambda_(c) / (g * lambda_(c) + noise));
            err += g * lambda_(c) * noise / (g * lambda_(c) + noise);
        }
        from_coefficients(coef_, out_);
        finish(out_, noise, out);
        out.error_var = err / static_cast<double>(m_);
    }

private:
    VecF out_;
};


// y += a·x, written out: Eigen's vectorised scalar-times-vector for complex<float> loads the 4-byte-aligned scalar
// as a double (undefined behaviour that UBSan reports).
template <typename X, typename Y>
void axpy(cf a, const X& x, Y&& y) {
    for (Eigen::Index i = 0; i < x.size(); ++i)
        y(i) += a * x(i);
}

// Significant-tap estimator by orthogonal matching pursuit over the window's delays: repeatedly take the delay
// whose column correlates best with the residual, project the LS estimate onto all delays taken so far, and stop
// when the best remaining correlation is what noise alone would give: |f_tᴴ r|² / ‖f_t‖² ≤ κσ², κ = ln(100·L)
// (a noise-only residual passes with probability about L·e^{−κ} = 1%). Greedy selection, rather than thresholding
// the LS taps, keeps it well conditioned when the occupied band is narrower than the FFT (neighbouring delay
// columns are then nearly parallel). Error variance σ²·S/M for S taps taken.
class SparseEstimator final : public WindowedEstimator {
public:
    SparseEstimator(const Numerology& num, int pre, int max) : WindowedEstimator(num, pre, max) {
        const auto L = f_.cols();
        ff_ = f_.cast<cf>();
        col_norm2_ = f_.colwise().squaredNorm().transpose();
        kappa_ = std::log(100.0 * static_cast<double>(L));
        q_.resize(f_.rows(), L);
        corr_.resize(L);
        residual_.resize(f_.rows());
        out_.resize(f_.rows());
        taken_.assign(static_cast<std::size_t>(L), 0);
    }
    const char* name() const override { return "sparse"; }
    void estimate(const std::complex<float>* y, const std::complex<float>* pilot, double known_noise_var,
                  ChannelEstimate& out) override {
        least_squares(y, pilot);
        const double noise = known_noise_var > 0.0 ? known_noise_var : residual_noise_var();
        std::fill(taken_.begin(), taken_.end(), 0);
        out_.setZero();
        residual_ = ls_;
        Eigen::Index s = 0;
        while (s < f_.cols()) {
            delay_taps(residual_, corr_);
            Eigen::Index best = -1;
            double best_v = kappa_ * noise;
            for (Eigen::Index t = 0; t < corr_.size(); ++t) {
                const double v = std::norm(corr_(t)) / col_norm2_(t);
                if (!taken_[static_cast<std::size_t>(t)] && v > best_v) {
                    best_v = v;
                    best = t;
                }
            }
            if (best < 0)
                break;
            taken_[static_cast<std::size_t>(best)] = 1;
            // Modified Gram-Schmidt against the columns taken so far, into the preallocated q_.
            q_.col(s) = ff_.col(best);
            for (Eigen::Index j = 0; j < s; ++j)
                axpy(-(q_.col(j).adjoint() * q_.col(s)).value(), q_.col(j), q_.col(s));
            const double nrm = static_cast<double>(q_.col(s).norm());
            if (nrm < 1e-6 * std::sqrt(col_norm2_(best)))
                continue;  // numerically inside the span already
            q_.col(s) /= static_cast<float>(nrm);
            const cf c = (q_.col(s).adjoint() * residual_).value();
            axpy(c, q_.col(s), out_);
            axpy(-c, q_.col(s), residual_);
            ++s;
        }
        finish(out_, noise, out);
        out.error_var = noise * static_cast<double>(s) / static_cast<double>(m_);
    }

private:
    MatF ff_, q_;
    Eigen::VectorXd col_norm2_;
    VecF corr_, residual_, out_;
    std::vector<unsigned char> taken_;
    double kappa_ = 0.0;
};

}  // namespace

std::unique_ptr<ChannelEstimator> make_channel_estimator(const Numerology& num, const ChannelEstimatorConfig& cfg) {
    num.validate();
    const int max = cfg.max_delay < 0 ? num.cp_len : cfg.max_delay;
    const int pre = cfg.pre_delay < 0 ? num.cp_len / 8 : cfg.pre_delay;
    if (max > num.fft_size)
        throw std::invalid_argument("channel estimator: max_delay = " + std::to_string(max) + " exceeds fft_size");
    if (pre > num.fft_size)
        throw std::invalid_argument("channel estimator: pre_delay = " + std::to_string(pre) + " exceeds fft_size");
    if (cfg.name == "ls")
        return std::make_unique<LsEstimator>(num, pre, max);
    if (cfg.name == "dft")
        return std::make_unique<DftEstimator>(num, pre, max);
    if (cfg.name == "lmmse")
        return std::make_unique<LmmseEstimator>(num, pre, max);
    if (cfg.name == "sparse")
        return std::make_unique<SparseEstimator>(num, pre, max);
    throw std::invalid_argument("channel estimator '" + cfg.name + "' is unknown (choose ls, dft, lmmse or sparse)");
}

}  // namespace fedlora::phy
