// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Self-attention over the H·W positions of an NCHW map, as diffusers' Attention in a UNet
/// (residual_connection, GroupNorm first, rescale_output_factor 1). Per image, with x_b the
/// C × N matrix of its N = H·W positions (channel-major, as NCHW stores it):
///
///     x̂ = GroupNorm(x_b),   Q = W_q·x̂ + b_q,  K = W_k·x̂ + b_k,  V = W_v·x̂ + b_v   (C × N each)
///     per head h (rows h·d … h·d + d − 1 of Q, K, V; d = C/heads):
///         P_h = softmax_rows(Q_hᵀ·K_h / √d)   (N × N: P_h[i, j] is how much position i reads j)
///         O_h = V_h·P_hᵀ
///     y_b = W_o·O + b_o + x_b.
///
/// With heads = 1 (the default) this is the single-head softmax(q·kᵀ/√C)·v; diffusers' UNet2DModel
/// uses heads = C / attention_head_dim. Tensors: `<prefix>group_norm.{weight,bias}` [C],
/// `<prefix>to_q.`, `to_k.`, `to_v.`, `to_out.0.` `{weight [C, C], bias [C]}` (nn.Linear over
/// channels, i.e. 1×1 projections). The backward, per image and head (dS = ∂/∂ of the scores):
///
///     dW_o += dy·Oᵀ,  dO = W_oᵀ·dy,  dP_h = dO_hᵀ·V_h,  dV_h = dO_h·P_h,
///     dS_h[i, j] = P_h[i, j]·(dP_h[i, j] − Σ_k P_h[i, k]·dP_h[i, k]) / √d,
///     dQ_h = K_h·dS_hᵀ,  dK_h = Q_h·dS_h,  dW_{q,k,v} += d{Q,K,V}·x̂ᵀ,
///     dx̂ = W_qᵀ·dQ + W_kᵀ·dK + W_vᵀ·dV,  dx = dy + GroupNorm-backward(dx̂).
///
/// A training forward keeps, per image, the GroupNorm statistics, x̂, Q, K, V, every P_h and O
/// (`context_floats(shape)` = B·(2G + 5·C·N + heads·N²)); scratch is one image's worth
/// (`scratch_floats(shape)`). Every product goes through detail::gemm; nothing allocates.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/math/activations.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/group_norm.hpp"
#include "rtb/net/image.hpp"
#include "rtb/net/linear.hpp"

namespace rtb {

class Attention2d {
 public:
  Attention2d() = default;
  /// Registers the tensors above for `channels` channels, a GroupNorm of `groups` groups and
  /// `heads` heads. Throws ShapeError if `heads` or `groups` does not divide `channels`.
  Attention2d(ParameterLayout& layout, const std::string& prefix, Index channels, Index groups, Index heads = 1,
              double eps = 1e-5)
      : name_("Attention2d '" + prefix + "'"), c_(channels), heads_(heads) {
    detail::check_positive(name_, "channels", channels);
    detail::check_positive(name_, "heads", heads);
    if (channels % heads != 0)
      throw ShapeError(detail::message(name_, ": ", heads, " heads do not divide ", channels,
                                       " channels; use heads = channels / head_dim with a head_dim dividing ", channels,
                                       " (diffusers: attention_head_dim)"));
    norm_ = GroupNorm(layout, prefix + "group_norm.", groups, channels, eps);
    q_ = Linear(layout, prefix + "to_q.", channels, channels);
    k_ = Linear(layout, prefix + "to_k.", channels, channels);
    v_ = Linear(layout, prefix + "to_v.", channels, channels);
    o_ = Linear(layout, prefix + "to_out.0.", channels, channels);
  }

  Index channels() const { return c_; }
  Index heads() const { return heads_; }
  const GroupNorm& group_norm() const { return norm_; }
  const Linear& to_q() const { return q_; }
  const Linear& to_k() const { return k_; }
  const Linear& to_v() const { return v_; }
  const Linear& to_out() const { return o_; }

  /// Throws ShapeError unless `shape` has this layer's channels; the output has the same shape.
  ImageShape output_shape(const ImageShape& shape) const {
    detail::check_image(name_, shape, c_);
    return shape;
  }
  /// Floats a training forward keeps for backward.
  Index context_floats(const ImageShape& shape) const { return shape.batch * per_image(output_shape(shape)); }
  /// Floats of scratch a forward without context, or a backward, needs (one image).
  Index scratch_floats(const ImageShape& shape) const { return per_image(output_shape(shape)); }

  /// y = attention(x) + x. Training passes `context` (context_floats(shape), filled with what
  /// backward needs; scratch unused, may be null); inference passes context = null and uses
  /// `scratch` (scratch_floats(shape)). y may equal x only for inference (backward needs x).
  template <class S>
  void forward(const S* params, const S* x, const ImageShape& shape, S* y, S* context, S* scratch) const {
    output_shape(shape);
    for (Index b = 0; b < shape.batch; ++b)
      forward_image(params, x, shape, b, y, context ? context + b * per_image(shape) : scratch);
  }

