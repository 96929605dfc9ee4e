// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Brownian (PIS-schedule) Gaussian diffusion of the 2-D reference.
///
/// T steps of length dt = 1/T on t ∈ [0, 1], starting at the point mass x_0 = 0. The denoiser's
/// output row is the drift μ (D values; `GaussianHead::Mean`), or [μ, log-variance] (2·D values;
/// `GaussianHead::MeanAndLogVariance`, the reference's learned-variance head, whose second half is
/// ignored as the reference does with learned_variance = False, so its weights load unchanged).
/// The forward kernel is Euler–Maruyama,
///
///     p(x_{i+1} | x_i) = N(x_i + dt·μ(x_i, t_i), dt·σ²·I),   t_i = i·dt,
///
/// with σ² the variance per unit time (5 in the reference). Exploration is an extra sampling
/// standard deviation σ_expl that widens only the sampling variance, to dt·σ² + σ_expl²;
/// log-densities always use dt·σ². Its default (default_exploration) is relative to the step:
/// √5 step standard deviations, which is the reference's 0.5 at its σ² = 5, T = 100. The fixed backward kernel is the
/// Brownian bridge pinned at x_0 = 0,
///
///     p_B(x_i | x_{i+1}) = N(x_{i+1}·i/(i+1), σ²·dt·i/(i+1)),   i ≥ 1,
///
/// and x_0 = 0 deterministically (log-probability 0, never a zero-variance density). With μ ≡ 0
/// the forward process ends exactly at N(0, σ²·I), which the exactness tests rely on.
///
/// For fitting a prior to data, the bridge is also available in closed form given its end x_T
/// (s = i·dt): x_i | x_T ~ N(s·x_T, σ²·s(1−s)), and x_{i+1} | x_i, x_T ~ N(m_B, v_B·I) with
/// m_B = x_i + dt·(x_T − x_i)/(1−s), v_B = σ²·dt·(1−s−dt)/(1−s). The expected forward
/// log-likelihood E[log p(x_{i+1}|x_i)] over that draw is log N(m_B; x_i + dt·μ, dt·σ²) −
/// D·v_B/(2·dt·σ²): the same objective as maximum likelihood on sampled backward trajectories,
/// with the sampling noise of x_{i+1} integrated out (Rao–Blackwellised).

#include <cmath>
#include <cstdint>

#include "rtb/concepts/step.hpp"
#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/math/gaussian.hpp"
#include "rtb/math/gaussian_step.hpp"
#include "rtb/math/philox.hpp"

namespace rtb {

/// The layout of the denoiser output a GaussianProcess reads.
enum class GaussianHead {
  Mean,               ///< [μ]: D values per row
  MeanAndLogVariance  ///< [μ, log σ²]: 2·D values, the second half ignored (the reference's PIS net)
};

template <class S = float>
class GaussianProcess {
 public:
  using Scalar = S;
  using Value = S;  ///< element type of a state row

  /// `dim` coordinates, `num_steps` = T, `variance_per_unit_time` = σ² (the reference's t_scale),
  /// and the layout of the denoiser's output rows.
  GaussianProcess(Index dim, Index num_steps, S variance_per_unit_time = S(5), GaussianHead head = GaussianHead::Mean)
      : dim_(dim), num_steps_(num_steps), variance_per_unit_time_(variance_per_unit_time), head_(head) {
    if (dim <= 0)
      throw InvalidArgumentError(detail::message("GaussianProcess: dim must be positive, got ", dim,
                                                 "; pass the number of coordinates of a sample"));
    if (num_steps <= 0)
      throw InvalidArgumentError(detail::message("GaussianProcess: num_steps must be positive, got ",
                                                 num_steps, "; the reference uses 100"));
    if (!(variance_per_unit_time > S(0)) || !std::isfinite(variance_per_unit_time))
      throw InvalidArgumentError(detail::message(
          "GaussianProcess: variance_per_unit_time must be positive and finite, got ",
          variance_per_unit_time, "; the reference uses 5 (t_scale)"));
    dt_ = S(1) / static_cast<S>(num_steps);
    step_variance_ = dt_ * variance_per_unit_time_;
    log_step_variance_ = std::log(step_variance_);
  }

