// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// 2-D convolution over NCHW batches (net/image.hpp) with odd kernel k, zero padding p = (k−1)/2
/// and stride s ∈ {1, 2}, as torch.nn.Conv2d(in, out, k, stride=s, padding=p):
///
///     y[b, o, i, j] = bias[o] + extra[o] + Σ_c Σ_{u,v} W[o, c, u, v] · x[b, c, i·s + u − p, j·s + v − p]
///
/// (x = 0 outside the map), H_out = (H − 1)/s + 1. `<prefix>weight` is [out, in, k, k] and
/// `<prefix>bias` [out], PyTorch's layout, so W is already the row-major [out, in·k·k] matrix of
/// the im2col formulation: per image, with col[(c, u, v), (i, j)] = x[c, i·s + u − p, j·s + v − p],
///
///     y_b = W · col_b,   dW += dy_b · col_bᵀ,   db += Σ_{i,j} dy_b,   dx_b = col2im(Wᵀ · dy_b),
///
/// col2im adding every tap back to the pixel it was read from. A 1×1 stride-1 conv needs no
/// col: col_b = x_b. Every product goes through detail::gemm; scratch (one image's col) comes
/// from the caller, `scratch_floats(shape)` floats, so nothing allocates.
///
/// Why im2col: benchmarks/bench_layers.cpp timed it against a direct kernel (a loop over taps
/// accumulating four output channels per input row, no col buffer; commit 41d8b8d) on batch 32,
/// one thread, float, AMD EPYC (Zen 3, 2 vCPUs, AVX2/FMA; lscpu "AMD EPYC"), g++ 12 -O3
/// -march=native, 2026-12-01, load ≈ 3 from other jobs. Median GFLOP/s, im2col / direct:
///
///     in→out  size k s   forward      backward        in→out  size k s   forward      backward
///     32→32   28   3 1   36.3 / 7.8   28.0 / 2.2      64→64   8    3 1   36.3 / 2.8   28.2 / 2.6
///     32→64   14   3 1   35.9 / 5.3   37.6 / 3.0      32→32   28   3 2   31.7 / 2.3   21.7 / 2.4
///     64→64   14   3 1   35.0 / 5.2   34.1 / 3.0      64→64   14   3 2   33.9 / 1.6   32.2 / 1.9
///     64→64   7    3 1   26.7 / 2.4   31.6 / 2.5      64→64   16   3 2   29.7 / 2.2   37.1 / 1.6
///     32→32   16   3 1   37.2 / 5.7   23.6 / 3.2      32→64   14   1 1   38.9 / 4.0   31.6 / 2.5
///
/// im2col + GEMM won every size, by 4.6–21× forward and 8–23× backward, so the direct kernel
/// was removed; copying the col (9·in·H·W floats an image) costs far less than the GEMM's
/// register blocking gains.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/math/philox.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/init.hpp"
#include "rtb/net/image.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

class Conv2d {
 public:
  Conv2d() = default;
  /// Registers `<prefix>weight` [out, in, kernel, kernel] and, if `bias`, `<prefix>bias` [out].
  /// Throws InvalidArgumentError for non-positive channels, an even kernel or a stride not 1 or 2.
  Conv2d(ParameterLayout& layout, const std::string& prefix, Index in, Index out, Index kernel = 3, Index stride = 1,
         bool bias = true)
      : name_("Conv2d '" + prefix + "'"), in_(in), out_(out), k_(kernel), s_(stride) {
    detail::check_positive(name_, "in_channels", in);
    detail::check_positive(name_, "out_channels", out);
    if (kernel <= 0 || kernel % 2 == 0)
      throw InvalidArgumentError(detail::message(name_, ": kernel must be odd and positive (padding (k-1)/2 keeps the ",
                                                 "size), got ", kernel, "; use 3 for a 3x3 conv, 1 for a projection"));
    if (stride != 1 && stride != 2)
      throw InvalidArgumentError(
          detail::message(name_, ": stride must be 1 or 2, got ", stride, "; use stride 2 to downsample by two"));
    w_ = layout.add(prefix + "weight", {out, in, kernel, kernel});
    b_ = bias ? layout.add(prefix + "bias", {out}) : -1;
  }

  Index in() const { return in_; }
  Index out() const { return out_; }
  Index kernel() const { return k_; }
  Index stride() const { return s_; }
  Index padding() const { return (k_ - 1) / 2; }
  bool has_bias() const { return b_ >= 0; }
  Index weight_offset() const { return w_; }
  Index bias_offset() const { return b_; }

