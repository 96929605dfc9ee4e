// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The Reward concept: log r(x) for every row of a batch of end states. r ≥ 0, so log r may be
/// −∞ (r = 0) but never NaN; the trainer checks both and decides on purpose what −∞ means
/// (Config::on_zero_reward). Any callable wraps into a Reward with rtb::make_reward.

#include <concepts>
#include <span>

#include "rtb/config.hpp"

namespace rtb {

/// log_reward(x [B, D], out [B]): out[i] = log r(x_i).
template <class R, class Value, class Scalar>
concept Reward = requires(R& r, ConstMatrixView<Value> x, std::span<Scalar> out) { r.log_reward(x, out); };

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
