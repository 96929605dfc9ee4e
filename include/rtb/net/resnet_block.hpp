// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The residual block of diffusers' UNet2DModel, ResnetBlock2D with its defaults
/// (time_embedding_norm "default", output_scale_factor 1, no dropout), as one composite layer:
///
///     a₁ = SiLU(GroupNorm₁(x)),            h₁ = conv₁(a₁) + W_t·SiLU(temb) + b_t   (per channel)
///     a₂ = SiLU(GroupNorm₂(h₁)),           y  = conv₂(a₂) + shortcut(x),
///
/// conv₁ and conv₂ 3×3 (C_in → C_out → C_out), shortcut = 1×1 conv when C_in ≠ C_out, else the
/// identity. Tensors: `<prefix>norm1.*`, `conv1.*`, `time_emb_proj.*` (Linear temb → C_out),
/// `norm2.*`, `conv2.*`, `conv_shortcut.*`, in diffusers' order. temb is one vector (one timestep
/// per call, net/timestep_embedding.hpp), so W_t·SiLU(temb) + b_t is computed once and enters
/// conv₁ as a per-channel bias. Backward runs the chain in reverse,
///
///     g  = ∂/∂h₁ = GN₂-backward(SiLU'₂ ⊙ conv₂-backward(dy)),
///     dx = shortcut-backward(dy) + GN₁-backward(SiLU'₁ ⊙ conv₁-backward(g)),
///     d(W_t, b_t) from Σ_{b,i,j} g,   d_temb += SiLU'(temb) ⊙ W_tᵀ·Σ_{b,i,j} g.
///
/// A training forward keeps a₁, SiLU'₁, h₁, a₂, SiLU'₂, both norms' statistics and the time path
/// in `context` (context_floats(shape)); x must stay alive until backward. Nothing allocates.

#include <algorithm>
#include <cstdint>
#include <string>

#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/net/conv2d.hpp"
#include "rtb/net/group_norm.hpp"
#include "rtb/net/image.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/silu.hpp"

namespace rtb {

class ResnetBlock2d {
 public:
  ResnetBlock2d() = default;
  /// `temb_channels` = 0 builds a block without a time projection (temb is then ignored).
  /// Throws ShapeError if `groups` does not divide C_in or C_out (diffusers: resnet_groups),
  /// InvalidArgumentError for non-positive channels.
  ResnetBlock2d(ParameterLayout& layout, const std::string& prefix, Index in, Index out, Index temb_channels,
                Index groups = 32, double eps = 1e-5)
      : name_("ResnetBlock2d '" + prefix + "'"), in_(in), out_(out), t_(temb_channels) {
    detail::check_positive(name_, "in_channels", in);
    detail::check_positive(name_, "out_channels", out);
    if (temb_channels < 0)
      throw InvalidArgumentError(detail::message(name_, ": temb_channels must be >= 0, got ", temb_channels));
    norm1_ = GroupNorm(layout, prefix + "norm1.", groups, in, eps);
    conv1_ = Conv2d(layout, prefix + "conv1.", in, out, 3);
    if (t_ > 0) proj_ = Linear(layout, prefix + "time_emb_proj.", temb_channels, out);
    norm2_ = GroupNorm(layout, prefix + "norm2.", groups, out, eps);
    conv2_ = Conv2d(layout, prefix + "conv2.", out, out, 3);
    if (in != out) shortcut_ = Conv2d(layout, prefix + "conv_shortcut.", in, out, 1);
  }

  Index in() const { return in_; }
  Index out() const { return out_; }
  Index temb_channels() const { return t_; }
  bool has_shortcut() const { return in_ != out_; }
  const GroupNorm& norm1() const { return norm1_; }
  const GroupNorm& norm2() const { return norm2_; }
  const Conv2d& conv1() const { return conv1_; }
  const Conv2d& conv2() const { return conv2_; }
  const Conv2d& conv_shortcut() const { return shortcut_; }
  const Linear& time_emb_proj() const { return proj_; }

