// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A denoiser for token sequences: logits [L, V] per row from tokens [L] (MASK included) and a
/// noise level t.
///
///     u    = [emb(x_j) for every column j],  c = [emb(cond_k) for k ∈ C]   (E-dim embeddings)
///     h₀   = Linear(in)(u) + Linear(cond, no bias)(c) + time(t)       (H)
///     out  = Linear(H, L·V)(GELU(…Linear(H, H)(GELU(h₀))…))
///
/// An MLP over the whole (embedded) sequence, so every logit sees every position. C is an
/// optional list of columns of the per-row *condition* (e.g. the ending the posterior must
/// respect), read through their own zero-initialised projection `condition.weight`: a freshly
/// built or prior-fitted net (fit it with `PriorFitConfig::frozen = {"condition."}`) ignores them
/// exactly, so the prior does not see the condition while its copy, the posterior, can learn to.
/// Parameter names:
/// `embedding.weight` [V+1, E], `input.*`, `condition.weight`, `time.*` (FourierTimeEmbedding),
/// `layers.<l>.*`, `output.*`.

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/concepts/step.hpp"
#include "rtb/space.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/error.hpp"
#include "rtb/net/context.hpp"
#include "rtb/net/embedding.hpp"
#include "rtb/net/entry_points.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/time_embedding.hpp"
#include "rtb/net/trunk.hpp"

namespace rtb {

template <class S = float>
class TokenMlp : public detail::NetEntryPoints<TokenMlp<S>, S, std::int32_t, MlpContext<S>> {
  friend class detail::NetEntryPoints<TokenMlp<S>, S, std::int32_t, MlpContext<S>>;

 public:
  using Scalar = S;
  using Value = std::int32_t;
  using Context = MlpContext<S>;

  struct Options {
    Index length = 0;                     ///< L: columns of a state row
    Index vocab = 0;                      ///< V real tokens (MASK = V is embedded too)
    Index embed = 16;                     ///< E
    Index hidden = 256;                   ///< H
    Index num_layers = 1;                 ///< hidden Linear+GELU layers after h₀
    Index harmonics = 16;                 ///< time features
    std::vector<Index> condition = {};    ///< condition columns C read (through the zero-initialised path)
    std::uint64_t seed = 0;
    bool zero_init_last = true;
  };

  explicit TokenMlp(Options o) : o_(std::move(o)) {
    if (o_.length <= 0 || o_.vocab < 1 || o_.embed <= 0 || o_.hidden <= 0 || o_.num_layers < 0 || o_.harmonics <= 0)
      throw InvalidArgumentError(detail::message("TokenMlp: length, vocab, embed, hidden and harmonics must be positive ",
                                                 "(got length=", o_.length, " vocab=", o_.vocab, " embed=", o_.embed,
                                                 " hidden=", o_.hidden, " harmonics=", o_.harmonics, ")"));
    for (std::size_t i = 0; i < o_.condition.size(); ++i) {
      const Index k = o_.condition[i];
      if (k < 0 || std::count(o_.condition.begin(), o_.condition.end(), k) > 1)
        throw InvalidArgumentError(detail::message("TokenMlp: condition column ", k, " is negative or repeated"));
      condition_dim_ = std::max(condition_dim_, k + 1);
    }
    for (Index j = 0; j < o_.length; ++j) main_cols_.push_back(j);
    const Index E = o_.embed, H = o_.hidden, Lc = static_cast<Index>(o_.condition.size());
    emb_ = Embedding(layout_, "embedding.", o_.vocab + 1, E);
    in_ = Linear(layout_, "input.", o_.length * E, H);
    if (Lc > 0) cond_ = layout_.add("condition.weight", {H, Lc * E});
    time_ = FourierTimeEmbedding(layout_, "time.", o_.harmonics, H, H, 0.1, 100.0);
    std::vector<std::string> names;
    for (Index l = 1; l <= o_.num_layers; ++l) names.push_back("layers." + std::to_string(l) + ".");
    trunk_ = detail::GeluTrunk(layout_, std::vector<Index>(static_cast<std::size_t>(o_.num_layers + 1), H), names,
                               "output.", o_.length * o_.vocab);
  }

  const Options& options() const { return o_; }
  Index input_dim() const { return o_.length; }
  Index output_dim() const { return o_.length * o_.vocab; }
  /// Condition columns this net needs (one past the largest it reads).
  Index condition_dim() const { return condition_dim_; }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }

