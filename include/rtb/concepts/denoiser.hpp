// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Denoiser concept: a network from a batch of states at one step to the process's output
/// rows, with a hand-written backward. See docs/concepts.md for the contract in prose.

#include <concepts>
#include <span>

#include "rtb/config.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

/// Names its scalar, its input element type and its per-thread Context.
template <class N>
concept has_denoiser_types = requires {
  typename N::Scalar;
  typename N::Input;
  typename N::Context;
} && std::floating_point<typename N::Scalar>;

/// Flat parameters with named tensors.
template <class N>
concept has_parameters = requires(N& net, const N& cnet) {
  { cnet.num_params() } -> std::convertible_to<Index>;
  { net.params() } -> std::convertible_to<std::span<typename N::Scalar>>;
  { cnet.params() } -> std::convertible_to<std::span<const typename N::Scalar>>;
  { cnet.layout() } -> std::convertible_to<const ParameterLayout&>;
};

/// inference (nothing kept) and forward (keeps what backward needs in the Context).
template <class N>
concept has_forward = requires(const N& net, typename N::Context& ctx, ConstMatrixView<typename N::Input> x,
                               typename N::Scalar t, MatrixView<typename N::Scalar> out, Index rows) {
  { net.input_dim() } -> std::convertible_to<Index>;
  { net.output_dim() } -> std::convertible_to<Index>;
  { net.make_context(rows) } -> std::same_as<typename N::Context>;
  net.inference(x, t, out, ctx);
  net.forward(x, t, out, ctx);
};

/// backward(ctx, ∂L/∂out, grad, mode): grad (+)= ∂L/∂params for the Context's last forward.
template <class N>
concept has_backward = requires(const N& net, typename N::Context& ctx, ConstMatrixView<typename N::Scalar> d_out,
                                std::span<typename N::Scalar> grad) {
  net.backward(ctx, d_out, grad, GradientMode::Accumulate);
};

template <class N>
concept Denoiser = has_denoiser_types<N> && has_parameters<N> && has_forward<N> && has_backward<N> &&
                   std::copy_constructible<N>;

namespace concepts_check {

/// The smallest Denoiser: out = a·x + b·t, two parameters. docs/concepts.md shows it.
struct AffineDenoiser {
  using Scalar = double;
  using Input = double;
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
  double p_[2] = {1.0, 0.0};

  Index input_dim() const { return 1; }
  Index output_dim() const { return 1; }
  Index num_params() const { return 2; }
  const ParameterLayout& layout() const { return layout_; }
  std::span<double> params() { return p_; }
  std::span<const double> params() const { return p_; }
  Context make_context(Index) const { return {}; }
  void inference(ConstMatrixView<double> x, double t, MatrixView<double> out, Context&) const {
    out = (p_[0] * x.array() + p_[1] * t).matrix();
  }
  void forward(ConstMatrixView<double> x, double t, MatrixView<double> out, Context& c) const {
    c.x = x.data();
    c.t = t;
    inference(x, t, out, c);
  }
  void backward(Context& c, ConstMatrixView<double> d_out, std::span<double> grad, GradientMode mode) const {
    if (mode == GradientMode::Overwrite) grad[0] = grad[1] = 0;
    for (Index i = 0; i < d_out.rows(); ++i) grad[0] += d_out(i, 0) * c.x[i];
    grad[1] += d_out.sum() * c.t;
  }
};
static_assert(Denoiser<AffineDenoiser>);

/// Must not satisfy the concept: no backward.
struct NoBackward {
  using Scalar = double;
  using Input = double;
  struct Context {};
  ParameterLayout layout_;
  Index input_dim() const { return 1; }
  Index output_dim() const { return 1; }
  Index num_params() const { return 0; }
  const ParameterLayout& layout() const { return layout_; }
  std::span<double> params() { return {}; }
  std::span<const double> params() const { return {}; }
  Context make_context(Index) const { return {}; }
  void inference(ConstMatrixView<double>, double, MatrixView<double>, Context&) const {}
  void forward(ConstMatrixView<double>, double, MatrixView<double>, Context&) const {}
};
static_assert(!Denoiser<NoBackward> && !has_backward<NoBackward> && has_forward<NoBackward>);

}  // namespace concepts_check
}  // namespace rtb
