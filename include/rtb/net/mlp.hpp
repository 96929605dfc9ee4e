// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A general MLP denoiser over a D-dimensional state, an optional Dc-dimensional per-row
/// condition c, and a scalar time t:
///
///     φ(t) = [sin(2πjt), cos(2πjt)]_{j=1..F}               fixed time features (F may be 0)
///     h₀   = Linear(D+Dc+2F, w₀)([x, c, φ(t)])
///     out  = Linear(w_L, out)(GELU(…Linear(w₀,w₁)(GELU(h₀))…))
///
/// The time features are the same for every row of a call, so their share of the first layer,
/// W_t·φ(t) + b, is computed once per call and added as a row. Parameters are named
/// `layers.<i>.weight` / `layers.<i>.bias` for i = 0 (first) … L+1 (output), in PyTorch layout;
/// the first layer's columns are [x, c, φ] in that order.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/concepts/step.hpp"
#include "rtb/error.hpp"
#include "rtb/net/context.hpp"
#include "rtb/net/entry_points.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/trunk.hpp"
#include "rtb/space.hpp"

namespace rtb {

template <class S = float>
class Mlp : public detail::NetEntryPoints<Mlp<S>, S, S, MlpContext<S>> {
  friend class detail::NetEntryPoints<Mlp<S>, S, S, MlpContext<S>>;

 public:
  using Scalar = S;
  using Value = S;
  using Context = MlpContext<S>;

  struct Options {
    Index input_dim = 2;
    std::vector<Index> hidden = {64, 64};
    Index output_dim = 4;
    Index time_harmonics = 8;  ///< F; 0 gives a time-independent MLP
    Index condition_dim = 0;   ///< Dc: per-row condition columns read (0 = unconditional)
    std::uint64_t seed = 0;
    bool zero_init_last = true;
  };

  Mlp() : Mlp(Options{}) {}
  explicit Mlp(const Options& o) : o_(o) {
    if (o.input_dim <= 0 || o.output_dim <= 0 || o.hidden.empty() || o.time_harmonics < 0 || o.condition_dim < 0)
      throw InvalidArgumentError(detail::message("Mlp: input_dim and output_dim must be positive, hidden non-empty ",
                                                 "and time_harmonics, condition_dim non-negative, got input_dim=",
                                                 o.input_dim, " output_dim=", o.output_dim, " hidden layers=",
                                                 o.hidden.size(), " time_harmonics=", o.time_harmonics,
                                                 " condition_dim=", o.condition_dim));
    for (Index w : o.hidden)
      if (w <= 0) throw InvalidArgumentError(detail::message("Mlp: hidden widths must be positive, got ", w));
    first_ = Linear(layout_, "layers.0.", first_in(), o.hidden.front());
    std::vector<std::string> names;
    for (std::size_t l = 1; l < o.hidden.size(); ++l) names.push_back("layers." + std::to_string(l) + ".");
    trunk_ = detail::GeluTrunk(layout_, o.hidden, names, "layers." + std::to_string(o.hidden.size()) + ".",
                               o.output_dim);
  }

  const Options& options() const { return o_; }
  Index input_dim() const { return o_.input_dim; }
  Index output_dim() const { return o_.output_dim; }
  Index condition_dim() const { return o_.condition_dim; }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }
  /// The first layer, over [x, c, φ(t)] (first_in() columns), and the GELU trunk after it: what
  /// a wrapper that adapts the layers (net/lora.hpp) walks through.
  const Linear& first_layer() const { return first_; }
  const detail::GeluTrunk& trunk() const { return trunk_; }
  Index first_in() const { return o_.input_dim + o_.condition_dim + 2 * o_.time_harmonics; }

  /// PyTorch-default layers from the options' seed; the last layer zero if `zero_init_last`.
  void initialize(std::span<S> params) const {
    RTB_ASSERT(static_cast<Index>(params.size()) == num_params());
    S* p = params.data();
    first_.init_default(p, o_.seed, 0);
    trunk_.init(p, o_.seed, 1, 1000, o_.zero_init_last);
  }

  Context make_context(Index max_rows) const {
    Context c = trunk_.make_context<S>(max_rows);
    c.time.assign(static_cast<std::size_t>(2 * o_.time_harmonics + 2 * o_.hidden.front()), S(0));
    return c;
  }