  /// [B, C_out, H, W]; throws ShapeError unless `shape` has C_in channels.
  ImageShape output_shape(const ImageShape& shape) const {
    detail::check_image(name_, shape, in_);
    return shape.with_channels(out_);
  }
  /// Floats a training forward keeps: 2·B·(G₁ + G₂) + B·N·(2·C_in + 3·C_out) + 2·temb + C_out.
  Index context_floats(const ImageShape& shape) const {
    const Index B = output_shape(shape).batch, N = shape.pixels();
    return 2 * B * (norm1_.groups() + norm2_.groups()) + B * N * (2 * in_ + 3 * out_) + 2 * t_ + out_;
  }
  /// Floats of scratch a forward without context, or a backward, needs.
  Index scratch_floats(const ImageShape& shape) const {
    const ImageShape mid = output_shape(shape);
    Index conv = std::max(conv1_.scratch_floats(shape), conv2_.scratch_floats(mid));
    if (has_shortcut()) conv = std::max(conv, shortcut_.scratch_floats(shape));
    return shape.size() + mid.size() + 2 * t_ + out_ + conv;
  }

  /// y = block(x, temb). Training passes `context` (filled; scratch is still needed for the
  /// convs), inference passes context = null. y must not overlap x.
  template <class S>
  void forward(const S* params, const S* x, const ImageShape& shape, const S* temb, S* y, S* context,
               S* scratch) const {
    const ImageShape mid = output_shape(shape);
    if (t_ > 0 && !temb)
      throw InvalidArgumentError(detail::message(name_, ": the block has a time projection from ", t_,
                                                 " channels but temb is null; pass the TimestepEmbedding output"));
    const bool train = context != nullptr;
    const Block<S> c = block(train ? context : scratch, shape, train);
    S* conv_scratch = train ? scratch : c.end;
    norm1_.forward(params, x, shape, c.a1, c.stats1);
    silu_inplace(c.a1, c.s1, shape.size());
    const S* time = nullptr;
    if (t_ > 0) {
      std::copy_n(temb, t_, c.t);
      silu_inplace(c.t, c.ts, t_);
      proj_.forward(params, ConstMatrixView<S>(c.t, 1, t_), MatrixView<S>(c.proj, 1, out_));
      time = c.proj;
    }
    conv1_.forward(params, c.a1, shape, c.h1, conv_scratch, time);
    norm2_.forward(params, c.h1, mid, c.a2, c.stats2);  // in place on h₁ for inference (a2 == h1)
    silu_inplace(c.a2, c.s2, mid.size());
    conv2_.forward(params, c.a2, mid, y, conv_scratch);
    if (has_shortcut()) {
      shortcut_.forward(params, x, shape, y, conv_scratch, static_cast<const S*>(nullptr), true);
    } else {
      for (Index i = 0; i < mid.size(); ++i) y[i] += x[i];
    }
  }

