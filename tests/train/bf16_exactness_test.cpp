// SPDX-License-Identifier: Apache-2.0
// Exactness in bfloat16 (Precision::BFloat16): the closed-form Gaussian case of
// exactness_test.cpp — a zero-drift Brownian prior, a Gaussian likelihood, posterior N(m, vI)
// and log Z known — trained with a float PisMlp whose products take bfloat16 operands, checked
// against the same tolerances as the double run. They are not widened: the products' relative
// error (≈ 2⁻⁹ per operand, ≈ 3·10⁻³ on a 64-term sum of independent signs) perturbs the drift
// the sampler learns by far less than the 1%-of-v and 0.05 terms that bound the Euler sampler's
// own bias, and the evaluation's Monte Carlo terms do not depend on the arithmetic at all.

#include <doctest/doctest.h>

#include <cmath>
#include <rtb/rtb.hpp>

namespace bf16_exactness_test {

using S = float;
constexpr double kSigma2 = 1.0, kS2 = 0.5;
const double kY[2] = {1.0, -0.5};

auto gaussian_reward() {
  return rtb::make_reward([](std::span<const S> x) {
    return -((x[0] - kY[0]) * (x[0] - kY[0]) + (x[1] - kY[1]) * (x[1] - kY[1])) / (2 * kS2);
  });
}

rtb::Config config(rtb::Precision precision) {
  return rtb::Config{.batch_size = 256,
                     .learning_rate = 3e-3,
                     .log_z_learning_rate = 0.05,
                     .decay = {.start = 0, .end = 800, .final_ratio = 0.05},
                     .exploration = rtb::ExplorationSchedule::none(),
                     .threads = 2,
                     .seed = 1,
                     .precision = precision};
}

rtb::PisMlp<S> prior() { return rtb::PisMlp<S>({.dim = 2, .hidden = 32, .harmonics = 16, .seed = 5}); }

TEST_CASE("bfloat16 products: RTB still recovers the closed-form Gaussian posterior and log Z") {
  const rtb::GaussianProcess<S> process(2, 20, static_cast<S>(kSigma2), rtb::GaussianHead::MeanAndLogVariance);
  {  // The precision is in force: the first step's gradient moves by bfloat16 rounding, no more.
    rtb::RelativeTrajectoryBalance f32(process, prior(), gaussian_reward(), config(rtb::Precision::Float32));
    rtb::RelativeTrajectoryBalance bf16(process, prior(), gaussian_reward(), config(rtb::Precision::BFloat16));
    const auto a = f32.compute_gradient(), b = bf16.compute_gradient();
    const auto ga = f32.gradient(), gb = bf16.gradient();
    double num = 0, den = 0;
    for (std::size_t i = 0; i < ga.size(); ++i) {
      num += double(ga[i] - gb[i]) * double(ga[i] - gb[i]);
      den += double(ga[i]) * double(ga[i]);
    }
    CAPTURE(std::sqrt(num / den));
    CHECK(std::sqrt(num / den) > 1e-5);  // bfloat16 did run
    CHECK(std::sqrt(num / den) < 0.05);  // and changed the gradient by rounding only
    CHECK(std::fabs(a.loss - b.loss) < 0.05 * std::fabs(a.loss) + 1e-3);
  }
  rtb::RelativeTrajectoryBalance trainer(process, prior(), gaussian_reward(), config(rtb::Precision::BFloat16));
  trainer.train(800);
  const double v = kSigma2 * kS2 / (kSigma2 + kS2);
  const double m[2] = {kY[0] * kSigma2 / (kSigma2 + kS2), kY[1] * kSigma2 / (kSigma2 + kS2)};
  const double log_z = std::log(kS2 / (kSigma2 + kS2)) - (kY[0] * kY[0] + kY[1] * kY[1]) / (2 * (kSigma2 + kS2));
  const rtb::Index n = 8000;
  const auto e = trainer.evaluate(n, 99);
  const auto x = rtb::view_of(e.samples);
  for (int d = 0; d < 2; ++d) {
    const double mean = x.col(d).cast<double>().mean();
    const double var = (x.col(d).cast<double>().array() - mean).square().mean();
    CAPTURE(d);
    CAPTURE(mean);
    CAPTURE(var);
    CHECK(std::fabs(mean - m[d]) < 5 * std::sqrt(v / n) + 0.01);
    CHECK(std::fabs(var - v) < 5 * v * std::sqrt(2.0 / n) + 0.01 * v);
  }
  const double se = std::sqrt((1 / e.log_partition.ess - 1) / n);
  CAPTURE(e.log_partition.ess);
  CHECK(std::fabs(e.log_partition.log_z_is - log_z) < 5 * se + 0.01);
  CHECK(std::fabs(trainer.learned_log_z() - log_z) < 0.05);
  CHECK(e.log_partition.ess > 0.9);
}

}  // namespace bf16_exactness_test
