// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// What an objective sees and returns. An objective turns per-trajectory sums into a loss, the
/// per-row weights w_i = ∂L/∂(Σ_t log p_φ)_i that the gradient pass back-propagates, and, for
/// objectives that learn log Z, ∂L/∂log Z per row. It works on this replica's rows and sums
/// whatever must be global (counts, means) through the batch's Reduction, so its 1/n is the
/// global row count: a data-parallel step computes the same loss as one process would.

#include <span>
#include <utility>

#include "rtb/base.hpp"

namespace rtb {

template <class S>
struct ObjectiveBatch {
  std::span<const S> log_pf_post;   ///< Σ_t log p_φ(x_{t+1}|x_t) per row
  std::span<const S> log_pf_prior;  ///< Σ_t log p_θ(x_{t+1}|x_t) per row
  std::span<const S> log_r;         ///< log r(x_T) per row
  std::span<const char> valid;      ///< 0 for rows left out (log r = −∞ under the skip policy)
  std::span<const S> log_z;         ///< learned log Z of each row's entry (objectives that learn it)
  S beta = 1;                       ///< inverse temperature on log r
  S loss_cutoff = 0;                ///< c in ½·max(δ² − c, 0); 0 gives ½δ²
  S kl_weight = 1;                  ///< REINFORCE+KL: weight of the squared log-ratio
  Index group_size = 0;             ///< rows sharing a conditioning (0 = all); see RelativeVarGrad
};

/// Where an objective writes its per-row results.
template <class S>
struct ObjectiveOutputs {
  std::span<S> weight;          ///< ∂L/∂(Σ_t log p_φ)_i
  std::span<double> d_log_z;    ///< ∂L/∂(log Z of row i's entry), 0 for rows that do not enter
};

template <class S>
struct ObjectiveResult {
  S loss = 0;            ///< mean of the per-row loss over the global batch
  S mean_delta = 0;      ///< mean residual (RTB/VarGrad) or mean advantage-weighted term
  S log_z_estimate = 0;  ///< the batch's own log Z estimate where the objective forms one
  Index used = 0;        ///< rows that entered the loss, over the global batch
};

namespace detail {
/// The rows that enter the loss over every replica, and 1/n (0 if none): what objectives divide by.
template <class R>
std::pair<Index, double> global_count(std::span<const char> valid, R& reduction) {
  double n[1] = {0};
  for (char v : valid) n[0] += v != 0;
  reduction.all_sum(n);
  return {static_cast<Index>(n[0]), n[0] > 0 ? 1.0 / n[0] : 0.0};
}
}  // namespace detail

}  // namespace rtb
