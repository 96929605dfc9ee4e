// SPDX-License-Identifier: Apache-2.0
#pragma once
// The libtorch peer of rtb::UNet: diffusers' UNet2DModel written with torch::nn, module for
// module, so that its named_parameters() keys are the state_dict keys docs/unet.md lists and rtb's
// weights copy in by name (load_parameters below). Only the configurations rtb::UNet has:
// positional time embedding (flip_sin_to_cos, freq_shift 0), conv down/upsamplers, SiLU,
// GroupNorm eps 1e-5, ResnetBlock2D with the default time-embedding norm, Attention with a
// residual connection and GroupNorm first. rtb_torch_check compares the two nets' ε, ∂/∂x and
// every parameter gradient on the same weights; rtb_torch_bench times them side by side.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <rtb/net/model.hpp>
#include <rtb/net/unet.hpp>

namespace rtb_peer {

namespace nn = torch::nn;

inline nn::Conv2d conv3x3(std::int64_t in, std::int64_t out, std::int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}
inline nn::GroupNorm group_norm(std::int64_t groups, std::int64_t channels) {
  return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(1e-5));
}

/// diffusers' ResnetBlock2D (time_embedding_norm "default", output_scale_factor 1, no dropout).
struct ResnetBlockImpl : nn::Module {
  ResnetBlockImpl(std::int64_t in, std::int64_t out, std::int64_t temb, std::int64_t groups) {
    norm1 = register_module("norm1", group_norm(groups, in));
    conv1 = register_module("conv1", conv3x3(in, out));
    time_emb_proj = register_module("time_emb_proj", nn::Linear(temb, out));
    norm2 = register_module("norm2", group_norm(groups, out));
    conv2 = register_module("conv2", conv3x3(out, out));
    if (in != out) conv_shortcut = register_module("conv_shortcut", nn::Conv2d(nn::Conv2dOptions(in, out, 1)));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) {
    torch::Tensor h = conv1->forward(torch::silu(norm1->forward(x)));
    h = h + time_emb_proj->forward(torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);
    h = conv2->forward(torch::silu(norm2->forward(h)));
    return (conv_shortcut ? conv_shortcut->forward(x) : x) + h;
  }
  nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  nn::Linear time_emb_proj{nullptr};
};
TORCH_MODULE(ResnetBlock);

/// diffusers' Attention as a UNet uses it: GroupNorm, q/k/v/out Linear over channels, heads of
/// d = C/heads channels, softmax(q·kᵀ/√d)·v, residual connection.
struct AttentionImpl : nn::Module {
  AttentionImpl(std::int64_t channels, std::int64_t groups, std::int64_t heads) : heads_(heads) {
    group_norm = register_module("group_norm", rtb_peer::group_norm(groups, channels));
    to_q = register_module("to_q", nn::Linear(channels, channels));
    to_k = register_module("to_k", nn::Linear(channels, channels));
    to_v = register_module("to_v", nn::Linear(channels, channels));
    to_out = register_module("to_out", nn::ModuleList(nn::Linear(channels, channels)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const std::int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), d = C / heads_;
    const torch::Tensor h = group_norm->forward(x).view({B, C, H * W}).transpose(1, 2);  // [B, N, C]
    auto split = [&](const torch::Tensor& t) { return t.view({B, H * W, heads_, d}).transpose(1, 2); };  // [B, h, N, d]
    const torch::Tensor q = split(to_q->forward(h)), k = split(to_k->forward(h)), v = split(to_v->forward(h));
    const torch::Tensor p = torch::softmax(torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d)), -1);
    const torch::Tensor o = torch::matmul(p, v).transpose(1, 2).reshape({B, H * W, C});
    const torch::Tensor y = to_out[0]->as<nn::Linear>()->forward(o);
    return y.transpose(1, 2).reshape({B, C, H, W}) + x;
  }
  std::int64_t heads_;
  nn::GroupNorm group_norm{nullptr};
  nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  nn::ModuleList to_out{nullptr};
};
TORCH_MODULE(Attention);

