// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Wraps a callable into a Reward. Any of these works, per row or per batch, with or without the
/// rows' conditions:
///
///     S(std::span<const V> x_row)                                   per row
///     S(std::span<const V> x_row, std::span<const C> condition_row) per row, conditional
///     void(ConstMatrixView<V> x, std::span<S> out)                  per batch
///     void(ConstMatrixView<V> x, ConstMatrixView<C> c, std::span<S> out)  per batch, conditional

#include <concepts>
#include <span>
#include <utility>

#include "rtb/concepts/reward.hpp"
#include "rtb/space.hpp"

namespace rtb {

template <class F>
class RewardFunction {
 public:
  explicit RewardFunction(F f) : f_(std::move(f)) {}

  template <class V, class C, class S>
  void log_reward(ConstMatrixView<V> x, ConstMatrixView<C> c, std::span<S> out) {
    if constexpr (std::invocable<F&, ConstMatrixView<V>, ConstMatrixView<C>, std::span<S>>) {
      f_(x, c, out);
    } else if constexpr (std::invocable<F&, std::span<const V>, std::span<const C>>) {
      for (Index i = 0; i < x.rows(); ++i)
        out[static_cast<std::size_t>(i)] =
            static_cast<S>(f_(std::span<const V>(row_ptr(x, i), static_cast<std::size_t>(x.cols())),
                              std::span<const C>(c.data() + i * c.cols(), static_cast<std::size_t>(c.cols()))));
    } else {
      log_reward(x, out);
    }
  }

  template <class V, class S>
  void log_reward(ConstMatrixView<V> x, std::span<S> out) {
    if constexpr (std::invocable<F&, ConstMatrixView<V>, std::span<S>>) {
      f_(x, out);
    } else {
      for (Index i = 0; i < x.rows(); ++i)
        out[static_cast<std::size_t>(i)] =
            static_cast<S>(f_(std::span<const V>(row_ptr(x, i), static_cast<std::size_t>(x.cols()))));
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