  /// [B, out, H_out, W_out] for an input of `in`; throws ShapeError for the wrong channel count,
  /// an empty shape, or (stride 2) odd H or W.
  ImageShape output_shape(const ImageShape& in) const {
    detail::check_image(name_, in, in_);
    if (s_ == 2) detail::check_even(name_, in);
    return {in.batch, out_, (in.height - 1) / s_ + 1, (in.width - 1) / s_ + 1};
  }
  /// Floats of scratch one forward or backward on `in` needs (one image's col; independent of B).
  Index scratch_floats(const ImageShape& in) const {
    const ImageShape o = output_shape(in);
    return pointwise() ? 0 : in_ * k_ * k_ * o.pixels();
  }
  /// Multiply-adds of one image.
  Index macs(const ImageShape& in) const { return output_shape(in).pixels() * out_ * in_ * k_ * k_; }

  /// y = conv(x) + bias (+ extra[o] on every pixel of channel o, when given), or y += … when
  /// `accumulate`. Backward needs only x, so training keeps no other context. y must not overlap x.
  template <class S>
  void forward(const S* params, const S* x, const ImageShape& shape, S* y, S* scratch, const S* extra = nullptr,
               bool accumulate = false) const {
    const ImageShape os = output_shape(shape);
    const Index K = in_ * k_ * k_, hw = shape.pixels(), hwo = os.pixels();
    const ConstMatrixView<S> w(params + w_, out_, K);
    for (Index b = 0; b < shape.batch; ++b) {
      const S* xb = x + b * in_ * hw;
      S* yb = y + b * out_ * hwo;
      MatrixView<S> yv(yb, out_, hwo);
      if (pointwise()) {
        detail::gemm(yv, w, ConstMatrixView<S>(xb, in_, hw), accumulate);
      } else {
        im2col(xb, shape, os, scratch);
        detail::gemm(yv, w, ConstMatrixView<S>(scratch, K, hwo), accumulate);
      }
      if (b_ < 0 && !extra) continue;
      for (Index o = 0; o < out_; ++o) {
        const S add = (b_ >= 0 ? params[b_ + o] : S(0)) + (extra ? extra[o] : S(0));
        S* __restrict row = yb + o * hwo;
        for (Index q = 0; q < hwo; ++q) row[q] += add;
      }
    }
  }

  /// Accumulates dW (and db) into `grad` (unless grad is null) for the forward on `x`; if `dx` is
  /// given, writes (GradientMode::Overwrite) or adds (Accumulate) ∂/∂x into it. dx must not
  /// overlap dy or x. `hook(col, dy)`, when given, is called per image with the GEMM's input
  /// (the im2col columns, [in·k·k, N_out], or x itself for a 1×1 conv) and dy ([out, N_out]):
  /// what a LoRA adapter of W as [out, in·k·k] needs (net/lora.hpp).
  template <class S, class Hook = detail::NoProjectionHook>
  void backward(const S* params, const S* x, const ImageShape& shape, const S* dy, S* grad, S* dx,
                GradientMode input_mode, S* scratch, Hook&& hook = Hook{}) const {
    constexpr bool hooked = detail::is_hooked<Hook>;
    const ImageShape os = output_shape(shape);
    const Index K = in_ * k_ * k_, hw = shape.pixels(), hwo = os.pixels();
    const ConstMatrixView<S> w(params + w_, out_, K);
    MatrixView<S> dw(grad ? grad + w_ : nullptr, out_, K);  // grad = null: input gradient only
    const bool add = input_mode == GradientMode::Accumulate;
    for (Index b = 0; b < shape.batch; ++b) {
      const S* xb = x + b * in_ * hw;
      const S* dyb = dy + b * out_ * hwo;
      S* dxb = dx ? dx + b * in_ * hw : nullptr;
      const ConstMatrixView<S> dyv(dyb, out_, hwo);
      if (grad && b_ >= 0)
        for (Index o = 0; o < out_; ++o) grad[b_ + o] += detail::sum(dyb + o * hwo, hwo);
      if (pointwise()) {
        const ConstMatrixView<S> xv(xb, in_, hw);
        if (grad) detail::gemm(dw, dyv, xv.transpose(), true);
        if constexpr (hooked) hook(xv, dyv);
        if (dxb) detail::gemm(MatrixView<S>(dxb, in_, hw), w.transpose(), dyv, add);
      } else {
        if (!grad && !dxb && !hooked) continue;
        MatrixView<S> col(scratch, K, hwo);
        if (grad || hooked) im2col(xb, shape, os, scratch);
        if (grad) detail::gemm(dw, dyv, const_view(col).transpose(), true);
        if constexpr (hooked) hook(const_view(col), dyv);
        if (!dxb) continue;
        detail::gemm(col, w.transpose(), dyv, false);
        if (!add) std::fill_n(dxb, in_ * hw, S(0));
        col2im(scratch, shape, os, dxb);
      }
    }
  }

