// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A convolutional denoiser for token sequences: logits [L, V] per row from tokens [L] (MASK
/// included) and a noise level t. With u_j = emb(x_j) for j ∉ C and 0 for j ∈ C (E channels),
///
///     h₀      = Conv1d_k(E → Ch)(u) + [j + s ∈ C]·W_cond·emb(x_{j+s})       (Ch channels, s = shift)
///     h_{b+1} = h_b + Conv1d_{k, dilation 2ᵇ}(Ch → Ch)(GELU(h_b)) + e_b(t),   b = 0 … N−1
///     out_j   = W_out·GELU(h_N)_j + b_out                                      (V logits per position)
///
/// where e(t) = (e_0, …, e_{N−1}) is one FourierTimeEmbedding with N·Ch outputs, a per-channel bias
/// per block. Dilations double, so the receptive field reaches (k−1)/2·(1 + 2^N − 1) positions to
/// either side; `num_blocks = 0` picks the smallest N that covers the whole row.
///
/// C is an optional set of *condition* columns read only through `condition.weight` [Ch, E], a
/// pointwise projection that starts at zero, added at position j − `condition_shift` (0: at the
/// column itself; a shift can align a condition with the columns it is about, e.g. the true ending
/// with the generated ending, right next to the span being infilled): a fresh or prior-fitted net (fit it with
/// `PriorFitConfig::frozen = {"condition."}`) ignores them exactly, while a copy can learn to use
/// them. Parameter names: `embedding.weight` [V+1, E], `input.*`, `condition.weight`, `time.*`,
/// `blocks.<b>.*` (Conv1d, PyTorch layout), `output.*` [V, Ch] (zero when `zero_init_last`).

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/config.hpp"
#include "rtb/error.hpp"
#include "rtb/net/context.hpp"
#include "rtb/net/conv1d.hpp"
#include "rtb/net/embedding.hpp"
#include "rtb/net/gelu.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/time_embedding.hpp"

namespace rtb {

template <class S = float>
class TokenConv {
 public:
  using Scalar = S;
  using Input = std::int32_t;
  using Context = MlpContext<S>;

  struct Options {
    Index length = 0;                   ///< L: columns of a state row
    Index vocab = 0;                    ///< V real tokens (MASK = V is embedded too)
    Index embed = 16;                   ///< E
    Index channels = 32;                ///< Ch
    Index kernel = 3;                   ///< k (odd)
    Index num_blocks = 0;               ///< N residual blocks; 0 = as many as cover the row
    Index harmonics = 16;               ///< time features
    Index time_hidden = 64;             ///< hidden width of the time embedding
    std::vector<Index> condition = {};  ///< condition columns C (read through the zero-initialised path)
    Index condition_shift = 0;          ///< condition column j is injected at position j − shift
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
    std::vector<char> is_cond(static_cast<std::size_t>(o_.length), 0);
    for (Index j : o_.condition) {
      if (j < 0 || j >= o_.length || is_cond[static_cast<std::size_t>(j)])
        throw InvalidArgumentError(detail::message("TokenConv: condition column ", j, " is out of range or repeated"));
      is_cond[static_cast<std::size_t>(j)] = 1;
      cond_cols_.push_back(j);
      if (j - o_.condition_shift < 0 || j - o_.condition_shift >= o_.length)
        throw InvalidArgumentError(detail::message("TokenConv: condition column ", j, " shifted by ",
                                                   o_.condition_shift, " falls outside the row"));
      cond_target_.push_back(j - o_.condition_shift);
    }
    for (Index j = 0; j < o_.length; ++j) all_cols_.push_back(j);
    const Index half = (o_.kernel - 1) / 2;
    if (o_.num_blocks == 0 && half == 0 && o_.length > 1)
      throw InvalidArgumentError(
          "TokenConv: kernel 1 never widens the receptive field, so num_blocks = 0 (cover the "
          "row) has no answer; use kernel >= 3 or give num_blocks");
    if (o_.num_blocks == 0)  // smallest N with half·2^N ≥ L − 1 (input conv + blocks)
      while (half * (Index{1} << o_.num_blocks) < o_.length - 1) ++o_.num_blocks;
    const Index E = o_.embed, C = o_.channels, N = o_.num_blocks;
    emb_ = Embedding(layout_, "embedding.", o_.vocab + 1, E);
    in_ = Conv1d(layout_, "input.", E, C, o_.kernel);
    if (!cond_cols_.empty()) cond_ = layout_.add("condition.weight", {C, E});
    time_ = FourierTimeEmbedding(layout_, "time.", o_.harmonics, o_.time_hidden, std::max<Index>(N, 1) * C, 0.1, 100.0);
    for (Index b = 0; b < N; ++b)
      blocks_.emplace_back(layout_, "blocks." + std::to_string(b) + ".", C, C, o_.kernel, Index{1} << b);
    out_ = Linear(layout_, "output.", C, o_.vocab);
    params_.assign(static_cast<std::size_t>(layout_.size()), S(0));  // condition.weight stays 0
    S* p = params_.data();
    emb_.init(p, o_.seed, 0);
    in_.init_default(p, o_.seed, 1);
    time_.init(p, o_.seed, 10);
    for (Index b = 0; b < N; ++b)
      blocks_[static_cast<std::size_t>(b)].init_default(p, o_.seed, 20 + static_cast<std::uint32_t>(b));
    if (o_.zero_init_last)
      out_.init_constant(p, S(0));
    else
      out_.init_default(p, o_.seed, 19);
  }

