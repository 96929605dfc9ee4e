// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Group normalisation of NCHW batches, as torch.nn.GroupNorm(groups, channels, eps): the C
/// channels split into G groups of C/G consecutive channels; per image b and group g, over its
/// n = (C/G)·H·W values,
///
///     μ = mean(x),  σ² = mean((x − μ)²) (biased, as PyTorch),  r = 1/√(σ² + ε),
///     x̂ = (x − μ)·r,  y[c] = γ[c]·x̂[c] + β[c],
///
/// with γ = `<prefix>weight` [C] and β = `<prefix>bias` [C]. The backward, per group, is
///
///     dγ[c] += Σ dy[c]·x̂[c],  dβ[c] += Σ dy[c],
///     dx = r·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂)),
///
/// means over the group's n values. A training forward keeps (μ, r) per (b, g) in `stats`
/// (`context_floats(shape)` = 2·B·G values); backward recomputes x̂ from x and them.

#include <algorithm>
#include <cmath>
#include <string>

#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/net/image.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

class GroupNorm {
 public:
  GroupNorm() = default;
  /// Registers `<prefix>weight` and `<prefix>bias` [channels]. Throws ShapeError if `groups`
  /// does not divide `channels`, InvalidArgumentError for non-positive sizes or eps.
  GroupNorm(ParameterLayout& layout, const std::string& prefix, Index groups, Index channels, double eps = 1e-5)
      : name_("GroupNorm '" + prefix + "'"), groups_(groups), channels_(channels), eps_(eps) {
    detail::check_positive(name_, "num_groups", groups);
    detail::check_positive(name_, "num_channels", channels);
    if (channels % groups != 0) {
      Index fit = groups;
      while (channels % fit != 0) --fit;
      throw ShapeError(detail::message(name_, ": ", groups, " groups do not divide ", channels,
                                       " channels; use a group count that divides the channel count (", fit,
                                       " is the largest below ", groups, ") or change the channels"));
    }
    if (!(eps > 0)) throw InvalidArgumentError(detail::message(name_, ": eps must be positive, got ", eps));
    w_ = layout.add(prefix + "weight", {channels});
    b_ = layout.add(prefix + "bias", {channels});
  }

  Index groups() const { return groups_; }
  Index channels() const { return channels_; }
  double eps() const { return eps_; }
  Index weight_offset() const { return w_; }
  Index bias_offset() const { return b_; }
  /// (μ, r) per image and group: 2·B·G values, stored [b][g][μ, r].
  Index context_floats(const ImageShape& shape) const { return 2 * shape.batch * groups_; }

  /// y = GroupNorm(x); keeps (μ, r) in `stats` when given (training). y may equal x (in place)
  /// when x is not needed afterwards; backward needs the original x.
  template <class S>
  void forward(const S* params, const S* x, const ImageShape& shape, S* y, S* stats = nullptr) const {
    detail::check_image(name_, shape, channels_);
    const Index cg = channels_ / groups_, hw = shape.pixels(), n = cg * hw;
    for (Index b = 0; b < shape.batch; ++b)
      for (Index g = 0; g < groups_; ++g) {
        const Index base = (b * channels_ + g * cg) * hw;
        const S mean = detail::sum(x + base, n) / static_cast<S>(n);
        const S var = centered_sum_of_squares(x + base, mean, n) / static_cast<S>(n);
        const S rstd = S(1) / std::sqrt(var + static_cast<S>(eps_));
        if (stats) {
          stats[2 * (b * groups_ + g)] = mean;
          stats[2 * (b * groups_ + g) + 1] = rstd;
        }
        for (Index k = 0; k < cg; ++k) {  // y = x·a + (β − μ·a), a = γ·r
          const Index c = g * cg + k;
          const S a = params[w_ + c] * rstd, shift = params[b_ + c] - mean * a;
          const S* xc = x + base + k * hw;
          S* yc = y + base + k * hw;
          for (Index q = 0; q < hw; ++q) yc[q] = xc[q] * a + shift;
        }
      }
  }

  /// Accumulates dγ and dβ into `grad` for the forward on `x` that left `stats`; if `dx` is
  /// given, writes (Overwrite) or adds (Accumulate) ∂/∂x into it. With Overwrite, dx may equal dy.
  template <class S>
  void backward(const S* params, const S* x, const ImageShape& shape, const S* dy, const S* stats, S* grad, S* dx,
                GradientMode input_mode) const {
    detail::check_image(name_, shape, channels_);
    const Index cg = channels_ / groups_, hw = shape.pixels(), n = cg * hw;
    const bool add = input_mode == GradientMode::Accumulate;
    for (Index b = 0; b < shape.batch; ++b)
      for (Index g = 0; g < groups_; ++g) {
        const Index base = (b * channels_ + g * cg) * hw;
        const S mean = stats[2 * (b * groups_ + g)], rstd = stats[2 * (b * groups_ + g) + 1];
        S s1 = 0, s2 = 0;  // Σ γ·dy and Σ γ·dy·x̂ over the group
        for (Index k = 0; k < cg; ++k) {
          const Index c = g * cg + k;
          const S sdy = detail::sum(dy + base + k * hw, hw);
          const S sdyxh = rstd * centered_dot(dy + base + k * hw, x + base + k * hw, mean, hw);
          if (grad) {
            grad[w_ + c] += sdyxh;
            grad[b_ + c] += sdy;
          }
          s1 += params[w_ + c] * sdy;
          s2 += params[w_ + c] * sdyxh;
        }
        if (!dx) continue;
        // dx = r·γ·dy − r·s1/n − (x − μ)·r²·s2/n = a_c·dy + bx·(x − μ) + c0
        const S inv_n = S(1) / static_cast<S>(n);
        const S bx = -rstd * rstd * s2 * inv_n, c0 = -rstd * s1 * inv_n;
        for (Index k = 0; k < cg; ++k) {
          const S a = rstd * params[w_ + g * cg + k];
          const S* dyc = dy + base + k * hw;
          const S* xc = x + base + k * hw;
          S* dxc = dx + base + k * hw;
          if (add)
            for (Index q = 0; q < hw; ++q) dxc[q] += a * dyc[q] + bx * (xc[q] - mean) + c0;
          else
            for (Index q = 0; q < hw; ++q) dxc[q] = a * dyc[q] + bx * (xc[q] - mean) + c0;
        }
      }
  }

  /// torch.nn.GroupNorm's initialisation: γ = 1, β = 0.
  template <class S>
  void init_default(S* params) const {
    std::fill_n(params + w_, channels_, S(1));
    std::fill_n(params + b_, channels_, S(0));
  }

 private:
  /// Σ (x − μ)².
  template <class S>
  static S centered_sum_of_squares(const S* x, S mean, Index n) {
    return detail::lane_sum<S>(n, [x, mean](Index i) { return (x[i] - mean) * (x[i] - mean); });
  }

  /// Σ a·(x − μ); centred so that a large mean does not cancel.
  template <class S>
  static S centered_dot(const S* a, const S* x, S mean, Index n) {
    return detail::lane_sum<S>(n, [a, x, mean](Index i) { return a[i] * (x[i] - mean); });
  }

  std::string name_;
  Index groups_ = 1, channels_ = 0, w_ = 0, b_ = 0;
  double eps_ = 1e-5;
};

}  // namespace rtb
