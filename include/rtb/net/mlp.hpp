// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A general MLP denoiser over a D-dimensional state and a scalar time t:
///
///     φ(t) = [sin(2πjt), cos(2πjt)]_{j=1..F}               fixed time features (F may be 0)
///     h₀   = Linear(D+2F, w₀)([x, φ(t)])
///     out  = Linear(w_L, out)(GELU(…Linear(w₀,w₁)(GELU(h₀))…))
///
/// The time features are the same for every row of a call, so their share of the first layer,
/// W_t·φ(t) + b, is computed once per call and added as a row. Parameters are named
/// `layers.<i>.weight` / `layers.<i>.bias` for i = 0 (first) … L+1 (output), in PyTorch layout.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/config.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/error.hpp"
#include "rtb/net/context.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/trunk.hpp"

namespace rtb {

template <class S = float>
class Mlp {
 public:
  using Scalar = S;
  using Input = S;
  using Context = MlpContext<S>;

  struct Options {
    Index input_dim = 2;
    std::vector<Index> hidden = {64, 64};
    Index output_dim = 4;
    Index time_harmonics = 8;  ///< F; 0 gives an unconditional MLP
    std::uint64_t seed = 0;
    bool zero_init_last = true;
  };

  Mlp() : Mlp(Options{}) {}
  explicit Mlp(const Options& o) : o_(o) {
    if (o.input_dim <= 0 || o.output_dim <= 0 || o.hidden.empty() || o.time_harmonics < 0)
      throw InvalidArgumentError(detail::message("Mlp: input_dim and output_dim must be positive, hidden non-empty ",
                                                 "and time_harmonics non-negative, got input_dim=", o.input_dim,
                                                 " output_dim=", o.output_dim, " hidden layers=", o.hidden.size(),
                                                 " time_harmonics=", o.time_harmonics));
    for (Index w : o.hidden)
      if (w <= 0) throw InvalidArgumentError(detail::message("Mlp: hidden widths must be positive, got ", w));
    first_ = Linear(layout_, "layers.0.", o.input_dim + 2 * o.time_harmonics, o.hidden.front());
    std::vector<std::string> names;
    for (std::size_t l = 1; l < o.hidden.size(); ++l) names.push_back("layers." + std::to_string(l) + ".");
    trunk_ = detail::GeluTrunk(layout_, o.hidden, names, "layers." + std::to_string(o.hidden.size()) + ".",
                               o.output_dim);
    params_.assign(static_cast<std::size_t>(layout_.size()), S(0));
    S* p = params_.data();
    first_.init_default(p, o.seed, 0);
    trunk_.init(p, o.seed, 1, 1000, o.zero_init_last);
  }

  const Options& options() const { return o_; }
  Index input_dim() const { return o_.input_dim; }
  Index output_dim() const { return o_.output_dim; }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }
  std::span<S> params() { return params_; }
  std::span<const S> params() const { return params_; }

  Context make_context(Index max_rows) const {
    Context c = trunk_.make_context<S>(max_rows);
    c.time.assign(static_cast<std::size_t>(2 * o_.time_harmonics + 2 * o_.hidden.front()), S(0));
    return c;
  }

  void inference(ConstMatrixView<S> x, S t, MatrixView<S> out, Context& ctx) const { run(x, t, out, ctx, false); }
  void forward(ConstMatrixView<S> x, S t, MatrixView<S> out, Context& ctx) const { run(x, t, out, ctx, true); }

  void backward(Context& ctx, ConstMatrixView<S> d_out, std::span<S> grad, GradientMode mode) const {
    RTB_ASSERT(static_cast<Index>(grad.size()) == num_params() && d_out.rows() == ctx.rows);
    if (mode == GradientMode::Overwrite) std::fill(grad.begin(), grad.end(), S(0));
    const Index rows = ctx.rows, D = o_.input_dim, F = o_.time_harmonics, W = o_.hidden.front();
    const S* p = params_.data();
    S* g = grad.data();
    MatrixView<S> d_h0(ctx.d_h0.data(), rows, W);
    trunk_.backward(p, ctx.trunk.data(), rows, d_out, g, ctx.scratch.data(), d_h0);
    // First layer over [x, φ(t)]: the x block by GEMM, the φ block as an outer product.
    const Index in = D + 2 * F;
    Eigen::Map<RowMatrix<S>, 0, Eigen::OuterStride<>> dw_x(g + first_.weight_offset(), W, D, Eigen::OuterStride<>(in));
    detail::gemm(dw_x, d_h0.transpose(), ConstMatrixView<S>(ctx.x, rows, D), true);
    S* col = ctx.time.data() + 2 * F;  // W floats: Σ_rows ∂/∂h₀
    std::fill(col, col + W, S(0));
    Linear::add_column_sums(ConstMatrixView<S>(d_h0.data(), rows, W), col);
    const S* feat = ctx.time.data();
    for (Index o = 0; o < W; ++o) {
      g[first_.bias_offset() + o] += col[o];
      for (Index k = 0; k < 2 * F; ++k) g[first_.weight_offset() + o * in + D + k] += col[o] * feat[k];
    }
  }

 private:
  void run(ConstMatrixView<S> x, S t, MatrixView<S> out, Context& ctx, bool keep) const {
    const Index rows = x.rows(), D = o_.input_dim, F = o_.time_harmonics, W = o_.hidden.front();
    RTB_ASSERT(rows <= ctx.max_rows && x.cols() == D && out.cols() == o_.output_dim && out.rows() == rows);
    const S* p = params_.data();
    ctx.rows = rows;
    ctx.x = x.data();
    ctx.t = t;
    S* feat = ctx.time.data();
    S* row = feat + 2 * F + W;  // W_t·φ(t) + b
    constexpr S two_pi = S(6.283185307179586476925);
    for (Index j = 0; j < F; ++j) {
      feat[j] = std::sin(two_pi * static_cast<S>(j + 1) * t);
      feat[F + j] = std::cos(two_pi * static_cast<S>(j + 1) * t);
    }
    const Index in = D + 2 * F;
    const S* w = p + first_.weight_offset();
    for (Index o = 0; o < W; ++o) {
      S acc = p[first_.bias_offset() + o];
      for (Index k = 0; k < 2 * F; ++k) acc += w[o * in + D + k] * feat[k];
      row[o] = acc;
    }
    MatrixView<S> h0 = trunk_.act(ctx.trunk.data(), rows, 0);
    Eigen::Map<const RowMatrix<S>, 0, Eigen::OuterStride<>> w_x(w, W, D, Eigen::OuterStride<>(in));
    detail::gemm(h0, x, w_x.transpose(), false);
    for (Index r = 0; r < rows; ++r)
      for (Index o = 0; o < W; ++o) h0(r, o) += row[o];
    trunk_.forward(p, ctx.trunk.data(), rows, out, keep);
  }

  Options o_;
  ParameterLayout layout_;
  std::vector<S> params_;
  Linear first_;
  detail::GeluTrunk trunk_;
};

}  // namespace rtb
