// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Adam (Kingma & Ba), exactly as torch.optim.Adam computes it (no weight decay):
///
///     m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
///     θ ← θ − (lr/(1−β₁ᵏ)) · m / (√v/√(1−β₂ᵏ) + ε).
///
/// The state (m, v, k) is public so checkpoints can save it and a fine-tuning run can start from
/// the prior's moments, as the reference does.

#include <cmath>
#include <span>
#include <vector>

#include "rtb/config.hpp"
#include "rtb/error.hpp"

namespace rtb {

template <class S = float>
class Adam {
 public:
  struct Options {
    S learning_rate = S(1e-3);
    S beta1 = S(0.9);
    S beta2 = S(0.999);
    S epsilon = S(1e-8);
  };

  Adam() = default;
  Adam(Index size, const Options& o) : o_(o), m_(static_cast<std::size_t>(size), S(0)), v_(m_) {
    if (!(o.learning_rate > S(0)) || !(o.beta1 >= S(0) && o.beta1 < S(1)) || !(o.beta2 >= S(0) && o.beta2 < S(1)))
      throw InvalidArgumentError(detail::message("Adam: need learning_rate > 0 and betas in [0, 1), got lr=",
                                                 o.learning_rate, " beta1=", o.beta1, " beta2=", o.beta2));
  }

  /// One update of `params` with gradient `grad` (same size as the optimiser).
  void step(std::span<S> params, std::span<const S> grad) {
    RTB_ASSERT(params.size() == m_.size() && grad.size() == m_.size());
    ++steps_;
    const double bc1 = 1.0 - std::pow(static_cast<double>(o_.beta1), static_cast<double>(steps_));
    const double bc2 = 1.0 - std::pow(static_cast<double>(o_.beta2), static_cast<double>(steps_));
    const S step_size = static_cast<S>(static_cast<double>(o_.learning_rate) / bc1);
    const S inv_sqrt_bc2 = static_cast<S>(1.0 / std::sqrt(bc2));
    const S b1 = o_.beta1, b2 = o_.beta2, eps = o_.epsilon;
    for (std::size_t i = 0; i < m_.size(); ++i) {
      const S g = grad[i];
      m_[i] = b1 * m_[i] + (S(1) - b1) * g;
      v_[i] = b2 * v_[i] + (S(1) - b2) * g * g;
      params[i] -= step_size * m_[i] / (std::sqrt(v_[i]) * inv_sqrt_bc2 + eps);
    }
  }

  const Options& options() const { return o_; }
  void set_learning_rate(S lr) { o_.learning_rate = lr; }
  Index size() const { return static_cast<Index>(m_.size()); }
  std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t k) { steps_ = k; }
  std::span<S> first_moment() { return m_; }
  std::span<S> second_moment() { return v_; }
  std::span<const S> first_moment() const { return m_; }
  std::span<const S> second_moment() const { return v_; }

 private:
  Options o_;
  std::vector<S> m_, v_;
  std::int64_t steps_ = 0;
};

}  // namespace rtb
