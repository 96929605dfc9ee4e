// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Reward concept: log r(x) for every row of a batch of end states, given each row's
/// condition. r ≥ 0, so log r may be −∞ (r = 0) but never NaN; the trainer checks both and decides
/// on purpose what −∞ means (Config::on_zero_reward). A reward that ignores conditions may take
/// the end states alone. Rewards read host memory (the trainer brings x_T to the host when the
/// process lives elsewhere). Any callable wraps into a Reward with rtb::make_reward.

#include <concepts>
#include <span>

#include "rtb/detail/flush_denormal.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// log_reward(x [B, D], condition [B, Dc], out [B]): out[i] = log r(x_i | c_i).
template <class R, class Value, class Scalar, class C = Value>
concept ConditionalReward = requires(R& r, ConstMatrixView<Value> x, ConstMatrixView<C> c, std::span<Scalar> out) {
  r.log_reward(x, c, out);
};

/// log_reward(x [B, D], out [B]): out[i] = log r(x_i).
template <class R, class Value, class Scalar>
concept UnconditionalReward = requires(R& r, ConstMatrixView<Value> x, std::span<Scalar> out) { r.log_reward(x, out); };

template <class R, class Value, class Scalar, class C = Value>
concept Reward = ConditionalReward<R, Value, Scalar, C> || UnconditionalReward<R, Value, Scalar>;

namespace detail {
/// Calls whichever form the reward has, in the floating-point mode of the entry point's caller.
template <class R, class V, class S, class C>
void call_log_reward(R& r, ConstMatrixView<V> x, ConstMatrixView<C> c, std::span<S> out) {
  const ScopedCallerFloatMode callers_mode;  // user code: the caller's own floating-point mode
  if constexpr (ConditionalReward<R, V, S, C>)
    r.log_reward(x, c, out);
  else
    r.log_reward(x, out);
}
}  // namespace detail

namespace concepts_check {

/// The smallest Reward: a Gaussian likelihood around 1, log r(x) = −½‖x − 1‖².
struct UnitGaussianReward {
  void log_reward(ConstMatrixView<double> x, std::span<double> out) const {
    for (Index i = 0; i < x.rows(); ++i) out[i] = -0.5 * (x.row(i).array() - 1.0).square().sum();
  }
};
static_assert(Reward<UnitGaussianReward, double, double>);
static_assert(!Reward<int, double, double>);

}  // namespace concepts_check
}  // namespace rtb
