// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Relative VarGrad: RTB with log Z replaced by the batch's own detached estimate,
///
///     log Ẑ = (1/n) Σ_i (β·log r_i − Σ log p_φ + Σ log p_θ),
///     δ_i   = Σ log p_φ − Σ log p_θ + log Ẑ − β·log r_i,   L = (1/n) Σ_i ½δ_i².
///
/// Note the sign: log Ẑ enters as −mean(u) for u = Σlog p_φ − Σlog p_θ − β log r (the reference's
/// text code adds +mean(u), a bug). Because Σ_i δ_i = 0 within a group, detaching log Ẑ leaves the
/// gradient exact: ∂L/∂u_i = δ_i/n. Needs no learned log Z. With conditional targets (a different
/// log Z per conditioning) the mean is taken per group of `group_size` consecutive rows sharing a
/// conditioning, as the reference does per state (offline RL) or per story (text).

#include <algorithm>
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
    const auto n = static_cast<Index>(weight.size());
    const Index g = b.group_size > 0 ? b.group_size : n;
    double loss = 0, sum_log_z = 0;
    Index groups = 0;
    for (Index start = 0; start < n; start += g) {
      const Index end = std::min(n, start + g);
      double mean_u = 0;
      Index m = 0;
      for (Index i = start; i < end; ++i)
        if (b.valid[static_cast<std::size_t>(i)]) {
          mean_u += u(b, i);
          ++m;
        }
      for (Index i = start; i < end; ++i) weight[static_cast<std::size_t>(i)] = S(0);
      if (m < 2) continue;  // a lone sample carries no relative information
      mean_u /= static_cast<double>(m);
      for (Index i = start; i < end; ++i) {
        if (!b.valid[static_cast<std::size_t>(i)]) continue;
        const double delta = u(b, i) - mean_u;
        loss += 0.5 * delta * delta * inv_n;
        weight[static_cast<std::size_t>(i)] = static_cast<S>(delta * inv_n);
      }
      sum_log_z -= mean_u;
      ++groups;
    }
    res.log_z_estimate = static_cast<S>(groups ? sum_log_z / static_cast<double>(groups) : 0.0);
    res.loss = static_cast<S>(loss);
    return res;
  }

 private:
  template <class S>
  static double u(const ObjectiveBatch<S>& b, Index i) {
    const auto k = static_cast<std::size_t>(i);
    return static_cast<double>(b.log_pf_post[k]) - b.log_pf_prior[k] - static_cast<double>(b.beta) * b.log_r[k];
  }
};

}  // namespace rtb
