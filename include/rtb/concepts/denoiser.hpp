// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Denoiser concept: a network from a step of a batch (states, conditions, time) to the
/// process's output rows, with a hand-written backward. A denoiser is a parameter layout plus
/// code: it holds no weights. The caller (the trainer, or an rtb::Model that bundles a net with
/// its weights) hands them in as `Weights` on every call. See docs/concepts.md.

#include <concepts>
#include <span>

#include "rtb/concepts/step.hpp"
#include "rtb/net/parameters.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// Names its scalar, the element type of the states it reads, and its per-thread Context (and,
/// optionally, `Condition` and `Space`).
template <class N>
concept has_denoiser_types = requires {
  typename N::Scalar;
  typename N::Value;
  typename N::Context;
} && std::floating_point<typename N::Scalar>;

/// Its parameters' layout (named tensors, PyTorch `state_dict` names) and how to initialise them.
template <class N>
concept has_parameters = requires(const N& net, std::span<typename N::Scalar> params) {
  { net.num_params() } -> std::convertible_to<Index>;
  { net.layout() } -> std::convertible_to<const ParameterLayout&>;
  net.initialize(params);
};

/// inference (nothing kept) and forward (keeps what backward needs in the Context).
template <class N>
concept has_forward =
    requires(const N& net, typename N::Context& ctx, const Weights<typename N::Scalar>& w, const step_of_t<N>& s,
             View<typename N::Scalar, space_of_t<N>> out, Index rows) {
      { net.input_dim() } -> std::convertible_to<Index>;
      { net.output_dim() } -> std::convertible_to<Index>;
      { net.make_context(rows) } -> std::same_as<typename N::Context>;
      net.inference(w, s, out, ctx);
      net.forward(w, s, out, ctx);
    };

/// backward(w, ctx, ∂L/∂out, grad, mode): grad (+)= ∂L/∂params (the net's own tensors only) for
/// the Context's last forward.
template <class N>
concept has_backward =
    requires(const N& net, typename N::Context& ctx, const Weights<typename N::Scalar>& w,
             View<const typename N::Scalar, space_of_t<N>> d_out, std::span<typename N::Scalar> grad) {
      net.backward(w, ctx, d_out, grad, GradientMode::Accumulate);
    };

template <class N>
concept Denoiser = has_denoiser_types<N> && has_parameters<N> && has_forward<N> && has_backward<N> &&
                   std::copy_constructible<N>;

/// A denoiser that wraps a frozen base net and trains only tensors of its own (LoRA adapters, a
/// scale): it names the base's type, and its Weights carry the base's parameters as `frozen`.
/// The trainer's prior is then the base itself, sharing those parameters with the posterior.
template <class N>
concept WrapsFrozenBase = Denoiser<N> && requires(const N& net) {
  typename N::Base;
  { net.base() } -> std::convertible_to<const typename N::Base&>;
} && Denoiser<typename N::Base>;

namespace concepts_check {

/// The smallest Denoiser: out = a·x + b·t, two parameters. docs/concepts.md shows it.
struct AffineDenoiser {
  using Scalar = double;
  using Value = double;
  struct Context {
    const double* x = nullptr;  // input of the last forward
    double t = 0;
  };
  ParameterLayout layout_ = [] {
    ParameterLayout l;
    l.add("a", {1});
    l.add("b", {1});
    return l;
  }();

  Index input_dim() const { return 1; }
  Index output_dim() const { return 1; }
  Index num_params() const { return 2; }
  const ParameterLayout& layout() const { return layout_; }
  void initialize(std::span<double> p) const {
    p[0] = 1.0;
    p[1] = 0.0;
  }
  Context make_context(Index) const { return {}; }
  void inference(const Weights<double>& w, const Step<double>& s, MatrixView<double> out, Context&) const {
    out = (w.params[0] * s.x.array() + w.params[1] * s.time).matrix();
  }
  void forward(const Weights<double>& w, const Step<double>& s, MatrixView<double> out, Context& c) const {
    c.x = s.x.data();
    c.t = s.time;
    inference(w, s, out, c);
  }
  void backward(const Weights<double>&, Context& c, ConstMatrixView<double> d_out, std::span<double> grad,
                GradientMode mode) const {
    if (mode == GradientMode::Overwrite) grad[0] = grad[1] = 0;
    for (Index i = 0; i < d_out.rows(); ++i) grad[0] += d_out(i, 0) * c.x[i];
    grad[1] += d_out.sum() * c.t;
  }
};
static_assert(Denoiser<AffineDenoiser>);

/// Must not satisfy the concept: no backward.
struct NoBackward {
  using Scalar = double;
  using Value = double;
  struct Context {};
  ParameterLayout layout_;
  Index input_dim() const { return 1; }
  Index output_dim() const { return 1; }
  Index num_params() const { return 0; }
  const ParameterLayout& layout() const { return layout_; }
  void initialize(std::span<double>) const {}
  Context make_context(Index) const { return {}; }
  void inference(const Weights<double>&, const Step<double>&, MatrixView<double>, Context&) const {}
  void forward(const Weights<double>&, const Step<double>&, MatrixView<double>, Context&) const {}
};
static_assert(!Denoiser<NoBackward> && !has_backward<NoBackward> && has_forward<NoBackward>);

}  // namespace concepts_check
}  // namespace rtb
