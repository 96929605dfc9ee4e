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
    Index groups = 8;                                  ///< norm_num_groups (< every width: docs/unet.md)
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

  void build();

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

  void run(const S* p, const Step<S>& s, MatrixView<S> out, Context& ctx, bool keep) const;

  void accumulate_gradient(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g) const {
    walk_backward(p, ctx, d_out, g, detail::NoProjectionHook{});
  }

  /// The backward of every op in reverse; g = null forms no parameter gradient.
  template <class Hook>
  void walk_backward(const S* p, Context& ctx, ConstMatrixView<S> d_out, S* g, Hook&& hook) const;

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

#include "rtb/net/unet_passes.hpp"
