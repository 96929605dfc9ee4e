// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A DDPM ε-prediction UNet, diffusers' UNet2DModel layout (DownBlock2D / AttnDownBlock2D,
/// UNetMidBlock2D, UpBlock2D / AttnUpBlock2D), as a Denoiser on rows that are flattened
/// [C, H, W] images. With L levels of widths C_0 … C_{L−1} and n residual blocks a level:
///
///     temb = TimestepEmbedding(sinusoid_{C_0}(τ))                       (C_0 → 4·C_0 → 4·C_0)
///     h = conv_in(x);  skips = [h]
///     level i = 0 … L−1:  n × (h = ResnetBlock(h, temb) [; h = Attention(h)]; skips += h),
///                         i < L−1: h = conv₃ₓ₃ stride 2 (h); skips += h
///     mid:  h = ResnetBlock(h); [h = Attention(h);] h = ResnetBlock(h)
///     level i = L−1 … 0:  n + 1 × (h = ResnetBlock([h; skips.pop()], temb) [; h = Attention(h)]),
///                         i > 0: h = conv₃ₓ₃(upsample_nearest2x(h))
///     ε = conv_out(SiLU(GroupNorm(h)))
///
/// τ is the step's `time`, which a DDPM process sets to the integer training timestep (it must
/// be integral: the sinusoid is diffusers' get_timestep_embedding of an integer τ). Every block
/// and the loop are the layers of net/ (each with its own finite-difference test); this file
/// only wires them. A training forward keeps every intermediate map (each op's output is a
/// buffer of its own, so each op's input is still there for backward); backward zeroes the
/// gradient maps and runs the ops in reverse, every op adding into its input's gradient, so a
/// skip receives its share from the up path and from the next down op alike. Tensor names are
/// diffusers' state_dict names (docs/unet.md has the mapping and the options that match).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "rtb/concepts/step.hpp"
#include "rtb/error.hpp"
#include "rtb/net/attention2d.hpp"
#include "rtb/net/conv2d.hpp"
#include "rtb/net/entry_points.hpp"
#include "rtb/net/group_norm.hpp"
#include "rtb/net/image.hpp"
#include "rtb/net/resample.hpp"
#include "rtb/net/resnet_block.hpp"
#include "rtb/net/silu.hpp"
#include "rtb/net/timestep_embedding.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// Per-thread buffers of a UNet, sized once by make_context(max_rows).
template <class S>
struct UnetContext {
  Index max_rows = 0;
  Index rows = 0;            ///< rows of the last forward
  const S* x = nullptr;      ///< input of the last forward (must stay alive until backward)
  AlignedVector<S> maps;     ///< every op's output map
  AlignedVector<S> grads;    ///< their gradients (and, first, ∂/∂x)
  AlignedVector<S> layer;    ///< the ResNet blocks', attentions' and final norm's contexts
  AlignedVector<S> scratch;  ///< the largest scratch any op needs
  AlignedVector<S> time;     ///< timestep embedding: temb, ∂/∂temb, its context and scratch

  /// ∂L/∂x of the last backward, [rows, C·H·W].
  ConstMatrixView<S> input_gradient(Index image_floats) const {
    return ConstMatrixView<S>(grads.data(), rows, image_floats);
  }
  std::size_t bytes() const {
    return sizeof(S) * (maps.capacity() + grads.capacity() + layer.capacity() + scratch.capacity() + time.capacity());
  }
};

template <class S = float>
class UNet : public detail::NetEntryPoints<UNet<S>, S, S, UnetContext<S>> {
  friend class detail::NetEntryPoints<UNet<S>, S, S, UnetContext<S>>;

 public:
  using Scalar = S;
  using Value = S;
  using Context = UnetContext<S>;

  struct Options {
    Index height = 32, width = 32;                     ///< sample_size
    Index channels = 1;                                ///< in_channels = out_channels
    std::vector<Index> channels_per_level = {32, 64};  ///< block_out_channels
    Index blocks_per_level = 1;                        ///< layers_per_block
    std::vector<Index> attention_levels = {};          ///< levels with Attn{Down,Up}Block2D
    bool mid_attention = true;                         ///< UNetMidBlock2D add_attention
    Index groups = 32;                                 ///< norm_num_groups
    Index attention_head_dim = 0;                      ///< 0: one head over all channels
    std::uint64_t seed = 0;
  };

  UNet() : UNet(Options{}) {}
  explicit UNet(const Options& o) : o_(o) { build(); }

