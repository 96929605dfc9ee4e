// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Fully connected layer y = x·Wᵀ + b with W stored [out, in] row-major (PyTorch's layout), and
/// its hand-written backward: dW += dyᵀ·x, db += Σ_rows dy, dx = dy·W.

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "rtb/space.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/init.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

class Linear {
 public:
  Linear() = default;
  /// Registers `<prefix>weight` [out, in] and `<prefix>bias` [out] in `layout`.
  Linear(ParameterLayout& layout, const std::string& prefix, Index in, Index out)
      : in_(in), out_(out), w_(layout.add(prefix + "weight", {out, in})), b_(layout.add(prefix + "bias", {out})) {}

  Index in() const { return in_; }
  Index out() const { return out_; }
  Index weight_offset() const { return w_; }
  Index bias_offset() const { return b_; }

  template <class S>
  ConstMatrixView<S> weight(const S* params) const {
    return ConstMatrixView<S>(params + w_, out_, in_);
  }

  /// y = x·Wᵀ + b (+ extra, a row added to every output row when given).
  template <class S>
  void forward(const S* params, ConstMatrixView<S> x, MatrixView<S> y, const S* extra = nullptr) const {
    RTB_ASSERT(x.cols() == in_ && y.cols() == out_ && x.rows() == y.rows());
    const S* w = params + w_;
    const S* b = params + b_;
    if (in_ <= kThin && out_ <= kMaxThinOut) {  // too thin for a GEMM: fused loop over outputs
      S wt[kThin * kMaxThinOut];                  // Wᵀ, so the inner loop runs over contiguous outputs
      S base[kMaxThinOut];
      for (Index o = 0; o < out_; ++o) {
        base[o] = b[o] + (extra ? extra[o] : S(0));
        for (Index i = 0; i < in_; ++i) wt[i * out_ + o] = w[o * in_ + i];
      }
      for (Index r = 0; r < x.rows(); ++r) {
        S* __restrict yr = row_ptr(y, r);
        for (Index o = 0; o < out_; ++o) yr[o] = base[o];
        for (Index i = 0; i < in_; ++i) {
          const S xi = x(r, i);
          const S* __restrict wi = wt + i * out_;
          for (Index o = 0; o < out_; ++o) yr[o] += xi * wi[o];
        }
      }
      return;
    }
    detail::gemm(y, x, weight(params).transpose(), false);
    for (Index r = 0; r < y.rows(); ++r) {
      S* yr = &y(r, 0);
      if (extra)
        for (Index o = 0; o < out_; ++o) yr[o] += b[o] + extra[o];
      else
        for (Index o = 0; o < out_; ++o) yr[o] += b[o];
    }
  }

  /// Accumulates dW and db into `grad` (unless it is null) and, if `dx` is given, writes dx = dy·W.
  template <class S>
  void backward(const S* params, ConstMatrixView<S> x, ConstMatrixView<S> dy, S* grad,
                std::type_identity_t<MatrixView<S>>* dx) const {
    RTB_ASSERT(dy.cols() == out_ && x.cols() == in_ && x.rows() == dy.rows());
    if (!grad) {  // the input gradient only (a frozen layer)
      if (dx) detail::gemm(*dx, dy, weight(params), false);
      return;
    }
    MatrixView<S> dw(grad + w_, out_, in_);
    if (in_ <= kThin && out_ <= kMaxThinOut) {  // dWᵀ row by row, contiguous over outputs
      S acc[kThin * kMaxThinOut] = {};
      for (Index r = 0; r < x.rows(); ++r) {
        const S* __restrict dyr = row_ptr(dy, r);
        for (Index i = 0; i < in_; ++i) {
          const S xi = x(r, i);
          S* __restrict ai = acc + i * out_;
          for (Index o = 0; o < out_; ++o) ai[o] += xi * dyr[o];
        }
      }
      for (Index o = 0; o < out_; ++o)
        for (Index i = 0; i < in_; ++i) dw(o, i) += acc[i * out_ + o];
    } else {
      detail::gemm(dw, dy.transpose(), x, true);
    }
    add_column_sums(dy, grad + b_);
    if (dx) detail::gemm(*dx, dy, weight(params), false);
  }

  /// PyTorch's default initialisation: W and b uniform in ±1/√in.
  template <class S>
  void init_default(S* params, std::uint64_t seed, std::uint32_t layer_id) const {
    const S bound = S(1) / std::sqrt(static_cast<S>(in_));
    detail::fill_uniform(params + w_, out_ * in_, bound, seed, kInitTag, layer_id, 0);
    detail::fill_uniform(params + b_, out_, bound, seed, kInitTag, layer_id, 1);
  }

  /// W = 0, b = `bias` (the zero-initialised last layer of the reference).
  template <class S>
  void init_constant(S* params, S bias) const {
    for (Index i = 0; i < out_ * in_; ++i) params[w_ + i] = S(0);
    for (Index i = 0; i < out_; ++i) params[b_ + i] = bias;
  }

  /// acc[c] += Σ_r m(r, c).
  template <class S>
  static void add_column_sums(ConstMatrixView<S> m, S* __restrict acc) {
    for (Index r = 0; r < m.rows(); ++r) {
      const S* __restrict row = row_ptr(m, r);
      for (Index c = 0; c < m.cols(); ++c) acc[c] += row[c];
    }
  }

 private:
  static constexpr Index kThin = 4;          // inputs up to this use the fused loops, not a GEMM
  static constexpr Index kMaxThinOut = 512;  // (their Wᵀ lives on the stack)
  static constexpr std::uint32_t kInitTag = 0x1417u;

  Index in_ = 0, out_ = 0, w_ = 0, b_ = 0;
};

}  // namespace rtb
