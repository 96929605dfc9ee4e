// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// What an objective sees and returns. An objective turns per-trajectory sums into a loss, the
/// per-row weights w_i = ∂L/∂(Σ_t log p_φ)_i that pass 2 back-propagates, and ∂L/∂log Z.

#include <span>

#include "rtb/config.hpp"

namespace rtb {

template <class S>
struct ObjectiveBatch {
  std::span<const S> log_pf_post;   ///< Σ_t log p_φ(x_{t+1}|x_t) per row
  std::span<const S> log_pf_prior;  ///< Σ_t log p_θ(x_{t+1}|x_t) per row
  std::span<const S> log_r;         ///< log r(x_T) per row
  std::span<const char> valid;      ///< 0 for rows left out (log r = −∞ under the skip policy)
  S log_z = 0;                      ///< learned log Z (objectives that learn it)
  S beta = 1;                       ///< inverse temperature on log r
  S loss_cutoff = 0;                ///< c in ½·max(δ² − c, 0); 0 gives ½δ²
  S kl_weight = 1;                  ///< REINFORCE+KL: weight of the squared log-ratio
  Index group_size = 0;             ///< rows sharing a conditioning (0 = all); see RelativeVarGrad
};

template <class S>
struct ObjectiveResult {
  S loss = 0;          ///< batch mean of the per-row loss
  S d_log_z = 0;       ///< ∂loss/∂log Z (0 for objectives without log Z)
  S mean_delta = 0;    ///< mean residual (RTB/VarGrad) or mean advantage-weighted term
  S log_z_estimate = 0;  ///< the batch's own log Z estimate where the objective forms one
  Index used = 0;      ///< rows that entered the loss
};

namespace detail {
template <class S>
Index count_valid(std::span<const char> valid) {
  Index n = 0;
  for (char v : valid) n += v != 0;
  return n;
}
}  // namespace detail

}  // namespace rtb
