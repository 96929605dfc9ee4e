// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Importance-sampling diagnostics from on-policy trajectories of the posterior. With
/// log w_i = β·log r(x_T) + Σ log p_θ − Σ log p_φ (the log importance weight of τ_i for the
/// unnormalised target p_θ·r^β against the sampler p_φ):
///
///     log Ẑ_IS = log (1/n) Σ_i w_i       (consistent; a lower bound in expectation)
///     ELBO     = (1/n) Σ_i log w_i        (≤ log Z; the gap is KL(p_φ ‖ p_post) over trajectories)
///     ESS      = (Σ w_i)² / (n · Σ w_i²)  (effective sample size as a fraction of n, in (0, 1])

#include <cmath>
#include <limits>
#include <span>

#include "rtb/space.hpp"
#include "rtb/error.hpp"

namespace rtb {

struct LogPartitionEstimate {
  double log_z_is = 0;
  double elbo = 0;
  double ess = 0;  ///< fraction of n
  Index n = 0;     ///< finite weights used
};

template <class S>
LogPartitionEstimate estimate_log_partition(std::span<const S> log_w) {
  LogPartitionEstimate e;
  double top = -std::numeric_limits<double>::infinity(), sum_lw = 0;
  for (S v : log_w) {
    if (std::isnan(static_cast<double>(v)))
      throw NonFiniteError("estimate_log_partition: a log-weight is NaN; check the reward and the densities");
    if (v > top) top = v;
  }
  if (!(top > -std::numeric_limits<double>::infinity()))
    throw NonFiniteError("estimate_log_partition: every log-weight is -inf (r = 0 on all samples)");
  double s1 = 0, s2 = 0;
  for (S v : log_w) {
    const double lv = v;
    if (lv == -std::numeric_limits<double>::infinity()) continue;
    const double w = std::exp(lv - top);
    s1 += w;
    s2 += w * w;
    sum_lw += lv;
    ++e.n;
  }
  const auto n = static_cast<double>(log_w.size());
  e.log_z_is = top + std::log(s1 / n);
  e.elbo = e.n == static_cast<Index>(log_w.size()) ? sum_lw / n : -std::numeric_limits<double>::infinity();
  e.ess = s1 * s1 / (n * s2);
  return e;
}

}  // namespace rtb
