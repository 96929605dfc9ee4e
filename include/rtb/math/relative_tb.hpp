// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// One row of the Relative Trajectory Balance objective (rtb::RelativeTB), shared by the CPU
/// objective and the CUDA batch reduction (cuda/include/rtb/cuda/relative_tb.cuh):
///
///     δ = log Z + Σ log p_φ − Σ log p_θ − β·log r,   loss term ½·max(δ² − c, 0)/n,
///     weight = ∂L/∂(Σ log p_φ) = ∂L/∂log Z = δ/n where δ² > c, else 0.
///
/// In double, whatever the scalar of the sums: a residual is a difference of sums over T steps.
/// Multiply-adds are explicit fmas, so the device's rows equal the host's bit for bit.

#include "rtb/base.hpp"
#include "rtb/math/portable.hpp"  // math::fma

namespace rtb::math {

struct RtbRow {
  double delta;      ///< the residual δ
  double loss_term;  ///< this row's share of the loss
  double weight;     ///< ∂L/∂(Σ log p_φ) of this row (also ∂L/∂log Z)
};

RTB_HOST_DEVICE inline RtbRow rtb_row(double log_z, double log_pf_post, double log_pf_prior, double beta, double log_r,
                                      double loss_cutoff, double inv_n) {
  const double delta = fma(-beta, log_r, log_z + log_pf_post - log_pf_prior);
  const double excess = fma(delta, delta, -loss_cutoff);
  if (excess <= 0) return RtbRow{delta, 0.0, 0.0};
  return RtbRow{delta, 0.5 * excess * inv_n, delta * inv_n};
}

}  // namespace rtb::math
