// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The variance-preserving DDPM of the image reference, ε-prediction, sampled on a strided grid.
///
/// Training schedule: N training timesteps (1000) with β_j linear from β_start to β_end,
/// ᾱ_j = Π_{k≤j} (1 − β_k). Sampling uses T of them with "leading" spacing: the ratio c = ⌊N/T⌋,
/// and rtb step i ∈ [0, T) goes from level τ_i = (T−1−i)·c to level τ'_i = τ_i − c (ᾱ_{τ'} := 1
/// below 0, i.e. the data). With ᾱ = ᾱ_τ, ᾱ' = ᾱ_{τ'}, α = ᾱ/ᾱ', β = 1 − α and the denoiser output
/// ε̂ = ε(x, τ) (D values; `time(i)` = τ_i, the integer training timestep):
///
///     x̂_0 = clamp((x − √(1−ᾱ)·ε̂)/√ᾱ, −1, 1)          (clamp optional, on by default)
///     μ   = [√ᾱ'·β/(1−ᾱ)]·x̂_0 + [√α·(1−ᾱ')/(1−ᾱ)]·x
///     p(x' | x) = N(μ, β·I)                                ("fixed_large": the strided β)
///
/// Every step but the last draws x' = μ + √(β + σ_expl²)·z (exploration widens only the sampling
/// variance); the last (τ = 0) returns x' = μ, yet its log-density is still N(μ, β_0·I), the
/// reference's anchor on the final mean (`noise_at_last_step` draws there too, as offline RL
/// does). The clamp's derivative is 0 where it is active. x_0 is drawn from N(0, I).
///
/// Backward (noising) kernel: x_i | x_{i+1} ~ N(√α·x_{i+1}, β·I), which composes to the marginal
/// x_i | x_T ~ N(√ᾱ_{τ_i}·x_T, (1 − ᾱ_{τ_i})·I) (`sample_given_end`). The posterior
/// q(x_{i+1} | x_i, x_T) = N(μ̃, β̃·I), μ̃ = [√ᾱ'β/(1−ᾱ)]·x_T + [√α(1−ᾱ')/(1−ᾱ)]·x_i,
/// β̃ = β·(1−ᾱ')/(1−ᾱ), gives the bridge objective fit_prior trains with: by default the standard
/// ε-MSE (`DdpmFitLoss::EpsilonMse`: −½‖ε̂ − ε‖², ε = (x_i − √ᾱ·x_T)/√(1−ᾱ)), or the exact
/// expected log-likelihood log N(μ̃; μ, β) − D·β̃/(2β) (`DdpmFitLoss::ExpectedLogLikelihood`).

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "rtb/concepts/step.hpp"
#include "rtb/error.hpp"
#include "rtb/math/gaussian.hpp"
#include "rtb/math/philox.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// What fit_prior maximises per step with a DdpmProcess's bridge.
enum class DdpmFitLoss {
  EpsilonMse,            ///< −½‖ε̂ − ε‖²: the standard ("simple") DDPM loss, uniform over steps
  ExpectedLogLikelihood  ///< E_q[log p(x_{i+1} | x_i)]: the ELBO term, clamp included
};

struct DdpmOptions {
  Index num_train_steps = 1000;  ///< N, the training timesteps the β schedule is laid over
  double beta_start = 1e-4;      ///< β_0
  double beta_end = 0.02;        ///< β_{N−1}
  bool clip_denoised = true;     ///< clamp x̂_0 to [−1, 1] before forming the mean
  DdpmFitLoss fit_loss = DdpmFitLoss::EpsilonMse;
  /// time(i) = τ_i/N instead of the integer τ_i: for nets whose time features are periodic on
  /// [0, 1) (Mlp's sin(2πjt) is 0 at every integer t). Off: the reference's integer τ.
  bool time_as_fraction = false;
  /// Draw noise at the last step too, x_T = μ + √β_0·z: the offline-RL reference's sampler
  /// (§4.1: the final action sits at level β_0, not at the mean), whose samples then follow the
  /// density log_prob_step scores. Off: the image reference's x_T = μ.
  bool noise_at_last_step = false;
};

