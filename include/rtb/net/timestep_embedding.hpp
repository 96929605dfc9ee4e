// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The DDPM timestep embedding of diffusers' UNet2DModel: the sinusoidal projection
/// (`get_timestep_embedding`, module `time_proj`, no parameters) of an integer timestep τ,
///
///     h = ⌊dim/2⌋,  f_i = exp(−ln(10000)·i / (h − shift)),  a_i = τ·f_i   (i = 0 … h−1),
///     e = [cos a, sin a]  (flip_sin_to_cos = true, UNet2DModel's default)
///       = [sin a, cos a]  (flip_sin_to_cos = false, get_timestep_embedding's own default),
///
/// a trailing 0 when dim is odd, followed by diffusers' TimestepEmbedding MLP (module
/// `time_embedding`, tensors `<prefix>linear_1.*`, `<prefix>linear_2.*`):
///
///     temb = Linear₂(SiLU(Linear₁(e)))   (dim → embed → embed; UNet2DModel: dim = C₀, embed = 4·C₀).
///
/// UNet2DModel uses shift = freq_shift = 0. The arithmetic runs in S in torch's order (f_i in
/// float from a float exponent, then τ·f_i, then sin/cos), so that in float the features are
/// torch's float32 ones to within an ulp of exp and sin. One τ per call (the trainer steps all rows
/// at one timestep): the embedding is one vector for the whole batch, computed once per call, and
/// each ResnetBlock2d adds its own projection of SiLU(temb) (its `time_emb_proj`).

#include <cmath>
#include <cstdint>
#include <string>

#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/net/image.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/silu.hpp"

namespace rtb {

/// out[0 … dim) = the sinusoidal embedding of `timestep` (formula above).
template <class S>
void sinusoidal_timestep_embedding(Index timestep, Index dim, S* out, bool flip_sin_to_cos = true,
                                   double freq_shift = 0.0, double max_period = 10000.0) {
  const Index half = dim / 2;
  const S log_period = static_cast<S>(-std::log(max_period)),
          denom = static_cast<S>(static_cast<double>(half) - freq_shift);
  S* cos_part = out + (flip_sin_to_cos ? 0 : half);
  S* sin_part = out + (flip_sin_to_cos ? half : 0);
  for (Index i = 0; i < half; ++i) {
    const S freq = std::exp(log_period * static_cast<S>(i) / denom);
    const S angle = static_cast<S>(timestep) * freq;
    sin_part[i] = std::sin(angle);
    cos_part[i] = std::cos(angle);
  }
  if (dim % 2 == 1) out[dim - 1] = S(0);
}

class TimestepEmbedding {
 public:
  TimestepEmbedding() = default;
  /// Registers `<prefix>linear_1.weight` [embed, channels], `<prefix>linear_1.bias` [embed],
  /// `<prefix>linear_2.weight` [embed, embed], `<prefix>linear_2.bias` [embed]. `channels` is the
  /// sinusoid's width. Throws InvalidArgumentError for widths below 2 or 1, or a shift ≥ ⌊channels/2⌋.
  TimestepEmbedding(ParameterLayout& layout, const std::string& prefix, Index channels, Index embed,
                    bool flip_sin_to_cos = true, double freq_shift = 0.0)
      : channels_(channels), embed_(embed), flip_(flip_sin_to_cos), shift_(freq_shift) {
    const std::string name = "TimestepEmbedding '" + prefix + "'";
    if (channels < 2)
      throw InvalidArgumentError(detail::message(name, ": the sinusoid needs at least 2 channels, got ", channels,
                                                 "; UNet2DModel uses block_out_channels[0]"));
    detail::check_positive(name, "embed dim", embed);
    if (!(freq_shift < static_cast<double>(channels / 2)))
      throw InvalidArgumentError(detail::message(name, ": downscale_freq_shift ", freq_shift,
                                                 " must be below channels/2 = ", channels / 2,
                                                 " (the frequency exponent divides by their difference); UNet2DModel "
                                                 "uses 0"));
    l1_ = Linear(layout, prefix + "linear_1.", channels, embed);
    l2_ = Linear(layout, prefix + "linear_2.", embed, embed);
  }

  Index channels() const { return channels_; }
  Index out() const { return embed_; }
  const Linear& linear_1() const { return l1_; }
  const Linear& linear_2() const { return l2_; }
  /// Floats a forward keeps for backward (also used as its workspace when not training): the
  /// sinusoid, SiLU(Linear₁(e)) and SiLU' — channels + 2·embed.
  Index context_floats() const { return channels_ + 2 * embed_; }
  /// Floats of scratch a backward needs (∂/∂ of the hidden layer).
  Index scratch_floats() const { return embed_; }

  /// temb (embed values) = the embedding of `timestep`; fills `context`.
  template <class S>
  void forward(const S* params, Index timestep, S* temb, S* context) const {
    S* e = context;              // channels
    S* hidden = e + channels_;   // embed, after SiLU
    S* deriv = hidden + embed_;  // embed, SiLU'
    sinusoidal_timestep_embedding(timestep, channels_, e, flip_, shift_);
    l1_.forward(params, ConstMatrixView<S>(e, 1, channels_), MatrixView<S>(hidden, 1, embed_));
    silu_inplace(hidden, deriv, embed_);
    l2_.forward(params, ConstMatrixView<S>(hidden, 1, embed_), MatrixView<S>(temb, 1, embed_));
  }

  /// grad += ∂⟨d_temb, temb⟩/∂params for the forward that filled `context` (τ has no gradient).
  template <class S>
  void backward(const S* params, const S* d_temb, const S* context, S* grad, S* scratch) const {
    const S* e = context;
    const S* hidden = e + channels_;
    const S* deriv = hidden + embed_;
    MatrixView<S> d_hidden(scratch, 1, embed_);
    l2_.backward(params, ConstMatrixView<S>(hidden, 1, embed_), ConstMatrixView<S>(d_temb, 1, embed_), grad, &d_hidden);
    silu_backward_inplace(scratch, deriv, embed_);
    l1_.backward(params, ConstMatrixView<S>(e, 1, channels_), const_view(d_hidden), grad,
                 static_cast<MatrixView<S>*>(nullptr));
  }

  /// PyTorch-default Linears (layer ids layer_id and layer_id + 1).
  template <class S>
  void init_default(S* params, std::uint64_t seed, std::uint32_t layer_id) const {
    l1_.init_default(params, seed, layer_id);
    l2_.init_default(params, seed, layer_id + 1);
  }

 private:
  Index channels_ = 0, embed_ = 0;
  bool flip_ = true;
  double shift_ = 0.0;
  Linear l1_, l2_;
};

}  // namespace rtb
