// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Adam on the device: one thread per parameter runs math::adam_update, the element update the
/// CPU's rtb::Adam runs, with the step's bias corrections folded into `c` on the host (as
/// rtb::Adam::step computes them) — so a device step equals the host step bit for bit.

#include <cuda_runtime.h>

#include <cstddef>

#include "rtb/cuda/runtime.cuh"
#include "rtb/math/adam.hpp"

namespace rtb::cuda {

namespace detail {
template <class S>
__global__ void adam_kernel(std::size_t n, S* params, const S* grad, S* m, S* v, math::AdamStep<S> c) {
  const std::size_t i = std::size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) math::adam_update(params[i], grad[i], m[i], v[i], c);
}
}  // namespace detail

/// params, m and v updated in place from grad; all n-element device arrays.
template <class S>
void adam_update(std::size_t n, S* params, const S* grad, S* m, S* v, const math::AdamStep<S>& c,
                 cudaStream_t stream = nullptr) {
  if (n == 0) return;
  constexpr unsigned threads = 256;
  detail::adam_kernel<S><<<blocks_for(n, threads), threads, 0, stream>>>(n, params, grad, m, v, c);
  check(cudaGetLastError(), "adam_kernel launch");
}

}  // namespace rtb::cuda
