// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A convolutional denoiser for token sequences: logits [L, V] per row from tokens [L] (MASK
/// included), a noise level t and, optionally, condition tokens. The network runs over P = L + Lc
/// positions: the L state columns, then one *slot* per condition column it reads (C, a list of
/// columns of the per-row condition). With u_j = emb(x_j) for j < L and u_j = 0 at the slots,
///
///     h₀      = Conv1d_k(E → Ch)(u) + Σ_i [j = L + i − s]·W_cond·emb(cond_{C_i})   (s = condition_shift)
///     h_{b+1} = h_b + Conv1d_{k, dilation 2ᵇ}(Ch → Ch)(GELU(h_b)) + e_b(t),   b = 0 … N−1
///     out_j   = W_out·GELU(h_N)_j + b_out,   j < L                              (V logits per position)
///
/// where e(t) = (e_0, …, e_{N−1}) is one FourierTimeEmbedding with N·Ch outputs, a per-channel bias
/// per block. Dilations double, so the receptive field reaches (k−1)/2·(1 + 2^N − 1) positions to
/// either side; `num_blocks = 0` picks the smallest N that covers all P positions.
///
/// Condition i is read only through `condition.weight` [Ch, E], a pointwise projection that starts
/// at zero, injected at position L + i − shift (0: at its own slot; a shift can align a condition
/// with the columns it is about, e.g. the true ending with the generated ending, right next to the
/// span being infilled), and the slots give the convolutions room to carry it. A fresh or
/// prior-fitted net (fit it with `PriorFitConfig::frozen = {"condition."}`) ignores conditions
/// exactly, while a copy can learn to use them. Parameter names: `embedding.weight` [V+1, E],
/// `input.*`, `condition.weight`, `time.*`, `blocks.<b>.*` (Conv1d, PyTorch layout), `output.*`
/// [V, Ch] (zero when `zero_init_last`).

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/concepts/step.hpp"
#include "rtb/error.hpp"
#include "rtb/net/conv1d.hpp"
#include "rtb/net/embedding.hpp"
#include "rtb/net/entry_points.hpp"
#include "rtb/net/gelu.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/time_embedding.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// TokenConv's buffers of one forward/backward pair over up to max_rows rows (P positions each).
template <class S>
struct TokenConvContext {
  using Value = std::int32_t;
  Index max_rows = 0, rows = 0;
  const Value* tokens = nullptr;     ///< state tokens of the last forward
  const Value* condition = nullptr;  ///< its condition rows
  Index condition_stride = 0;
  AlignedVector<S> h;                 ///< pre-activations h_b, [rows·P, Ch]
  AlignedVector<S> act, deriv;        ///< GELU(h_b) and GELU'(h_b) for b = 0 … N (N+1 slabs)
  AlignedVector<S> u, d_u;            ///< input embeddings and their gradient, [rows·P, E]
  AlignedVector<S> c, d_c;            ///< condition embeddings and their gradient, [rows·Lc, E]
  AlignedVector<S> d_h, d_tmp;        ///< ∂/∂h and a branch gradient, [rows·P, Ch]
  AlignedVector<S> conv;              ///< im2col scratch of the convolutions
  AlignedVector<S> logits, d_logits;  ///< all P positions' logits, when there are slots
  AlignedVector<S> time, e, d_e;      ///< time-embedding scratch, its output and gradient (N·Ch)
  std::size_t bytes() const {
    std::size_t n = 0;
    for (const auto* v : {&h, &act, &deriv, &u, &d_u, &c, &d_c, &d_h, &d_tmp, &conv, &logits, &d_logits, &time, &e, &d_e})
      n += v->capacity() * sizeof(S);
    return n;
  }
};

template <class S = float>
class TokenConv : public detail::NetEntryPoints<TokenConv<S>, S, std::int32_t, TokenConvContext<S>> {
  friend class detail::NetEntryPoints<TokenConv<S>, S, std::int32_t, TokenConvContext<S>>;

 public:
  using Scalar = S;
  using Value = std::int32_t;
  using Context = TokenConvContext<S>;

  struct Options {
    Index length = 0;                   ///< L: columns of a state row
    Index vocab = 0;                    ///< V real tokens (MASK = V is embedded too)
    Index embed = 16;                   ///< E
    Index channels = 32;                ///< Ch
    Index kernel = 3;                   ///< k (odd)
    Index num_blocks = 0;               ///< N residual blocks; 0 = as many as cover all positions
    Index harmonics = 16;               ///< time features
    Index time_hidden = 64;             ///< hidden width of the time embedding
    std::vector<Index> condition = {};  ///< condition columns C read, one slot each after the state
    Index condition_shift = 0;          ///< condition i is injected at position L + i − shift
    std::uint64_t seed = 0;
    bool zero_init_last = true;
  };

