// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// One trainable MLP of the offline-RL example: an rtb::Model<rtb::Mlp<S>> with its Adam state,
/// a gradient buffer and one context, called on plain row-major [rows, in] arrays.
///
///     f(x) = Linear(GELU(Linear(GELU(Linear(x)))))      (hidden = {w, w}: two hidden layers)
///
/// Decisions:
/// - rtb's Mlp has GELU hidden layers where the reference's IQL nets use ReLU; kept (a smooth
///   Q also gives a continuous ∂Q/∂a, which the posterior's guidance term reads).
/// - `time_harmonics = 0`: the nets are time-independent; the step's time is ignored.
/// - ∂f/∂x is exact, not finite differences: Mlp's backward leaves ∂L/∂h₀ (the first
///   pre-activation) in its context (`MlpContext::d_h0`), and h₀ = x·W₀ᵀ + b₀, so
///   ∂L/∂x = (∂L/∂h₀)·W₀ — one small GEMM after the usual backward.
/// - Calls are chunked into blocks of the context's rows, so any number of rows can be queried.
///   The context is `mutable`: a Net is not safe to call from two threads at once.

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include <rtb/net/adam.hpp>
#include <rtb/net/mlp.hpp>
#include <rtb/net/model.hpp>

namespace control {

using rtb::Index;

template <class S>
class Net {
 public:
  struct Options {
    Index input_dim = 4;
    Index output_dim = 1;
    std::vector<Index> hidden = {256, 256};
    std::uint64_t seed = 0;
    S learning_rate = S(3e-4);
    Index max_rows = 256;  ///< rows of one forward/backward (a training batch); queries are chunked
    bool zero_init_last = false;
  };

  explicit Net(const Options& o)
      : o_(o),
        model_(rtb::Mlp<S>({.input_dim = o.input_dim, .hidden = o.hidden, .output_dim = o.output_dim,
                            .time_harmonics = 0, .seed = o.seed, .zero_init_last = o.zero_init_last})),
        adam_(model_.num_params(), {.learning_rate = o.learning_rate}),
        grad_(static_cast<std::size_t>(model_.num_params()), S(0)),
        ctx_(model_.make_context(std::max<Index>(o.max_rows, 1))) {}

  Index input_dim() const { return o_.input_dim; }
  Index output_dim() const { return o_.output_dim; }
  Index max_rows() const { return ctx_.max_rows; }
  Index num_params() const { return model_.num_params(); }
  std::span<S> params() { return model_.params(); }
  std::span<const S> params() const { return model_.params(); }
  std::span<S> gradient() { return grad_; }
  const rtb::Adam<S>& adam() const { return adam_; }

  /// out[rows, out] = f(x[rows, in]) for any number of rows, keeping nothing.
  void inference(const S* x, Index rows, S* out) const {
    for (Index r0 = 0; r0 < rows; r0 += ctx_.max_rows) {
      const Index n = std::min(ctx_.max_rows, rows - r0);
      model_.inference(step(x + r0 * o_.input_dim, n), rtb::MatrixView<S>(out + r0 * o_.output_dim, n, o_.output_dim),
                       ctx_);
    }
  }

  /// The same for at most max_rows() rows, keeping what backward needs (`x` must stay alive).
  void forward(const S* x, Index rows, S* out) {
    RTB_ASSERT(rows <= ctx_.max_rows);
    model_.forward(step(x, rows), rtb::MatrixView<S>(out, rows, o_.output_dim), ctx_);
  }

  /// gradient() = ∂(Σ d_out ⊙ f)/∂params for the last forward (overwritten).
  void backward(const S* d_out) {
    model_.backward(ctx_, rtb::ConstMatrixView<S>(d_out, ctx_.rows, o_.output_dim), std::span<S>(grad_),
                    rtb::GradientMode::Overwrite);
  }

  /// After backward: dx[rows, cols] = ∂(Σ d_out ⊙ f)/∂x[:, first_col .. first_col + cols).
  void input_gradient(Index first_col, Index cols, S* dx) const {
    const auto& first = model_.net().first_layer();
    const Index rows = ctx_.rows, width = first.out(), in = first.in();
    Eigen::Map<const rtb::RowMatrix<S>, 0, Eigen::OuterStride<>> w(model_.params().data() + first.weight_offset() + first_col,
                                                                 width, cols, Eigen::OuterStride<>(in));
    rtb::MatrixView<S>(dx, rows, cols).noalias() = rtb::ConstMatrixView<S>(ctx_.d_h0.data(), rows, width) * w;
  }

  /// One Adam step with gradient().
  void step_optimizer() { adam_.step(model_.params(), std::span<const S>(grad_)); }

  /// θ ← (1 − rate)·θ + rate·θ_source (Polyak averaging of a target net).
  void track(const Net& source, S rate) {
    auto p = model_.params();
    const auto q = source.params();
    RTB_ASSERT(p.size() == q.size());
    for (std::size_t i = 0; i < p.size(); ++i) p[i] += rate * (q[i] - p[i]);
  }
  void copy_from(const Net& source) { std::ranges::copy(source.params(), model_.params().begin()); }

 private:
  rtb::Step<S> step(const S* x, Index rows) const {
    return rtb::Step<S>{.x = rtb::ConstMatrixView<S>(x, rows, o_.input_dim)};
  }

  Options o_;
  rtb::Model<rtb::Mlp<S>> model_;
  rtb::Adam<S> adam_;
  std::vector<S> grad_;
  mutable rtb::MlpContext<S> ctx_;
};

}  // namespace control
