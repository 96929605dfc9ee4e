// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Relative VarGrad: RTB with log Z replaced by the batch's own detached estimate,
///
///     log Ẑ = (1/n) Σ_i (β·log r_i − Σ log p_φ + Σ log p_θ),
///     δ_i   = Σ log p_φ − Σ log p_θ + log Ẑ − β·log r_i,   L = (1/n) Σ_i ½δ_i².
///
/// Note the sign: log Ẑ enters as −mean(u) for u = Σlog p_φ − Σlog p_θ − β log r (the reference's
/// text code adds +mean(u), a bug). Because Σ_i δ_i = 0, detaching log Ẑ leaves the gradient
/// exact: ∂L/∂u_i = δ_i/n. Needs no learned log Z; the batch must share one conditioning.

#include <span>

#include "rtb/objective/objective.hpp"

namespace rtb {

struct RelativeVarGrad {
  static constexpr bool learns_log_z = false;
  static constexpr bool on_policy_only = false;
  static constexpr const char* name = "rtb_vargrad";

  template <class S>
  ObjectiveResult<S> operator()(const ObjectiveBatch<S>& b, std::span<S> weight) const {
    ObjectiveResult<S> res;
    res.used = detail::count_valid<S>(b.valid);
    const double inv_n = res.used > 0 ? 1.0 / static_cast<double>(res.used) : 0.0;
    double mean_u = 0;
    for (std::size_t i = 0; i < weight.size(); ++i)
      if (b.valid[i])
        mean_u += (static_cast<double>(b.log_pf_post[i]) - b.log_pf_prior[i] - static_cast<double>(b.beta) * b.log_r[i]) * inv_n;
    double loss = 0;
    for (std::size_t i = 0; i < weight.size(); ++i) {
      weight[i] = S(0);
      if (!b.valid[i]) continue;
      const double delta =
          static_cast<double>(b.log_pf_post[i]) - b.log_pf_prior[i] - static_cast<double>(b.beta) * b.log_r[i] - mean_u;
      loss += 0.5 * delta * delta * inv_n;
      weight[i] = static_cast<S>(delta * inv_n);
    }
    res.loss = static_cast<S>(loss);
    res.log_z_estimate = static_cast<S>(-mean_u);
    return res;
  }
};

}  // namespace rtb
