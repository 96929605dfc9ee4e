// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Gaussian step on the device, fused: one thread per row samples x_{t+1} = x_t + dt·μ_φ +
/// sd·z from the posterior's output (sd widened by exploration), and adds the step's
/// log p_φ(x_{t+1}|x_t) and log p_θ(x_{t+1}|x_t) (un-inflated variance) to the rows' running
/// sums, reading x_t and both outputs once. Pass 2's adjoint d_out = w·∂log p_φ/∂μ is a second
/// kernel (the weights w are known only once the batch's residuals are). Both call the row
/// functions of rtb/math/gaussian_step.hpp that rtb::GaussianProcess runs on the CPU, so on the
/// same inputs they give the same bits (cuda/tests/kernels_test.cu).

#include <cuda_runtime.h>

#include <cstdint>

#include "rtb/cuda/runtime.cuh"
#include "rtb/math/gaussian_step.hpp"

namespace rtb::cuda {

/// Device pointers of one Gaussian step over `rows` rows: states [rows, dim], outputs
/// [rows, out_cols] (μ in the first dim columns), per-row sums [rows].
template <class S>
struct GaussianStepArgs {
  Index rows = 0, dim = 0, out_cols = 0;
  const S* x = nullptr;          ///< x_t
  const S* out_post = nullptr;   ///< the posterior's (sampling policy's) output at x_t
  const S* out_prior = nullptr;  ///< the prior's output at x_t
  S* x_next = nullptr;           ///< x_{t+1}, written
  S* log_pf_post = nullptr;      ///< += log p_φ(x_{t+1}|x_t)
  S* log_pf_prior = nullptr;     ///< += log p_θ(x_{t+1}|x_t)
};

namespace detail {
template <class S>
__global__ void gaussian_step_forward_kernel(GaussianStepArgs<S> a, math::GaussianStepConstants<S> c, S sd,
                                             math::NoiseKey key, std::uint64_t first_row, std::uint32_t step) {
  const Index r = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.rows) return;
  const S* x = a.x + r * a.dim;
  S* x_next = a.x_next + r * a.dim;
  const S* mu_post = a.out_post + r * a.out_cols;
  math::gaussian_sample_row(x, mu_post, a.dim, c.dt, sd, key, first_row + static_cast<std::uint64_t>(r), step, x_next);
  a.log_pf_post[r] += math::gaussian_log_prob_row(x, x_next, mu_post, a.dim, c);
  if (a.log_pf_prior != nullptr)
    a.log_pf_prior[r] += math::gaussian_log_prob_row(x, x_next, a.out_prior + r * a.out_cols, a.dim, c);
}

template <class S>
__global__ void gaussian_step_adjoint_kernel(Index rows, Index dim, Index out_cols, const S* x, const S* x_next,
                                             const S* out, const S* weight, math::GaussianStepConstants<S> c,
                                             S* d_out) {
  const Index r = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  math::gaussian_adjoint_row(x + r * dim, x_next + r * dim, out + r * out_cols, dim, out_cols, weight[r], c,
                             d_out + r * out_cols);
}
}  // namespace detail

/// Pass 1 of a Gaussian step (see the file comment). `c` is GaussianProcess::step_constants(),
/// `sd` the sampling standard deviation √(dt·σ² + σ_expl²). A null log_pf_prior skips the prior's term.
template <class S>
void gaussian_step_forward(const GaussianStepArgs<S>& a, const math::GaussianStepConstants<S>& c, S sd,
                           const math::NoiseKey& key, std::uint64_t first_row, std::uint32_t step,
                           cudaStream_t stream = nullptr) {
  if (a.rows == 0) return;
  constexpr unsigned threads = 128;
  detail::gaussian_step_forward_kernel<S>
      <<<blocks_for(static_cast<std::size_t>(a.rows), threads), threads, 0, stream>>>(a, c, sd, key, first_row, step);
  check(cudaGetLastError(), "gaussian_step_forward_kernel launch");
}

/// Pass 2's adjoint: d_out[r, :] = weight[r]·∂ log p(x_next_r | x_r) / ∂out_r (0 beyond dim).
template <class S>
void gaussian_step_adjoint(Index rows, Index dim, Index out_cols, const S* x, const S* x_next, const S* out,
                           const S* weight, const math::GaussianStepConstants<S>& c, S* d_out,
                           cudaStream_t stream = nullptr) {
  if (rows == 0) return;
  constexpr unsigned threads = 128;
  detail::gaussian_step_adjoint_kernel<S><<<blocks_for(static_cast<std::size_t>(rows), threads), threads, 0, stream>>>(
      rows, dim, out_cols, x, x_next, out, weight, c, d_out);
  check(cudaGetLastError(), "gaussian_step_adjoint_kernel launch");
}

}  // namespace rtb::cuda
