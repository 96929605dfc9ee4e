// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Fourier time embedding of the reference's 2-D denoiser (PIS), reusable by any denoiser:
///
///     θ_k = t·f_k + φ_k,  f = linspace(f_min, f_max, F) fixed, φ learned,
///     e   = Linear(H, out)(GELU(Linear(2F, H)([sin θ, cos θ]))),
///
/// with tensors `<prefix>timestep_phase` [1, F], `<prefix>t_model.0.*`, `<prefix>t_model.2.*` and
/// the frequencies f as the buffer `<prefix>pe` [1, F] (the reference's register_buffer: stored
/// and loaded with the weights, never trained), so a prior trained with other frequencies loads
/// with its own. One t per call: the embedding is computed once per batch, not per row.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "rtb/space.hpp"
#include "rtb/math/philox.hpp"
#include "rtb/net/gelu.hpp"
#include "rtb/net/linear.hpp"

namespace rtb {

class FourierTimeEmbedding {
 public:
  FourierTimeEmbedding() = default;
  FourierTimeEmbedding(ParameterLayout& layout, const std::string& prefix, Index harmonics, Index hidden, Index out,
                       double f_min = 0.1, double f_max = 100.0)
      : F_(harmonics), H_(hidden), O_(out) {
    phase_ = layout.add(prefix + "timestep_phase", {1, harmonics});
    l1_ = Linear(layout, prefix + "t_model.0.", 2 * harmonics, hidden);
    l2_ = Linear(layout, prefix + "t_model.2.", hidden, out);
    pe_ = layout.add_buffer(prefix + "pe", {1, harmonics});
    for (Index k = 0; k < harmonics; ++k)
      freq_.push_back(harmonics == 1 ? f_min : f_min + (f_max - f_min) * static_cast<double>(k) / static_cast<double>(harmonics - 1));
  }

  Index out() const { return O_; }
  /// Floats of scratch a forward/backward pair needs (kept between them).
  Index scratch_floats() const { return 4 * F_ + 4 * H_ + O_; }

  /// φ ~ N(0, 1), both Linears PyTorch-default, f = linspace(f_min, f_max, F).
  template <class S>
  void init(S* params, std::uint64_t seed, std::uint32_t layer_id) const {
    const math::NoiseKey key{seed, math::Stream::User, 0x9A5Eu + layer_id};
    for (Index k = 0; k < F_; ++k) params[phase_ + k] = math::normal<S>(key, static_cast<std::uint64_t>(k), 0, 0);
    for (Index k = 0; k < F_; ++k) params[pe_ + k] = static_cast<S>(freq_[static_cast<std::size_t>(k)]);
    l1_.init_default(params, seed, layer_id + 1);
    l2_.init_default(params, seed, layer_id + 2);
  }

  /// e (O values) = embedding of t; keeps what backward needs in scratch.
  template <class S>
  void forward(const S* params, S t, S* e, S* scratch) const {
    S* feat = scratch;      // 2F
    S* a = feat + 2 * F_;   // H, after GELU
    S* g = a + H_;          // H, GELU'
    for (Index k = 0; k < F_; ++k) {
      const S theta = t * params[pe_ + k] + params[phase_ + k];
      feat[k] = std::sin(theta);
      feat[F_ + k] = std::cos(theta);
    }
    l1_.forward(params, ConstMatrixView<S>(feat, 1, 2 * F_), MatrixView<S>(a, 1, H_));
    gelu_inplace(a, g, H_);
    l2_.forward(params, ConstMatrixView<S>(a, 1, H_), MatrixView<S>(e, 1, O_));
  }

  /// grad += ∂(d_e · e)/∂params for the last forward on this scratch.
  template <class S>
  void backward(const S* params, const S* d_e, S* grad, S* scratch) const {
    S* feat = scratch;
    S* a = feat + 2 * F_;
    S* g = a + H_;
    S* d_a = g + H_;          // H
    S* d_feat = d_a + H_;     // 2F
    MatrixView<S> d_a_view(d_a, 1, H_);
    l2_.backward(params, ConstMatrixView<S>(a, 1, H_), ConstMatrixView<S>(d_e, 1, O_), grad, &d_a_view);
    for (Index j = 0; j < H_; ++j) d_a[j] *= g[j];
    MatrixView<S> d_feat_view(d_feat, 1, 2 * F_);
    l1_.backward(params, ConstMatrixView<S>(feat, 1, 2 * F_), ConstMatrixView<S>(d_a, 1, H_), grad, &d_feat_view);
    for (Index k = 0; k < F_; ++k)  // ∂sin θ/∂φ = cos θ, ∂cos θ/∂φ = −sin θ
      grad[phase_ + k] += d_feat[k] * feat[F_ + k] - d_feat[F_ + k] * feat[k];
  }

 private:
  Index F_ = 0, H_ = 0, O_ = 0, phase_ = 0, pe_ = 0;
  Linear l1_, l2_;
  std::vector<double> freq_;
};

}  // namespace rtb