/// The coefficients of one strided sampling step (double; the process keeps a copy in S).
struct DdpmStepCoefficients {
  Index tau = 0;                   ///< τ, the level of x and the denoiser's time input
  double alpha_bar = 0;            ///< ᾱ_τ
  double alpha_bar_prev = 1;       ///< ᾱ_{τ'} (1 below level 0)
  double x0_coef = 0;              ///< √ᾱ'·β/(1−ᾱ)
  double x_coef = 0;               ///< √α·(1−ᾱ')/(1−ᾱ)
  double variance = 0;             ///< β = 1 − ᾱ/ᾱ' (fixed_large)
  double posterior_variance = 0;   ///< β̃ = β·(1−ᾱ')/(1−ᾱ)
};

template <class S = float>
class DdpmProcess {
 public:
  using Scalar = S;
  using Value = S;

  /// `dim` entries per state (C·H·W for an image), `num_steps` = T strided sampling steps.
  DdpmProcess(Index dim, Index num_steps, DdpmOptions options = {}) : dim_(dim), num_steps_(num_steps), options_(options) {
    const Index n = options.num_train_steps;
    if (dim <= 0)
      throw InvalidArgumentError(detail::message("DdpmProcess: dim must be positive, got ", dim,
                                                 "; pass the number of entries of a sample (C·H·W)"));
    if (n <= 0)
      throw InvalidArgumentError(detail::message("DdpmProcess: num_train_steps must be positive, got ", n,
                                                 "; the reference uses 1000"));
    if (num_steps <= 0 || num_steps > n)
      throw InvalidArgumentError(detail::message("DdpmProcess: num_steps must be in [1, num_train_steps = ", n,
                                                 "], got ", num_steps, "; the paper samples with 100"));
    const double b0 = options.beta_start, b1 = options.beta_end;
    if (!(b0 > 0) || !(b1 >= b0) || !(b1 < 1) || !std::isfinite(b0) || !std::isfinite(b1))
      throw InvalidArgumentError(detail::message(
          "DdpmProcess: need 0 < beta_start <= beta_end < 1, got beta_start = ", b0, ", beta_end = ", b1,
          "; a zero beta gives a zero-variance step (σ = 0) whose log-density is undefined; the reference uses 1e-4 and 0.02"));
    beta_.resize(static_cast<std::size_t>(n));
    alpha_bar_.resize(static_cast<std::size_t>(n));
    double prod = 1;
    for (Index j = 0; j < n; ++j) {
      const double b = n == 1 ? b0 : b0 + (b1 - b0) * static_cast<double>(j) / static_cast<double>(n - 1);
      beta_[static_cast<std::size_t>(j)] = b;
      prod *= 1 - b;
      alpha_bar_[static_cast<std::size_t>(j)] = prod;
    }
    const Index ratio = n / num_steps;
    for (Index i = 0; i < num_steps; ++i) {
      DdpmStepCoefficients c;
      c.tau = (num_steps - 1 - i) * ratio;
      c.alpha_bar = alpha_bar_[static_cast<std::size_t>(c.tau)];
      c.alpha_bar_prev = c.tau - ratio >= 0 ? alpha_bar_[static_cast<std::size_t>(c.tau - ratio)] : 1.0;
      const double alpha = c.alpha_bar / c.alpha_bar_prev;
      c.variance = 1 - alpha;
      c.x0_coef = std::sqrt(c.alpha_bar_prev) * c.variance / (1 - c.alpha_bar);
      c.x_coef = std::sqrt(alpha) * (1 - c.alpha_bar_prev) / (1 - c.alpha_bar);
      c.posterior_variance = c.variance * (1 - c.alpha_bar_prev) / (1 - c.alpha_bar);
      if (!(static_cast<S>(c.variance) > S(0)) || !(c.alpha_bar > 0))
        throw InvalidArgumentError(detail::message("DdpmProcess: step ", i, " (tau = ", c.tau, ") has variance ",
                                                   c.variance, " and alpha_bar ", c.alpha_bar,
                                                   "; every step needs σ > 0: raise beta_start or use fewer train steps"));
      coef_.push_back(c);
      Cached k;
      k.x0_coef = static_cast<S>(c.x0_coef);
      k.x_coef = static_cast<S>(c.x_coef);
      k.variance = static_cast<S>(c.variance);
      k.log_variance = static_cast<S>(std::log(c.variance));
      k.sqrt_alpha_bar = static_cast<S>(std::sqrt(c.alpha_bar));
      k.sqrt_one_minus_alpha_bar = static_cast<S>(std::sqrt(1 - c.alpha_bar));
      k.sqrt_alpha = static_cast<S>(std::sqrt(alpha));
      k.sd = static_cast<S>(std::sqrt(c.variance));
      k.posterior_variance = static_cast<S>(c.posterior_variance);
      cached_.push_back(k);
    }
  }