  Index state_dim() const { return dim_; }
  Index output_dim() const { return head_ == GaussianHead::Mean ? dim_ : 2 * dim_; }
  GaussianHead head() const { return head_; }
  /// What the output columns hold, for error messages.
  const char* output_layout() const {
    return head_ == GaussianHead::Mean ? "[mean]" : "[mean, log-variance (unused)]";
  }
  Index num_steps() const { return num_steps_; }
  S dt() const { return dt_; }
  S variance_per_unit_time() const { return variance_per_unit_time_; }
  /// Per-step variance dt·σ² of the forward kernel (un-inflated).
  S step_variance() const { return step_variance_; }
  /// Conditioning the denoiser receives at a step: the time t_i = i·dt.
  S time(Index step) const { return static_cast<S>(step) * dt_; }
  /// The default exploration: an extra sampling std of √5 step standard deviations (the
  /// reference's 0.5 at σ² = 5, T = 100), relative, so it means the same at any σ² and T.
  double default_exploration() const { return 2.2360679774997896964 * std::sqrt(static_cast<double>(step_variance_)); }

  /// x_0 = 0 for every row.
  void initial_state(const Rows<S>&, const math::NoiseKey&, MatrixView<S> x0) const { x0.setZero(); }

  /// The step's constants, as the row functions of rtb/math/gaussian_step.hpp (and the CUDA
  /// kernels) take them.
  math::GaussianStepConstants<S> step_constants() const {
    return {dt_, S(-0.5) / step_variance_, S(-0.5) * static_cast<S>(dim_) * (S(math::kLog2Pi) + log_step_variance_),
            dt_ / step_variance_};
  }

  /// Draws x_{i+1} = x_i + dt·μ + √(dt·σ² + σ_expl²)·z, z from the Philox stream of `key` at
  /// (first_row + r, step). Rows are independent; any block split gives the same numbers.
  void sample_step(const Step<S>& s, ConstMatrixView<S> out, S extra_std, const math::NoiseKey& key,
                   MatrixView<S> x_next) const {
    RTB_ASSERT(s.x.cols() == dim_ && out.cols() >= dim_ && x_next.rows() == s.x.rows());
    const S sd = std::sqrt(step_variance_ + extra_std * extra_std);
    for (Index r = 0; r < s.rows(); ++r)
      math::gaussian_sample_row(row_ptr(s.x, r), row_ptr(out, r), dim_, dt_, sd, key,
                                static_cast<std::uint64_t>(s.first_row + r), static_cast<std::uint32_t>(s.step),
                                row_ptr(x_next, r));
  }

  /// acc[r] += log p(x_next | x) under the un-inflated kernel.
  void log_prob_step(const Step<S>& s, ConstMatrixView<S> x_next, ConstMatrixView<S> out, std::span<S> acc) const {
    const auto c = step_constants();
    for (Index r = 0; r < s.rows(); ++r)
      acc[static_cast<std::size_t>(r)] +=
          math::gaussian_log_prob_row(row_ptr(s.x, r), row_ptr(x_next, r), row_ptr(out, r), dim_, c);
  }

  /// d_out(r, :) = weight[r] · ∂ log p(x_next_r | x_r) / ∂ out_r: ∂/∂μ_d = dt·(x_next − x − dt·μ)_d / (dt·σ²),
  /// and 0 for an unused log-variance half.
  void d_log_prob_d_output(const Step<S>& s, ConstMatrixView<S> x_next, ConstMatrixView<S> out,
                           std::span<const S> weight, MatrixView<S> d_out) const {
    const auto c = step_constants();
    for (Index r = 0; r < s.rows(); ++r)
      math::gaussian_adjoint_row(row_ptr(s.x, r), row_ptr(x_next, r), row_ptr(out, r), dim_, d_out.cols(),
                                 weight[static_cast<std::size_t>(r)], c, row_ptr(d_out, r));
  }

