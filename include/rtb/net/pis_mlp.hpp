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
/// | t_model.pe (buffer: frequencies)  | [1, F]    |
/// | t_model.t_model.0.weight / .bias  | [H, 2F] / [H] |
/// | t_model.t_model.2.weight / .bias  | [H, H] / [H]  |
/// | s_model.x_model.weight / .bias    | [H, D] / [H]  |
/// | joint_model.model.{1..L}.0.weight / .bias | [H, H] / [H] |
/// | joint_model.model.{L+1}.weight / .bias    | [2D, H] / [2D] (or [D, H] / [D] without the log-variance head) |
///
/// The output row is [μ, log σ²] (the reference's learned-variance head, whose second half
/// GaussianHead::MeanAndLogVariance ignores), or [μ] alone with `log_variance_head = false`.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/concepts/step.hpp"
#include "rtb/error.hpp"
#include "rtb/space.hpp"
#include "rtb/net/context.hpp"
#include "rtb/net/entry_points.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/time_embedding.hpp"
#include "rtb/net/trunk.hpp"

namespace rtb {

template <class S = float>
class PisMlp : public detail::NetEntryPoints<PisMlp<S>, S, S, MlpContext<S>> {
  friend class detail::NetEntryPoints<PisMlp<S>, S, S, MlpContext<S>>;

 public:
  using Scalar = S;
  using Value = S;
  using Context = MlpContext<S>;

  struct Options {
    Index dim = 2;          ///< D: state coordinates
    Index hidden = 64;      ///< H: width of every hidden layer and of both embeddings
    Index harmonics = 64;   ///< F: Fourier frequencies of the time embedding
    Index num_layers = 2;   ///< hidden Linear+GELU layers after the joint GELU
    std::uint64_t seed = 0; ///< initialisation seed
    bool zero_init_last = true;
    bool log_variance_head = true;  ///< output [μ, log σ²] (2·D, the reference's) or [μ] (D)
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
                               output_dim());
  }

  const Options& options() const { return o_; }
  Index input_dim() const { return o_.dim; }
  Index output_dim() const { return o_.log_variance_head ? 2 * o_.dim : o_.dim; }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }

  /// The reference's initialisation: PyTorch-default layers, φ ~ N(0, 1), last layer zero.
  void initialize(std::span<S> params) const {
    RTB_ASSERT(static_cast<Index>(params.size()) == num_params());
    S* p = params.data();
    time_.init(p, o_.seed, 0);
    s_.init_default(p, o_.seed, 3);
    trunk_.init(p, o_.seed, 10, 9, o_.zero_init_last);
  }

  Context make_context(Index max_rows) const {
    Context c = trunk_.make_context<S>(max_rows);
    c.time.assign(static_cast<std::size_t>(time_.scratch_floats() + 2 * o_.hidden), S(0));  // + e, ∂/∂e
    return c;
  }


 private:
  void accumulate_gradient(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g) const {
    RTB_ASSERT(d_out.rows() == ctx.rows);
    const Index rows = ctx.rows, H = o_.hidden;
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

  void run(const S* p, const Step<S>& s, MatrixView<S> out, Context& ctx, bool keep) const {
    const Index rows = s.x.rows();
    RTB_ASSERT(rows <= ctx.max_rows && s.x.cols() == o_.dim && out.cols() == output_dim() && out.rows() == rows);
    ctx.rows = rows;
    ctx.x = s.x.data();
    S* e = ctx.time.data() + time_.scratch_floats();
    time_.forward(p, s.time, e, ctx.time.data());
    s_.forward(p, s.x, trunk_.act(ctx.trunk.data(), rows, 0), e);
    trunk_.forward(p, ctx.trunk.data(), rows, out, keep);
  }

  Options o_;
  ParameterLayout layout_;
  FourierTimeEmbedding time_;
  Linear s_;
  detail::GeluTrunk trunk_;
};

}  // namespace rtb
