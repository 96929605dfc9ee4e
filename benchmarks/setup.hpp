// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the RTB benchmarks and the memory probe share: the 2-D reference problem (GaussianProcess
// with T steps and σ² = 5, a PisMlp prior with a random — not zero — last layer so the drift and
// hence the work are realistic, the 9/25-mode mixture-ratio reward), the trained weights of that
// problem (benchmarks/data/, made by the gmm2d example: data/README.md) and a wall clock.

#include <chrono>
#include <cstdint>
#include <string>

#include <rtb/io/npy.hpp>
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

/// Which weights a benchmark runs: fresh (make_prior), the gmm2d example's fitted prior (the
/// posterior starts as a copy of it, as in the demo), or that prior with the posterior after 250
/// of the demo's fine-tuning iterations (TV 0.147 to the 9 modes: partly fine-tuned).
enum class Weights { Fresh = 0, TrainedPrior = 1, FineTuned = 2 };

/// benchmarks/data: RTB_BENCH_DATA from CMake, else relative to the repository root.
inline std::string data_dir() {
#ifdef RTB_BENCH_DATA
  return RTB_BENCH_DATA;
#else
  return "benchmarks/data";
#endif
}

inline rtb::Model<Net> prior_of(Weights w) {
  rtb::Model<Net> prior = make_prior();
  if (w != Weights::Fresh) rtb::load_parameters(prior, data_dir() + "/gmm2d_prior");
  return prior;
}

/// The trainer is neither copyable nor movable (it owns a thread pool); returned as a prvalue,
/// its posterior a copy of prior_of(w) (call load_posterior for Weights::FineTuned).
inline Trainer make_trainer(rtb::Index batch, rtb::Index T, rtb::Index threads, Weights w = Weights::Fresh,
                            bool flush_denormals = true, rtb::Precision precision = rtb::Precision::Float32) {
  return Trainer(Process(2, T, 5.0f, rtb::GaussianHead::MeanAndLogVariance), prior_of(w),
                 Reward(rtb::GaussianMixture<S>::posterior9(), rtb::GaussianMixture<S>::grid25()),
                 rtb::Config{.batch_size = batch,
                             .threads = threads,
                             .seed = kSeed,
                             .flush_denormals = flush_denormals,
                             .precision = precision});
}

/// The partly fine-tuned posterior's weights into t, for Weights::FineTuned (else nothing).
inline void load_posterior(Trainer& t, Weights w) {
  if (w == Weights::FineTuned) rtb::load_parameters(t.posterior(), data_dir() + "/gmm2d_posterior_250");
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
