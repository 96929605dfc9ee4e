// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Relative Trajectory Balance (Venkatraman et al., 2024):
///
///     δ_i = log Z + Σ_t log p_φ − Σ_t log p_θ − β·log r(x_T),   L = (1/n) Σ_i ½·max(δ_i² − c, 0)
///
/// c = 0 is the reference's 2-D loss ½δ² averaged over the batch; c = 0.1 is its image/text
/// cut-off. ∂L/∂(Σ log p_φ)_i = ∂L/∂log Z contribution = δ_i/n where δ_i² > c, else 0.

#include <span>

#include "rtb/objective/objective.hpp"

namespace rtb {

struct RelativeTB {
  static constexpr bool learns_log_z = true;
  static constexpr bool on_policy_only = false;
  static constexpr const char* name = "rtb";

  template <class S>
  ObjectiveResult<S> operator()(const ObjectiveBatch<S>& b, std::span<S> weight) const {
    ObjectiveResult<S> res;
    res.used = detail::count_valid<S>(b.valid);
    const double inv_n = res.used > 0 ? 1.0 / static_cast<double>(res.used) : 0.0;
    double loss = 0, d_log_z = 0, sum_delta = 0;
    for (std::size_t i = 0; i < weight.size(); ++i) {
      weight[i] = S(0);
      if (!b.valid[i]) continue;
      const double delta = static_cast<double>(b.log_z) + b.log_pf_post[i] - b.log_pf_prior[i] -
                           static_cast<double>(b.beta) * b.log_r[i];
      sum_delta += delta;
      const double excess = delta * delta - static_cast<double>(b.loss_cutoff);
      if (excess <= 0) continue;
      loss += 0.5 * excess * inv_n;
      weight[i] = static_cast<S>(delta * inv_n);
      d_log_z += delta * inv_n;
    }
    res.loss = static_cast<S>(loss);
    res.d_log_z = static_cast<S>(d_log_z);
    res.mean_delta = static_cast<S>(sum_delta * inv_n);
    res.log_z_estimate = b.log_z;
    return res;
  }
};

}  // namespace rtb
