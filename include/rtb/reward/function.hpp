// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Wraps a callable into a Reward. Either a per-row callable `S(std::span<const V> x_row)` or a
/// batch callable `void(ConstMatrixView<V> x, std::span<S> out)` works.

#include <concepts>
#include <span>
#include <utility>

#include "rtb/concepts/reward.hpp"
#include "rtb/config.hpp"

namespace rtb {

template <class F>
class RewardFunction {
 public:
  explicit RewardFunction(F f) : f_(std::move(f)) {}

  template <class V, class S>
  void log_reward(ConstMatrixView<V> x, std::span<S> out) {
    if constexpr (std::invocable<F&, ConstMatrixView<V>, std::span<S>>) {
      f_(x, out);
    } else {
      for (Index i = 0; i < x.rows(); ++i)
        out[i] = static_cast<S>(f_(std::span<const V>(row_ptr(x, i), static_cast<std::size_t>(x.cols()))));
    }
  }

 private:
  F f_;
};

/// `make_reward([](std::span<const float> x) { return -x[0] * x[0]; })`
template <class F>
RewardFunction<F> make_reward(F f) {
  return RewardFunction<F>(std::move(f));
}

}  // namespace rtb