  /// Accumulates every parameter's gradient into `grad` for the training forward on x that
  /// filled `context`; if `dx` is given, writes (Overwrite) or adds (Accumulate) ∂/∂x (the
  /// residual's dy plus the attention path's). dx must not overlap dy, x or the buffers. With
  /// grad = null no parameter gradient is formed (a frozen layer). `hook(m, x̂, dM)` is called per
  /// image for m = 0, 1, 2 (q, k, v) with the projection's input x̂ and output gradient dM (both
  /// C × N): what a LoRA adapter of that projection needs (net/lora.hpp).
  template <class S, class Hook = detail::NoProjectionHook>
  void backward(const S* params, const S* x, const ImageShape& shape, const S* dy, const S* context, S* grad, S* dx,
                GradientMode input_mode, S* scratch, Hook&& hook = Hook{}) const {
    output_shape(shape);
    const Index C = c_, N = shape.pixels(), d = C / heads_;
    const ImageShape one{1, C, shape.height, shape.width};
    const S scale = S(1) / std::sqrt(static_cast<S>(d));
    for (Index b = 0; b < shape.batch; ++b) {
      const Block<const S> c = block(context + b * per_image(shape), shape);
      const S* xb = x + b * C * N;
      const S* dyb = dy + b * C * N;
      S* dxb = dx ? dx + b * C * N : nullptr;
      S* d_o = scratch;            // C × N
      S* d_qkv = d_o + C * N;      // 3C × N
      S* d_p = d_qkv + 3 * C * N;  // N × N, one head at a time
      S* d_xhat = d_p + N * N;     // C × N
      const ConstMatrixView<S> dyv(dyb, C, N);
      if (dxb) {
        if (input_mode == GradientMode::Accumulate)
          for (Index i = 0; i < C * N; ++i) dxb[i] += dyb[i];
        else
          std::copy_n(dyb, C * N, dxb);
      }
      // output projection
      if (grad) {
        detail::gemm(MatrixView<S>(grad + o_.weight_offset(), C, C), dyv, ConstMatrixView<S>(c.o, C, N).transpose(),
                     true);
        add_row_sums(dyb, C, N, grad + o_.bias_offset());
      }
      detail::gemm(MatrixView<S>(d_o, C, N), weight(params, o_).transpose(), dyv, false);
      for (Index h = 0; h < heads_; ++h) {
        const Index r = h * d;
        const ConstMatrixView<S> p(c.p + h * N * N, N, N), dOh(d_o + r * N, d, N);
        const ConstMatrixView<S> qh(c.qkv + r * N, d, N), kh(c.qkv + (C + r) * N, d, N),
            vh(c.qkv + (2 * C + r) * N, d, N);
        MatrixView<S> dp(d_p, N, N);
        detail::gemm(dp, dOh.transpose(), vh, false);
        detail::gemm(MatrixView<S>(d_qkv + (2 * C + r) * N, d, N), dOh, p, false);  // dV_h
        for (Index i = 0; i < N; ++i) {  // softmax backward, with the 1/√d of the scores
          const S* pr = c.p + h * N * N + i * N;
          S* dr = d_p + i * N;
          const S dot = detail::dot(pr, dr, N);
          for (Index j = 0; j < N; ++j) dr[j] = scale * pr[j] * (dr[j] - dot);
        }
        detail::gemm(MatrixView<S>(d_qkv + r * N, d, N), kh, const_view(dp).transpose(), false);  // dQ_h
        detail::gemm(MatrixView<S>(d_qkv + (C + r) * N, d, N), qh, const_view(dp), false);        // dK_h
      }
      // q, k, v projections and ∂/∂x̂
      const ConstMatrixView<S> xhat(c.xhat, C, N);
      const Linear* proj[3] = {&q_, &k_, &v_};
      for (int m = 0; m < 3; ++m) {
        const ConstMatrixView<S> dm(d_qkv + m * C * N, C, N);
        if (grad) {
          detail::gemm(MatrixView<S>(grad + proj[m]->weight_offset(), C, C), dm, xhat.transpose(), true);
          add_row_sums(d_qkv + m * C * N, C, N, grad + proj[m]->bias_offset());
        }
        if constexpr (detail::is_hooked<Hook>) hook(m, xhat, dm);
        detail::gemm(MatrixView<S>(d_xhat, C, N), weight(params, *proj[m]).transpose(), dm, m > 0);
      }
      norm_.backward(params, xb, one, d_xhat, c.stats, grad, dxb, GradientMode::Accumulate);
    }
  }

