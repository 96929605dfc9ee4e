// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Denoiser entry points of rtb's own nets, written once: inference and forward are the same
/// computation, `run(params, step, out, ctx, keep)`, keeping what backward needs or not, and
/// backward handles GradientMode before the net's `accumulate_gradient(params, ctx, d_out, grad)`.
/// A net derives from NetEntryPoints<Net, Scalar, Value, Context> (CRTP) and befriends it. Each
/// entry point runs with subnormals flushed (detail/flush_denormal.hpp) and restores the caller's mode.

#include <algorithm>
#include <span>

#include "rtb/concepts/step.hpp"
#include "rtb/detail/flush_denormal.hpp"
#include "rtb/space.hpp"

namespace rtb::detail {

template <class Net, class S, class V, class Ctx>
class NetEntryPoints {
 public:
  /// out = net(x, c, t); keeps nothing for backward.
  void inference(const Weights<S>& w, const Step<V, S>& s, MatrixView<S> out, Ctx& ctx) const {
    const ScopedFlushDenormal flush;
    self().run(w.params.data(), s, out, ctx, false);
  }
  /// The same, keeping what backward needs in ctx (the step's views must outlive it).
  void forward(const Weights<S>& w, const Step<V, S>& s, MatrixView<S> out, Ctx& ctx) const {
    const ScopedFlushDenormal flush;
    self().run(w.params.data(), s, out, ctx, true);
  }
  /// grad (+)= ∂(Σ d_out ⊙ out)/∂params for the last forward of ctx.
  void backward(const Weights<S>& w, Ctx& ctx, ConstMatrixView<S> d_out, std::span<S> grad, GradientMode mode) const {
    RTB_ASSERT(static_cast<Index>(grad.size()) == self().num_params());
    const ScopedFlushDenormal flush;
    if (mode == GradientMode::Overwrite) std::fill(grad.begin(), grad.end(), S(0));
    self().accumulate_gradient(w.params.data(), ctx, d_out, grad.data());
  }

 private:
  const Net& self() const { return static_cast<const Net&>(*this); }
};

}  // namespace rtb::detail
