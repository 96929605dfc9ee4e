// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The reference's exploration schedule (`get_exploration_std` with exploration_wd): extra
/// sampling standard deviation σ_expl(k) = initial for k < hold_until, then
/// initial·max(0, 1 − k/zero_at). The off-policy trajectories it produces are scored under the
/// un-inflated kernel, so RTB's fixed point is unchanged.

#include <algorithm>
#include <cstdint>

namespace rtb {

struct ExplorationSchedule {
  double initial = 0.5;         ///< σ_expl while k < hold_until (0 disables exploration)
  std::int64_t hold_until = 500;
  std::int64_t zero_at = 4500;  ///< σ_expl reaches 0 here (and stays there)

  double operator()(std::int64_t iteration) const {
    if (initial <= 0) return 0;
    if (iteration < hold_until) return initial;
    if (zero_at <= 0) return 0;
    return initial * std::max(0.0, 1.0 - static_cast<double>(iteration) / static_cast<double>(zero_at));
  }
  static ExplorationSchedule none() { return {0.0, 0, 0}; }
};

}  // namespace rtb