  Index state_dim() const { return dim_; }
  Index output_dim() const { return dim_; }
  const char* output_layout() const { return "[epsilon]"; }
  Index num_steps() const { return num_steps_; }
  const DdpmOptions& options() const { return options_; }
  /// The denoiser's conditioning at step i: the integer training timestep τ_i (or τ_i/N).
  S time(Index step) const {
    const double tau = static_cast<double>(coef_[static_cast<std::size_t>(step)].tau);
    return static_cast<S>(options_.time_as_fraction ? tau / static_cast<double>(options_.num_train_steps) : tau);
  }
  /// β_j and ᾱ_j of the training schedule, j ∈ [0, N).
  double train_beta(Index j) const { return beta_[static_cast<std::size_t>(j)]; }
  double train_alpha_bar(Index j) const { return alpha_bar_[static_cast<std::size_t>(j)]; }
  const DdpmStepCoefficients& coefficients(Index step) const { return coef_[static_cast<std::size_t>(step)]; }
  /// No exploration by default, as the reference.
  double default_exploration() const { return 0.0; }

  /// x_0 ~ N(0, I), from the stream of `key` at (first_row + r, step T).
  void initial_state(const Rows<S>& rows, const math::NoiseKey& key, MatrixView<S> x0) const {
    for (Index r = 0; r < x0.rows(); ++r)
      for (Index d = 0; d < dim_; ++d) x0(r, d) = noise(key, rows.first_row + r, num_steps_, d);
  }

  /// x' = μ + √(β + σ_expl²)·z, or x' = μ at the last step (unless noise_at_last_step).
  void sample_step(const Step<S>& s, ConstMatrixView<S> out, S extra_std, const math::NoiseKey& key,
                   MatrixView<S> x_next) const {
    RTB_ASSERT(s.x.cols() == dim_ && out.cols() == dim_ && x_next.rows() == s.x.rows());
    const Cached& k = cached(s.step);
    const bool last = s.step == num_steps_ - 1 && !options_.noise_at_last_step;
    const S sd = last ? S(0) : std::sqrt(k.variance + extra_std * extra_std);
    for (Index r = 0; r < s.rows(); ++r)
      for (Index d0 = 0; d0 < dim_; d0 += 4) {
        const Index n = dim_ - d0 < 4 ? dim_ - d0 : 4;
        math::Normal4<S> z{};
        if (!last)
          z = math::normals4<S>(key, static_cast<std::uint64_t>(s.first_row + r), static_cast<std::uint32_t>(s.step),
                                static_cast<std::uint32_t>(d0 / 4));
        for (Index j = 0; j < n; ++j) {
          const Index d = d0 + j;
          bool pass;
          x_next(r, d) = mean(k, s.x(r, d), out(r, d), pass) + (last ? S(0) : sd * z.v[j]);
        }
      }
  }

