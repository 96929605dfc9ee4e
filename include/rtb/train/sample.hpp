// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Sampling end states from any denoiser under a process: the prior as well as a posterior, e.g.
/// for baselines. Rows use the process's per-row context (row i reads context row i).

#include <cstdint>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/error.hpp"
#include "rtb/train/trajectory_engine.hpp"

namespace rtb {

/// n end states x_T of `net` run forward under `process` with noise keyed by `seed`, [n, D].
template <NoiseProcess P, Denoiser N>
RowMatrix<typename P::Value> sample_end_states(const P& process, const N& net, Index n, std::uint64_t seed,
                                               Index threads = 0, Index block_rows = 128) {
  using S = typename P::Scalar;
  if (n <= 0) throw EmptyBatchError(detail::message("sample_end_states: n must be positive, got ", n));
  detail::TrajectoryEngine<P, N> eng(process, net, block_rows, threads);
  eng.shape(net, n, 0);
  std::vector<S> log_p(static_cast<std::size_t>(n));
  eng.pass1(net, nullptr, {seed, math::Stream::Evaluation, 0}, S(0), log_p.data(), nullptr);
  return eng.end_states();
}

}  // namespace rtb
