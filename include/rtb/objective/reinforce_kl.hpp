// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The paper's REINFORCE + KL baseline (reference `fwd_rl`), on-policy only:
///
///     R_i = exp(log r_i),  A_i = R_i − mean(R),  ρ_i = Σ log p_φ − Σ log p_θ,
///     L = (1/n) Σ_i [ −A_i·Σ log p_φ + w·ρ_i² ],   ∂L/∂(Σ log p_φ)_i = (−A_i + 2wρ_i)/n.
///
/// The reward is exponentiated (not log r) and only mean-centred; the "KL" term is the squared
/// trajectory log-ratio, not a KL estimator. Both as in the reference.

#include <cmath>
#include <span>

#include "rtb/objective/objective.hpp"

namespace rtb {

struct ReinforceKL {
  static constexpr bool learns_log_z = false;
  static constexpr bool on_policy_only = true;
  static constexpr const char* name = "reinforce_kl";

  template <class S>
  ObjectiveResult<S> operator()(const ObjectiveBatch<S>& b, std::span<S> weight) const {
    ObjectiveResult<S> res;
    res.used = detail::count_valid<S>(b.valid);
    const double inv_n = res.used > 0 ? 1.0 / static_cast<double>(res.used) : 0.0;
    double mean_r = 0;
    for (std::size_t i = 0; i < weight.size(); ++i)
      if (b.valid[i]) mean_r += std::exp(static_cast<double>(b.log_r[i])) * inv_n;
    double loss = 0, sum_adv = 0;
    for (std::size_t i = 0; i < weight.size(); ++i) {
      weight[i] = S(0);
      if (!b.valid[i]) continue;
      const double adv = std::exp(static_cast<double>(b.log_r[i])) - mean_r;
      const double ratio = static_cast<double>(b.log_pf_post[i]) - b.log_pf_prior[i];
      loss += (-adv * b.log_pf_post[i] + static_cast<double>(b.kl_weight) * ratio * ratio) * inv_n;
      weight[i] = static_cast<S>((-adv + 2.0 * static_cast<double>(b.kl_weight) * ratio) * inv_n);
      sum_adv += adv;
    }
    res.loss = static_cast<S>(loss);
    res.mean_delta = static_cast<S>(sum_adv * inv_n);
    return res;
  }
};

}  // namespace rtb
