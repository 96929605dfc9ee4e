// SPDX-License-Identifier: Apache-2.0
// Exactness for the DDPM: with N(m, s²) data the optimal ε-predictor is linear in x_τ at every τ
// (ddpm_gaussian.hpp), so with the clamp off the strided sampler is a linear-Gaussian chain whose
// terminal mean and variance follow exactly by recursion. The sampler's moments must match them
// within 5 standard errors of the sample size (sd(mean) = √(V/n), sd(variance) = V·√(2/n)).

#include <doctest/doctest.h>

#include <cmath>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"
#include "ddpm_gaussian.hpp"

namespace {

const std::vector<double> kMean = {0.3, -0.2}, kVar = {0.25, 0.09};

rtb_test::Moments exact_moments(const rtb::DdpmProcess<double>& p) {
  return rtb_test::terminal_moments(p, 2, [&](rtb::Index i, rtb::Index d) {
    return rtb_test::optimal_eps(p.coefficients(i).alpha_bar, kMean[static_cast<std::size_t>(d)],
                                 kVar[static_cast<std::size_t>(d)]);
  });
}

}  // namespace

TEST_CASE("DDPM exactness: the strided sampler with the optimal eps-predictor has the recursion's terminal moments") {
  for (rtb::Index T : {5, 20, 100}) {
    CAPTURE(T);
    const rtb::DdpmProcess<double> p(2, T, {.clip_denoised = false});
    const rtb::Model model(rtb_test::OptimalEpsilonDenoiser(p, kMean, kVar));
    const rtb_test::Moments exact = exact_moments(p);
    const rtb::Index n = 20000;
    const auto samples = rtb::sample_end_states(p, model, n, 4242);
    const auto x = rtb::view_of(samples);
    for (rtb::Index d = 0; d < 2; ++d) {
      const double M = exact.mean[static_cast<std::size_t>(d)], V = exact.variance[static_cast<std::size_t>(d)];
      const double mean = x.col(d).mean();
      const double var = (x.col(d).array() - mean).square().mean();
      MESSAGE("T = " << T << " d = " << d << ": exact mean " << M << " var " << V << "; sampled " << mean << ", " << var);
      CHECK(std::fabs(mean - M) < 5 * std::sqrt(V / n));
      CHECK(std::fabs(var - V) < 5 * V * std::sqrt(2.0 / n));
    }
  }
}

TEST_CASE("DDPM exactness: with every training step the optimal predictor's terminal law is close to the data's") {
  // Not an identity (the discrete chain with the optimal ε is only approximately the data's
  // reverse process), but with T = N = 1000 the gap is small; this pins the recursion against the
  // data itself, so a wrong coefficient in the recursion or the process cannot hide in both.
  const rtb::DdpmProcess<double> p(2, 1000, {.clip_denoised = false});
  const rtb_test::Moments exact = exact_moments(p);
  for (std::size_t d = 0; d < 2; ++d) {
    MESSAGE("T = 1000 d = " << d << ": mean " << exact.mean[d] << " (data " << kMean[d] << "), var " << exact.variance[d]
                            << " (data " << kVar[d] << ")");
    CHECK(std::fabs(exact.mean[d] - kMean[d]) < 0.01 * std::sqrt(kVar[d]));
    CHECK(std::fabs(exact.variance[d] - kVar[d]) < 0.02 * kVar[d]);
  }
  // With 20 strided steps the mean is still the data's, but fixed_large (σ² = β, not the
  // posterior β̃ < β) over-disperses the terminal law: the variance lands well above s².
  const rtb::DdpmProcess<double> p20(2, 20, {.clip_denoised = false});
  const rtb_test::Moments e20 = exact_moments(p20);
  for (std::size_t d = 0; d < 2; ++d) {
    MESSAGE("T = 20 d = " << d << ": mean " << e20.mean[d] << ", var " << e20.variance[d]);
    CHECK(std::fabs(e20.mean[d] - kMean[d]) < 0.001 * std::sqrt(kVar[d]));
    CHECK(e20.variance[d] > 1.1 * kVar[d]);
  }
}

