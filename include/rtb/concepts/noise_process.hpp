// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The NoiseProcess concept: how a denoiser's output becomes a transition distribution
/// p(x_{t+1} | x_t), how to sample it, its log-density, and the adjoint seam
/// ∂ log p / ∂ out that lets the trainer back-propagate without knowing the process. Every call
/// takes a seam struct (concepts/step.hpp) and views in the process's memory space.

#include <cmath>
#include <concepts>
#include <span>

#include "rtb/concepts/step.hpp"
#include "rtb/math/philox.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// Types: the scalar of densities and the element type of a state row (and, optionally,
/// `Condition`, the element type of conditions, and `Space`, its memory space).
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

/// Forward kernel: the initial state (it may draw noise from `key`), sampling (`exploration`
/// widens the sampling distribution only, in the process's own unit), the log-density and its
/// gradient with respect to the denoiser output, weighted per row.
template <class P>
concept has_forward_kernel =
    requires(const P& p, const step_of_t<P>& s, const rows_of_t<P>& rows, View<typename P::Value, space_of_t<P>> x_mut,
             View<const typename P::Value, space_of_t<P>> x, View<const typename P::Scalar, space_of_t<P>> out,
             View<typename P::Scalar, space_of_t<P>> d_out, typename P::Scalar exploration, const math::NoiseKey& key,
             std::span<typename P::Scalar> acc, std::span<const typename P::Scalar> weight) {
      p.initial_state(rows, key, x_mut);
      p.sample_step(s, out, exploration, key, x_mut);
      p.log_prob_step(s, x, out, acc);
      p.d_log_prob_d_output(s, x, out, weight, d_out);
    };

/// Backward kernel: draws x_t given x_{t+1} (`s.x` = x_{t+1}, `s.step` = t), so trajectories can
/// be built from end points (prior fitting, replay, data), with its log-density.
template <class P>
concept has_backward_kernel =
    requires(const P& p, const step_of_t<P>& s, View<typename P::Value, space_of_t<P>> x_mut,
             View<const typename P::Value, space_of_t<P>> x, const math::NoiseKey& key,
             std::span<typename P::Scalar> acc) {
      p.sample_backward_step(s, key, x_mut);
      p.log_prob_backward_step(s, x, acc);
    };

/// Closed-form bridge given the end state: x_t | x_T (`s.x` = x_T), and the forward
/// log-likelihood in expectation over x_{t+1} | x_t, x_T (`s.x` = x_t, `x_end` = x_T). Lets a prior
/// be fitted to data one random step at a time (the standard diffusion objective).
template <class P>
concept has_bridge =
    requires(const P& p, const step_of_t<P>& s, View<typename P::Value, space_of_t<P>> x_mut,
             View<const typename P::Value, space_of_t<P>> x_end, View<const typename P::Scalar, space_of_t<P>> out,
             View<typename P::Scalar, space_of_t<P>> d_out, const math::NoiseKey& key,
             std::span<typename P::Scalar> acc, std::span<const typename P::Scalar> weight) {
      p.sample_given_end(s, key, x_mut);
      p.expected_log_prob_step(s, x_end, out, acc);
      p.d_expected_log_prob_d_output(s, x_end, out, weight, d_out);
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
  void initial_state(const Rows<double>&, const math::NoiseKey&, MatrixView<double> x0) const { x0.setZero(); }
  void sample_step(const Step<double>& s, ConstMatrixView<double> out, double extra_std, const math::NoiseKey& key,
                   MatrixView<double> x_next) const {
    for (Index r = 0; r < s.rows(); ++r)
      x_next(r, 0) = s.x(r, 0) + out(r, 0) +
                     std::sqrt(1.0 + extra_std * extra_std) * math::normal<double>(key, s.first_row + r, s.step, 0);
  }
  void log_prob_step(const Step<double>& s, ConstMatrixView<double> x_next, ConstMatrixView<double> out,
                     std::span<double> acc) const {
    for (Index r = 0; r < s.rows(); ++r) {
      const double e = x_next(r, 0) - s.x(r, 0) - out(r, 0);
      acc[r] += -0.5 * (e * e + 1.8378770664093453);
    }
  }
  void d_log_prob_d_output(const Step<double>& s, ConstMatrixView<double> x_next, ConstMatrixView<double> out,
                           std::span<const double> weight, MatrixView<double> d_out) const {
    for (Index r = 0; r < s.rows(); ++r) d_out(r, 0) = weight[r] * (x_next(r, 0) - s.x(r, 0) - out(r, 0));
  }
};
static_assert(NoiseProcess<UnitStepProcess>);
static_assert(!ReversibleNoiseProcess<UnitStepProcess>);  // no backward kernel: on-policy only

}  // namespace concepts_check
}  // namespace rtb
