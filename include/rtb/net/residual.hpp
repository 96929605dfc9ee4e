// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A trained residual over a frozen denoiser: the posterior's output is
///
///     out(x, c, t) = base(x, c, t) + residual(x, c, t),
///
/// base frozen (its parameters arrive as Weights::frozen, shared with the trainer's prior), only
/// the residual's tensors trained, counted in num_params() and checkpointed. This is the offline-RL
/// reference's posterior, ε_φ = ε_θ + ε_res (algorithm-reference.md §4.2), and it lets the base be
/// any Denoiser, including one with no hand-written backward of its own parameters or one that is
/// not an Mlp at all (an analytic ε, a UNet). With a residual whose last layer starts at zero
/// (Mlp's default `zero_init_last`), a fresh posterior is the prior exactly; the reference
/// instead starts ε_res as a copy of the prior (§6 item 21), so its step-0 posterior is not the
/// prior: rtb starts at the prior, as the toy and image domains do.
///
/// Both nets read the same step (state, condition, time); the residual must have the base's input
/// and output widths. Host memory only: the sum is formed in the Context's buffer.

#include <algorithm>
#include <span>
#include <utility>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/detail/flush_denormal.hpp"
#include "rtb/error.hpp"
#include "rtb/net/context.hpp"
#include "rtb/space.hpp"

namespace rtb {

template <Denoiser B, Denoiser R>
  requires std::same_as<typename B::Scalar, typename R::Scalar> && std::same_as<typename B::Value, typename R::Value> &&
           std::same_as<condition_of_t<B>, condition_of_t<R>> && std::same_as<space_of_t<B>, HostSpace> &&
           std::same_as<space_of_t<R>, HostSpace>
class Residual {
 public:
  using Base = B;
  using Scalar = typename B::Scalar;
  using Value = typename B::Value;
  using Condition = condition_of_t<B>;
  using Space = HostSpace;
  using S = Scalar;
  struct Context {
    typename B::Context base;
    typename R::Context residual;
    AlignedVector<S> out;  ///< the residual's output, [rows, output_dim]
  };

  /// Throws ShapeError when the two nets' input or output widths differ.
  Residual(B base, R residual) : base_(std::move(base)), residual_(std::move(residual)) {
    if (base_.input_dim() != residual_.input_dim() || base_.output_dim() != residual_.output_dim())
      throw ShapeError(detail::message("Residual: the base net maps ", base_.input_dim(), " -> ", base_.output_dim(),
                                       " values, the residual ", residual_.input_dim(), " -> ", residual_.output_dim(),
                                       "; build the residual with the base's input_dim and output_dim"));
  }

  const B& base() const { return base_; }
  const R& residual() const { return residual_; }
  Index input_dim() const { return base_.input_dim(); }
  Index output_dim() const { return base_.output_dim(); }
  /// Condition columns read: the wider of the two nets' (either may read none).
  Index condition_dim() const {
    return std::max(detail::declared_condition_dim(base_), detail::declared_condition_dim(residual_));
  }
  Index num_params() const { return residual_.num_params(); }
  const ParameterLayout& layout() const { return residual_.layout(); }
  /// The residual's initialiser: a zero last layer makes the wrapper the base exactly.
  void initialize(std::span<S> p) const { residual_.initialize(p); }

  Context make_context(Index max_rows) const {
    Context c{base_.make_context(max_rows), residual_.make_context(max_rows), {}};
    c.out.assign(static_cast<std::size_t>(max_rows * output_dim()), S(0));
    return c;
  }

  void inference(const Weights<S>& w, const step_of_t<B>& s, MatrixView<S> out, Context& c) const {
    const detail::ScopedFlushDenormal flush;
    check_frozen(w);
    base_.inference(Weights<S>{w.frozen}, s, out, c.base);
    residual_.inference(Weights<S>{w.params}, s, residual_out(c, out.rows()), c.residual);
    add_residual(c, out);
  }
  /// The base runs as inference (nothing of it is trained); the residual keeps its activations.
  void forward(const Weights<S>& w, const step_of_t<B>& s, MatrixView<S> out, Context& c) const {
    const detail::ScopedFlushDenormal flush;
    check_frozen(w);
    base_.inference(Weights<S>{w.frozen}, s, out, c.base);
    residual_.forward(Weights<S>{w.params}, s, residual_out(c, out.rows()), c.residual);
    add_residual(c, out);
  }
  /// grad (+)= ∂L/∂(residual's tensors): ∂out/∂residual is the identity.
  void backward(const Weights<S>& w, Context& c, ConstMatrixView<S> d_out, std::span<S> grad, GradientMode mode) const {
    residual_.backward(Weights<S>{w.params}, c.residual, d_out, grad, mode);
  }

 private:
  void check_frozen(const Weights<S>& w) const {
    if (static_cast<Index>(w.frozen.size()) != base_.num_params())
      throw InvalidArgumentError(detail::message("Residual: the frozen base weights hold ", w.frozen.size(),
                                                 " values for a base net of ", base_.num_params(),
                                                 "; build the model as rtb::Model(Residual(...), base_model)"));
  }
  MatrixView<S> residual_out(Context& c, Index rows) const {
    RTB_ASSERT(static_cast<std::size_t>(rows * output_dim()) <= c.out.size());
    return MatrixView<S>(c.out.data(), rows, output_dim());
  }
  void add_residual(const Context& c, MatrixView<S> out) const {
    out += ConstMatrixView<S>(c.out.data(), out.rows(), out.cols());
  }

  B base_;
  R residual_;
};

}  // namespace rtb
