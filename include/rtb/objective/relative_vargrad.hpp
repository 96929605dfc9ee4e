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
/// conditioning, as the reference does per state (offline RL) or per story (text): log Z per
/// condition with no parameters. Groups never straddle replicas (each replica's rows are whole
/// groups); n is the global count.

#include <algorithm>
#include <span>

#include "rtb/concepts/reduction.hpp"
#include "rtb/objective/objective.hpp"

namespace rtb {

struct RelativeVarGrad {
  static constexpr bool learns_log_z = false;
  static constexpr bool on_policy_only = false;
  static constexpr const char* name = "rtb_vargrad";

  template <class S, Reduction R>
  ObjectiveResult<S> operator()(const ObjectiveBatch<S>& b, const ObjectiveOutputs<S>& out, R& reduction) const {
    ObjectiveResult<S> res;
    const auto [used, inv_n] = detail::global_count(b.valid, reduction);
    res.used = used;
    const auto n = static_cast<Index>(out.weight.size());
    const Index g = b.group_size > 0 ? b.group_size : n;
    double sums[3] = {0, 0, 0};  // loss, Σ groups' log Ẑ, groups
    for (Index start = 0; start < n; start += g) {
      const Index end = std::min(n, start + g);
      double mean_u = 0;
      Index m = 0;
      for (Index i = start; i < end; ++i)
        if (b.valid[static_cast<std::size_t>(i)]) {
          mean_u += u(b, i);
          ++m;
        }
      for (Index i = start; i < end; ++i) {
        out.weight[static_cast<std::size_t>(i)] = S(0);
        out.d_log_z[static_cast<std::size_t>(i)] = 0;
      }
      if (m < 2) continue;  // a lone sample carries no relative information
      mean_u /= static_cast<double>(m);
      for (Index i = start; i < end; ++i) {
        if (!b.valid[static_cast<std::size_t>(i)]) continue;
        const double delta = u(b, i) - mean_u;
        sums[0] += 0.5 * delta * delta * inv_n;
        out.weight[static_cast<std::size_t>(i)] = static_cast<S>(delta * inv_n);
      }
      sums[1] -= mean_u;
      sums[2] += 1;
    }
    reduction.all_sum(sums);
    res.log_z_estimate = static_cast<S>(sums[2] > 0 ? sums[1] / sums[2] : 0.0);
    res.loss = static_cast<S>(sums[0]);
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