  /// GroupNorm as torch (γ = 1, β = 0), the four projections PyTorch-default (layer ids
  /// layer_id … layer_id + 3).
  template <class S>
  void init_default(S* params, std::uint64_t seed, std::uint32_t layer_id) const {
    norm_.init_default(params);
    q_.init_default(params, seed, layer_id);
    k_.init_default(params, seed, layer_id + 1);
    v_.init_default(params, seed, layer_id + 2);
    o_.init_default(params, seed, layer_id + 3);
  }

 private:
  /// One image's block of a context: stats (2G), x̂ (C·N), Q, K, V (3C·N), P (heads·N²), O (C·N).
  template <class T>
  struct Block {
    T *stats, *xhat, *qkv, *p, *o;
  };
  template <class T>
  Block<T> block(T* base, const ImageShape& shape) const {
    const Index C = c_, N = shape.pixels();
    Block<T> l;
    l.stats = base;
    l.xhat = base + 2 * norm_.groups();
    l.qkv = l.xhat + C * N;
    l.p = l.qkv + 3 * C * N;
    l.o = l.p + heads_ * N * N;
    return l;
  }
  Index per_image(const ImageShape& shape) const {
    const Index N = shape.pixels();
    return 2 * norm_.groups() + 5 * c_ * N + heads_ * N * N;
  }

  template <class S>
  static ConstMatrixView<S> weight(const S* params, const Linear& l) {
    return ConstMatrixView<S>(params + l.weight_offset(), l.out(), l.in());
  }
  /// acc[r] += Σ_j m[r, j] for a rows × n row-major m.
  template <class S>
  static void add_row_sums(const S* m, Index rows, Index n, S* acc) {
    for (Index r = 0; r < rows; ++r) acc[r] += detail::sum(m + r * n, n);
  }

  template <class S>
  static S exp_of(S v) {
    if constexpr (std::is_same_v<S, float>)
      return math::fast_exp(v);
    else
      return std::exp(v);
  }

  /// y_b for image b, intermediates in the block at `base` (a context's, or the scratch).
  template <class S>
  void forward_image(const S* params, const S* x, const ImageShape& shape, Index b, S* y, S* base) const {
    const Index C = c_, N = shape.pixels(), d = C / heads_;
    const ImageShape one{1, C, shape.height, shape.width};
    const S scale = S(1) / std::sqrt(static_cast<S>(d));
    const Block<S> c = block(base, shape);
    const S* xb = x + b * C * N;
    S* yb = y + b * C * N;
    norm_.forward(params, xb, one, c.xhat, c.stats);
    const ConstMatrixView<S> xhat(c.xhat, C, N);
    const Linear* proj[3] = {&q_, &k_, &v_};
    for (int m = 0; m < 3; ++m) {
      detail::gemm(MatrixView<S>(c.qkv + m * C * N, C, N), weight(params, *proj[m]), xhat, false);
      add_bias(params + proj[m]->bias_offset(), c.qkv + m * C * N, N);
    }
    for (Index h = 0; h < heads_; ++h) {
      const Index r = h * d;
      S* p = c.p + h * N * N;
      const ConstMatrixView<S> qh(c.qkv + r * N, d, N), kh(c.qkv + (C + r) * N, d, N),
          vh(c.qkv + (2 * C + r) * N, d, N);
      detail::gemm(MatrixView<S>(p, N, N), qh.transpose(), kh, false);
      for (Index i = 0; i < N; ++i) {  // softmax of scale·scores, row by row
        S* row = p + i * N;
        const S top = scale * *std::max_element(row, row + N);
        for (Index j = 0; j < N; ++j) row[j] = exp_of(scale * row[j] - top);
        const S inv = S(1) / detail::sum(row, N);
        for (Index j = 0; j < N; ++j) row[j] *= inv;
      }
      detail::gemm(MatrixView<S>(c.o + r * N, d, N), vh, ConstMatrixView<S>(p, N, N).transpose(), false);
    }
    if (yb != xb) std::copy_n(xb, C * N, yb);  // residual (x is read for the last time above)
    detail::gemm(MatrixView<S>(yb, C, N), weight(params, o_), ConstMatrixView<S>(c.o, C, N), true);
    add_bias(params + o_.bias_offset(), yb, N);
  }

  /// m[r, j] += bias[r] for the C × n channel-major m.
  template <class S>
  void add_bias(const S* bias, S* m, Index n) const {
    for (Index r = 0; r < c_; ++r) {
      S* __restrict row = m + r * n;
      for (Index j = 0; j < n; ++j) row[j] += bias[r];
    }
  }

  std::string name_;
  Index c_ = 0, heads_ = 1;
  GroupNorm norm_;
  Linear q_, k_, v_, o_;
};

}  // namespace rtb