/// A module holding one 3×3 conv named "conv" (diffusers' Downsample2D / Upsample2D).
struct ResampleImpl : nn::Module {
  ResampleImpl(std::int64_t channels, bool down) : down_(down) {
    conv = register_module("conv", conv3x3(channels, channels, down ? 2 : 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (down_) return conv->forward(x);
    return conv->forward(torch::nn::functional::interpolate(
        x, torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
  }
  bool down_;
  nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Resample);

/// A down, mid or up block: resnets, optionally attentions after each, optionally one resampler.
struct BlockImpl : nn::Module {
  BlockImpl() {
    resnets = register_module("resnets", nn::ModuleList());
  }
  void add_attentions() { attentions = register_module("attentions", nn::ModuleList()); }
  void add_resampler(std::int64_t channels, bool down) {
    resamplers = register_module(down ? "downsamplers" : "upsamplers", nn::ModuleList(Resample(channels, down)));
  }
  nn::ModuleList resnets{nullptr}, attentions{nullptr}, resamplers{nullptr};
};
TORCH_MODULE(Block);

struct UNetImpl : nn::Module {
  explicit UNetImpl(const rtb::UNet<float>::Options& o) : o_(o) {
    const std::vector<std::int64_t> C(o.channels_per_level.begin(), o.channels_per_level.end());
    const auto L = static_cast<std::int64_t>(C.size());
    const std::int64_t n = o.blocks_per_level, g = o.groups, temb = 4 * C[0];
    auto has_attention = [&](std::int64_t i) {
      return std::find(o.attention_levels.begin(), o.attention_levels.end(), i) != o.attention_levels.end();
    };
    auto heads = [&](std::int64_t c) { return o.attention_head_dim > 0 ? c / o.attention_head_dim : std::int64_t{1}; };
    time_embedding = register_module("time_embedding", nn::Sequential());
    time_embedding->push_back("linear_1", nn::Linear(C[0], temb));
    time_embedding->push_back("act", nn::SiLU());
    time_embedding->push_back("linear_2", nn::Linear(temb, temb));
    conv_in = register_module("conv_in", conv3x3(o.channels, C[0]));
    down_blocks = register_module("down_blocks", nn::ModuleList());
    up_blocks = register_module("up_blocks", nn::ModuleList());
    std::vector<std::int64_t> skips = {C[0]};
    std::int64_t c = C[0];
    for (std::int64_t i = 0; i < L; ++i) {
      Block b;
      if (has_attention(i)) b->add_attentions();
      for (std::int64_t j = 0; j < n; ++j) {
        b->resnets->push_back(ResnetBlock(c, C[i], temb, g));
        c = C[i];
        if (has_attention(i)) b->attentions->push_back(Attention(c, g, heads(c)));
        skips.push_back(c);
      }
      if (i + 1 < L) {
        b->add_resampler(c, true);
        skips.push_back(c);
      }
      down_blocks->push_back(b);
    }
    mid_block = register_module("mid_block", Block());
    mid_block->resnets->push_back(ResnetBlock(c, c, temb, g));
    if (o.mid_attention) {
      mid_block->add_attentions();
      mid_block->attentions->push_back(Attention(c, g, heads(c)));
    }
    mid_block->resnets->push_back(ResnetBlock(c, c, temb, g));
    for (std::int64_t i = L - 1; i >= 0; --i) {
      Block b;
      if (has_attention(i)) b->add_attentions();
      for (std::int64_t j = 0; j <= n; ++j) {
        b->resnets->push_back(ResnetBlock(c + skips.back(), C[i], temb, g));
        skips.pop_back();
        c = C[i];
        if (has_attention(i)) b->attentions->push_back(Attention(c, g, heads(c)));
      }
      if (i > 0) b->add_resampler(c, false);
      up_blocks->push_back(b);
    }
    conv_norm_out = register_module("conv_norm_out", group_norm(g, C[0]));
    conv_out = register_module("conv_out", conv3x3(C[0], o.channels));
  }

  /// diffusers' get_timestep_embedding(τ, C₀, flip_sin_to_cos = True, downscale_freq_shift = 0), [1, C₀].
  torch::Tensor sinusoid(std::int64_t tau, torch::Dtype dtype) const {
    const std::int64_t dim = o_.channels_per_level[0], half = dim / 2;
    const torch::Tensor exponent =
        -std::log(10000.0) * torch::arange(half, torch::TensorOptions().dtype(dtype)) / static_cast<double>(half);
    const torch::Tensor a = static_cast<double>(tau) * torch::exp(exponent);
    torch::Tensor e = torch::cat({torch::cos(a), torch::sin(a)}).unsqueeze(0);
    if (dim % 2 == 1) e = torch::nn::functional::pad(e, torch::nn::functional::PadFuncOptions({0, 1}));
    return e;
  }

  /// ε for x [B, C, H, W] at training timestep τ (one τ for the batch, as rtb's trainer steps).
  torch::Tensor forward(const torch::Tensor& x, std::int64_t tau) {
    const torch::Tensor temb = time_embedding->forward(sinusoid(tau, x.scalar_type()));
    torch::Tensor h = conv_in->forward(x);
    std::vector<torch::Tensor> skips = {h};
    for (const auto& m : *down_blocks) {
      auto* b = m->as<Block>();
      for (std::size_t j = 0; j < b->resnets->size(); ++j) {
        h = b->resnets[j]->as<ResnetBlock>()->forward(h, temb);
        if (b->attentions) h = b->attentions[j]->as<Attention>()->forward(h);
        skips.push_back(h);
      }
      if (b->resamplers) {
        h = b->resamplers[0]->as<Resample>()->forward(h);
        skips.push_back(h);
      }
    }
    h = mid_block->resnets[0]->as<ResnetBlock>()->forward(h, temb);
    if (mid_block->attentions) h = mid_block->attentions[0]->as<Attention>()->forward(h);
    h = mid_block->resnets[1]->as<ResnetBlock>()->forward(h, temb);
    for (const auto& m : *up_blocks) {
      auto* b = m->as<Block>();
      for (std::size_t j = 0; j < b->resnets->size(); ++j) {
        h = b->resnets[j]->as<ResnetBlock>()->forward(torch::cat({h, skips.back()}, 1), temb);
        skips.pop_back();
        if (b->attentions) h = b->attentions[j]->as<Attention>()->forward(h);
      }
      if (b->resamplers) h = b->resamplers[0]->as<Resample>()->forward(h);
    }
    return conv_out->forward(torch::silu(conv_norm_out->forward(h)));
  }

  rtb::UNet<float>::Options o_;
  nn::Sequential time_embedding{nullptr};
  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  Block mid_block{nullptr};
  nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(UNet);

/// The torch twin of an rtb UNet's options (float or double; the options do not depend on S).
template <class S>
rtb::UNet<float>::Options options_of(const typename rtb::UNet<S>::Options& o) {
  rtb::UNet<float>::Options f;
  f.height = o.height;
  f.width = o.width;
  f.channels = o.channels;
  f.channels_per_level = o.channels_per_level;
  f.blocks_per_level = o.blocks_per_level;
  f.attention_levels = o.attention_levels;
  f.mid_attention = o.mid_attention;
  f.groups = o.groups;
  f.attention_head_dim = o.attention_head_dim;
  f.seed = o.seed;
  return f;
}

/// Copies every tensor of an rtb UNet into the torch module by name, checking that the two
/// parameter lists are the same names with the same shapes (docs/unet.md's claim, tested).
template <class S>
void load_parameters(UNet& dst, const rtb::Model<rtb::UNet<S>>& src) {
  torch::NoGradGuard no_grad;
  const auto params = src.params();
  std::size_t copied = 0;
  for (auto& item : dst->named_parameters()) {
    const rtb::ParameterTensor* t = src.layout().find(item.key());
    if (!t) throw std::runtime_error("rtb's UNet has no tensor named " + item.key());
    std::vector<std::int64_t> shape(t->shape.begin(), t->shape.end());
    if (item.value().sizes().vec() != shape) throw std::runtime_error("shape mismatch for " + item.key());
    std::vector<double> v(static_cast<std::size_t>(t->size));
    for (rtb::Index i = 0; i < t->size; ++i) v[static_cast<std::size_t>(i)] = static_cast<double>(params[static_cast<std::size_t>(t->offset + i)]);
    item.value().copy_(torch::from_blob(v.data(), item.value().sizes(), torch::kFloat64).to(item.value().dtype()));
    ++copied;
  }
  if (copied != src.layout().tensors().size())
    throw std::runtime_error("the torch UNet has " + std::to_string(copied) + " tensors, rtb's " +
                             std::to_string(src.layout().tensors().size()));
}

}  // namespace rtb_peer
