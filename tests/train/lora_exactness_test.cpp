// SPDX-License-Identifier: Apache-2.0
// RTB through LoRA on the exact Gaussian case of exactness_test.cpp: the prior is an Mlp whose
// zero-initialised head makes it the zero-drift Brownian prior exactly (N(0, σ²I) at x_T), the
// posterior is Lora<Mlp> over that frozen base, and with log r(x) = −‖x − y‖²/(2s²) RTB must reach
//   v = σ²s²/(σ² + s²),  m = y·σ²/(σ² + s²),  log Z = (D/2)·log(s²/(σ² + s²)) − ‖y‖²/(2(σ² + s²)),
// with the tolerances of exactness_test.cpp (5 standard errors at the evaluation size n plus 1%
// of v; the fixed-variance Euler sampler's terminal variance sits a few percent above v). The
// base has W_out = 0, so everything the posterior learns lives in the adapters' B·A.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <rtb/net/lora.hpp>
#include <rtb/rtb.hpp>

namespace {

using S = double;
constexpr double kSigma2 = 1.0, kS2 = 0.5;
const double kY[2] = {1.0, -0.5};

}  // namespace

TEST_CASE("RTB with Lora<Mlp> recovers the closed-form Gaussian posterior and log Z; the base never moves") {
  const rtb::GaussianProcess<S> process(2, 20, kSigma2, rtb::GaussianHead::MeanAndLogVariance);
  auto base = std::make_shared<const rtb::Model<rtb::Mlp<S>>>(
      rtb::Mlp<S>({.input_dim = 2, .hidden = {32, 32}, .output_dim = 4, .time_harmonics = 8, .seed = 5}));
  const std::vector<S> base_before(base->params().begin(), base->params().end());
  rtb::Model<rtb::Lora<rtb::Mlp<S>>> post(rtb::Lora<rtb::Mlp<S>>(base->net(), {.rank = 4, .seed = 1}), base);
  CHECK(post.num_params() == 4 * (18 + 32) + 4 * (32 + 32) + 4 * (32 + 4));
  auto reward = rtb::make_reward([](std::span<const S> x) {
    return -((x[0] - kY[0]) * (x[0] - kY[0]) + (x[1] - kY[1]) * (x[1] - kY[1])) / (2 * kS2);
  });
  rtb::RelativeTrajectoryBalance trainer(process, post, reward,
                                         rtb::Config{.batch_size = 256,
                                                     .learning_rate = 1e-2,
                                                     .log_z_learning_rate = 0.05,
                                                     .decay = {.start = 0, .end = 800, .final_ratio = 0.05},
                                                     .exploration = rtb::ExplorationSchedule::none(),
                                                     .threads = 2,
                                                     .seed = 1});
  CHECK(trainer.prior().params().data() == base->params().data());
  CHECK(trainer.optimizer().size() == static_cast<std::size_t>(post.num_params()));
  trainer.train(800);
  CHECK(std::equal(base_before.begin(), base_before.end(), base->params().begin()));

  const double v = kSigma2 * kS2 / (kSigma2 + kS2);
  const double m[2] = {kY[0] * kSigma2 / (kSigma2 + kS2), kY[1] * kSigma2 / (kSigma2 + kS2)};
  const double log_z = std::log(kS2 / (kSigma2 + kS2)) - (kY[0] * kY[0] + kY[1] * kY[1]) / (2 * (kSigma2 + kS2));
  const rtb::Index n = 8000;
  const auto e = trainer.evaluate(n, 99);
  const auto x = rtb::view_of(e.samples);
  for (int d = 0; d < 2; ++d) {
    const double mean = x.col(d).mean();
    const double var = (x.col(d).array() - mean).square().mean();
    std::printf("lora exactness: dim %d mean %.4f (exact %.4f) variance %.4f (exact %.4f)\n", d, mean, m[d], var, v);
    CHECK(std::fabs(mean - m[d]) < 5 * std::sqrt(v / n) + 0.01);
    CHECK(std::fabs(var - v) < 5 * v * std::sqrt(2.0 / n) + 0.01 * v);
  }
  const double se = std::sqrt((1 / e.log_partition.ess - 1) / n);
  std::printf("lora exactness: log Z learned %.4f, IS %.4f (exact %.4f), ESS %.3f\n", trainer.learned_log_z(),
              e.log_partition.log_z_is, log_z, e.log_partition.ess);
  CHECK(std::fabs(e.log_partition.log_z_is - log_z) < 5 * se + 0.01);
  CHECK(std::fabs(trainer.learned_log_z() - log_z) < 0.05);
  CHECK(e.log_partition.ess > 0.9);
}

TEST_CASE(
    "a Lora posterior trains only its adapters, resumes from a checkpoint bit for bit, and refuses another rank") {
  using Base = rtb::Mlp<S>;
  const rtb::GaussianProcess<S> process(2, 10, kSigma2, rtb::GaussianHead::MeanAndLogVariance);
  auto base = std::make_shared<const rtb::Model<Base>>(
      Base({.input_dim = 2, .hidden = {16, 16}, .output_dim = 4, .time_harmonics = 4, .seed = 5}));
  auto reward = rtb::make_reward([](std::span<const S> x) { return -x[0] * x[0]; });
  const rtb::Config cfg{.batch_size = 32, .exploration = rtb::ExplorationSchedule::none(), .threads = 2, .seed = 3};
  rtb::RelativeTrajectoryBalance trainer(
      process, rtb::Model<rtb::Lora<Base>>(rtb::Lora<Base>(base->net(), {.rank = 2}), base), reward, cfg);
  CHECK(trainer.optimizer().size() == 2 * (10 + 16) + 2 * (16 + 16) + 2 * (16 + 4));  // A, B of layers.0, 1, 2
  trainer.train(5);
  const std::string path = (std::filesystem::temp_directory_path() / "rtb_lora_test.ckpt").string();
  trainer.save(path);
  rtb::RelativeTrajectoryBalance resumed(
      process, rtb::Model<rtb::Lora<Base>>(rtb::Lora<Base>(base->net(), {.rank = 2, .seed = 8}), base), reward, cfg);
  resumed.load(path);
  CHECK(resumed.iteration() == 5);
  CHECK(std::equal(trainer.posterior().params().begin(), trainer.posterior().params().end(),
                   resumed.posterior().params().begin(), resumed.posterior().params().end()));
  trainer.train(2);
  resumed.train(2);
  CHECK(std::equal(trainer.posterior().params().begin(), trainer.posterior().params().end(),
                   resumed.posterior().params().begin(), resumed.posterior().params().end()));
  rtb::RelativeTrajectoryBalance other(
      process, rtb::Model<rtb::Lora<Base>>(rtb::Lora<Base>(base->net(), {.rank = 3}), base), reward, cfg);
  CHECK_THROWS_AS(other.load(path), rtb::Error);
  std::filesystem::remove(path);
}
