// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The parameter-free resampling steps of a UNet on NCHW batches, each with its backward:
///
///     nearest 2× upsampling   y[b, c, 2i + a, 2j + e] = x[b, c, i, j]            (a, e ∈ {0, 1})
///                             dx[b, c, i, j] = Σ_{a,e} dy[b, c, 2i + a, 2j + e]
///     2×2 average pooling     y[b, c, i, j] = ¼ Σ_{a,e} x[b, c, 2i + a, 2j + e]
///                             dx[b, c, 2i + a, 2j + e] = ¼ dy[b, c, i, j]
///     channel concatenation   y[b] = [x₁[b]; x₂[b]]  ([B, C₁ + C₂, H, W], torch.cat(dim=1))
///                             dx₁[b] = dy[b, :C₁],  dx₂[b] = dy[b, C₁:]
///
/// (torch's interpolate(scale_factor=2, mode="nearest"), avg_pool2d(2) and cat; diffusers'
/// Upsample2D is this upsampling followed by a 3×3 Conv2d, its Downsample2D a stride-2 Conv2d or,
/// without the conv, this pooling.) Shapes are those of the forward's input(s); every backward
/// writes (GradientMode::Overwrite) or adds (Accumulate) into its input gradient.

#include <algorithm>
#include <string>

#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/net/image.hpp"

namespace rtb {

/// [B, C, 2H, 2W].
inline ImageShape upsampled_shape(const ImageShape& in) {
  detail::check_image("upsample_nearest2x", in, in.channels);
  return {in.batch, in.channels, 2 * in.height, 2 * in.width};
}

/// [B, C, H/2, W/2]; throws ShapeError for odd H or W.
inline ImageShape pooled_shape(const ImageShape& in) {
  detail::check_image("avg_pool2x2", in, in.channels);
  detail::check_even("avg_pool2x2", in);
  return {in.batch, in.channels, in.height / 2, in.width / 2};
}

/// [B, C₁ + C₂, H, W]; throws ShapeError unless both parts have the same B, H and W.
inline ImageShape concat_shape(const ImageShape& first, const ImageShape& second) {
  detail::check_image("concat_channels (first part)", first, first.channels);
  detail::check_image("concat_channels (second part)", second, second.channels);
  if (first.with_channels(second.channels) != second)
    throw ShapeError(detail::message("concat_channels: parts ", detail::to_string(first), " and ",
                                     detail::to_string(second),
                                     " differ in batch, height or width; only channel counts may differ (check "
                                     "that the skip comes from the same resolution as the map it joins)"));
  return first.with_channels(first.channels + second.channels);
}

/// y = nearest 2× upsampling of x (shape `in`); y has upsampled_shape(in).
template <class S>
void upsample_nearest2x(const S* __restrict x, const ImageShape& in, S* __restrict y) {
  const ImageShape out = upsampled_shape(in);
  const Index planes = in.batch * in.channels, H = in.height, W = in.width, Wo = out.width;
  for (Index pl = 0; pl < planes; ++pl)
    for (Index i = 0; i < H; ++i) {
      const S* __restrict src = x + (pl * H + i) * W;
      S* __restrict row = y + (pl * out.height + 2 * i) * Wo;
      for (Index j = 0; j < W; ++j) row[2 * j] = row[2 * j + 1] = src[j];
      std::copy_n(row, Wo, row + Wo);
    }
}

/// dx (shape `in`) = or += the sum of each 2×2 block of dy (shape upsampled_shape(in)).
template <class S>
void upsample_nearest2x_backward(const S* __restrict dy, const ImageShape& in, S* __restrict dx, GradientMode mode) {
  const ImageShape out = upsampled_shape(in);
  const Index planes = in.batch * in.channels, H = in.height, W = in.width, Wo = out.width;
  const bool add = mode == GradientMode::Accumulate;
  for (Index pl = 0; pl < planes; ++pl)
    for (Index i = 0; i < H; ++i) {
      const S* __restrict r0 = dy + (pl * out.height + 2 * i) * Wo;
      const S* __restrict r1 = r0 + Wo;
      S* __restrict d = dx + (pl * H + i) * W;
      for (Index j = 0; j < W; ++j) {
        const S g = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
        d[j] = add ? d[j] + g : g;
      }
    }
}

/// y = 2×2 average pooling of x (shape `in`, even H and W); y has pooled_shape(in).
template <class S>
void avg_pool2x2(const S* __restrict x, const ImageShape& in, S* __restrict y) {
  const ImageShape out = pooled_shape(in);
  const Index planes = in.batch * in.channels, W = in.width, Ho = out.height, Wo = out.width;
  for (Index pl = 0; pl < planes; ++pl)
    for (Index i = 0; i < Ho; ++i) {
      const S* __restrict r0 = x + (pl * in.height + 2 * i) * W;
      const S* __restrict r1 = r0 + W;
      S* __restrict d = y + (pl * Ho + i) * Wo;
      for (Index j = 0; j < Wo; ++j) d[j] = S(0.25) * ((r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]));
    }
}

/// dx (shape `in`) = or += dy/4 spread over each 2×2 block (dy has pooled_shape(in)).
template <class S>
void avg_pool2x2_backward(const S* __restrict dy, const ImageShape& in, S* __restrict dx, GradientMode mode) {
  const ImageShape out = pooled_shape(in);
  const Index planes = in.batch * in.channels, W = in.width, Ho = out.height, Wo = out.width;
  const bool add = mode == GradientMode::Accumulate;
  for (Index pl = 0; pl < planes; ++pl)
    for (Index i = 0; i < Ho; ++i) {
      const S* __restrict g = dy + (pl * Ho + i) * Wo;
      for (Index a = 0; a < 2; ++a) {
        S* __restrict d = dx + (pl * in.height + 2 * i + a) * W;
        for (Index j = 0; j < Wo; ++j) {
          const S q = S(0.25) * g[j];
          d[2 * j] = add ? d[2 * j] + q : q;
          d[2 * j + 1] = add ? d[2 * j + 1] + q : q;
        }
      }
    }
}

/// y = [first; second] along channels, image by image (y has concat_shape(first, second)).
template <class S>
void concat_channels(const S* x1, const ImageShape& first, const S* x2, const ImageShape& second, S* y) {
  const ImageShape out = concat_shape(first, second);
  const Index n1 = first.image_size(), n2 = second.image_size();
  for (Index b = 0; b < out.batch; ++b) {
    std::copy_n(x1 + b * n1, n1, y + b * (n1 + n2));
    std::copy_n(x2 + b * n2, n2, y + b * (n1 + n2) + n1);
  }
}

/// dx1 = or += dy[:, :C₁], dx2 = or += dy[:, C₁:]; either may be null (no gradient wanted).
template <class S>
void split_channels(const S* dy, const ImageShape& first, const ImageShape& second, S* dx1, S* dx2, GradientMode mode) {
  const ImageShape out = concat_shape(first, second);
  const Index n1 = first.image_size(), n2 = second.image_size();
  auto put = [mode](const S* __restrict src, Index n, S* __restrict dst) {
    if (mode == GradientMode::Accumulate)
      for (Index i = 0; i < n; ++i) dst[i] += src[i];
    else
      std::copy_n(src, n, dst);
  };
  for (Index b = 0; b < out.batch; ++b) {
    if (dx1) put(dy + b * (n1 + n2), n1, dx1 + b * n1);
    if (dx2) put(dy + b * (n1 + n2) + n1, n2, dx2 + b * n2);
  }
}

}  // namespace rtb