  /// Accumulates every parameter's gradient into `grad` for the training forward on x that
  /// filled `context`; if `dx` is given, writes (Overwrite) or adds (Accumulate) ∂/∂x; if `d_temb`
  /// is given, adds ∂/∂temb into it (always adds: every block of a UNet shares temb).
  /// With grad = null no parameter gradient is formed (a frozen block); `hook(which, col, dy)`,
  /// when given, is called from each conv's backward (which = 0 conv1, 1 conv2, 2 conv_shortcut;
  /// see Conv2d::backward).
  template <class S, class Hook = detail::NoProjectionHook>
  void backward(const S* params, const S* x, const ImageShape& shape, const S* dy, const S* context, S* grad, S* dx,
                GradientMode input_mode, S* d_temb, S* scratch, Hook&& hook = Hook{}) const {
    auto conv_hook = [&hook](int which) {
      if constexpr (detail::is_hooked<Hook>)
        return [&hook, which](const auto& col, const auto& d) { hook(which, col, d); };
      else
        return detail::NoProjectionHook{};
    };
    const ImageShape mid = output_shape(shape);
    const Block<const S> c = block(context, shape, true);
    S* d_a2 = scratch;                // ∂/∂a₂, then ∂/∂h₁ in place
    S* d_a1 = d_a2 + mid.size();      // ∂/∂a₁
    S* d_proj = d_a1 + shape.size();  // C_out
    S* d_t = d_proj + out_;           // temb
    S* conv_scratch = d_t + 2 * t_;
    if (has_shortcut()) {
      shortcut_.backward(params, x, shape, dy, grad, dx, input_mode, conv_scratch, conv_hook(2));
    } else if (dx) {
      if (input_mode == GradientMode::Accumulate)
        for (Index i = 0; i < mid.size(); ++i) dx[i] += dy[i];
      else
        std::copy_n(dy, mid.size(), dx);
    }
    conv2_.backward(params, c.a2, mid, dy, grad, d_a2, GradientMode::Overwrite, conv_scratch, conv_hook(1));
    silu_backward_inplace(d_a2, c.s2, mid.size());
    norm2_.backward(params, c.h1, mid, d_a2, c.stats2, grad, d_a2, GradientMode::Overwrite);
    if (t_ > 0) {
      const Index N = shape.pixels();
      std::fill_n(d_proj, out_, S(0));
      for (Index b = 0; b < shape.batch; ++b)
        for (Index o = 0; o < out_; ++o) d_proj[o] += detail::sum(d_a2 + (b * out_ + o) * N, N);
      MatrixView<S> d_t_view(d_t, 1, t_);
      proj_.backward(params, ConstMatrixView<S>(c.t, 1, t_), ConstMatrixView<S>(d_proj, 1, out_), grad,
                     d_temb ? &d_t_view : nullptr);
      if (d_temb)
        for (Index i = 0; i < t_; ++i) d_temb[i] += d_t[i] * c.ts[i];
    }
    conv1_.backward(params, c.a1, shape, d_a2, grad, d_a1, GradientMode::Overwrite, conv_scratch, conv_hook(0));
    silu_backward_inplace(d_a1, c.s1, shape.size());
    norm1_.backward(params, x, shape, d_a1, c.stats1, grad, dx, GradientMode::Accumulate);
  }

  /// GroupNorms as torch (γ = 1, β = 0), convs and the time projection PyTorch-default (layer
  /// ids layer_id … layer_id + 3).
  template <class S>
  void init_default(S* params, std::uint64_t seed, std::uint32_t layer_id) const {
    norm1_.init_default(params);
    norm2_.init_default(params);
    conv1_.init_default(params, seed, layer_id);
    conv2_.init_default(params, seed, layer_id + 1);
    if (t_ > 0) proj_.init_default(params, seed, layer_id + 2);
    if (has_shortcut()) shortcut_.init_default(params, seed, layer_id + 3);
  }

 private:
  /// Where the intermediates live: a context (train) or the front of the scratch (inference,
  /// where a₂ overwrites h₁ and neither statistics nor derivatives are kept).
  template <class T>
  struct Block {
    T *stats1, *a1, *s1, *t, *ts, *proj, *h1, *stats2, *a2, *s2, *end;
  };
  template <class T>
  Block<T> block(T* base, const ImageShape& shape, bool train) const {
    const Index nin = shape.size(), nout = shape.batch * out_ * shape.pixels();
    Block<T> c;
    T* p = base;
    auto take = [&p](Index n) {
      T* q = p;
      p += n;
      return q;
    };
    c.stats1 = train ? take(2 * shape.batch * norm1_.groups()) : nullptr;
    c.a1 = take(nin);
    c.s1 = train ? take(nin) : nullptr;
    c.t = take(t_);
    c.ts = take(t_);
    c.proj = take(out_);
    c.h1 = take(nout);
    c.stats2 = train ? take(2 * shape.batch * norm2_.groups()) : nullptr;
    c.a2 = train ? take(nout) : c.h1;
    c.s2 = train ? take(nout) : nullptr;
    c.end = p;
    return c;
  }

  std::string name_;
  Index in_ = 0, out_ = 0, t_ = 0;
  GroupNorm norm1_, norm2_;
  Conv2d conv1_, conv2_, shortcut_;
  Linear proj_;
};

}  // namespace rtb
