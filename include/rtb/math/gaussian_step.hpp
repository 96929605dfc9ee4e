// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// One row of the Euler–Maruyama Gaussian step (rtb::GaussianProcess), written once for the CPU
/// loops and the CUDA kernels (cuda/include/rtb/cuda/gaussian_step.cuh): sampling, the step's
/// log-density and its adjoint ∂ log p / ∂μ. Rows are contiguous (`dim` values, or `out_cols`
/// for the denoiser's output row).
///
/// Every multiply-add is an explicit fma (math::fma), so the CPU and the GPU round each of them
/// the same way and a kernel's output equals its host twin bit for bit on the same inputs
/// (rtb/math/portable.hpp says why an implicit contraction would not).

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "rtb/base.hpp"
#include "rtb/math/philox.hpp"

namespace rtb::math {

/// The per-step constants of the Gaussian kernel N(x + dt·μ, dt·σ²·I) in `dim` coordinates.
template <class S>
struct GaussianStepConstants {
  S dt;                ///< step length
  S neg_half_inv_var;  ///< −1 / (2·dt·σ²)
  S log_norm;          ///< −½·dim·(log 2π + log(dt·σ²))
  S adjoint_scale;     ///< dt / (dt·σ²): ∂ log p / ∂μ per unit residual
};

/// x_next = x + dt·μ + sd·z, z the Philox normals of (row, step), sd the sampling standard
/// deviation (the kernel's, widened by exploration).
template <class S>
RTB_HOST_DEVICE inline void gaussian_sample_row(const S* x, const S* mean, Index dim, S dt, S sd, const NoiseKey& key,
                                                std::uint64_t row, std::uint32_t step, S* x_next) {
  for (Index d0 = 0; d0 < dim; d0 += 4) {
    const auto z = normals4<S>(key, row, step, static_cast<std::uint32_t>(d0 / 4));
    const Index n = dim - d0 < 4 ? dim - d0 : 4;
    for (Index k = 0; k < n; ++k) {
      const Index d = d0 + k;
      x_next[d] = fma(sd, z.v[k], fma(dt, mean[d], x[d]));
    }
  }
}

/// log N(x_next; x + dt·μ, dt·σ²·I) of one row.
template <class S>
RTB_HOST_DEVICE inline S gaussian_log_prob_row(const S* x, const S* x_next, const S* mean, Index dim,
                                               const GaussianStepConstants<S>& c) {
  S sq = S(0);
  for (Index d = 0; d < dim; ++d) {
    const S diff = fma(-c.dt, mean[d], x_next[d] - x[d]);
    sq = fma(diff, diff, sq);
  }
  return fma(c.neg_half_inv_var, sq, c.log_norm);
}

/// d_mean = w · ∂ log p / ∂μ = w·(dt/(dt·σ²))·(x_next − x − dt·μ) for one row; the remaining
/// `out_cols − dim` columns (an unused log-variance half) get 0.
template <class S>
RTB_HOST_DEVICE inline void gaussian_adjoint_row(const S* x, const S* x_next, const S* mean, Index dim, Index out_cols,
                                                 S w, const GaussianStepConstants<S>& c, S* d_out) {
  const S scale = w * c.adjoint_scale;
  for (Index d = 0; d < dim; ++d) d_out[d] = scale * fma(-c.dt, mean[d], x_next[d] - x[d]);
  for (Index d = dim; d < out_cols; ++d) d_out[d] = S(0);
}

}  // namespace rtb::math
