// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Philox normals on the device, keyed and counted exactly as the CPU's (rtb/math/philox.hpp):
/// the normal for (row, step, d) of a key is the same float, bit for bit, on both. rtb uses its
/// own RTB_HOST_DEVICE Philox4x32-10 rather than cuRAND's: cuRAND's Philox4_32_10 state advances
/// a 128-bit counter per subsequence and offset, while rtb's counter is the tuple (lane, step,
/// row, iteration) mixed with the stream into the key — a layout cuRAND's API cannot be given —
/// and cuRAND's Box–Muller uses the device's own logf/sincosf, which the CPU cannot reproduce.

#include <cuda_runtime.h>

#include <cstdint>

#include "rtb/cuda/runtime.cuh"
#include "rtb/math/philox.hpp"

namespace rtb::cuda {

namespace detail {
__global__ void normals_kernel(math::NoiseKey key, std::uint64_t first_row, std::uint64_t rows, std::uint32_t step,
                               std::uint32_t dim, float* out) {
  const std::uint32_t lanes = (dim + 3) / 4;
  const std::uint64_t i = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= rows * lanes) return;
  const std::uint64_t r = i / lanes;
  const auto lane = static_cast<std::uint32_t>(i % lanes);
  const math::Normal4<float> z = math::normals4<float>(key, first_row + r, step, lane);
  const std::uint32_t d0 = lane * 4, n = dim - d0 < 4 ? dim - d0 : 4;
  for (std::uint32_t k = 0; k < n; ++k) out[r * dim + d0 + k] = z.v[k];
}
}  // namespace detail

/// out[r·dim + d] = math::normal<float>(key, first_row + r, step, d) for r < rows, d < dim.
inline void fill_normals(const math::NoiseKey& key, std::uint64_t first_row, std::uint64_t rows, std::uint32_t step,
                         std::uint32_t dim, float* out, cudaStream_t stream = nullptr) {
  const std::uint64_t items = rows * ((dim + 3) / 4);
  if (items == 0) return;
  constexpr unsigned threads = 256;
  detail::normals_kernel<<<blocks_for(items, threads), threads, 0, stream>>>(key, first_row, rows, step, dim, out);
  check(cudaGetLastError(), "normals_kernel launch");
}

}  // namespace rtb::cuda