 private:
  void accumulate_gradient(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g) const {
    RTB_ASSERT(d_out.rows() == ctx.rows);
    const Index rows = ctx.rows, D = o_.input_dim, Dc = o_.condition_dim, F = o_.time_harmonics;
    const Index W = o_.hidden.front();
    MatrixView<S> d_h0(ctx.d_h0.data(), rows, W);
    trunk_.backward(p, ctx.trunk.data(), rows, d_out, g, ctx.scratch.data(), d_h0);
    // First layer over [x, c, φ(t)]: the x and c blocks by GEMM, the φ block as an outer product.
    const Index in = first_in();
    Eigen::Map<RowMatrix<S>, 0, Eigen::OuterStride<>> dw_x(g + first_.weight_offset(), W, D, Eigen::OuterStride<>(in));
    detail::gemm(dw_x, d_h0.transpose(), ConstMatrixView<S>(ctx.x, rows, D), true);
    if (Dc > 0) {
      Eigen::Map<RowMatrix<S>, 0, Eigen::OuterStride<>> dw_c(g + first_.weight_offset() + D, W, Dc,
                                                             Eigen::OuterStride<>(in));
      Eigen::Map<const RowMatrix<S>, 0, Eigen::OuterStride<>> c(ctx.condition_values, rows, Dc,
                                                                Eigen::OuterStride<>(ctx.condition_stride));
      detail::gemm(dw_c, d_h0.transpose(), c, true);
    }
    S* col = ctx.time.data() + 2 * F;  // W floats: Σ_rows ∂/∂h₀
    std::fill(col, col + W, S(0));
    Linear::add_column_sums(ConstMatrixView<S>(d_h0.data(), rows, W), col);
    const S* feat = ctx.time.data();
    for (Index o = 0; o < W; ++o) {
      g[first_.bias_offset() + o] += col[o];
      for (Index k = 0; k < 2 * F; ++k) g[first_.weight_offset() + o * in + D + Dc + k] += col[o] * feat[k];
    }
  }

  void run(const S* p, const Step<S>& s, MatrixView<S> out, Context& ctx, bool keep) const {
    const ConstMatrixView<S>& x = s.x;
    const Index rows = x.rows(), D = o_.input_dim, Dc = o_.condition_dim, F = o_.time_harmonics;
    const Index W = o_.hidden.front();
    RTB_ASSERT(rows <= ctx.max_rows && x.cols() == D && out.cols() == o_.output_dim && out.rows() == rows);
    RTB_ASSERT(Dc == 0 || (s.condition.rows() == rows && s.condition.cols() >= Dc));
    ctx.rows = rows;
    ctx.x = x.data();
    ctx.condition_values = Dc > 0 ? s.condition.data() : nullptr;
    ctx.condition_stride = s.condition.cols();
    S* feat = ctx.time.data();
    S* row = feat + 2 * F + W;  // W_t·φ(t) + b
    constexpr S two_pi = S(6.283185307179586476925);
    for (Index j = 0; j < F; ++j) {
      feat[j] = std::sin(two_pi * static_cast<S>(j + 1) * s.time);
      feat[F + j] = std::cos(two_pi * static_cast<S>(j + 1) * s.time);
    }
    const Index in = first_in();
    const S* w = p + first_.weight_offset();
    for (Index o = 0; o < W; ++o) {
      S acc = p[first_.bias_offset() + o];
      for (Index k = 0; k < 2 * F; ++k) acc += w[o * in + D + Dc + k] * feat[k];
      row[o] = acc;
    }
    MatrixView<S> h0 = trunk_.act(ctx.trunk.data(), rows, 0);
    Eigen::Map<const RowMatrix<S>, 0, Eigen::OuterStride<>> w_x(w, W, D, Eigen::OuterStride<>(in));
    detail::gemm(h0, x, w_x.transpose(), false);
    if (Dc > 0) {
      Eigen::Map<const RowMatrix<S>, 0, Eigen::OuterStride<>> w_c(w + D, W, Dc, Eigen::OuterStride<>(in));
      Eigen::Map<const RowMatrix<S>, 0, Eigen::OuterStride<>> c(s.condition.data(), rows, Dc,
                                                                Eigen::OuterStride<>(s.condition.cols()));
      detail::gemm(h0, c, w_c.transpose(), true);
    }
    for (Index r = 0; r < rows; ++r)
      for (Index o = 0; o < W; ++o) h0(r, o) += row[o];
    trunk_.forward(p, ctx.trunk.data(), rows, out, keep);
  }

  Options o_;
  ParameterLayout layout_;
  Linear first_;
  detail::GeluTrunk trunk_;
};

}  // namespace rtb
