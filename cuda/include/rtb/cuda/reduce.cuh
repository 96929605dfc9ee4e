// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Deterministic sums on the device: each block adds its items in a fixed tree in shared memory
/// and writes one partial; one block then adds the partials in the same fixed tree. No atomics,
/// so a sum is the same bits on every run, whatever the scheduling (not the same bits as the
/// CPU's index-order sum: that is a different order of additions).

#include <cuda_runtime.h>

namespace rtb::cuda::detail {

inline constexpr unsigned kReduceThreads = 256;

/// Tree sum of `K` doubles per thread across a block of kReduceThreads threads; thread 0 holds the result.
template <int K>
__device__ inline void block_sum(double (&v)[K]) {
  __shared__ double shared[K][kReduceThreads];
  for (int k = 0; k < K; ++k) shared[k][threadIdx.x] = v[k];
  __syncthreads();
  for (unsigned half = kReduceThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half)
      for (int k = 0; k < K; ++k) shared[k][threadIdx.x] += shared[k][threadIdx.x + half];
    __syncthreads();
  }
  for (int k = 0; k < K; ++k) v[k] = shared[k][0];
}

/// One block: out[k] = Σ_b partials[b·K + k] over `blocks` partials, in a fixed order.
template <int K>
__global__ void sum_partials_kernel(const double* partials, unsigned blocks, double* out) {
  double v[K];
  for (int k = 0; k < K; ++k) v[k] = 0;
  for (unsigned b = threadIdx.x; b < blocks; b += kReduceThreads)
    for (int k = 0; k < K; ++k) v[k] += partials[b * K + k];
  block_sum<K>(v);
  if (threadIdx.x == 0)
    for (int k = 0; k < K; ++k) out[k] = v[k];
}

}  // namespace rtb::cuda::detail
