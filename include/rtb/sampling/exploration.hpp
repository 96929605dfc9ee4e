// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The reference's exploration schedule (`get_exploration_std` with exploration_wd): an
/// exploration level e(k) = initial for k < hold_until, then initial·max(0, 1 − k/zero_at). The
/// level is in the process's own unit (GaussianProcess: an extra sampling standard deviation;
/// MaskedCategoricalProcess: the weight of a uniform token mixed into the sampling distribution).
/// Off-policy trajectories it produces are scored under the un-widened kernel, so RTB's fixed
/// point is unchanged. Left unset, `initial` is the process's own default (default_exploration:
/// √5 step standard deviations for GaussianProcess, the reference's 0.5 at σ² = 5, T = 100, and
/// therefore the same relative widening at any scale; 0 for the masked process).

#include <algorithm>
#include <cstdint>
#include <optional>

namespace rtb {

struct ExplorationSchedule {
  std::optional<double> initial = std::nullopt;  ///< level while k < hold_until; unset = the process's default
  std::int64_t hold_until = 500;
  std::int64_t zero_at = 4500;  ///< the level reaches 0 here (and stays there)

  /// The level at iteration k (initial must be set: see resolved()).
  double operator()(std::int64_t iteration) const {
    const double init = initial.value_or(0.0);
    if (init <= 0) return 0;
    if (iteration < hold_until) return init;
    if (zero_at <= 0) return 0;
    return init * std::max(0.0, 1.0 - static_cast<double>(iteration) / static_cast<double>(zero_at));
  }
  /// This schedule with an unset initial level replaced by `process_default`.
  ExplorationSchedule resolved(double process_default) const {
    ExplorationSchedule s = *this;
    if (!s.initial) s.initial = process_default;
    return s;
  }
  static ExplorationSchedule none() { return {0.0, 0, 0}; }
};

}  // namespace rtb