  /// acc[r] += log N(x'; μ, β·I) (never widened by exploration; β_0 at the last step).
  void log_prob_step(const Step<S>& s, ConstMatrixView<S> x_next, ConstMatrixView<S> out, std::span<S> acc) const {
    const Cached& k = cached(s.step);
    const S inv_var = S(1) / k.variance;
    const S constant = S(-0.5) * static_cast<S>(dim_) * (S(math::kLog2Pi) + k.log_variance);
    for (Index r = 0; r < s.rows(); ++r) {
      S sq = S(0);
      for (Index d = 0; d < dim_; ++d) {
        bool pass;
        const S e = x_next(r, d) - mean(k, s.x(r, d), out(r, d), pass);
        sq += e * e;
      }
      acc[static_cast<std::size_t>(r)] += constant - S(0.5) * inv_var * sq;
    }
  }

  /// d_out = weight[r]·∂ log p / ∂ε̂ = weight[r]·(x' − μ)/β · ∂μ/∂ε̂, ∂μ/∂ε̂ = −x0_coef·√(1−ᾱ)/√ᾱ
  /// where the clamp passes x̂_0 through, 0 where it is active.
  void d_log_prob_d_output(const Step<S>& s, ConstMatrixView<S> x_next, ConstMatrixView<S> out,
                           std::span<const S> weight, MatrixView<S> d_out) const {
    const Cached& k = cached(s.step);
    const S dmu = -k.x0_coef * k.sqrt_one_minus_alpha_bar / k.sqrt_alpha_bar / k.variance;
    for (Index r = 0; r < s.rows(); ++r) {
      const S w = weight[static_cast<std::size_t>(r)] * dmu;
      for (Index d = 0; d < dim_; ++d) {
        bool pass;
        const S e = x_next(r, d) - mean(k, s.x(r, d), out(r, d), pass);
        d_out(r, d) = pass ? w * e : S(0);
      }
    }
  }

  /// The noising kernel: x_i = √α·x_{i+1} + √β·z (s.x = x_{i+1}).
  void sample_backward_step(const Step<S>& s, const math::NoiseKey& key, MatrixView<S> x) const {
    const Cached& k = cached(s.step);
    for (Index r = 0; r < x.rows(); ++r)
      for (Index d = 0; d < dim_; ++d) x(r, d) = k.sqrt_alpha * s.x(r, d) + k.sd * noise(key, s.first_row + r, s.step, d);
  }

  /// acc[r] += log N(x_i; √α·x_{i+1}, β·I).
  void log_prob_backward_step(const Step<S>& s, ConstMatrixView<S> x, std::span<S> acc) const {
    const Cached& k = cached(s.step);
    for (Index r = 0; r < x.rows(); ++r)
      for (Index d = 0; d < dim_; ++d)
        acc[static_cast<std::size_t>(r)] +=
            math::gaussian_log_density(x(r, d), k.sqrt_alpha * s.x(r, d), k.variance, k.log_variance);
  }

  /// x_i | x_T ~ N(√ᾱ_{τ_i}·x_T, (1 − ᾱ_{τ_i})·I) (s.x = x_T).
  void sample_given_end(const Step<S>& s, const math::NoiseKey& key, MatrixView<S> x) const {
    const Cached& k = cached(s.step);
    for (Index r = 0; r < x.rows(); ++r)
      for (Index d = 0; d < dim_; ++d)
        x(r, d) = k.sqrt_alpha_bar * s.x(r, d) + k.sqrt_one_minus_alpha_bar * noise(key, s.first_row + r, s.step, d);
  }

  /// acc[r] += the bridge objective of `options().fit_loss` at x_i = s.x, x_T = x_end.
  void expected_log_prob_step(const Step<S>& s, ConstMatrixView<S> x_end, ConstMatrixView<S> out, std::span<S> acc) const {
    const Cached& k = cached(s.step);
    const bool mse = options_.fit_loss == DdpmFitLoss::EpsilonMse;
    const S constant = mse ? S(0)
                           : S(-0.5) * static_cast<S>(dim_) *
                                 (S(math::kLog2Pi) + k.log_variance + k.posterior_variance / k.variance);
    for (Index r = 0; r < s.rows(); ++r) {
      S sq = S(0);
      for (Index d = 0; d < dim_; ++d) {
        const S e = bridge_residual(k, s.x(r, d), x_end(r, d), out(r, d), mse);
        sq += e * e;
      }
      acc[static_cast<std::size_t>(r)] += constant - S(0.5) * (mse ? S(1) : S(1) / k.variance) * sq;
    }
  }

