// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// What evaluating a sampler returns, and the reward checks every step and evaluation applies.

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "rtb/error.hpp"
#include "rtb/eval/log_partition.hpp"
#include "rtb/samples.hpp"
#include "rtb/train/config.hpp"

namespace rtb {

/// Samples and importance-sampling diagnostics of the current posterior.
template <class S, class V = S>
struct Evaluation {
  Samples<V> samples;             ///< x_T, [n, D]
  std::vector<S> log_r;           ///< log r(x_T)
  std::vector<S> log_weight;      ///< β log r + Σ log p_θ − Σ log p_φ
  LogPartitionEstimate log_partition;  ///< log_z_is: the importance-sampled log Z, the number to report
  double mean_log_r = 0;
  double mean_log_ratio = 0;      ///< KL(p_φ ‖ p_θ) estimate over trajectories
};

namespace detail {

/// Checks rewards: NaN and +∞ always throw; −∞ throws or is skipped by policy. Returns the
/// number skipped and sets valid[i].
template <class V, class S>
Index check_log_rewards(ConstMatrixView<V> x, std::span<const S> log_r, std::span<char> valid, ZeroRewardPolicy policy) {
  Index skipped = 0;
  const auto B = static_cast<Index>(log_r.size());
  for (Index i = 0; i < B; ++i) {
    const S v = log_r[static_cast<std::size_t>(i)];
    valid[static_cast<std::size_t>(i)] = 1;
    if (std::isfinite(static_cast<double>(v))) continue;
    std::string xs;
    for (Index d = 0; d < std::min<Index>(x.cols(), 8); ++d)
      xs += (d ? ", " : "") + std::to_string(static_cast<double>(x(i, d)));
    if (x.cols() > 8) xs += ", ...";
    if (std::isnan(static_cast<double>(v)))
      throw NonFiniteError(message("log_reward: sample ", i, " of ", B, " is NaN (x = [", xs,
                                   "]); check the reward's domain"));
    if (v > 0)
      throw NonFiniteError(message("log_reward: sample ", i, " of ", B, " is +inf (x = [", xs,
                                   "]); the reward must be finite"));
    if (policy == ZeroRewardPolicy::Throw)
      throw ZeroRewardError(message("log_reward: sample ", i, " of ", B, " is -inf, i.e. r = 0 (x = [", xs,
                                    "]); make the reward positive on the sampler's support, or set "
                                    "Config::on_zero_reward = ZeroRewardPolicy::Skip to leave such samples out"));
    valid[static_cast<std::size_t>(i)] = 0;
    ++skipped;
  }
  return skipped;
}

}  // namespace detail
}  // namespace rtb
