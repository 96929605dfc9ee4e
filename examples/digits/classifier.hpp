// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The digit classifier behind the image example's rewards, r(x) from p(c | x): a small CNN on
/// rtb's own layers (rtb::Conv2d, rtb::Linear, SiLU) with their hand-written backward passes,
/// so that training it needs no framework and ∇ₓ log p(c | x) — what DPS and classifier
/// guidance need — comes from the same backward pass:
///
///     x [B, 1, H, W] → conv 3×3 (c1) → SiLU → conv 3×3 stride 2 (c2) → SiLU
///       → conv 3×3 stride 2 (c3) → SiLU → flatten → linear (hidden) → SiLU  = the features
///       → linear (classes) = the logits.
///
/// Inputs are pixels scaled to [−1, 1] (the diffusion model's data space). The features (the
/// penultimate layer, after its SiLU) are what the example's Fréchet distance and diversity use.
/// Tensors are named as PyTorch would (`conv1.weight`, …, `fc2.bias`), so save_parameters and
/// load_parameters ship it as one .npy per tensor.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <rtb/net/conv2d.hpp>
#include <rtb/net/image.hpp>
#include <rtb/net/linear.hpp>
#include <rtb/net/parameters.hpp>
#include <rtb/net/silu.hpp>
#include <rtb/space.hpp>
#include <vector>

namespace digits {

using rtb::Index;

struct ClassifierOptions {
  Index height = 28, width = 28;  ///< input size (28×28 MNIST; even sizes divisible by 4 keep the strides exact)
  Index c1 = 16, c2 = 32, c3 = 32;
  Index hidden = 64;  ///< the feature dimension
  Index classes = 10;
};

template <class S = float>
class Classifier {
 public:
  using Scalar = S;

  explicit Classifier(const ClassifierOptions& o = {}) : o_(o) {
    rtb::detail::check_positive("Classifier", "height", o.height);
    rtb::detail::check_positive("Classifier", "width", o.width);
    rtb::detail::check_positive("Classifier", "classes", o.classes);
    rtb::detail::check_positive("Classifier", "hidden", o.hidden);
    conv1_ = rtb::Conv2d(layout_, "conv1.", 1, o.c1, 3, 1);
    conv2_ = rtb::Conv2d(layout_, "conv2.", o.c1, o.c2, 3, 2);
    conv3_ = rtb::Conv2d(layout_, "conv3.", o.c2, o.c3, 3, 2);
    s1_ = {1, o.c1, o.height, o.width};
    s2_ = conv2_.output_shape(s1_);
    s3_ = conv3_.output_shape(s2_);
    flat_ = o.c3 * s3_.pixels();
    fc1_ = rtb::Linear(layout_, "fc1.", flat_, o.hidden);
    fc2_ = rtb::Linear(layout_, "fc2.", o.hidden, o.classes);
  }

  const ClassifierOptions& options() const { return o_; }
  const rtb::ParameterLayout& layout() const { return layout_; }
  Index num_params() const { return layout_.size(); }
  Index input_size() const { return o_.height * o_.width; }
  Index features() const { return o_.hidden; }
  Index classes() const { return o_.classes; }

  /// PyTorch's default initialisation of every layer, from `seed`.
  void init(S* params, std::uint64_t seed) const {
    conv1_.init_default(params, seed, 1);
    conv2_.init_default(params, seed, 2);
    conv3_.init_default(params, seed, 3);
    fc1_.init_default(params, seed, 4);
    fc2_.init_default(params, seed, 5);
  }

  /// Activations of one batch, kept for the backward pass; sized once per batch size.
  struct Workspace {
    Index batch = 0;
    std::vector<S> a1, d1, a2, d2, a3, d3, f, df, logits, g1, g2, g3, gf, scratch;
  };

  void resize(Workspace& ws, Index batch) const {
    if (ws.batch == batch) return;
    const auto n = [&](Index per) { return static_cast<std::size_t>(batch * per); };
    ws.batch = batch;
    ws.a1.assign(n(s1_.image_size()), S(0));
    ws.d1.assign(n(s1_.image_size()), S(0));
    ws.g1.assign(n(s1_.image_size()), S(0));
    ws.a2.assign(n(o_.c2 * s2_.pixels()), S(0));
    ws.d2.assign(ws.a2.size(), S(0));
    ws.g2.assign(ws.a2.size(), S(0));
    ws.a3.assign(n(flat_), S(0));
    ws.d3.assign(ws.a3.size(), S(0));
    ws.g3.assign(ws.a3.size(), S(0));
    ws.f.assign(n(o_.hidden), S(0));
    ws.df.assign(ws.f.size(), S(0));
    ws.gf.assign(ws.f.size(), S(0));
    ws.logits.assign(n(o_.classes), S(0));
    const rtb::ImageShape in{1, 1, o_.height, o_.width};
    ws.scratch.assign(static_cast<std::size_t>(std::max({conv1_.scratch_floats(in), conv2_.scratch_floats(s1_),
                                                         conv3_.scratch_floats(s2_), Index{1}})),
                      S(0));
  }