  /// d_out = weight[r]·∂(bridge objective)/∂ε̂.
  void d_expected_log_prob_d_output(const Step<S>& s, ConstMatrixView<S> x_end, ConstMatrixView<S> out,
                                    std::span<const S> weight, MatrixView<S> d_out) const {
    const Cached& k = cached(s.step);
    const bool mse = options_.fit_loss == DdpmFitLoss::EpsilonMse;
    const S dmu = -k.x0_coef * k.sqrt_one_minus_alpha_bar / k.sqrt_alpha_bar / k.variance;
    for (Index r = 0; r < s.rows(); ++r) {
      const S w = weight[static_cast<std::size_t>(r)];
      for (Index d = 0; d < dim_; ++d) {
        if (mse) {
          d_out(r, d) = -w * bridge_residual(k, s.x(r, d), x_end(r, d), out(r, d), true);
        } else {
          bool pass;
          const S e = k.x0_coef * x_end(r, d) + k.x_coef * s.x(r, d) - mean(k, s.x(r, d), out(r, d), pass);
          d_out(r, d) = pass ? w * dmu * e : S(0);
        }
      }
    }
  }

  /// Data end points must be finite.
  void check_end_states(ConstMatrixView<S> x, const char* what) const {
    for (Index r = 0; r < x.rows(); ++r)
      for (Index d = 0; d < x.cols(); ++d)
        if (!std::isfinite(x(r, d)))
          throw NonFiniteError(detail::message(what, ": row ", r, " entry ", d, " is ", x(r, d),
                                               "; DDPM data must be finite (images scaled to [-1, 1])"));
  }

 private:
  struct Cached {
    S x0_coef, x_coef, variance, log_variance, sqrt_alpha_bar, sqrt_one_minus_alpha_bar, sqrt_alpha, sd,
        posterior_variance;
  };
  const Cached& cached(Index step) const { return cached_[static_cast<std::size_t>(step)]; }

  /// μ for one entry; `pass` says whether the clamp let x̂_0 through (its derivative is 1).
  S mean(const Cached& k, S x, S eps, bool& pass) const {
    S x0 = (x - k.sqrt_one_minus_alpha_bar * eps) / k.sqrt_alpha_bar;
    pass = true;
    if (options_.clip_denoised) {
      if (x0 > S(1)) {
        x0 = S(1);
        pass = false;
      } else if (x0 < S(-1)) {
        x0 = S(-1);
        pass = false;
      }
    }
    return k.x0_coef * x0 + k.x_coef * x;
  }

  /// ε̂ − ε (ε-MSE) or μ̃ − μ (expected log-likelihood) for one entry.
  S bridge_residual(const Cached& k, S x, S x_end, S eps_hat, bool mse) const {
    if (mse) return eps_hat - (x - k.sqrt_alpha_bar * x_end) / k.sqrt_one_minus_alpha_bar;
    bool pass;
    return k.x0_coef * x_end + k.x_coef * x - mean(k, x, eps_hat, pass);
  }

  static S noise(const math::NoiseKey& key, Index row, Index step, Index d) {
    return math::normal<S>(key, static_cast<std::uint64_t>(row), static_cast<std::uint32_t>(step),
                           static_cast<std::uint32_t>(d));
  }

  Index dim_;
  Index num_steps_;
  DdpmOptions options_;
  std::vector<double> beta_, alpha_bar_;
  std::vector<DdpmStepCoefficients> coef_;
  std::vector<Cached> cached_;
};

}  // namespace rtb
