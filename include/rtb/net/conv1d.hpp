// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// 1-D convolution over sequences stored row-major as [rows, L, C] (per row, position-major,
/// channels contiguous), with "same" zero padding, odd kernel k and dilation d:
///
///     y[r, p, o] = b[o] + Σ_c Σ_t W[o, c, t] · x[r, p + (t − (k−1)/2)·d, c]   (x = 0 off the ends)
///
/// W is stored as PyTorch's nn.Conv1d keeps it, `<prefix>weight` [C_out, C_in, k], and
/// `<prefix>bias` [C_out]. The forward is one GEMM over an im2col matrix
///
///     col[(r, p), t·C_in + c] = x[r, p + (t − (k−1)/2)·d, c],   y = col · W̃ᵀ + b,
///
/// where W̃[o, t·C_in + c] = W[o, c, t] is W with its last two axes swapped, rebuilt per call (k·C_in·C_out
/// floats, independent of the batch), so that im2col copies whole channel vectors. The backward is
///
///     dW̃ += dyᵀ · col,   db += Σ_{r,p} dy,   dcol = dy · W̃,   dx += col2im(dcol),
///
/// col2im adding every tap back to the position it was read from. Nothing is allocated: the
/// caller passes `scratch_floats(rows, L)` floats of scratch.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "rtb/space.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/init.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

class Conv1d {
 public:
  Conv1d() = default;
  /// Registers `<prefix>weight` [out, in, kernel] and, if `bias`, `<prefix>bias` [out].
  Conv1d(ParameterLayout& layout, const std::string& prefix, Index in, Index out, Index kernel, Index dilation = 1,
         bool bias = true)
      : in_(in), out_(out), k_(kernel), d_(dilation), w_(layout.add(prefix + "weight", {out, in, kernel})),
        b_(bias ? layout.add(prefix + "bias", {out}) : -1) {
    RTB_ASSERT(in > 0 && out > 0 && kernel > 0 && kernel % 2 == 1 && dilation > 0);
  }

  Index in() const { return in_; }
  Index out() const { return out_; }
  Index kernel() const { return k_; }
  Index dilation() const { return d_; }
  bool has_bias() const { return b_ >= 0; }
  Index weight_offset() const { return w_; }
  Index bias_offset() const { return b_; }
  /// How far one output position reaches to either side: (k − 1)/2 · d.
  Index reach() const { return (k_ - 1) / 2 * d_; }
  /// Floats of scratch a forward or backward over `rows` sequences of `length` positions needs.
  Index scratch_floats(Index rows, Index length) const { return rows * length * k_ * in_ + k_ * in_ * out_; }
  /// Multiply-adds per sequence of `length` positions.
  Index macs(Index length) const { return length * out_ * in_ * k_; }

  /// y = conv(x) + b (+ extra, one value per output channel), or y += … when `accumulate`.
  /// x is (rows·length) × in, y is (rows·length) × out.
  template <class S>
  void forward(const S* params, ConstMatrixView<S> x, Index length, MatrixView<S> y, S* scratch,
               const S* extra = nullptr, bool accumulate = false) const {
    RTB_ASSERT(x.cols() == in_ && y.cols() == out_ && x.rows() == y.rows() && x.rows() % length == 0);
    const Index n = x.rows(), K = k_ * in_;
    S* wt = scratch;
    S* col = scratch + K * out_;
    swap_taps(params + w_, wt);
    im2col(x, length, col);
    const ConstMatrixView<S> colv(col, n, K), wtv(wt, out_, K);
    if (accumulate)
      detail::gemm(y, colv, wtv.transpose(), true);
    else
      detail::gemm(y, colv, wtv.transpose(), false);
    if (b_ < 0 && !extra) return;
    S* bias = wt;  // free once the product is done
    for (Index o = 0; o < out_; ++o) bias[o] = (b_ >= 0 ? params[b_ + o] : S(0)) + (extra ? extra[o] : S(0));
    for (Index r = 0; r < n; ++r) {
      S* __restrict yr = row_ptr(y, r);
      for (Index o = 0; o < out_; ++o) yr[o] += bias[o];
    }
  }