  explicit TokenConv(Options o) : o_(std::move(o)) {
    if (o_.length <= 0 || o_.vocab < 1 || o_.embed <= 0 || o_.channels <= 0 || o_.kernel <= 0 || o_.kernel % 2 == 0 ||
        o_.num_blocks < 0 || o_.harmonics <= 0 || o_.time_hidden <= 0)
      throw InvalidArgumentError(detail::message(
          "TokenConv: length, vocab, embed, channels, harmonics and time_hidden must be positive, kernel odd and "
          "num_blocks >= 0 (got length=",
          o_.length, " vocab=", o_.vocab, " embed=", o_.embed, " channels=", o_.channels, " kernel=", o_.kernel,
          " num_blocks=", o_.num_blocks, ")"));
    const Index Lc = static_cast<Index>(o_.condition.size());
    for (Index i = 0; i < Lc; ++i) {
      const Index k = o_.condition[static_cast<std::size_t>(i)];
      if (k < 0 || std::count(o_.condition.begin(), o_.condition.end(), k) > 1)
        throw InvalidArgumentError(detail::message("TokenConv: condition column ", k, " is negative or repeated"));
      condition_dim_ = std::max(condition_dim_, k + 1);
      const Index target = o_.length + i - o_.condition_shift;
      if (target < 0 || target >= positions())
        throw InvalidArgumentError(detail::message("TokenConv: condition ", i, " (column ", k, ") shifted by ",
                                                   o_.condition_shift, " falls outside the ", positions(), " positions"));
      cond_target_.push_back(target);
    }
    for (Index j = 0; j < o_.length; ++j) state_cols_.push_back(j);
    const Index half = (o_.kernel - 1) / 2;
    if (o_.num_blocks == 0 && half == 0 && positions() > 1)
      throw InvalidArgumentError(
          "TokenConv: kernel 1 never widens the receptive field, so num_blocks = 0 (cover the "
          "row) has no answer; use kernel >= 3 or give num_blocks");
    if (o_.num_blocks == 0)  // smallest N with half·2^N ≥ P − 1 (input conv + blocks)
      while (half * (Index{1} << o_.num_blocks) < positions() - 1) ++o_.num_blocks;
    const Index E = o_.embed, C = o_.channels, N = o_.num_blocks;
    emb_ = Embedding(layout_, "embedding.", o_.vocab + 1, E);
    in_ = Conv1d(layout_, "input.", E, C, o_.kernel);
    if (Lc > 0) cond_ = layout_.add("condition.weight", {C, E});
    time_ = FourierTimeEmbedding(layout_, "time.", o_.harmonics, o_.time_hidden, std::max<Index>(N, 1) * C, 0.1, 100.0);
    for (Index b = 0; b < N; ++b)
      blocks_.emplace_back(layout_, "blocks." + std::to_string(b) + ".", C, C, o_.kernel, Index{1} << b);
    out_ = Linear(layout_, "output.", C, o_.vocab);
  }

