// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A replay buffer of end points x_T with their conditions and log-rewards. The trainer re-noises
/// drawn end points with the process's backward kernel into full trajectories (off-policy rows)
/// under the condition they were drawn with, so only terminal states are kept: memory is
/// capacity × (D + Dc), not capacity × T × D.
///
/// Insertion is first-in first-out once full. Draws are uniform, or rank-prioritised by log r:
/// P(rank k) ∝ 1/(κ·N + k), k = 0 for the best entry (Tripp et al.'s rank weighting, κ = 0.01),
/// which favours high-reward end points without collapsing onto one.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <span>
#include <vector>

#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/math/philox.hpp"

namespace rtb {

enum class ReplayPriority { Uniform, Rank };

template <class V, class S, class C = V>
class ReplayBuffer {
 public:
  ReplayBuffer() = default;
  ReplayBuffer(Index capacity, Index dim, ReplayPriority priority = ReplayPriority::Uniform, Index condition_dim = 0)
      : capacity_(capacity), dim_(dim), cond_dim_(condition_dim), priority_(priority) {
    if (capacity < 0 || dim <= 0 || condition_dim < 0)
      throw InvalidArgumentError(detail::message("ReplayBuffer: need capacity >= 0, dim > 0 and condition_dim >= 0, got ",
                                                 capacity, ", ", dim, ", ", condition_dim));
    x_.resize(static_cast<std::size_t>(capacity * dim));
    c_.resize(static_cast<std::size_t>(capacity * condition_dim));
    log_r_.resize(static_cast<std::size_t>(capacity));
    order_.resize(static_cast<std::size_t>(capacity));
    cumulative_.resize(static_cast<std::size_t>(capacity));
  }

  Index size() const { return size_; }
  Index capacity() const { return capacity_; }
  Index dim() const { return dim_; }
  Index condition_dim() const { return cond_dim_; }
  ReplayPriority priority() const { return priority_; }

  /// Adds the rows with valid[i] != 0 (finite log r), with their conditions.
  void add(ConstMatrixView<V> x, ConstMatrixView<C> condition, std::span<const S> log_r, std::span<const char> valid) {
    if (capacity_ == 0) return;
    for (Index i = 0; i < x.rows(); ++i) {
      if (!valid[static_cast<std::size_t>(i)]) continue;
      std::copy_n(row_ptr(x, i), dim_, x_.data() + next_ * dim_);
      if (cond_dim_ > 0) std::copy_n(row_ptr(condition, i), cond_dim_, c_.data() + next_ * cond_dim_);
      log_r_[static_cast<std::size_t>(next_)] = log_r[static_cast<std::size_t>(i)];
      next_ = (next_ + 1) % capacity_;
      size_ = std::min(size_ + 1, capacity_);
    }
  }

  /// Draws n entries (with replacement) into out [n, D], their conditions into condition [n, Dc]
  /// and their log r into log_r (may be null).
  void sample(Index n, const math::NoiseKey& key, MatrixView<V> out, MatrixView<C> condition, S* log_r) {
    if (size_ == 0) throw EmptyBatchError("ReplayBuffer::sample: the buffer is empty; add end points first");
    if (priority_ == ReplayPriority::Rank) {
      std::iota(order_.begin(), order_.begin() + size_, Index{0});
      std::sort(order_.begin(), order_.begin() + size_, [&](Index a, Index b) {  // best first; ties by slot
        const S la = log_r_[static_cast<std::size_t>(a)], lb = log_r_[static_cast<std::size_t>(b)];
        return la > lb || (la == lb && a < b);
      });
      double acc = 0;
      const double offset = 0.01 * static_cast<double>(size_);
      for (Index k = 0; k < size_; ++k) cumulative_[static_cast<std::size_t>(k)] = acc += 1.0 / (offset + static_cast<double>(k));
    }
    for (Index i = 0; i < n; ++i) {
      const double u = math::uniform<double>(key, static_cast<std::uint64_t>(i), 0, 0);
      Index j;
      if (priority_ == ReplayPriority::Rank) {
        const double target = u * cumulative_[static_cast<std::size_t>(size_ - 1)];
        const auto it = std::upper_bound(cumulative_.begin(), cumulative_.begin() + size_, target);
        j = order_[static_cast<std::size_t>(std::min<Index>(it - cumulative_.begin(), size_ - 1))];
      } else {
        j = std::min<Index>(static_cast<Index>(u * static_cast<double>(size_)), size_ - 1);
      }
      std::copy_n(x_.data() + j * dim_, dim_, row_ptr(out, i));
      if (cond_dim_ > 0) std::copy_n(c_.data() + j * cond_dim_, cond_dim_, row_ptr(condition, i));
      if (log_r) log_r[i] = log_r_[static_cast<std::size_t>(j)];
    }
  }

  /// Raw state for checkpoints: entries in storage order, the write cursor and the fill level.
  std::span<V> raw_states() { return x_; }
  std::span<C> raw_conditions() { return c_; }
  std::span<S> raw_log_r() { return log_r_; }
  std::span<const V> raw_states() const { return x_; }
  std::span<const C> raw_conditions() const { return c_; }
  std::span<const S> raw_log_r() const { return log_r_; }
  Index cursor() const { return next_; }
  void restore(Index size, Index cursor) {
    if (size < 0 || size > capacity_ || cursor < 0 || (capacity_ > 0 && cursor >= capacity_))
      throw CheckpointError(detail::message("ReplayBuffer: stored size ", size, " / cursor ", cursor,
                                            " do not fit capacity ", capacity_));
    size_ = size;
    next_ = cursor;
  }

 private:
  Index capacity_ = 0, dim_ = 1, cond_dim_ = 0;
  ReplayPriority priority_ = ReplayPriority::Uniform;
  std::vector<V> x_;
  std::vector<C> c_;
  std::vector<S> log_r_;
  std::vector<Index> order_;
  std::vector<double> cumulative_;
  Index size_ = 0, next_ = 0;
};

}  // namespace rtb
