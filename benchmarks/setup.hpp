// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the RTB benchmarks and the memory probe share: the 2-D reference problem (GaussianProcess
// with T steps and σ² = 5, a PisMlp prior with a random — not zero — last layer so the drift and
// hence the work are realistic, the 9/25-mode mixture-ratio reward) and a wall clock.

#include <chrono>
#include <cstdint>

#include <rtb/net/pis_mlp.hpp>
#include <rtb/process/gaussian_process.hpp>
#include <rtb/reward/gaussian_mixture.hpp>
#include <rtb/train/relative_trajectory_balance.hpp>

namespace rtb_bench {

using S = float;
using Process = rtb::GaussianProcess<S>;
using Net = rtb::PisMlp<S>;
using Reward = rtb::MixtureRatioReward<S>;
using Trainer = rtb::RelativeTrajectoryBalance<Process, Net, Reward>;

inline constexpr std::uint64_t kSeed = 12345;

inline rtb::Model<Net> make_prior() { return rtb::Model<Net>(Net({.seed = kSeed, .zero_init_last = false})); }

/// The trainer is neither copyable nor movable (it owns a thread pool); returned as a prvalue.
inline Trainer make_trainer(rtb::Index batch, rtb::Index T, rtb::Index threads) {
  return Trainer(Process(2, T, 5.0f, rtb::GaussianHead::MeanAndLogVariance), make_prior(),
                 Reward(rtb::GaussianMixture<S>::posterior9(), rtb::GaussianMixture<S>::grid25()),
                 rtb::Config{.batch_size = batch, .threads = threads, .seed = kSeed});
}

/// Wall-clock seconds since construction. Rates are computed from it rather than from Google
/// Benchmark's rate counters, whose console output appends its own "/s" to the counter name and
/// which divide by CPU time of the main thread unless told otherwise.
class WallTimer {
 public:
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace rtb_bench