TEST_CASE("DDPM exactness: RTB with a Gaussian likelihood recovers the closed-form posterior and log Z") {
  // Prior: the optimal predictor for N(m, s²) on T = 10 strided steps, so its terminal law is
  // exactly N(M, V) from the recursion. Reward: log r(x) = −‖x − y‖²/(2ρ²). Posterior
  // N(m_post, v_post) with v_post = Vρ²/(V + ρ²), m_post = (Mρ² + yV)/(V + ρ²), and
  // log Z = Σ_d ½·log(ρ²/(V + ρ²)) − (y − M)²/(2(V + ρ²)). Tolerances as in exactness_test.cpp
  // (5 standard errors of n plus 1% of v). As there, a fixed-variance sampler cannot shrink its
  // step variances as the exact path posterior does (variance 1/(1/β + λ), λ the precision
  // x_{i+1} carries about x_T), so its terminal variance sits above v_post by an amount that
  // falls with T: at T = 10 it is 85% above (0.144 for 0.078, no matter how long it trains),
  // at T = 100 about 7% after 1200 steps and 5% after 2500 (coordinate 0; 0.5% for coordinate 1),
  // which the 5-standard-error term at n = 8000 (7.9% of v) covers. x_0's own influence on x_T,
  // which no policy with x_0 ~ N(0, I) can tilt, is (Π G)²/V ≈ 10⁻⁵ of the variance.
  const rtb::DdpmProcess<double> p(2, 100, {.clip_denoised = false});
  const rtb_test::Moments prior = exact_moments(p);
  const double y[2] = {0.8, -0.6}, rho2 = 0.1;
  double m_post[2], v_post[2], log_z = 0;
  for (std::size_t d = 0; d < 2; ++d) {
    const double M = prior.mean[d], V = prior.variance[d];
    v_post[d] = V * rho2 / (V + rho2);
    m_post[d] = (M * rho2 + y[d] * V) / (V + rho2);
    log_z += 0.5 * std::log(rho2 / (V + rho2)) - (y[d] - M) * (y[d] - M) / (2 * (V + rho2));
  }
  const auto reward = rtb::make_reward([&](std::span<const double> x) {
    return -((x[0] - y[0]) * (x[0] - y[0]) + (x[1] - y[1]) * (x[1] - y[1])) / (2 * rho2);
  });
  rtb::RelativeTrajectoryBalance trainer(p, rtb_test::LinearStepEpsDenoiser(p, kMean, kVar), reward,
                                         rtb::Config{.batch_size = 256,
                                                     .learning_rate = 1e-2,
                                                     .log_z_learning_rate = 0.05,
                                                     .decay = {.start = 0, .end = 1200, .final_ratio = 0.02},
                                                     .exploration = rtb::ExplorationSchedule::none(),
                                                     .threads = 2,
                                                     .seed = 3});
  trainer.train(1200);
  const rtb::Index n = 8000;
  const auto e = trainer.evaluate(n, 77);
  const auto x = rtb::view_of(e.samples);
  for (rtb::Index d = 0; d < 2; ++d) {
    const auto k = static_cast<std::size_t>(d);
    const double mean = x.col(d).mean(), var = (x.col(d).array() - mean).square().mean();
    MESSAGE("d = " << d << ": posterior mean " << mean << " (exact " << m_post[k] << "), var " << var << " (exact "
                   << v_post[k] << "); prior " << prior.mean[k] << ", " << prior.variance[k]);
    CHECK(std::fabs(mean - m_post[k]) < 5 * std::sqrt(v_post[k] / n) + 0.01);
    CHECK(std::fabs(var - v_post[k]) < 5 * v_post[k] * std::sqrt(2.0 / n) + 0.01 * v_post[k]);
  }
  const double se = std::sqrt((1 / e.log_partition.ess - 1) / n);
  MESSAGE("log Z: learned " << trainer.learned_log_z() << ", IS " << e.log_partition.log_z_is << ", exact " << log_z
                            << ", ESS " << e.log_partition.ess);
  CHECK(std::fabs(e.log_partition.log_z_is - log_z) < 5 * se + 0.01);
  CHECK(std::fabs(trainer.learned_log_z() - log_z) < 0.05);
  CHECK(e.log_partition.ess > 0.9);
}

TEST_CASE("DDPM trains off-policy unchanged: replay re-noises end points with the backward kernel, and exploration") {
  const rtb::DdpmProcess<double> p(2, 10, {.clip_denoised = false});
  const auto reward = rtb::make_reward([](std::span<const double> x) { return -(x[0] * x[0] + x[1] * x[1]); });
  rtb::RelativeTrajectoryBalance trainer(p, rtb_test::LinearStepEpsDenoiser(p, kMean, kVar), reward,
                                         rtb::Config{.batch_size = 64,
                                                     .learning_rate = 1e-2,
                                                     .exploration = {.initial = 0.1, .hold_until = 10, .zero_at = 20},
                                                     .replay_fraction = 0.25,
                                                     .replay_capacity = 512,
                                                     .threads = 1,
                                                     .seed = 8});
  std::int64_t replayed = 0;
  double first = 0, last = 0;
  trainer.train(200, [&](const auto&, const rtb::StepStats& s) {
    replayed += s.replayed;
    if (s.iteration < 20) first += s.loss / 20;
    if (s.iteration >= 180) last += s.loss / 20;
  });
  MESSAGE("loss: first 20 steps " << first << ", last 20 " << last << "; replayed rows " << replayed);
  CHECK(replayed > 190 * 16);
  CHECK(std::isfinite(last));
  CHECK(last < first);
}
