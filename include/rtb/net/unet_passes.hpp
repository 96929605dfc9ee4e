// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// UNet's three long members, defined out of the class so that unet.hpp stays readable: build()
/// lays out the op graph and the parameter layout, run() is the forward (with or without the
/// maps backward needs), walk_backward() the backward of every op in reverse. Included by
/// rtb/net/unet.hpp; not a header of its own.

#include "rtb/net/unet.hpp"

namespace rtb {

template <class S>
void UNet<S>::build() {
  const std::vector<Index>& C = o_.channels_per_level;
  const Index L = static_cast<Index>(C.size());
  detail::check_positive("UNet", "height", o_.height);
  detail::check_positive("UNet", "width", o_.width);
  detail::check_positive("UNet", "channels", o_.channels);
  detail::check_positive("UNet", "blocks_per_level", o_.blocks_per_level);
  detail::check_positive("UNet", "groups", o_.groups);
  if (L == 0)
    throw InvalidArgumentError(
        "UNet: channels_per_level is empty; give one width per resolution level, e.g. {32, 64}");
  for (Index i = 0; i < L; ++i) {
    const Index c = C[static_cast<std::size_t>(i)];
    detail::check_positive("UNet", "channels_per_level entries", c);
    if (c % o_.groups != 0)
      throw ShapeError(
          detail::message("UNet: groups = ", o_.groups, " does not divide channels_per_level[", i, "] = ", c,
                          "; GroupNorm splits every level's channels into equal groups: pick a group count "
                          "dividing every level's width, or widths that are multiples of ",
                          o_.groups));
  }
  if (o_.attention_head_dim < 0)
    throw InvalidArgumentError(detail::message("UNet: attention_head_dim must be >= 0, got ", o_.attention_head_dim));
  const Index scale = Index{1} << (L - 1);
  if (o_.height % scale != 0 || o_.width % scale != 0)
    throw ShapeError(detail::message("UNet: a ", o_.height, "x", o_.width, " image cannot be downsampled ", L - 1,
                                     " times by 2 (", L, " levels need height and width divisible by ", scale,
                                     "); pad the images (28x28 MNIST to 32x32) or use fewer levels"));
  for (Index a : o_.attention_levels)
    if (a < 0 || a >= L)
      throw InvalidArgumentError(detail::message("UNet: attention level ", a, " is not a level of this ", L,
                                                 "-level net; use indices 0 … ", L - 1));
  auto has_attention = [&](Index i) {
    return std::find(o_.attention_levels.begin(), o_.attention_levels.end(), i) != o_.attention_levels.end();
  };
  const std::string n = std::to_string(o_.blocks_per_level);
  time_ = TimestepEmbedding(layout_, "time_embedding.", C[0], 4 * C[0]);
  int h = conv("conv_in.", -1, C[0]);
  std::vector<int> skips = {h};
  for (Index i = 0; i < L; ++i) {
    const std::string p = "down_blocks." + std::to_string(i) + ".";
    for (Index j = 0; j < o_.blocks_per_level; ++j) {
      h = resnet(p + "resnets." + std::to_string(j) + ".", h, C[static_cast<std::size_t>(i)]);
      if (has_attention(i)) h = attention(p + "attentions." + std::to_string(j) + ".", h);
      skips.push_back(h);
    }
    if (i + 1 < L) {
      h = conv(p + "downsamplers.0.conv.", h, C[static_cast<std::size_t>(i)], 2);
      skips.push_back(h);
    }
  }
  const Index top = C.back();
  h = resnet("mid_block.resnets.0.", h, top);
  if (o_.mid_attention) h = attention("mid_block.attentions.0.", h);
  h = resnet("mid_block.resnets.1.", h, top);
  for (Index i = L - 1; i >= 0; --i) {
    const std::string p = "up_blocks." + std::to_string(L - 1 - i) + ".";
    for (Index j = 0; j <= o_.blocks_per_level; ++j) {
      const int skip = skips.back();
      skips.pop_back();
      const ImageShape cat = concat_shape(shape_of(h), shape_of(skip));
      const int joined = add_map(cat);
      ops_.push_back({Kind::Concat, 0, h, skip, joined, shape_of(h)});
      h = resnet(p + "resnets." + std::to_string(j) + ".", joined, C[static_cast<std::size_t>(i)]);
      if (has_attention(i)) h = attention(p + "attentions." + std::to_string(j) + ".", h);
    }
    if (i > 0) {
      const int up = add_map(upsampled_shape(shape_of(h)));
      ops_.push_back({Kind::Upsample, 0, h, -1, up, shape_of(h)});
      h = conv(p + "upsamplers.0.conv.", up, C[static_cast<std::size_t>(i)]);
    }
  }
  norm_out_ = GroupNorm(layout_, "conv_norm_out.", o_.groups, C[0]);
  const int act = add_map(shape_of(h));
  ops_.push_back({Kind::NormAct, 0, h, -1, act, shape_of(h)});
  h = conv("conv_out.", act, o_.channels);
  out_map_ = h;
}

template <class S>
void UNet<S>::run(const S* p, const Step<S>& s, MatrixView<S> out, Context& ctx, bool keep) const {
  check_step(s, out, ctx);
  const Index B = s.x.rows();
  ctx.rows = B;
  ctx.x = s.x.data();
  S* temb = ctx.time.data();
  time_.forward(p, timestep_of(s.time), temb, temb + 2 * time_.out());
  S* layer = ctx.layer.data();
  for (const Op& op : ops_) {
    const ImageShape in = batched(op.shape, B);
    const S* x = op.in < 0 ? s.x.data() : map(ctx, op.in);
    S* y = op.out == out_map_ ? out.data() : map(ctx, op.out);
    switch (op.kind) {
      case Kind::Conv:
        convs_[op.layer].forward(p, x, in, y, ctx.scratch.data());
        break;
      case Kind::Resnet: {
        const ResnetBlock2d& r = resnets_[op.layer];
        r.forward(p, x, in, temb, y, keep ? layer : static_cast<S*>(nullptr), ctx.scratch.data());
        layer += r.context_floats(batched(op.shape, ctx.max_rows));
        break;
      }
      case Kind::Attention: {
        const Attention2d& a = attns_[op.layer];
        a.forward(p, x, in, y, keep ? layer : static_cast<S*>(nullptr), ctx.scratch.data());
        layer += a.context_floats(batched(op.shape, ctx.max_rows));
        break;
      }
      case Kind::Concat:
        concat_channels(x, in, map(ctx, op.in2), batched(shape_of(op.in2), B), y);
        break;
      case Kind::Upsample:
        upsample_nearest2x(x, in, y);
        break;
      case Kind::NormAct: {
        const ImageShape full = batched(op.shape, ctx.max_rows);
        norm_out_.forward(p, x, in, y, keep ? layer : static_cast<S*>(nullptr));
        silu_inplace(y, keep ? layer + norm_out_.context_floats(full) : static_cast<S*>(nullptr), in.size());
        layer += norm_out_.context_floats(full) + full.size();
        break;
      }
    }
  }
}

template <class S>
template <class Hook>
void UNet<S>::walk_backward(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g, Hook&& hook) const {
  constexpr bool hooked = detail::is_hooked<Hook>;
  const Index B = ctx.rows;
  if (d_out.rows() != B || d_out.cols() != output_dim())
    throw ShapeError(detail::message("UNet: backward got a ", d_out.rows(), "x", d_out.cols(),
                                     " gradient for a forward of ", B, " rows of ", output_dim(),
                                     "; pass ∂L/∂ε of the last forward's shape"));
  std::fill(ctx.grads.begin(), ctx.grads.end(), S(0));
  S* temb = ctx.time.data();
  S* d_temb = temb + time_.out();
  S* time_ctx = d_temb + time_.out();
  std::fill_n(d_temb, time_.out(), S(0));
  Index layer_end = static_cast<Index>(ctx.layer.size());
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
    const Op& op = *it;
    const ImageShape in = batched(op.shape, B), full = batched(op.shape, ctx.max_rows);
    const S* x = op.in < 0 ? ctx.x : map(ctx, op.in);
    const S* dy = op.out == out_map_ ? d_out.data() : grad_map(ctx, op.out);
    S* dx = grad_map(ctx, op.in);
    constexpr GradientMode add = GradientMode::Accumulate;
    switch (op.kind) {
      case Kind::Conv: {
        const Index index = static_cast<Index>(op.layer);
        if constexpr (hooked)
          convs_[op.layer].backward(p, x, in, dy, g, dx, add, ctx.scratch.data(),
                                    [&](const auto& col, const auto& d) { hook.conv(index, col, d); });
        else
          convs_[op.layer].backward(p, x, in, dy, g, dx, add, ctx.scratch.data());
        break;
      }
      case Kind::Resnet: {
        const ResnetBlock2d& r = resnets_[op.layer];
        const Index index = static_cast<Index>(op.layer);
        layer_end -= r.context_floats(full);
        if constexpr (hooked)
          r.backward(p, x, in, dy, ctx.layer.data() + layer_end, g, dx, add, d_temb, ctx.scratch.data(),
                     [&](int which, const auto& col, const auto& d) { hook.resnet(index, which, col, d); });
        else
          r.backward(p, x, in, dy, ctx.layer.data() + layer_end, g, dx, add, d_temb, ctx.scratch.data());
        break;
      }
      case Kind::Attention: {
        const Attention2d& a = attns_[op.layer];
        layer_end -= a.context_floats(full);
        const Index index = static_cast<Index>(op.layer);
        if constexpr (hooked)
          a.backward(p, x, in, dy, ctx.layer.data() + layer_end, g, dx, add, ctx.scratch.data(),
                     [&](int m, const auto& xhat, const auto& dm) { hook.attention(index, m, xhat, dm); });
        else
          a.backward(p, x, in, dy, ctx.layer.data() + layer_end, g, dx, add, ctx.scratch.data());
        break;
      }
      case Kind::Concat:
        split_channels(dy, in, batched(shape_of(op.in2), B), dx, grad_map(ctx, op.in2), add);
        break;
      case Kind::Upsample:
        upsample_nearest2x_backward(dy, in, dx, add);
        break;
      case Kind::NormAct: {
        layer_end -= norm_out_.context_floats(full) + full.size();
        const S* stats = ctx.layer.data() + layer_end;
        S* d = ctx.scratch.data();  // the conv_out backward before this has finished with it
        std::copy_n(dy, in.size(), d);
        silu_backward_inplace(d, stats + norm_out_.context_floats(full), in.size());
        norm_out_.backward(p, x, in, d, stats, g, dx, add);
        break;
      }
    }
  }
  if (g) time_.backward(p, d_temb, time_ctx, g, time_ctx + time_.context_floats());
}

}  // namespace rtb
