// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The masked-categorical step on the device, fused: one thread per row reveals or keeps each
/// masked generated column from the posterior's logits (log-softmax over V per column, the
/// uniform mixture only in the draw) and adds the step's log p_φ and log p_θ to the rows' sums;
/// pass 2's adjoint w·(1{token} − softmax) on the revealed columns' logits is a second kernel.
/// Both call the row functions of rtb/math/masked_step.hpp that rtb::MaskedCategoricalProcess
/// runs on the CPU; with rtb's own exp and log in float (rtb/math/portable.hpp) they draw the
/// same tokens and give the same bits (cuda/tests/kernels_test.cu).

#include <cuda_runtime.h>

#include <cstdint>

#include "rtb/cuda/runtime.cuh"
#include "rtb/math/masked_step.hpp"

namespace rtb::cuda {

/// Device pointers of one masked step over `rows` rows: tokens [rows, length], logits
/// [rows, length·vocab], the generated columns [n_gen], per-row sums [rows].
template <class S, class V = std::int32_t>
struct MaskedStepArgs {
  Index rows = 0, length = 0, n_gen = 0;
  const Index* generated = nullptr;  ///< the process's generated_columns(), on the device
  const V* x = nullptr;              ///< x_k
  const S* out_post = nullptr;       ///< the posterior's logits at x_k
  const S* out_prior = nullptr;      ///< the prior's logits at x_k (null: skip its term)
  V* x_next = nullptr;               ///< x_{k+1}, written
  S* log_pf_post = nullptr;          ///< += log p_φ
  S* log_pf_prior = nullptr;         ///< += log p_θ
};

namespace detail {
template <class S, class V>
__global__ void masked_step_forward_kernel(MaskedStepArgs<S, V> a, math::MaskedStepConstants<S, V> c,
                                           math::NoiseKey key, std::uint64_t first_row, std::uint32_t step) {
  const Index r = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.rows) return;
  const V* x = a.x + r * a.length;
  V* x_next = a.x_next + r * a.length;
  const Index out_cols = a.length * c.vocab;
  const S* post = a.out_post + r * out_cols;
  math::masked_sample_row(x, post, a.length, a.generated, a.n_gen, c, key, first_row + static_cast<std::uint64_t>(r),
                          step, x_next);
  a.log_pf_post[r] += math::masked_log_prob_row(x, x_next, post, a.generated, a.n_gen, c);
  if (a.out_prior != nullptr && a.log_pf_prior != nullptr)
    a.log_pf_prior[r] += math::masked_log_prob_row(x, x_next, a.out_prior + r * out_cols, a.generated, a.n_gen, c);
}

template <class S, class V>
__global__ void masked_step_adjoint_kernel(MaskedStepArgs<S, V> a, math::MaskedStepConstants<S, V> c, const S* weight,
                                           S* d_out) {
  const Index r = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.rows) return;
  const Index out_cols = a.length * c.vocab;
  S* d = d_out + r * out_cols;
  for (Index i = 0; i < out_cols; ++i) d[i] = S(0);
  math::masked_adjoint_row(a.x + r * a.length, a.x_next + r * a.length, a.out_post + r * out_cols, a.generated, a.n_gen,
                           weight[r], c, d);
}
}  // namespace detail

/// Pass 1 of a masked step; `c` is MaskedCategoricalProcess::step_constants(step, uniform_mix).
template <class S, class V>
void masked_step_forward(const MaskedStepArgs<S, V>& a, const math::MaskedStepConstants<S, V>& c,
                         const math::NoiseKey& key, std::uint64_t first_row, std::uint32_t step,
                         cudaStream_t stream = nullptr) {
  if (a.rows == 0) return;
  constexpr unsigned threads = 64;
  detail::masked_step_forward_kernel<S, V>
      <<<blocks_for(static_cast<std::size_t>(a.rows), threads), threads, 0, stream>>>(a, c, key, first_row, step);
  check(cudaGetLastError(), "masked_step_forward_kernel launch");
}

/// Pass 2's adjoint: d_out = weight[r]·∂ log p(x_next_r | x_r) / ∂logits_r, [rows, length·vocab] (zeroed first).
template <class S, class V>
void masked_step_adjoint(const MaskedStepArgs<S, V>& a, const math::MaskedStepConstants<S, V>& c, const S* weight,
                         S* d_out, cudaStream_t stream = nullptr) {
  if (a.rows == 0) return;
  constexpr unsigned threads = 64;
  detail::masked_step_adjoint_kernel<S, V>
      <<<blocks_for(static_cast<std::size_t>(a.rows), threads), threads, 0, stream>>>(a, c, weight, d_out);
  check(cudaGetLastError(), "masked_step_adjoint_kernel launch");
}

}  // namespace rtb::cuda
