// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Reduction concept: how the local statistics of a step become global ones when a batch is
/// split across replicas (data-parallel training). A trainer computes everything over its own
/// rows; between those local statistics and the update it asks its reduction to sum them over
/// replicas, so objectives normalise by the global row count and every replica applies the same
/// update. `LocalReduction`, one replica, is the identity and the default. A data-parallel
/// reduction (MPI, NCCL) is another model: it sums in place across replicas, in a fixed order so
/// results stay reproducible, and says where this replica's rows sit in the global batch, so
/// counter-based noise keys are global and no two replicas draw the same rows.

#include <concepts>
#include <span>

#include "rtb/base.hpp"

namespace rtb {

template <class R>
concept Reduction = requires(R& r, std::span<double> stats, std::span<float> gf, std::span<double> gd, Index rows) {
  r.all_sum(stats);           ///< in place: every replica receives the sum over replicas
  r.all_sum_gradient(gf);     ///< the same for a gradient (may live in a device space)
  r.all_sum_gradient(gd);
  { r.row_offset(rows) } -> std::convertible_to<Index>;  ///< global index of this replica's first of `rows`
  { r.replicas() } -> std::convertible_to<Index>;
};

/// One replica: every sum is already global.
struct LocalReduction {
  void all_sum(std::span<double>) const {}
  template <class S>
  void all_sum_gradient(std::span<S>) const {}
  Index row_offset(Index) const { return 0; }
  Index replicas() const { return 1; }
};
static_assert(Reduction<LocalReduction>);

}  // namespace rtb
