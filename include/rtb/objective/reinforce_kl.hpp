// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The paper's REINFORCE + KL baseline (reference `fwd_rl`), on-policy only:
///
///     R_i = exp(log r_i),  A_i = R_i − mean(R),  ρ_i = Σ log p_φ − Σ log p_θ,
///     L = (1/n) Σ_i [ −A_i·Σ log p_φ + w·ρ_i² ],   ∂L/∂(Σ log p_φ)_i = (−A_i + 2wρ_i)/n.
///
/// The reward is exponentiated (not log r) and only mean-centred; the "KL" term is the squared
/// trajectory log-ratio, not a KL estimator. Both as in the reference. mean(R) and n are global.

#include <cmath>
#include <span>

#include "rtb/concepts/reduction.hpp"
#include "rtb/objective/objective.hpp"

namespace rtb {

struct ReinforceKL {
  static constexpr bool learns_log_z = false;
  static constexpr bool on_policy_only = true;
  static constexpr const char* name = "reinforce_kl";

  template <class S, Reduction R>
  ObjectiveResult<S> operator()(const ObjectiveBatch<S>& b, const ObjectiveOutputs<S>& out, R& reduction) const {
    ObjectiveResult<S> res;
    const auto [used, inv_n] = detail::global_count(b.valid, reduction);
    res.used = used;
    double mean_r[1] = {0};
    for (std::size_t i = 0; i < out.weight.size(); ++i)
      if (b.valid[i]) mean_r[0] += std::exp(static_cast<double>(b.log_r[i])) * inv_n;
    reduction.all_sum(mean_r);
    double sums[2] = {0, 0};  // loss, Σ advantage
    for (std::size_t i = 0; i < out.weight.size(); ++i) {
      out.weight[i] = S(0);
      out.d_log_z[i] = 0;
      if (!b.valid[i]) continue;
      const double adv = std::exp(static_cast<double>(b.log_r[i])) - mean_r[0];
      const double ratio = static_cast<double>(b.log_pf_post[i]) - b.log_pf_prior[i];
      sums[0] += (-adv * b.log_pf_post[i] + static_cast<double>(b.kl_weight) * ratio * ratio) * inv_n;
      out.weight[i] = static_cast<S>((-adv + 2.0 * static_cast<double>(b.kl_weight) * ratio) * inv_n);
      sums[1] += adv;
    }
    reduction.all_sum(sums);
    res.loss = static_cast<S>(sums[0]);
    res.mean_delta = static_cast<S>(sums[1] * inv_n);
    return res;
  }
};

}  // namespace rtb
