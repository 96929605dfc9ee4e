// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Masking schedules for absorbing-state (masked) diffusion. α_k is the probability that a
/// generated position is still masked after k of T steps: α_0 = 1 (all masked), α_T = 0 (all
/// revealed). A position masked at step k is revealed during the step with probability
/// ρ_k = 1 − α_{k+1}/α_k, independently of the other positions; going backward, a position
/// revealed at step k+1 was masked at step k with probability (α_k − α_{k+1})/(1 − α_{k+1}).

#include <cmath>

#include "rtb/base.hpp"
#include "rtb/error.hpp"

namespace rtb {

enum class MaskingSchedule {
  Linear,  ///< α_k = 1 − k/T: every step reveals the same expected number of positions
  Cosine   ///< α_k = cos(π/2 · k/T): few reveals early, many late
};

class MaskingScheduleTable {
 public:
  MaskingScheduleTable() = default;
  MaskingScheduleTable(Index num_steps, MaskingSchedule kind) : T_(num_steps), kind_(kind) {
    if (num_steps <= 0)
      throw InvalidArgumentError(detail::message("masking schedule: num_steps must be positive, got ", num_steps));
  }
  Index num_steps() const { return T_; }
  MaskingSchedule kind() const { return kind_; }

  /// α_k, the probability of being masked after k steps.
  double alpha(Index k) const {
    if (k <= 0) return 1.0;
    if (k >= T_) return 0.0;
    const double s = static_cast<double>(k) / static_cast<double>(T_);
    return kind_ == MaskingSchedule::Linear ? 1.0 - s : std::cos(1.5707963267948966 * s);
  }
  /// ρ_k = P(revealed during step k | masked at step k).
  double reveal(Index k) const { return 1.0 - alpha(k + 1) / alpha(k); }
  /// P(masked at step k | revealed at step k + 1), the backward re-masking probability.
  double remask(Index k) const { return (alpha(k) - alpha(k + 1)) / (1.0 - alpha(k + 1)); }

 private:
  Index T_ = 1;
  MaskingSchedule kind_ = MaskingSchedule::Linear;
};

}  // namespace rtb