  const Options& options() const { return o_; }
  Index input_dim() const { return o_.channels * o_.height * o_.width; }
  Index output_dim() const { return input_dim(); }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }

  /// Multiply-adds of one row (convolutions, projections, attention products); the timestep
  /// embedding, computed once a call, is left out.
  Index macs_per_row() const {
    Index m = 0;
    for (const Op& op : ops_) {
      const ImageShape in = op.shape;
      switch (op.kind) {
        case Kind::Conv:
          m += convs_[op.layer].macs(in);
          break;
        case Kind::Resnet: {
          const ResnetBlock2d& r = resnets_[op.layer];
          const ImageShape mid = in.with_channels(r.out());
          m += r.conv1().macs(in) + r.conv2().macs(mid) + (r.has_shortcut() ? r.conv_shortcut().macs(in) : 0);
          break;
        }
        case Kind::Attention: {
          const Index C = in.channels, N = in.pixels();
          m += 4 * C * C * N + 2 * N * N * C;
          break;
        }
        default:
          break;
      }
    }
    return m;
  }

  /// Convs, projections and the time MLP PyTorch-default, norms γ = 1, β = 0 (options' seed).
  void initialize(std::span<S> params) const {
    RTB_ASSERT(static_cast<Index>(params.size()) == num_params());
    S* p = params.data();
    std::uint32_t id = 0;
    time_.init_default(p, o_.seed, id);
    id += 2;
    for (const Conv2d& c : convs_) c.init_default(p, o_.seed, id++);
    for (const ResnetBlock2d& r : resnets_) {
      r.init_default(p, o_.seed, id);
      id += 4;
    }
    for (const Attention2d& a : attns_) {
      a.init_default(p, o_.seed, id);
      id += 4;
    }
    norm_out_.init_default(p);
  }

  /// The layers, each in forward order: what LoRA adapts (net/lora.hpp).
  const std::vector<Attention2d>& attentions() const { return attns_; }
  const std::vector<Conv2d>& convs() const { return convs_; }  ///< conv_in, down/up samplers, conv_out
  const std::vector<ResnetBlock2d>& resnets() const { return resnets_; }

  /// Back-propagates d_out through the last forward of ctx without forming any parameter
  /// gradient (a frozen UNet), calling, per image, hook.attention(i, m, x̂, dM) at projection
  /// m ∈ {q, k, v} of attention i (C × N each), hook.conv(i, col, dy) in convs()[i] and
  /// hook.resnet(i, which, col, dy) in conv `which` (0 conv1, 1 conv2, 2 conv_shortcut) of
  /// resnets()[i] (see Conv2d::backward): what Lora<UNet> needs. Leaves ∂L/∂x in
  /// ctx.input_gradient as backward does.
  template <class Hook>
  void backward_frozen(const S* p, Context& ctx, ConstMatrixView<S> d_out, Hook&& hook) const {
    walk_backward(p, ctx, d_out, static_cast<S*>(nullptr), hook);
  }

  Context make_context(Index max_rows) const {
    if (max_rows <= 0)
      throw InvalidArgumentError(detail::message("UNet: make_context needs max_rows >= 1, got ", max_rows));
    Context c;
    c.max_rows = max_rows;
    c.maps.assign(static_cast<std::size_t>(max_rows * map_floats_), S(0));
    c.grads.assign(c.maps.size() + static_cast<std::size_t>(max_rows * input_dim()), S(0));
    Index layer = 0, scratch = 0;
    for (const Op& op : ops_) {
      const ImageShape in = batched(op.shape, max_rows);
      switch (op.kind) {
        case Kind::Conv:
          scratch = std::max(scratch, convs_[op.layer].scratch_floats(in));
          break;
        case Kind::Resnet:
          layer += resnets_[op.layer].context_floats(in);
          scratch = std::max(scratch, resnets_[op.layer].scratch_floats(in));
          break;
        case Kind::Attention:
          layer += attns_[op.layer].context_floats(in);
          scratch = std::max(scratch, attns_[op.layer].scratch_floats(in));
          break;
        case Kind::NormAct:  // its backward stages ∂/∂(SiLU input) in the scratch
          layer += norm_out_.context_floats(in) + in.size();
          scratch = std::max(scratch, in.size());
          break;
        default:
          break;
      }
    }
    c.layer.assign(static_cast<std::size_t>(layer), S(0));
    c.scratch.assign(static_cast<std::size_t>(std::max<Index>(scratch, 1)), S(0));
    c.time.assign(static_cast<std::size_t>(2 * time_.out() + time_.context_floats() + time_.scratch_floats()), S(0));
    return c;
  }

 private:
  enum class Kind { Conv, Resnet, Attention, Concat, Upsample, NormAct };
  /// One op of the forward: layer index into its kind's vector, input map(s) and output map
  /// (indices into maps_; map −1 is the net's input x), and the input's shape at batch 1.
  struct Op {
    Kind kind;
    std::size_t layer = 0;
    int in = -1, in2 = -1, out = -1;
    ImageShape shape;
  };
  /// A map of the forward: its offset in a context's `maps` (and, shifted by the input, in
  /// `grads`) for max_rows rows is offset·max_rows, its shape at batch 1.
  struct Map {
    Index offset;
    ImageShape shape;
  };

  static ImageShape batched(ImageShape s, Index rows) {
    s.batch = rows;
    return s;
  }

  int add_map(const ImageShape& s) {
    maps_.push_back({map_floats_, s});
    map_floats_ += s.image_size();
    return static_cast<int>(maps_.size()) - 1;
  }
  ImageShape shape_of(int map) const {
    return map < 0 ? ImageShape{1, o_.channels, o_.height, o_.width} : maps_[static_cast<std::size_t>(map)].shape;
  }

  int conv(const std::string& name, int in, Index out, Index stride = 1) {
    const ImageShape s = shape_of(in);
    convs_.emplace_back(layout_, name, s.channels, out, 3, stride);
    const int o = add_map(convs_.back().output_shape(s));
    ops_.push_back({Kind::Conv, convs_.size() - 1, in, -1, o, s});
    return o;
  }
  int resnet(const std::string& name, int in, Index out) {
    const ImageShape s = shape_of(in);
    resnets_.emplace_back(layout_, name, s.channels, out, time_.out(), o_.groups);
    const int o = add_map(s.with_channels(out));
    ops_.push_back({Kind::Resnet, resnets_.size() - 1, in, -1, o, s});
    return o;
  }
  int attention(const std::string& name, int in) {
    const ImageShape s = shape_of(in);
    const Index heads = o_.attention_head_dim > 0 ? s.channels / o_.attention_head_dim : 1;
    if (o_.attention_head_dim > 0 && (heads == 0 || s.channels % o_.attention_head_dim != 0))
      throw ShapeError(detail::message(
          "UNet: attention_head_dim ", o_.attention_head_dim, " does not divide the ", s.channels, " channels of '",
          name, "'; pick a head dim dividing every attention level's channels, or 0 for one head"));
    attns_.emplace_back(layout_, name, s.channels, o_.groups, heads);
    const int o = add_map(s);
    ops_.push_back({Kind::Attention, attns_.size() - 1, in, -1, o, s});
    return o;
  }

  void build() {
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

  S* map(Context& c, int m) const { return c.maps.data() + c.max_rows * maps_[static_cast<std::size_t>(m)].offset; }
  S* grad_map(Context& c, int m) const {
    return c.grads.data() + (m < 0 ? 0 : c.max_rows * (input_dim() + maps_[static_cast<std::size_t>(m)].offset));
  }

  /// τ from the step's time: the integer training timestep (checked at the door).
  static Index timestep_of(S time) {
    const double t = static_cast<double>(time), r = std::round(t);
    if (!std::isfinite(t) || std::fabs(t - r) > 1e-3 * std::max(1.0, std::fabs(t)))
      throw InvalidArgumentError(
          detail::message("UNet: the step's time ", t,
                          " is not an integer timestep; the UNet embeds the DDPM training timestep τ, "
                          "which DdpmProcess passes as time (a process with times in [0, 1] needs a net with a Fourier "
                          "time embedding)"));
    return static_cast<Index>(r);
  }

  void check_step(const Step<S>& s, MatrixView<S> out, const Context& ctx) const {
    const Index rows = s.x.rows();
    if (s.x.cols() != input_dim() || out.cols() != output_dim())
      throw ShapeError(detail::message("UNet: rows of ", s.x.cols(), " values in and ", out.cols(),
                                       " out, but the net takes flattened [C, H, W] = [", o_.channels, ", ", o_.height,
                                       ", ", o_.width, "] images (", input_dim(),
                                       " values a row); check the image size and channel count in UNet::Options"));
    if (rows <= 0 || rows > ctx.max_rows || out.rows() != rows)
      throw ShapeError(
          detail::message("UNet: ", rows, " rows in, ", out.rows(), " out, for a context of ", ctx.max_rows,
                          " rows; make the context with make_context(rows) and pass one output row per input row"));
  }

  void run(const S* p, const Step<S>& s, MatrixView<S> out, Context& ctx, bool keep) const {
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

  void accumulate_gradient(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g) const {
    walk_backward(p, ctx, d_out, g, detail::NoProjectionHook{});
  }

  /// The backward of every op in reverse; g = null forms no parameter gradient.
  template <class Hook>
  void walk_backward(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g, Hook&& hook) const {
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

  Options o_;
  ParameterLayout layout_;
  TimestepEmbedding time_;
  std::vector<Conv2d> convs_;
  std::vector<ResnetBlock2d> resnets_;
  std::vector<Attention2d> attns_;
  GroupNorm norm_out_;
  std::vector<Map> maps_;
  std::vector<Op> ops_;
  Index map_floats_ = 0;
  int out_map_ = -1;
};

}  // namespace rtb
