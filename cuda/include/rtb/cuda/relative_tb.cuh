// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Relative Trajectory Balance objective as one batch reduction on the device: per row the
/// residual δ, the loss term and the weight ∂L/∂(Σ log p_φ) = ∂L/∂log Z (math::rtb_row, the CPU
/// objective's own row function, so each row's values are the CPU's bits), and over the batch
/// the count of valid rows, the loss and Σ δ by deterministic tree sums (rtb/cuda/reduce.cuh):
/// the same bits on every run, within a few ulp of the CPU's index-order sums. Everything stays
/// on the device; `download()` is the one transfer a caller needs for logging.

#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "rtb/cuda/reduce.cuh"
#include "rtb/cuda/runtime.cuh"
#include "rtb/math/relative_tb.hpp"

namespace rtb::cuda {

/// Device pointers of one batch: per-row inputs and outputs, [rows] each.
template <class S>
struct RtbBatch {
  Index rows = 0;
  const S* log_z = nullptr;             ///< learned log Z of each row's entry
  const S* log_pf_post = nullptr;       ///< Σ_t log p_φ
  const S* log_pf_prior = nullptr;      ///< Σ_t log p_θ
  const S* log_r = nullptr;             ///< log r(x_T)
  const std::uint8_t* valid = nullptr;  ///< nonzero: the row takes part (a null pointer: every row)
  double beta = 1, loss_cutoff = 0;
  S* weight = nullptr;        ///< written: ∂L/∂(Σ log p_φ) per row (0 where invalid or under the cut-off)
  double* d_log_z = nullptr;  ///< written: ∂L/∂log Z per row (may be null)
};

/// The batch's scalars, once downloaded.
struct RtbScalars {
  double used = 0;        ///< valid rows
  double loss = 0;        ///< L
  double mean_delta = 0;  ///< mean δ over the valid rows
};

namespace detail {
__global__ void rtb_count_kernel(Index rows, const std::uint8_t* valid, double* partials) {
  const Index r = static_cast<Index>(blockIdx.x) * kReduceThreads + threadIdx.x;
  double v[1] = {r < rows && (valid == nullptr || valid[r] != 0) ? 1.0 : 0.0};
  block_sum<1>(v);
  if (threadIdx.x == 0) partials[blockIdx.x] = v[0];
}

template <class S>
__global__ void rtb_rows_kernel(RtbBatch<S> b, const double* used, double* partials) {
  const Index r = static_cast<Index>(blockIdx.x) * kReduceThreads + threadIdx.x;
  const double n = *used;
  const double inv_n = n > 0 ? 1.0 / n : 0.0;
  double v[2] = {0, 0};  // loss, Σ δ
  if (r < b.rows) {
    double w = 0;
    if (b.valid == nullptr || b.valid[r] != 0) {
      const math::RtbRow row =
          math::rtb_row(b.log_z[r], b.log_pf_post[r], b.log_pf_prior[r], b.beta, b.log_r[r], b.loss_cutoff, inv_n);
      v[0] = row.loss_term;
      v[1] = row.delta;
      w = row.weight;
    }
    b.weight[r] = static_cast<S>(w);
    if (b.d_log_z != nullptr) b.d_log_z[r] = w;
  }
  block_sum<2>(v);
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = v[0];
    partials[2 * blockIdx.x + 1] = v[1];
  }
}

__global__ void rtb_finish_kernel(double* scalars) {  // [used, loss, Σδ] → [used, loss, mean δ]
  const double n = scalars[0];
  scalars[2] = scalars[2] * (n > 0 ? 1.0 / n : 0.0);
}
}  // namespace detail

/// Workspace of the reduction for batches of up to `max_rows` rows: allocated once, never per step.
class RtbReduction {
 public:
  explicit RtbReduction(Index max_rows)
      : max_rows_(max_rows),
        blocks_(blocks_for(static_cast<std::size_t>(max_rows > 0 ? max_rows : 1), detail::kReduceThreads)),
        partials_(2 * static_cast<std::size_t>(blocks_)),
        scalars_(3) {}

  /// Runs the objective over `b` (b.rows ≤ max_rows) on `stream`; results stay on the device.
  template <class S>
  void run(const RtbBatch<S>& b, cudaStream_t stream = nullptr) {
    if (b.rows > max_rows_ || b.rows < 0)
      throw ShapeError(rtb::detail::message("rtb::cuda::RtbReduction: a batch of ", b.rows,
                                            " rows, but the workspace was made for at most ", max_rows_,
                                            "; make it with the largest batch you will pass"));
    const unsigned blocks = blocks_for(static_cast<std::size_t>(b.rows > 0 ? b.rows : 1), detail::kReduceThreads);
    detail::rtb_count_kernel<<<blocks, detail::kReduceThreads, 0, stream>>>(b.rows, b.valid, partials_.data());
    detail::sum_partials_kernel<1><<<1, detail::kReduceThreads, 0, stream>>>(partials_.data(), blocks, scalars_.data());
    detail::rtb_rows_kernel<S><<<blocks, detail::kReduceThreads, 0, stream>>>(b, scalars_.data(), partials_.data());
    detail::sum_partials_kernel<2>
        <<<1, detail::kReduceThreads, 0, stream>>>(partials_.data(), blocks, scalars_.data() + 1);
    detail::rtb_finish_kernel<<<1, 1, 0, stream>>>(scalars_.data());
    check(cudaGetLastError(), "RtbReduction kernels launch");
  }

  /// The device's [used, loss, mean δ] of the last run.
  const double* device_scalars() const { return scalars_.data(); }

  /// Copies the last run's scalars to the host (synchronises).
  RtbScalars download() const {
    std::array<double, 3> h{};
    scalars_.download(h);
    return RtbScalars{h[0], h[1], h[2]};
  }

 private:
  Index max_rows_;
  unsigned blocks_;
  DeviceBuffer<double> partials_, scalars_;
};

}  // namespace rtb::cuda