  /// Accumulates dW (and db) into `grad` for the forward on `x`, and, if `dx` is given, adds
  /// ∂/∂x into it (dx += …, so residual branches can share one gradient buffer).
  template <class S>
  void backward(const S* params, ConstMatrixView<S> x, Index length, ConstMatrixView<S> dy, S* grad, S* dx,
                S* scratch) const {
    RTB_ASSERT(x.cols() == in_ && dy.cols() == out_ && x.rows() == dy.rows() && x.rows() % length == 0);
    const Index n = x.rows(), K = k_ * in_;
    S* wt = scratch;
    S* col = scratch + K * out_;
    im2col(x, length, col);
    MatrixView<S> dwt(wt, out_, K);
    detail::gemm(dwt, dy.transpose(), ConstMatrixView<S>(col, n, K), false);
    for (Index o = 0; o < out_; ++o)
      for (Index c = 0; c < in_; ++c)
        for (Index t = 0; t < k_; ++t) grad[w_ + (o * in_ + c) * k_ + t] += wt[o * K + t * in_ + c];
    if (b_ >= 0)
      for (Index r = 0; r < n; ++r) {
        const S* __restrict dyr = row_ptr(dy, r);
        for (Index o = 0; o < out_; ++o) grad[b_ + o] += dyr[o];
      }
    if (!dx) return;
    swap_taps(params + w_, wt);
    MatrixView<S> dcol(col, n, K);
    detail::gemm(dcol, dy, ConstMatrixView<S>(wt, out_, K), false);
    col2im(col, n, length, dx);
  }

  /// PyTorch's nn.Conv1d default: W and b uniform in ±1/√(in·k).
  template <class S>
  void init_default(S* params, std::uint64_t seed, std::uint32_t layer_id) const {
    const S bound = S(1) / std::sqrt(static_cast<S>(in_ * k_));
    detail::fill_uniform(params + w_, out_ * in_ * k_, bound, seed, kInitTag, layer_id, 0);
    if (b_ >= 0) detail::fill_uniform(params + b_, out_, bound, seed, kInitTag, layer_id, 1);
  }

  /// W = 0 and b = `bias` (a zero-initialised branch).
  template <class S>
  void init_constant(S* params, S bias) const {
    std::fill_n(params + w_, out_ * in_ * k_, S(0));
    if (b_ >= 0) std::fill_n(params + b_, out_, bias);
  }

 private:
  /// wt[o, t·in + c] = w[o, c, t].
  template <class S>
  void swap_taps(const S* __restrict w, S* __restrict wt) const {
    for (Index o = 0; o < out_; ++o)
      for (Index c = 0; c < in_; ++c)
        for (Index t = 0; t < k_; ++t) wt[o * k_ * in_ + t * in_ + c] = w[(o * in_ + c) * k_ + t];
  }

  template <class S>
  void im2col(ConstMatrixView<S> x, Index length, S* __restrict col) const {
    const Index rows = x.rows() / length, half = (k_ - 1) / 2;
    for (Index r = 0; r < rows; ++r)
      for (Index p = 0; p < length; ++p) {
        S* dst = col + (r * length + p) * k_ * in_;
        for (Index t = 0; t < k_; ++t, dst += in_) {
          const Index src = p + (t - half) * d_;
          if (src < 0 || src >= length)
            std::fill_n(dst, in_, S(0));
          else
            std::copy_n(x.data() + (r * length + src) * in_, in_, dst);
        }
      }
  }

  /// dx[r, p + (t − half)·d, c] += col[(r, p), t·in + c] for every in-range tap.
  template <class S>
  void col2im(const S* col, Index n, Index length, S* __restrict dx) const {
    const Index rows = n / length, half = (k_ - 1) / 2;
    for (Index r = 0; r < rows; ++r)
      for (Index p = 0; p < length; ++p) {
        const S* __restrict src = col + (r * length + p) * k_ * in_;
        for (Index t = 0; t < k_; ++t, src += in_) {
          const Index q = p + (t - half) * d_;
          if (q < 0 || q >= length) continue;
          S* __restrict d = dx + (r * length + q) * in_;
          for (Index c = 0; c < in_; ++c) d[c] += src[c];
        }
      }
  }

  static constexpr std::uint32_t kInitTag = 0xC0171u;

  Index in_ = 0, out_ = 0, k_ = 1, d_ = 1, w_ = 0, b_ = -1;
};

}  // namespace rtb