  const Options& options() const { return o_; }
  Index input_dim() const { return o_.length; }
  Index output_dim() const { return o_.length * o_.vocab; }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }
  std::span<S> params() { return params_; }
  std::span<const S> params() const { return params_; }
  /// Positions one output sees to either side.
  Index receptive_reach() const {
    Index r = in_.reach();
    for (const Conv1d& b : blocks_) r += b.reach();
    return r;
  }
  /// Multiply-adds per row of a forward (the time path, once per call, not counted).
  Index macs_per_row() const {
    Index m = in_.macs(o_.length) + static_cast<Index>(cond_cols_.size()) * o_.embed * o_.channels +
              o_.length * o_.channels * o_.vocab;
    for (const Conv1d& b : blocks_) m += b.macs(o_.length);
    return m;
  }

  Context make_context(Index max_rows) const {
    const Index n = max_rows * o_.length, C = o_.channels, E = o_.embed, N = num_blocks();
    const Index Lc = static_cast<Index>(cond_cols_.size());
    Context c;
    c.max_rows = max_rows;
    c.trunk.assign(static_cast<std::size_t>((2 * N + 3) * n * C), S(0));  // a_b, GELU'(h_b) for b ≤ N; h
    Index conv = std::max(in_.scratch_floats(max_rows, o_.length), max_rows * Lc * C);
    if (N > 0) conv = std::max(conv, blocks_.front().scratch_floats(max_rows, o_.length));
    c.scratch.assign(static_cast<std::size_t>(conv + n * C), S(0));  // conv scratch, then a gradient buffer
    c.d_h0.assign(static_cast<std::size_t>(n * C), S(0));
    c.time.assign(static_cast<std::size_t>(2 * (n * E + max_rows * Lc * E) + time_.scratch_floats() + 2 * N * C + C),
                  S(0));
    return c;
  }

  void inference(ConstMatrixView<Input> x, S t, MatrixView<S> out, Context& ctx) const { run(x, t, out, ctx, false); }
  void forward(ConstMatrixView<Input> x, S t, MatrixView<S> out, Context& ctx) const { run(x, t, out, ctx, true); }

  void backward(Context& ctx, ConstMatrixView<S> d_out, std::span<S> grad, GradientMode mode) const {
    if (mode == GradientMode::Overwrite) std::fill(grad.begin(), grad.end(), S(0));
    const Buffers B = buffers(ctx);
    const Index n = ctx.rows * o_.length, C = o_.channels, E = o_.embed, N = num_blocks();
    const Index Lc = static_cast<Index>(cond_cols_.size());
    const S* p = params_.data();
    S* g = grad.data();
    const ConstMatrixView<Input> x(ctx.tokens, ctx.rows, o_.length);
    MatrixView<S> d_h(ctx.d_h0.data(), n, C);
    out_.backward(p, ConstMatrixView<S>(B.act(N), n, C), ConstMatrixView<S>(d_out.data(), n, o_.vocab), g, &d_h);
    gelu_backward_inplace(d_h.data(), B.deriv(N), n * C);
    std::fill_n(B.d_e, N * C, S(0));
    for (Index b = N - 1; b >= 0; --b) {
      Linear::add_column_sums(const_view(d_h), B.d_e + b * C);
      std::fill_n(B.d_tmp, n * C, S(0));
      blocks_[static_cast<std::size_t>(b)].backward(p, ConstMatrixView<S>(B.act(b), n, C), o_.length, const_view(d_h),
                                                    g, B.d_tmp, B.conv);
      const S* __restrict gb = B.deriv(b);
      for (Index i = 0; i < n * C; ++i) d_h.data()[i] += B.d_tmp[i] * gb[i];
    }
    std::fill_n(B.d_u, n * E, S(0));
    in_.backward(p, ConstMatrixView<S>(B.u, n, E), o_.length, const_view(d_h), g, B.d_u, B.conv);
    for (Index r = 0; r < ctx.rows; ++r)  // condition columns were not read through the input conv
      for (Index j : cond_cols_) std::fill_n(B.d_u + (r * o_.length + j) * E, E, S(0));
    emb_.scatter_add(x, all_cols_, ConstMatrixView<S>(B.d_u, ctx.rows, o_.length * E), g);
    if (Lc > 0) {
      MatrixView<S> dyc(B.conv, ctx.rows * Lc, C);  // ∂/∂h₀ at the condition positions
      for (Index r = 0; r < ctx.rows; ++r)
        for (Index i = 0; i < Lc; ++i)
          std::copy_n(d_h.data() + (r * o_.length + cond_target_[static_cast<std::size_t>(i)]) * C, C,
                      row_ptr(dyc, r * Lc + i));
      const ConstMatrixView<S> cvec(B.c, ctx.rows * Lc, E);
      detail::gemm(MatrixView<S>(g + cond_, C, E), dyc.transpose(), cvec, true);
      MatrixView<S> d_c(B.d_c, ctx.rows * Lc, E);
      detail::gemm(d_c, dyc, ConstMatrixView<S>(p + cond_, C, E), false);
      emb_.scatter_add(x, cond_cols_, ConstMatrixView<S>(B.d_c, ctx.rows, Lc * E), g);
    }
    if (N > 0) time_.backward(p, B.d_e, g, B.tscratch);
  }

