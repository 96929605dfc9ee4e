// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The reference 2-D denoiser (the "PIS" architecture of the RTB paper's toy experiment).
///
///     θ_k  = t·f_k + φ_k,  f = linspace(0.1, 100, F) fixed, φ learned        (F = 64)
///     e    = Linear(H,H)(GELU(Linear(2F,H)([sin θ, cos θ])))                 time embedding
///     h₀   = Linear(D,H)(x) + e
///     out  = Linear(H,2D)(GELU(Linear(H,H)(…GELU(Linear(H,H)(GELU(h₀)))…)))  num_layers hidden
///
/// with exact-erf GELU and the last layer zero-initialised, so a fresh net outputs 0 (zero
/// drift). The time embedding is computed once per call (one t for the whole batch), not per
/// row. Parameter names are those of the reference's PyTorch `state_dict`:
///
/// | name                              | shape     |
/// |-----------------------------------|-----------|
/// | t_model.timestep_phase            | [1, F]    |
/// | t_model.t_model.0.weight / .bias  | [H, 2F] / [H] |
/// | t_model.t_model.2.weight / .bias  | [H, H] / [H]  |
/// | s_model.x_model.weight / .bias    | [H, D] / [H]  |
/// | joint_model.model.{1..L}.0.weight / .bias | [H, H] / [H] |
/// | joint_model.model.{L+1}.weight / .bias    | [2D, H] / [2D] |

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/config.hpp"
#include "rtb/error.hpp"
#include "rtb/math/philox.hpp"
#include "rtb/net/context.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/time_embedding.hpp"
#include "rtb/net/trunk.hpp"

namespace rtb {

template <class S = float>
class PisMlp {
 public:
  using Scalar = S;
  using Input = S;
  using Context = MlpContext<S>;

  struct Options {
    Index dim = 2;          ///< D: state coordinates
    Index hidden = 64;      ///< H: width of every hidden layer and of both embeddings
    Index harmonics = 64;   ///< F: Fourier frequencies of the time embedding
    Index num_layers = 2;   ///< hidden Linear+GELU layers after the joint GELU
    std::uint64_t seed = 0; ///< initialisation seed
    bool zero_init_last = true;
  };

  PisMlp() : PisMlp(Options{}) {}
  explicit PisMlp(const Options& o) : o_(o) {
    if (o.dim <= 0 || o.hidden <= 0 || o.harmonics <= 0 || o.num_layers < 0)
      throw InvalidArgumentError(detail::message("PisMlp: dim, hidden and harmonics must be positive and num_layers ",
                                                 "non-negative, got dim=", o.dim, " hidden=", o.hidden,
                                                 " harmonics=", o.harmonics, " num_layers=", o.num_layers));
    time_ = FourierTimeEmbedding(layout_, "t_model.", o.harmonics, o.hidden, o.hidden);
    s_ = Linear(layout_, "s_model.x_model.", o.dim, o.hidden);
    std::vector<Index> widths(static_cast<std::size_t>(o.num_layers + 1), o.hidden);
    std::vector<std::string> names;
    for (Index l = 1; l <= o.num_layers; ++l) names.push_back("joint_model.model." + std::to_string(l) + ".0.");
    trunk_ = detail::GeluTrunk(layout_, widths, names, "joint_model.model." + std::to_string(o.num_layers + 1) + ".",
                               2 * o.dim);
    params_.assign(static_cast<std::size_t>(layout_.size()), S(0));
    S* p = params_.data();
    time_.init(p, o.seed, 0);
    s_.init_default(p, o.seed, 3);
    trunk_.init(p, o.seed, 10, 9, o.zero_init_last);
  }

  const Options& options() const { return o_; }
  Index input_dim() const { return o_.dim; }
  Index output_dim() const { return 2 * o_.dim; }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }
  std::span<S> params() { return params_; }
  std::span<const S> params() const { return params_; }

  Context make_context(Index max_rows) const {
    Context c = trunk_.make_context<S>(max_rows);
    c.time.assign(static_cast<std::size_t>(time_.scratch_floats() + 2 * o_.hidden), S(0));  // + e, ∂/∂e
    return c;
  }

  /// Inference: out = net(x, t); keeps nothing for backward.
  void inference(ConstMatrixView<S> x, S t, MatrixView<S> out, Context& ctx) const { run(x, t, out, ctx, false); }

  /// Training forward: out = net(x, t), keeping what backward needs in ctx (x must outlive it).
  void forward(ConstMatrixView<S> x, S t, MatrixView<S> out, Context& ctx) const { run(x, t, out, ctx, true); }

  /// grad (+)= ∂(Σ d_out ⊙ out)/∂params for the last forward of ctx.
  void backward(Context& ctx, ConstMatrixView<S> d_out, std::span<S> grad, GradientMode mode) const {
    RTB_ASSERT(static_cast<Index>(grad.size()) == num_params() && d_out.rows() == ctx.rows);
    if (mode == GradientMode::Overwrite) std::fill(grad.begin(), grad.end(), S(0));
    const Index rows = ctx.rows, H = o_.hidden;
    const S* p = params_.data();
    S* g = grad.data();
    MatrixView<S> d_h0(ctx.d_h0.data(), rows, H);
    trunk_.backward(p, ctx.trunk.data(), rows, d_out, g, ctx.scratch.data(), d_h0);
    // State embedding: no input gradient (states carry none).
    s_.backward(p, ConstMatrixView<S>(ctx.x, rows, o_.dim), ConstMatrixView<S>(d_h0.data(), rows, H), g, nullptr);
    // Time path, once: ∂/∂e = Σ_rows ∂/∂h₀.
    S* d_e = ctx.time.data() + time_.scratch_floats() + H;
    std::fill(d_e, d_e + H, S(0));
    Linear::add_column_sums(ConstMatrixView<S>(d_h0.data(), rows, H), d_e);
    time_.backward(p, d_e, g, ctx.time.data());
  }

 private:
  void run(ConstMatrixView<S> x, S t, MatrixView<S> out, Context& ctx, bool keep) const {
    const Index rows = x.rows();
    RTB_ASSERT(rows <= ctx.max_rows && x.cols() == o_.dim && out.cols() == 2 * o_.dim && out.rows() == rows);
    const S* p = params_.data();
    ctx.rows = rows;
    ctx.x = x.data();
    ctx.t = t;
    S* e = ctx.time.data() + time_.scratch_floats();
    time_.forward(p, t, e, ctx.time.data());
    s_.forward(p, x, trunk_.act(ctx.trunk.data(), rows, 0), e);
    trunk_.forward(p, ctx.trunk.data(), rows, out, keep);
  }

  Options o_;
  ParameterLayout layout_;
  std::vector<S> params_;
  FourierTimeEmbedding time_;
  Linear s_;
  detail::GeluTrunk trunk_;
};

}  // namespace rtb
