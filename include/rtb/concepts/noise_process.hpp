// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The NoiseProcess concept: how a denoiser's output becomes a transition distribution
/// p(x_{t+1} | x_t), how to sample it, its log-density, and the adjoint seam
/// ∂ log p / ∂ out that lets the trainer back-propagate without knowing the process.

#include <concepts>
#include <span>

#include "rtb/config.hpp"
#include "rtb/math/philox.hpp"

namespace rtb {

/// Types: the scalar of densities and the element type of a state row.
template <class P>
concept has_process_types = requires {
  typename P::Scalar;
  typename P::Value;
} && std::floating_point<typename P::Scalar>;

/// Shape: state width, expected denoiser output width, number of steps, conditioning per step.
template <class P>
concept has_process_shape = requires(const P& p, Index step) {
  { p.state_dim() } -> std::convertible_to<Index>;
  { p.output_dim() } -> std::convertible_to<Index>;
  { p.num_steps() } -> std::convertible_to<Index>;
  { p.time(step) } -> std::convertible_to<typename P::Scalar>;
};

/// Forward kernel: initial state, sampling (exploration widens sampling only), log-density and
/// its gradient with respect to the denoiser output, weighted per row.
template <class P>
concept has_forward_kernel =
    requires(const P& p, MatrixView<typename P::Value> x_mut, ConstMatrixView<typename P::Value> x,
             ConstMatrixView<typename P::Scalar> out, MatrixView<typename P::Scalar> d_out, Index step,
             typename P::Scalar exploration, const math::NoiseKey& key, typename P::Scalar* acc,
             const typename P::Scalar* weight) {
      p.initial_state(x_mut, step);
      p.sample_step(x, out, step, exploration, key, step, x_mut);
      p.log_prob_step(x, x, out, step, acc);
      p.d_log_prob_d_output(x, x, out, step, weight, d_out);
    };

/// Backward kernel: draws x_t given x_{t+1}, so trajectories can be built from end points
/// (prior fitting, replay, data), with its log-density.
template <class P>
concept has_backward_kernel = requires(const P& p, MatrixView<typename P::Value> x_mut,
                                       ConstMatrixView<typename P::Value> x, Index step, const math::NoiseKey& key,
                                       typename P::Scalar* acc) {
  p.sample_backward_step(x, step, key, step, x_mut);
  p.log_prob_backward_step(x, x, step, acc);
};

/// Closed-form bridge given the end state: x_t | x_T, and the forward log-likelihood in
/// expectation over x_{t+1} | x_t, x_T. Lets a prior be fitted to data one random step at a time
/// (the standard diffusion objective) instead of along whole sampled backward trajectories.
template <class P>
concept has_bridge = requires(const P& p, MatrixView<typename P::Value> x_mut, ConstMatrixView<typename P::Value> x,
                              ConstMatrixView<typename P::Scalar> out, MatrixView<typename P::Scalar> d_out, Index step,
                              const math::NoiseKey& key, typename P::Scalar* acc, const typename P::Scalar* weight) {
  p.sample_given_end(x, step, key, step, x_mut);
  p.expected_log_prob_step(x, x, out, step, acc);
  p.d_expected_log_prob_d_output(x, x, out, step, weight, d_out);
};

template <class P>
concept NoiseProcess = has_process_types<P> && has_process_shape<P> && has_forward_kernel<P>;

/// A process that can also be run backward from end points (needed for off-policy training from
/// samples and for fitting a prior to data).
template <class P>
concept ReversibleNoiseProcess = NoiseProcess<P> && has_backward_kernel<P>;

namespace concepts_check {

/// The smallest NoiseProcess: one coordinate, T unit-variance Gaussian steps with mean x + out.
struct UnitStepProcess {
  using Scalar = double;
  using Value = double;
  Index state_dim() const { return 1; }
  Index output_dim() const { return 1; }
  Index num_steps() const { return 2; }
  double time(Index step) const { return static_cast<double>(step) / 2.0; }
  void initial_state(MatrixView<double> x0, Index) const { x0.setZero(); }
  void sample_step(ConstMatrixView<double> x, ConstMatrixView<double> out, Index step, double expl,
                   const math::NoiseKey& key, Index first_row, MatrixView<double> x_next) const {
    for (Index r = 0; r < x.rows(); ++r)
      x_next(r, 0) = x(r, 0) + out(r, 0) +
                     std::sqrt(1.0 + expl * expl) * math::normal<double>(key, first_row + r, step, 0);
  }
  void log_prob_step(ConstMatrixView<double> x, ConstMatrixView<double> x_next, ConstMatrixView<double> out, Index,
                     double* acc) const {
    for (Index r = 0; r < x.rows(); ++r) {
      const double e = x_next(r, 0) - x(r, 0) - out(r, 0);
      acc[r] += -0.5 * (e * e + 1.8378770664093453);
    }
  }
  void d_log_prob_d_output(ConstMatrixView<double> x, ConstMatrixView<double> x_next, ConstMatrixView<double> out,
                           Index, const double* w, MatrixView<double> d_out) const {
    for (Index r = 0; r < x.rows(); ++r) d_out(r, 0) = w[r] * (x_next(r, 0) - x(r, 0) - out(r, 0));
  }
};
static_assert(NoiseProcess<UnitStepProcess>);
static_assert(!ReversibleNoiseProcess<UnitStepProcess>);  // no backward kernel: on-policy only

}  // namespace concepts_check
}  // namespace rtb