  /// PyTorch's nn.Conv2d default: W and b uniform in ±1/√(in·k·k).
  template <class S>
  void init_default(S* params, std::uint64_t seed, std::uint32_t layer_id) const {
    const S bound = S(1) / std::sqrt(static_cast<S>(in_ * k_ * k_));
    detail::fill_uniform(params + w_, out_ * in_ * k_ * k_, bound, seed, kInitTag, layer_id, 0);
    if (b_ >= 0) detail::fill_uniform(params + b_, out_, bound, seed, kInitTag, layer_id, 1);
  }

  /// W = 0 and b = `bias` (a zero-initialised branch).
  template <class S>
  void init_constant(S* params, S bias) const {
    std::fill_n(params + w_, out_ * in_ * k_ * k_, S(0));
    if (b_ >= 0) std::fill_n(params + b_, out_, bias);
  }

 private:
  bool pointwise() const { return k_ == 1 && s_ == 1; }

  /// Output columns [j0, j1) whose tap v reads an in-range input column j·s + v − p ∈ [0, W).
  struct Span {
    Index j0, j1;
  };
  Span span(Index v, Index width, Index width_out) const {
    const Index off = v - padding();
    auto floor_div = [](Index a, Index d) { return a >= 0 ? a / d : -((-a + d - 1) / d); };
    const Index j0 = std::max<Index>(0, -floor_div(off, s_));  // ceil(−off / s)
    const Index j1 = std::min<Index>(width_out, floor_div(width - 1 - off, s_) + 1);
    return {j0, std::max(j0, j1)};
  }

  /// col[(c, u, v), (i, j)] = x[c, i·s + u − p, j·s + v − p], 0 outside.
  template <class S>
  void im2col(const S* __restrict xb, const ImageShape& in, const ImageShape& out, S* __restrict col) const {
    const Index H = in.height, W = in.width, Ho = out.height, Wo = out.width, p = padding();
    for (Index c = 0; c < in_; ++c)
      for (Index u = 0; u < k_; ++u)
        for (Index v = 0; v < k_; ++v) {
          S* plane = col + ((c * k_ + u) * k_ + v) * Ho * Wo;
          const Span sp = span(v, W, Wo);
          const Index off = v - p;
          for (Index i = 0; i < Ho; ++i) {
            S* __restrict dst = plane + i * Wo;
            const Index r = i * s_ + u - p;
            if (r < 0 || r >= H) {
              std::fill_n(dst, Wo, S(0));
              continue;
            }
            const S* __restrict src = xb + (c * H + r) * W;
            std::fill_n(dst, sp.j0, S(0));
            if (s_ == 1)
              std::copy(src + sp.j0 + off, src + sp.j1 + off, dst + sp.j0);
            else
              for (Index j = sp.j0; j < sp.j1; ++j) dst[j] = src[j * s_ + off];
            std::fill(dst + sp.j1, dst + Wo, S(0));
          }
        }
  }

  /// dx[c, i·s + u − p, j·s + v − p] += col[(c, u, v), (i, j)] for every in-range tap.
  template <class S>
  void col2im(const S* __restrict col, const ImageShape& in, const ImageShape& out, S* __restrict dxb) const {
    const Index H = in.height, W = in.width, Ho = out.height, Wo = out.width, p = padding();
    for (Index c = 0; c < in_; ++c)
      for (Index u = 0; u < k_; ++u)
        for (Index v = 0; v < k_; ++v) {
          const S* plane = col + ((c * k_ + u) * k_ + v) * Ho * Wo;
          const Span sp = span(v, W, Wo);
          const Index off = v - p;
          for (Index i = 0; i < Ho; ++i) {
            const Index r = i * s_ + u - p;
            if (r < 0 || r >= H) continue;
            const S* __restrict src = plane + i * Wo;
            S* __restrict dst = dxb + (c * H + r) * W;
            if (s_ == 1)  // unit stride vectorises; the strided loop cannot
              for (Index j = sp.j0; j < sp.j1; ++j) dst[j + off] += src[j];
            else
              for (Index j = sp.j0; j < sp.j1; ++j) dst[j * s_ + off] += src[j];
          }
        }
  }

  static constexpr std::uint32_t kInitTag = 0xC0172u;

  std::string name_;
  Index in_ = 0, out_ = 0, k_ = 1, s_ = 1, w_ = 0, b_ = -1;
};

}  // namespace rtb
