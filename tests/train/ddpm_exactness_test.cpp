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