  /// logits = ws.logits [batch, classes]; features = ws.f [batch, hidden]. x is [batch, H·W].
  void forward(const S* params, const S* x, Index batch, Workspace& ws) const {
    resize(ws, batch);
    const rtb::ImageShape in{batch, 1, o_.height, o_.width};
    conv1_.forward(params, x, in, ws.a1.data(), ws.scratch.data());
    rtb::silu_inplace(ws.a1.data(), ws.d1.data(), static_cast<Index>(ws.a1.size()));
    conv2_.forward(params, ws.a1.data(), in.with_channels(o_.c1), ws.a2.data(), ws.scratch.data());
    rtb::silu_inplace(ws.a2.data(), ws.d2.data(), static_cast<Index>(ws.a2.size()));
    const rtb::ImageShape in3{batch, o_.c2, s2_.height, s2_.width};
    conv3_.forward(params, ws.a2.data(), in3, ws.a3.data(), ws.scratch.data());
    rtb::silu_inplace(ws.a3.data(), ws.d3.data(), static_cast<Index>(ws.a3.size()));
    fc1_.forward(params, rtb::ConstMatrixView<S>(ws.a3.data(), batch, flat_),
                 rtb::MatrixView<S>(ws.f.data(), batch, o_.hidden));
    rtb::silu_inplace(ws.f.data(), ws.df.data(), static_cast<Index>(ws.f.size()));
    fc2_.forward(params, rtb::ConstMatrixView<S>(ws.f.data(), batch, o_.hidden),
                 rtb::MatrixView<S>(ws.logits.data(), batch, o_.classes));
  }

  /// After forward on the same x: accumulates ∂/∂params of Σ dlogits·logits into `grad` (if not
  /// null) and writes ∂/∂x into `dx` (if not null), [batch, H·W].
  void backward(const S* params, const S* x, Index batch, const S* dlogits, Workspace& ws, S* grad, S* dx) const {
    RTB_ASSERT(ws.batch == batch);
    const rtb::ImageShape in{batch, 1, o_.height, o_.width};
    rtb::MatrixView<S> gf(ws.gf.data(), batch, o_.hidden);
    fc2_.backward(params, rtb::ConstMatrixView<S>(ws.f.data(), batch, o_.hidden),
                  rtb::ConstMatrixView<S>(dlogits, batch, o_.classes), grad, &gf);
    rtb::silu_backward_inplace(ws.gf.data(), ws.df.data(), static_cast<Index>(ws.gf.size()));
    rtb::MatrixView<S> g3(ws.g3.data(), batch, flat_);
    fc1_.backward(params, rtb::ConstMatrixView<S>(ws.a3.data(), batch, flat_),
                  rtb::ConstMatrixView<S>(ws.gf.data(), batch, o_.hidden), grad, &g3);
    rtb::silu_backward_inplace(ws.g3.data(), ws.d3.data(), static_cast<Index>(ws.g3.size()));
    const rtb::ImageShape in3{batch, o_.c2, s2_.height, s2_.width};
    conv3_.backward(params, ws.a2.data(), in3, ws.g3.data(), grad, ws.g2.data(), rtb::GradientMode::Overwrite,
                    ws.scratch.data());
    rtb::silu_backward_inplace(ws.g2.data(), ws.d2.data(), static_cast<Index>(ws.g2.size()));
    conv2_.backward(params, ws.a1.data(), in.with_channels(o_.c1), ws.g2.data(), grad, ws.g1.data(),
                    rtb::GradientMode::Overwrite, ws.scratch.data());
    rtb::silu_backward_inplace(ws.g1.data(), ws.d1.data(), static_cast<Index>(ws.g1.size()));
    conv1_.backward(params, x, in, ws.g1.data(), grad, dx, rtb::GradientMode::Overwrite, ws.scratch.data());
  }

 private:
  ClassifierOptions o_;
  rtb::ParameterLayout layout_;
  rtb::Conv2d conv1_, conv2_, conv3_;
  rtb::Linear fc1_, fc2_;
  rtb::ImageShape s1_{}, s2_{}, s3_{};
  Index flat_ = 0;
};

/// Mean cross-entropy of `logits` [batch, classes] against `labels`, and (if `dlogits` is not
/// null) its gradient (softmax − one-hot)/batch. Computed in double per row.
template <class S>
double cross_entropy(const S* logits, const std::uint8_t* labels, Index batch, Index classes, S* dlogits) {
  double loss = 0;
  for (Index r = 0; r < batch; ++r) {
    const S* l = logits + r * classes;
    double top = l[0];
    for (Index c = 1; c < classes; ++c) top = std::max(top, static_cast<double>(l[c]));
    double sum = 0;
    for (Index c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(l[c]) - top);
    const double lse = top + std::log(sum);
    loss += lse - static_cast<double>(l[labels[r]]);
    if (dlogits)
      for (Index c = 0; c < classes; ++c)
        dlogits[r * classes + c] = static_cast<S>(
            (std::exp(static_cast<double>(l[c]) - lse) - (c == labels[r] ? 1.0 : 0.0)) / static_cast<double>(batch));
  }
  return loss / static_cast<double>(batch);
}

/// Index of the largest logit of each row.
template <class S>
std::uint8_t argmax_row(const S* logits, Index classes) {
  return static_cast<std::uint8_t>(std::max_element(logits, logits + classes) - logits);
}

}  // namespace digits
