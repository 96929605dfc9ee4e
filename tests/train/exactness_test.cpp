// SPDX-License-Identifier: Apache-2.0
// Exactness: a zero-drift Brownian prior from x_0 = 0 is exactly N(0, σ²I) at x_T. With a
// Gaussian likelihood reward log r(x) = −‖x − y‖²/(2s²) the posterior is N(m, vI) with
//   v = σ²s²/(σ² + s²),  m = y·σ²/(σ² + s²),
//   log Z = (D/2)·log(s²/(σ² + s²)) − ‖y‖²/(2(σ² + s²)),
// and RTB must recover all three. Tolerances are derived from the evaluation sample size n:
// 5 standard errors (sd(mean) = √(v/n), sd(variance) = v·√(2/n)) plus 1% of v. A fixed-variance
// Euler sampler cannot shrink its step variance as the exact discrete posterior does; its last
// step alone costs s²/(s² + σ²dt) ≈ 1%, and over the 20 steps the terminal variance of the
// trained sampler sits 4–5% above v (measured with PisMlp and Mlp of several widths: 0.346–0.352
// for v = 1/3, ESS 0.937), which the 5-standard-error term at n = 8000 (8% of v) covers.

#include <doctest/doctest.h>

#include <cmath>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"

namespace {

using S = double;
constexpr double kSigma2 = 1.0, kS2 = 0.5;
const double kY[2] = {1.0, -0.5};

struct Exact {
  double v = kSigma2 * kS2 / (kSigma2 + kS2);
  double m[2] = {kY[0] * kSigma2 / (kSigma2 + kS2), kY[1] * kSigma2 / (kSigma2 + kS2)};
  double log_z = std::log(kS2 / (kSigma2 + kS2)) - (kY[0] * kY[0] + kY[1] * kY[1]) / (2 * (kSigma2 + kS2));
};

auto gaussian_reward() {
  return rtb::make_reward([](std::span<const S> x) {
    return -((x[0] - kY[0]) * (x[0] - kY[0]) + (x[1] - kY[1]) * (x[1] - kY[1])) / (2 * kS2);
  });
}

template <class Trainer>
void check_posterior(Trainer& trainer, const char* label, const rtb_test::Pinned& pinned) {
  CAPTURE(label);
  rtb_test::check_pinned(label, rtb_test::trained_hash(trainer.posterior()), trainer.learned_log_z(),
                         pinned);
  const Exact exact;
  const rtb::Index n = 8000;
  const auto e = trainer.evaluate(n, 99);
  const auto x = rtb::view_of(e.samples);
  for (int d = 0; d < 2; ++d) {
    const double mean = x.col(d).mean();
    const double var = (x.col(d).array() - mean).square().mean();
    CHECK(std::fabs(mean - exact.m[d]) < 5 * std::sqrt(exact.v / n) + 0.01);
    CHECK(std::fabs(var - exact.v) < 5 * exact.v * std::sqrt(2.0 / n) + 0.01 * exact.v);
  }
  // The IS estimate's standard error is sd(w)/(√n·mean(w)) = √((1/ESS − 1)/n).
  const double se = std::sqrt((1 / e.log_partition.ess - 1) / n);
  CHECK(std::fabs(e.log_partition.log_z_is - exact.log_z) < 5 * se + 0.01);
  CHECK(std::fabs(trainer.learned_log_z() - exact.log_z) < 0.05);
  CHECK(e.log_partition.ess > 0.9);
}

rtb::PisMlp<S> zero_drift_prior() { return rtb::PisMlp<S>({.dim = 2, .hidden = 32, .harmonics = 16, .seed = 5}); }

/// 800 steps of Adam 3e-3 decaying to 5%, log Z step 0.05, batch 256: the settings both tests share.
rtb::Config exactness_config(std::uint64_t seed) {
  return rtb::Config{.batch_size = 256,
                     .learning_rate = 3e-3,
                     .log_z_learning_rate = 0.05,
                     .decay = {.start = 0, .end = 800, .final_ratio = 0.05},
                     .exploration = rtb::ExplorationSchedule::none(),
                     .threads = 2,
                     .seed = seed};
}

}  // namespace

TEST_CASE("exactness: RTB recovers the closed-form Gaussian posterior and log Z") {
  const rtb::GaussianProcess<S> process(2, 20, kSigma2, rtb::GaussianHead::MeanAndLogVariance);
  rtb::RelativeTrajectoryBalance trainer(process, zero_drift_prior(), gaussian_reward(), exactness_config(1));
  trainer.train(800);
  check_posterior(trainer, "on-policy", {0x43d2e95de503ee06ull, -1.5511124504987397});
}

TEST_CASE("off-policy: exploration and replay reach the same fixed point") {
  const rtb::GaussianProcess<S> process(2, 20, kSigma2, rtb::GaussianHead::MeanAndLogVariance);
  rtb::Config cfg = exactness_config(2);
  cfg.exploration = {.initial = 0.5, .hold_until = 100, .zero_at = 400};
  cfg.replay_fraction = 0.25;
  cfg.replay_capacity = 2048;
  rtb::RelativeTrajectoryBalance trainer(process, zero_drift_prior(), gaussian_reward(), cfg);
  std::int64_t replayed = 0;
  trainer.train(800, [&](const auto&, const rtb::StepStats& s) { replayed += s.replayed; });
  CHECK(replayed > 790 * 64);  // every step but the first carried 64 replayed, re-noised trajectories
  check_posterior(trainer, "exploration + replay", {0x32bf4853b77c28f9ull, -1.5352425329153443});
}
