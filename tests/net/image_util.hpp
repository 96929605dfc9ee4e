// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the 2-D layer tests share: random buffers, reference layers written from their definitions
// (plain loops in double, no im2col, no GEMM), and the "backward added onto what was there" check.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <rtb/net/image.hpp>

#include "../test_util.hpp"

namespace rtb_test {

/// n deterministic normals (times scale).
template <class S>
std::vector<S> random_vector(rtb::Index n, std::uint64_t seed, double scale = 1.0) {
  std::vector<S> v(static_cast<std::size_t>(n));
  fill_normal<S>(rtb::MatrixView<S>(v.data(), 1, n), seed, scale);
  return v;
}

/// The convolution by its definition, in double: y[b, o, i, j] = bias[o] + extra[o] +
/// Σ_c Σ_{u,v} W[o, c, u, v]·x[b, c, i·s + u − p, j·s + v − p].
template <class S>
std::vector<double> reference_conv2d(const S* w, const S* bias, const S* extra, const S* x, rtb::ImageShape in,
                                     rtb::Index out, rtb::Index k, rtb::Index s) {
  const rtb::Index p = (k - 1) / 2, Ho = (in.height - 1) / s + 1, Wo = (in.width - 1) / s + 1;
  std::vector<double> y(static_cast<std::size_t>(in.batch * out * Ho * Wo));
  for (rtb::Index b = 0; b < in.batch; ++b)
    for (rtb::Index o = 0; o < out; ++o)
      for (rtb::Index i = 0; i < Ho; ++i)
        for (rtb::Index j = 0; j < Wo; ++j) {
          double acc = (bias ? double(bias[o]) : 0.0) + (extra ? double(extra[o]) : 0.0);
          for (rtb::Index c = 0; c < in.channels; ++c)
            for (rtb::Index u = 0; u < k; ++u)
              for (rtb::Index v = 0; v < k; ++v) {
                const rtb::Index r = i * s + u - p, q = j * s + v - p;
                if (r < 0 || r >= in.height || q < 0 || q >= in.width) continue;
                acc += double(w[((o * in.channels + c) * k + u) * k + v]) *
                       double(x[((b * in.channels + c) * in.height + r) * in.width + q]);
              }
          y[static_cast<std::size_t>(((b * out + o) * Ho + i) * Wo + j)] = acc;
        }
  return y;
}

/// GroupNorm by its definition, in double (biased variance, as torch.nn.GroupNorm).
template <class S>
std::vector<double> reference_group_norm(const S* gamma, const S* beta, const S* x, rtb::ImageShape s,
                                         rtb::Index groups, double eps) {
  std::vector<double> y(static_cast<std::size_t>(s.size()));
  const rtb::Index cg = s.channels / groups, n = cg * s.pixels();
  for (rtb::Index b = 0; b < s.batch; ++b)
    for (rtb::Index g = 0; g < groups; ++g) {
      const rtb::Index base = (b * s.channels + g * cg) * s.pixels();
      double mean = 0, var = 0;
      for (rtb::Index i = 0; i < n; ++i) mean += double(x[base + i]);
      mean /= double(n);
      for (rtb::Index i = 0; i < n; ++i) var += (double(x[base + i]) - mean) * (double(x[base + i]) - mean);
      var /= double(n);
      for (rtb::Index i = 0; i < n; ++i) {
        const rtb::Index c = g * cg + i / s.pixels();
        y[static_cast<std::size_t>(base + i)] =
            (double(x[base + i]) - mean) / std::sqrt(var + eps) * double(gamma[c]) + double(beta[c]);
      }
    }
  return y;
}

/// max |a − b| / max(1, max |b|).
template <class S>
double max_relative_difference(const std::vector<S>& a, const std::vector<double>& b) {
  double scale = 1, err = 0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  for (std::size_t i = 0; i < a.size(); ++i) err = std::max(err, std::fabs(double(a[i]) - b[i]));
  return err / scale;
}

/// a − b, entry by entry (a backward that adds onto b, minus b).
inline std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

/// Σ a ⊙ b: the scalar loss L = ⟨dy, y⟩ whose gradient a backward with upstream dy computes.
inline double inner(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace rtb_test