  const Options& options() const { return o_; }
  Index input_dim() const { return o_.length; }
  Index output_dim() const { return o_.length * o_.vocab; }
  /// Condition columns this net needs (one past the largest it reads).
  Index condition_dim() const { return condition_dim_; }
  /// Positions the convolutions run over: the state columns and one slot per condition read.
  Index positions() const { return o_.length + static_cast<Index>(o_.condition.size()); }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }
  /// Positions one output sees to either side.
  Index receptive_reach() const {
    Index r = in_.reach();
    for (const Conv1d& b : blocks_) r += b.reach();
    return r;
  }
  /// Multiply-adds per row of a forward (the time path, once per call, not counted).
  Index macs_per_row() const {
    Index m = in_.macs(positions()) + static_cast<Index>(o_.condition.size()) * o_.embed * o_.channels +
              positions() * o_.channels * o_.vocab;
    for (const Conv1d& b : blocks_) m += b.macs(positions());
    return m;
  }

  /// N(0, 1) embeddings, PyTorch-default convolutions, condition.weight 0, output zero if asked.
  void initialize(std::span<S> params) const {
    RTB_ASSERT(static_cast<Index>(params.size()) == num_params());
    std::fill(params.begin(), params.end(), S(0));
    S* p = params.data();
    emb_.init(p, o_.seed, 0);
    in_.init_default(p, o_.seed, 1);
    time_.init(p, o_.seed, 10);
    for (Index b = 0; b < num_blocks(); ++b)
      blocks_[static_cast<std::size_t>(b)].init_default(p, o_.seed, 20 + static_cast<std::uint32_t>(b));
    if (o_.zero_init_last)
      out_.init_constant(p, S(0));
    else
      out_.init_default(p, o_.seed, 19);
  }

  Context make_context(Index max_rows) const {
    const Index n = max_rows * positions(), C = o_.channels, E = o_.embed, N = num_blocks();
    const Index Lc = static_cast<Index>(o_.condition.size());
    auto sized = [](Index count) { return AlignedVector<S>(static_cast<std::size_t>(count), S(0)); };
    Context c;
    c.max_rows = max_rows;
    c.h = sized(n * C);
    c.act = sized((N + 1) * n * C);
    c.deriv = sized((N + 1) * n * C);
    c.u = sized(n * E);
    c.d_u = sized(n * E);
    c.c = sized(max_rows * Lc * E);
    c.d_c = sized(max_rows * Lc * E);
    c.d_h = sized(n * C);
    c.d_tmp = sized(n * C);
    Index conv = std::max(in_.scratch_floats(max_rows, positions()), max_rows * Lc * C);
    if (N > 0) conv = std::max(conv, blocks_.front().scratch_floats(max_rows, positions()));
    c.conv = sized(conv);
    if (Lc > 0) {
      c.logits = sized(n * o_.vocab);
      c.d_logits = sized(n * o_.vocab);
    }
    c.time = sized(time_.scratch_floats());
    c.e = sized(std::max<Index>(N, 1) * C);
    c.d_e = sized(std::max<Index>(N, 1) * C);
    return c;
  }

 private:
  void accumulate_gradient(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g) const {
    const Index rows = ctx.rows, L = o_.length, P = positions(), n = rows * P, C = o_.channels, E = o_.embed;
    const Index N = num_blocks(), Lc = static_cast<Index>(o_.condition.size()), vocab = o_.vocab;
    // ∂/∂logits of all P positions: the state's, and 0 at the slots.
    const S* d_logits = d_out.data();
    if (Lc > 0) {
      for (Index r = 0; r < rows; ++r) {
        std::copy_n(row_ptr(d_out, r), L * vocab, ctx.d_logits.data() + r * P * vocab);
        std::fill_n(ctx.d_logits.data() + (r * P + L) * vocab, Lc * vocab, S(0));
      }
      d_logits = ctx.d_logits.data();
    }
    MatrixView<S> d_h(ctx.d_h.data(), n, C);
    out_.backward(p, ConstMatrixView<S>(act(ctx, N), n, C), ConstMatrixView<S>(d_logits, n, vocab), g, &d_h);
    gelu_backward_inplace(d_h.data(), deriv(ctx, N), n * C);
    std::fill_n(ctx.d_e.data(), N * C, S(0));
    for (Index b = N - 1; b >= 0; --b) {
      Linear::add_column_sums(const_view(d_h), ctx.d_e.data() + b * C);
      std::fill_n(ctx.d_tmp.data(), n * C, S(0));
      blocks_[static_cast<std::size_t>(b)].backward(p, ConstMatrixView<S>(act(ctx, b), n, C), P, const_view(d_h), g,
                                                    ctx.d_tmp.data(), ctx.conv.data());
      const S* __restrict gb = deriv(ctx, b);
      const S* __restrict dt = ctx.d_tmp.data();
      S* __restrict dh = d_h.data();
      for (Index i = 0; i < n * C; ++i) dh[i] += dt[i] * gb[i];
    }
    std::fill_n(ctx.d_u.data(), n * E, S(0));
    in_.backward(p, ConstMatrixView<S>(ctx.u.data(), n, E), P, const_view(d_h), g, ctx.d_u.data(), ctx.conv.data());
    // The slots were not read through the input embedding: only the state columns' gradient scatters.
    emb_.scatter_add(ConstMatrixView<Value>(ctx.tokens, rows, L), state_cols_,
                     ConstMatrixView<S>(ctx.d_u.data(), rows, P * E), g);
    if (Lc > 0) {
      MatrixView<S> dyc(ctx.conv.data(), rows * Lc, C);  // ∂/∂h₀ where each condition was injected
      for (Index r = 0; r < rows; ++r)
        for (Index i = 0; i < Lc; ++i)
          std::copy_n(d_h.data() + (r * P + cond_target_[static_cast<std::size_t>(i)]) * C, C, row_ptr(dyc, r * Lc + i));
      detail::gemm(MatrixView<S>(g + cond_, C, E), dyc.transpose(), ConstMatrixView<S>(ctx.c.data(), rows * Lc, E),
                   true);
      MatrixView<S> d_c(ctx.d_c.data(), rows * Lc, E);
      detail::gemm(d_c, dyc, ConstMatrixView<S>(p + cond_, C, E), false);
      emb_.scatter_add(ConstMatrixView<Value>(ctx.condition, rows, ctx.condition_stride), o_.condition,
                       ConstMatrixView<S>(ctx.d_c.data(), rows, Lc * E), g);
    }
    if (N > 0) time_.backward(p, ctx.d_e.data(), g, ctx.time.data());
  }

  Index num_blocks() const { return static_cast<Index>(blocks_.size()); }
  /// Slab b of the kept activations / derivatives (slabs are max_rows·P·Ch apart).
  S* act(Context& ctx, Index b) const { return ctx.act.data() + b * ctx.max_rows * positions() * o_.channels; }
  S* deriv(Context& ctx, Index b) const { return ctx.deriv.data() + b * ctx.max_rows * positions() * o_.channels; }

  void run(const S* p, const Step<Value, S>& s, MatrixView<S> out, Context& ctx, bool keep) const {
    const ConstMatrixView<Value>& x = s.x;
    const Index rows = x.rows(), L = o_.length, P = positions(), n = rows * P, C = o_.channels, E = o_.embed;
    const Index N = num_blocks(), Lc = static_cast<Index>(o_.condition.size()), vocab = o_.vocab;
    RTB_ASSERT(rows <= ctx.max_rows && x.cols() == L && out.cols() == output_dim());
    RTB_ASSERT(Lc == 0 || (s.condition.rows() == rows && s.condition.cols() >= condition_dim_));
    ctx.rows = rows;
    ctx.tokens = x.data();
    ctx.condition = s.condition.data();
    ctx.condition_stride = s.condition.cols();
    if (N > 0) time_.forward(p, s.time, ctx.e.data(), ctx.time.data());
    // Input embeddings: the state's tokens, zeros at the slots.
    MatrixView<S> u(ctx.u.data(), rows, P * E);
    emb_.gather(p, x, state_cols_, u);
    for (Index r = 0; r < rows; ++r) std::fill_n(ctx.u.data() + (r * P + L) * E, Lc * E, S(0));
    MatrixView<S> h(ctx.h.data(), n, C);
    in_.forward(p, ConstMatrixView<S>(ctx.u.data(), n, E), P, h, ctx.conv.data());
    if (Lc > 0) {
      emb_.gather(p, s.condition, o_.condition, MatrixView<S>(ctx.c.data(), rows, Lc * E));
      MatrixView<S> yc(ctx.conv.data(), rows * Lc, C);
      detail::gemm(yc, ConstMatrixView<S>(ctx.c.data(), rows * Lc, E), ConstMatrixView<S>(p + cond_, C, E).transpose(),
                   false);
      for (Index r = 0; r < rows; ++r)
        for (Index i = 0; i < Lc; ++i) {
          S* __restrict hr = ctx.h.data() + (r * P + cond_target_[static_cast<std::size_t>(i)]) * C;
          const S* __restrict yr = row_ptr(yc, r * Lc + i);
          for (Index ch = 0; ch < C; ++ch) hr[ch] += yr[ch];
        }
    }
    S* logits = Lc > 0 ? ctx.logits.data() : out.data();
    for (Index b = 0; b <= N; ++b) {
      S* a = keep ? act(ctx, b) : act(ctx, 0);  // inference keeps nothing: one slab serves every block
      std::copy_n(ctx.h.data(), n * C, a);
      gelu_inplace(a, keep ? deriv(ctx, b) : static_cast<S*>(nullptr), n * C);
      if (b < N)
        blocks_[static_cast<std::size_t>(b)].forward(p, ConstMatrixView<S>(a, n, C), P, h, ctx.conv.data(),
                                                     ctx.e.data() + b * C, true);
      else
        out_.forward(p, ConstMatrixView<S>(a, n, C), MatrixView<S>(logits, n, vocab));
    }
    if (Lc > 0)
      for (Index r = 0; r < rows; ++r) std::copy_n(ctx.logits.data() + r * P * vocab, L * vocab, row_ptr(out, r));
  }

  Options o_;
  ParameterLayout layout_;
  std::vector<Index> state_cols_, cond_target_;
  Index condition_dim_ = 0;
  Embedding emb_;
  Conv1d in_;
  Index cond_ = 0;
  FourierTimeEmbedding time_;
  std::vector<Conv1d> blocks_;
  Linear out_;
};

}  // namespace rtb
