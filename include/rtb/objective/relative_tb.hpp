// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Relative Trajectory Balance (Venkatraman et al., 2024):
///
///     δ_i = log Z_i + Σ_t log p_φ − Σ_t log p_θ − β·log r(x_T),   L = (1/n) Σ_i ½·max(δ_i² − c, 0)
///
/// with log Z_i the learned log Z of row i's entry (one scalar, or one per condition; see
/// Config::log_z_table). c = 0 is the reference's 2-D loss ½δ² averaged over the batch; c = 0.1
/// is its image/text cut-off. ∂L/∂(Σ log p_φ)_i = ∂L/∂log Z_i = δ_i/n where δ_i² > c, else 0.

#include <span>

#include "rtb/concepts/reduction.hpp"
#include "rtb/math/relative_tb.hpp"
#include "rtb/objective/objective.hpp"

namespace rtb {

struct RelativeTB {
  static constexpr bool learns_log_z = true;
  static constexpr bool on_policy_only = false;
  static constexpr const char* name = "rtb";

  template <class S, Reduction R>
  ObjectiveResult<S> operator()(const ObjectiveBatch<S>& b, const ObjectiveOutputs<S>& out, R& reduction) const {
    ObjectiveResult<S> res;
    const auto [used, inv_n] = detail::global_count(b.valid, reduction);
    res.used = used;
    double sums[2] = {0, 0};  // loss, Σ δ
    for (std::size_t i = 0; i < out.weight.size(); ++i) {
      out.weight[i] = S(0);
      out.d_log_z[i] = 0;
      if (!b.valid[i]) continue;
      const math::RtbRow row =
          math::rtb_row(b.log_z[i], b.log_pf_post[i], b.log_pf_prior[i], b.beta, b.log_r[i], b.loss_cutoff, inv_n);
      sums[1] += row.delta;
      sums[0] += row.loss_term;
      out.weight[i] = static_cast<S>(row.weight);
      out.d_log_z[i] = row.weight;
    }
    reduction.all_sum(sums);
    res.loss = static_cast<S>(sums[0]);
    res.mean_delta = static_cast<S>(sums[1] * inv_n);
    return res;
  }
};

}  // namespace rtb