  /// Draws x_step given x_{step+1} (= s.x) from the pinned Brownian bridge; x_0 = 0 exactly.
  void sample_backward_step(const Step<S>& s, const math::NoiseKey& key, MatrixView<S> x) const {
    if (s.step == 0) {
      x.setZero();
      return;
    }
    const S shrink = static_cast<S>(s.step) / static_cast<S>(s.step + 1);
    const S sd = std::sqrt(step_variance_ * shrink);
    for (Index r = 0; r < x.rows(); ++r) {
      for (Index d = 0; d < dim_; ++d) {
        const S z = math::normal<S>(key, static_cast<std::uint64_t>(s.first_row + r), static_cast<std::uint32_t>(s.step),
                                    static_cast<std::uint32_t>(d));
        x(r, d) = shrink * s.x(r, d) + sd * z;
      }
    }
  }

  /// Draws x_step | x_T (= s.x; the bridge marginal) for every row.
  void sample_given_end(const Step<S>& s, const math::NoiseKey& key, MatrixView<S> x) const {
    const S t = time(s.step);
    const S sd = std::sqrt(variance_per_unit_time_ * t * (S(1) - t));
    for (Index r = 0; r < x.rows(); ++r)
      for (Index d = 0; d < dim_; ++d)
        x(r, d) = t * s.x(r, d) +
                  sd * math::normal<S>(key, static_cast<std::uint64_t>(s.first_row + r), static_cast<std::uint32_t>(s.step),
                                       static_cast<std::uint32_t>(d));
  }

  /// acc[r] += E[log p(x_{step+1} | x_r)] over x_{step+1} ~ bridge(· | x_r, x_end_r).
  void expected_log_prob_step(const Step<S>& s, ConstMatrixView<S> x_end, ConstMatrixView<S> out,
                              std::span<S> acc) const {
    const S t = time(s.step), left = S(1) - t;
    const S bridge_var = variance_per_unit_time_ * dt_ * (left - dt_) / left;
    const S inv_var = S(1) / step_variance_;
    const S constant = S(-0.5) * static_cast<S>(dim_) * (S(math::kLog2Pi) + log_step_variance_ + bridge_var * inv_var);
    for (Index r = 0; r < s.rows(); ++r) {
      S sq = S(0);
      for (Index d = 0; d < dim_; ++d) {
        const S diff = dt_ * (x_end(r, d) - s.x(r, d)) / left - dt_ * out(r, d);
        sq += diff * diff;
      }
      acc[static_cast<std::size_t>(r)] += constant - S(0.5) * inv_var * sq;
    }
  }

  /// d_out = weight[r] · ∂ E[log p(x_{step+1} | x_r)] / ∂ out_r (bridge expectation as above).
  void d_expected_log_prob_d_output(const Step<S>& s, ConstMatrixView<S> x_end, ConstMatrixView<S> out,
                                    std::span<const S> weight, MatrixView<S> d_out) const {
    const S left = S(1) - time(s.step);
    const S scale = dt_ / step_variance_;
    for (Index r = 0; r < s.rows(); ++r) {
      const S w = weight[static_cast<std::size_t>(r)] * scale;
      for (Index d = 0; d < dim_; ++d) d_out(r, d) = w * (dt_ * (x_end(r, d) - s.x(r, d)) / left - dt_ * out(r, d));
      for (Index d = dim_; d < d_out.cols(); ++d) d_out(r, d) = S(0);
    }
  }

  /// acc[r] += log p_B(x_r | x_next_r) for the bridge (s.x = x_{step+1}); 0 at step 0 (x_0 = 0 is forced).
  void log_prob_backward_step(const Step<S>& s, ConstMatrixView<S> x, std::span<S> acc) const {
    if (s.step == 0) return;
    const S shrink = static_cast<S>(s.step) / static_cast<S>(s.step + 1);
    const S var = step_variance_ * shrink;
    const S log_var = std::log(var);
    for (Index r = 0; r < x.rows(); ++r)
      for (Index d = 0; d < dim_; ++d)
        acc[static_cast<std::size_t>(r)] += math::gaussian_log_density(x(r, d), shrink * s.x(r, d), var, log_var);
  }

 private:
  Index dim_;
  Index num_steps_;
  S variance_per_unit_time_;
  GaussianHead head_;
  S dt_ = 0, step_variance_ = 0, log_step_variance_ = 0;
};

}  // namespace rtb
