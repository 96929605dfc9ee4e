// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Adam (Kingma & Ba), exactly as torch.optim.Adam computes it (no weight decay):
///
///     m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
///     θ ← θ − (lr/(1−β₁ᵏ)) · m / (√v/√(1−β₂ᵏ) + ε).
///
/// The state (m, v, k) is public so checkpoints can save it and a fine-tuning run can start from
/// the prior's moments, as the reference does. The moments live in the parameters' memory space;
/// the element update is math::adam_update, the same in every space.

#include <cmath>
#include <span>
#include <vector>

#include "rtb/math/adam.hpp"
#include "rtb/space.hpp"
#include "rtb/error.hpp"

namespace rtb {

template <class S = float, class Space = HostSpace>
class Adam {
 public:
  struct Options {
    S learning_rate = S(1e-3);
    S beta1 = S(0.9);
    S beta2 = S(0.999);
    S epsilon = S(1e-8);
  };
  using Buffer = typename Space::template buffer<S>;

  Adam() = default;
  Adam(Index size, const Options& o) : o_(o), m_(static_cast<std::size_t>(size)), v_(static_cast<std::size_t>(size)) {
    if (!(o.learning_rate > S(0)) || !(o.beta1 >= S(0) && o.beta1 < S(1)) || !(o.beta2 >= S(0) && o.beta2 < S(1)))
      throw InvalidArgumentError(detail::message("Adam: need learning_rate > 0 and betas in [0, 1), got lr=",
                                                 o.learning_rate, " beta1=", o.beta1, " beta2=", o.beta2));
    Space::fill(std::span<S>(m_), S(0));
    Space::fill(std::span<S>(v_), S(0));
  }

  /// One update of `params` with gradient `grad` (same size as the optimiser, in its space).
  void step(std::span<S> params, std::span<const S> grad) {
    RTB_ASSERT(params.size() == m_.size() && grad.size() == m_.size());
    ++steps_;
    const double bc1 = 1.0 - std::pow(static_cast<double>(o_.beta1), static_cast<double>(steps_));
    const double bc2 = 1.0 - std::pow(static_cast<double>(o_.beta2), static_cast<double>(steps_));
    const math::AdamStep<S> c{o_.beta1, o_.beta2, o_.epsilon, static_cast<S>(static_cast<double>(o_.learning_rate) / bc1),
                              static_cast<S>(1.0 / std::sqrt(bc2))};
    Space::adam(params, grad, std::span<S>(m_), std::span<S>(v_), c);
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
  Buffer m_, v_;
  std::int64_t steps_ = 0;
};

}  // namespace rtb