 private:
  Index num_blocks() const { return static_cast<Index>(blocks_.size()); }

  /// Views into a context (offsets by max_rows, so they do not move with the batch size).
  struct Buffers {
    S* acts;  // N+1 activations a_b = GELU(h_b), then N+1 derivatives, then h
    Index stride;
    Index blocks;
    S* h;
    S* conv;
    S* d_tmp;
    S *u, *c, *d_u, *d_c, *tscratch, *e, *d_e;
    S* act(Index b) const { return acts + b * stride; }
    S* deriv(Index b) const { return acts + (blocks + 1 + b) * stride; }
  };
  Buffers buffers(Context& ctx) const {
    const Index m = ctx.max_rows, n = m * o_.length, C = o_.channels, E = o_.embed, N = num_blocks();
    const Index Lc = static_cast<Index>(cond_cols_.size());
    Buffers B{};
    B.acts = ctx.trunk.data();
    B.stride = n * C;
    B.blocks = N;
    B.h = ctx.trunk.data() + (2 * N + 2) * n * C;
    B.conv = ctx.scratch.data();
    B.d_tmp = ctx.scratch.data() + (static_cast<Index>(ctx.scratch.size()) - n * C);
    B.u = ctx.time.data();
    B.c = B.u + n * E;
    B.d_u = B.c + m * Lc * E;
    B.d_c = B.d_u + n * E;
    B.tscratch = B.d_c + m * Lc * E;
    B.e = B.tscratch + time_.scratch_floats();
    B.d_e = B.e + std::max<Index>(N, 1) * C;
    return B;
  }

  void run(ConstMatrixView<Input> x, S t, MatrixView<S> out, Context& ctx, bool keep) const {
    const Index rows = x.rows(), n = rows * o_.length, C = o_.channels, E = o_.embed, N = num_blocks();
    const Index Lc = static_cast<Index>(cond_cols_.size());
    RTB_ASSERT(rows <= ctx.max_rows && x.cols() == o_.length && out.cols() == output_dim());
    const S* p = params_.data();
    ctx.rows = rows;
    ctx.tokens = x.data();
    ctx.t = t;
    const Buffers B = buffers(ctx);
    if (N > 0) time_.forward(p, t, B.e, B.tscratch);
    emb_.gather(p, x, all_cols_, MatrixView<S>(B.u, rows, o_.length * E));
    for (Index r = 0; r < rows; ++r)
      for (Index j : cond_cols_) std::fill_n(B.u + (r * o_.length + j) * E, E, S(0));
    MatrixView<S> h(B.h, n, C);
    in_.forward(p, ConstMatrixView<S>(B.u, n, E), o_.length, h, B.conv);
    if (Lc > 0) {
      emb_.gather(p, x, cond_cols_, MatrixView<S>(B.c, rows, Lc * E));
      MatrixView<S> yc(B.conv, rows * Lc, C);
      detail::gemm(yc, ConstMatrixView<S>(B.c, rows * Lc, E), ConstMatrixView<S>(p + cond_, C, E).transpose(), false);
      for (Index r = 0; r < rows; ++r)
        for (Index i = 0; i < Lc; ++i) {
          S* __restrict hr = B.h + (r * o_.length + cond_target_[static_cast<std::size_t>(i)]) * C;
          const S* __restrict yr = row_ptr(yc, r * Lc + i);
          for (Index ch = 0; ch < C; ++ch) hr[ch] += yr[ch];
        }
    }
    for (Index b = 0; b <= N; ++b) {
      S* a = B.act(keep ? b : 0);
      std::copy_n(B.h, n * C, a);
      gelu_inplace(a, keep ? B.deriv(b) : static_cast<S*>(nullptr), n * C);
      if (b < N)
        blocks_[static_cast<std::size_t>(b)].forward(p, ConstMatrixView<S>(a, n, C), o_.length, h, B.conv, B.e + b * C,
                                                     true);
      else
        out_.forward(p, ConstMatrixView<S>(a, n, C), MatrixView<S>(out.data(), n, o_.vocab));
    }
  }

  Options o_;
  ParameterLayout layout_;
  std::vector<S> params_;
  std::vector<Index> all_cols_, cond_cols_, cond_target_;
  Embedding emb_;
  Conv1d in_;
  Index cond_ = 0;
  FourierTimeEmbedding time_;
  std::vector<Conv1d> blocks_;
  Linear out_;
};

}  // namespace rtb