  /// N(0, 1) embeddings, PyTorch-default layers, condition.weight 0, last layer zero if asked.
  void initialize(std::span<S> params) const {
    RTB_ASSERT(static_cast<Index>(params.size()) == num_params());
    std::fill(params.begin(), params.end(), S(0));
    S* p = params.data();
    emb_.init(p, o_.seed, 0);
    in_.init_default(p, o_.seed, 1);
    time_.init(p, o_.seed, 10);
    trunk_.init(p, o_.seed, 20, 19, o_.zero_init_last);
  }

  Context make_context(Index max_rows) const {
    Context c = trunk_.make_context<S>(max_rows);
    // embedded inputs (main, condition) and their gradient, then the time path
    c.time.assign(static_cast<std::size_t>(2 * embed_area(max_rows) + time_.scratch_floats() + 2 * o_.hidden), S(0));
    return c;
  }


 private:
  void accumulate_gradient(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g) const {
    const Index rows = ctx.rows, H = o_.hidden, E = o_.embed, L = o_.length;
    const Index Lc = static_cast<Index>(o_.condition.size());
    const ConstMatrixView<Value> x(ctx.tokens, rows, L);
    MatrixView<S> d_h0(ctx.d_h0.data(), rows, H);
    trunk_.backward(p, ctx.trunk.data(), rows, d_out, g, ctx.scratch.data(), d_h0);
    const ConstMatrixView<S> dh(d_h0.data(), rows, H);
    S* u = ctx.time.data();
    S* cvec = u + rows * L * E;
    S* d_emb = ctx.time.data() + embed_area(ctx.max_rows);  // second half of the embedding area
    MatrixView<S> d_u(d_emb, rows, L * E);
    in_.backward(p, ConstMatrixView<S>(u, rows, L * E), dh, g, &d_u);
    emb_.scatter_add(x, main_cols_, const_view(d_u), g);
    if (Lc > 0) {
      MatrixView<S> dw(g + cond_, H, Lc * E);
      detail::gemm(dw, dh.transpose(), ConstMatrixView<S>(cvec, rows, Lc * E), true);
      MatrixView<S> d_c(d_emb, rows, Lc * E);
      detail::gemm(d_c, dh, ConstMatrixView<S>(p + cond_, H, Lc * E), false);
      emb_.scatter_add(ConstMatrixView<Value>(ctx.condition, rows, ctx.condition_stride), o_.condition,
                       const_view(d_c), g);
    }
    S* tscratch = ctx.time.data() + 2 * embed_area(ctx.max_rows);
    S* d_e = tscratch + time_.scratch_floats() + H;
    std::fill(d_e, d_e + H, S(0));
    Linear::add_column_sums(dh, d_e);
    time_.backward(p, d_e, g, tscratch);
  }

  Index embed_area(Index rows) const {
    return rows * (o_.length + static_cast<Index>(o_.condition.size())) * o_.embed;
  }

  void run(const S* p, const Step<Value, S>& s, MatrixView<S> out, Context& ctx, bool keep) const {
    const ConstMatrixView<Value>& x = s.x;
    const Index rows = x.rows(), H = o_.hidden, E = o_.embed, L = o_.length;
    const Index Lc = static_cast<Index>(o_.condition.size());
    RTB_ASSERT(rows <= ctx.max_rows && x.cols() == L && out.cols() == output_dim());
    RTB_ASSERT(Lc == 0 || (s.condition.rows() == rows && s.condition.cols() >= condition_dim_));
    ctx.rows = rows;
    ctx.tokens = x.data();
    ctx.condition = s.condition.data();
    ctx.condition_stride = s.condition.cols();
    S* u = ctx.time.data();
    S* cvec = u + rows * L * E;
    S* tscratch = ctx.time.data() + 2 * embed_area(ctx.max_rows);
    S* e = tscratch + time_.scratch_floats();
    time_.forward(p, s.time, e, tscratch);
    emb_.gather(p, x, main_cols_, MatrixView<S>(u, rows, L * E));
    MatrixView<S> h0 = trunk_.act(ctx.trunk.data(), rows, 0);
    in_.forward(p, ConstMatrixView<S>(u, rows, L * E), h0, e);
    if (Lc > 0) {
      emb_.gather(p, s.condition, o_.condition, MatrixView<S>(cvec, rows, Lc * E));
      detail::gemm(h0, ConstMatrixView<S>(cvec, rows, Lc * E), ConstMatrixView<S>(p + cond_, H, Lc * E).transpose(), true);
    }
    trunk_.forward(p, ctx.trunk.data(), rows, out, keep);
  }

  Options o_;
  ParameterLayout layout_;
  std::vector<Index> main_cols_;
  Index condition_dim_ = 0;
  Embedding emb_;
  Linear in_;
  Index cond_ = 0;
  FourierTimeEmbedding time_;
  detail::GeluTrunk trunk_;
};

}  // namespace rtb
