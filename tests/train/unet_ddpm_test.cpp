// SPDX-License-Identifier: Apache-2.0
// UNet, DdpmProcess and Lora<UNet> together, end to end: a tiny UNet prior (8×8×1 images, levels
// {4, 8}, attention at the lower level and in the middle) fitted by ε-MSE through fit_prior on a
// two-mode image distribution (every pixel near +a or near −a, one sign per image), then
// fine-tuned by RTB through rank-2 adapters of its attention q, k, v towards the images whose mean
// pixel is near +a (log r = −(mean pixel − a)²/(2s²)). The prior is fitted once and shared by both
// cases; one trainer type serves the whole file (the refused configurations too), to keep compile
// time down.

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>
#include <rtb/net/lora.hpp>
#include <rtb/rtb.hpp>

namespace {

using rtb::Index;
using S = float;
using Net = rtb::UNet<S>;
using Post = rtb::Lora<Net>;

constexpr Index kSide = 8, kDim = kSide * kSide, kSteps = 10;
constexpr double kLevel = 0.5, kPixelSd = 0.1, kRewardSd = 0.25;

Net::Options tiny() {
  return {.height = kSide,
          .width = kSide,
          .channels = 1,
          .channels_per_level = {4, 8},
          .blocks_per_level = 1,
          .attention_levels = {1},
          .mid_attention = true,
          .groups = 2,
          .seed = 7};
}

/// Image r: every pixel ±kLevel (the sign a fair coin per image) plus N(0, kPixelSd²) noise.
void two_mode_images(rtb::MatrixView<S> x, std::int64_t it) {
  const rtb::math::NoiseKey key{31, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)};
  for (Index r = 0; r < x.rows(); ++r) {
    const double sign = rtb::math::uniform<S>(key, static_cast<std::uint64_t>(r), 1, 0) < 0.5 ? -1.0 : 1.0;
    for (Index d = 0; d < kDim; ++d)
      x(r, d) = sign * kLevel +
                kPixelSd * rtb::math::normal<S>(key, static_cast<std::uint64_t>(r), 0, static_cast<std::uint32_t>(d));
  }
}

double log_reward(std::span<const S> x) {
  const double m = std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size()) - kLevel;
  return -m * m / (2 * kRewardSd * kRewardSd);
}

auto reward() {
  return rtb::make_reward(log_reward);
}

/// Mean log r over the rows of samples.
double mean_log_reward(const rtb::Samples<S>& samples) {
  const auto x = rtb::view_of(samples);
  double sum = 0;
  for (Index r = 0; r < x.rows(); ++r) sum += log_reward(std::span<const S>(x.data() + r * x.cols(), x.cols()));
  return sum / static_cast<double>(x.rows());
}

double mean_of(const std::vector<double>& v, std::size_t from, std::size_t to) {
  return std::accumulate(v.begin() + static_cast<std::ptrdiff_t>(from), v.begin() + static_cast<std::ptrdiff_t>(to),
                         0.0) /
         static_cast<double>(to - from);
}

struct FittedPrior {
  std::shared_ptr<const rtb::Model<Net>> model;
  std::vector<double> losses;  ///< fit_prior's loss at every iteration
};

/// The prior both test cases start from, fitted by ε-MSE once (by whichever test case runs first).
const FittedPrior& fitted_prior() {
  static const FittedPrior fitted = [] {
    FittedPrior f;
    std::vector<double>& losses = f.losses;
    rtb::Model<Net> model{Net(tiny())};
    rtb::fit_prior(rtb::DdpmProcess<S>(kDim, kSteps), model, two_mode_images,
                   rtb::PriorFitConfig{.batch_size = 64,
                                       .iterations = 100,
                                       .learning_rate = 3e-3,
                                       .step_fraction = 0.1,  // one step of the ten a row
                                       .threads = 1,
                                       .block_rows = 64,
                                       .seed = 5},
                   [&](const rtb::PriorFitStats& st) {
                     losses.push_back(st.loss);
                     return true;
                   });
    f.model = std::make_shared<const rtb::Model<Net>>(std::move(model));
    return f;
  }();
  return fitted;
}

const rtb::Config kConfig{
    .batch_size = 16, .learning_rate = 1e-2, .log_z_learning_rate = 0.1, .threads = 1, .block_rows = 16, .seed = 9};

using Trainer = rtb::RelativeTrajectoryBalance<rtb::DdpmProcess<S>, Post, rtb::RewardFunction<decltype(&log_reward)>>;

}  // namespace

TEST_CASE(
    "UNet prior by eps-MSE through fit_prior with DdpmProcess: the loss falls; the UNet refuses fractional time") {
  const rtb::DdpmProcess<S> process(kDim, kSteps);
  const auto& [prior, losses] = fitted_prior();
  REQUIRE(losses.size() == 100);
  const double first = mean_of(losses, 0, 10), last = mean_of(losses, losses.size() - 20, losses.size());
  MESSAGE("UNet eps-MSE loss: first 10 iterations " << first << ", last 20 " << last);
  for (double l : losses) REQUIRE(std::isfinite(l));
  CHECK(last < 0.5 * first);

  // The fitted prior's samples carry the two modes: mean pixels near ±kLevel, both present.
  const auto samples = rtb::sample_end_states(process, *prior, 64, 3, 1);
  const auto x = rtb::view_of(samples);
  Index plus = 0, minus = 0;
  for (Index r = 0; r < x.rows(); ++r) {
    const double m = x.row(r).mean();
    plus += m > 0.5 * kLevel;
    minus += m < -0.5 * kLevel;
  }
  MESSAGE("prior samples: " << plus << " near +a, " << minus << " near -a of 64");
  CHECK(plus >= 4);
  CHECK(minus >= 4);

  // A process whose time is τ/N gives the UNet a non-integer time: refused, typed, at the first
  // call, and a process of another width at the door.
  auto base = std::make_shared<const rtb::Model<Net>>(Net(tiny()));
  Trainer fractional(rtb::DdpmProcess<S>(kDim, kSteps, {.time_as_fraction = true}),
                     rtb::Model<Post>(Post(base->net(), {.rank = 2}), base), reward(), kConfig);
  CHECK_THROWS_AS(fractional.step(), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(Trainer(rtb::DdpmProcess<S>(kDim + 1, kSteps), rtb::Model<Post>(Post(base->net(), {.rank = 2}), base),
                          reward(), kConfig),
                  rtb::ShapeError);
}

TEST_CASE(
    "RTB through Lora<UNet> over a fitted DDPM UNet prior: exact start, adapter-only, learns, resumes bit for bit") {
  const rtb::DdpmProcess<S> process(kDim, kSteps);
  const auto base = fitted_prior().model;
  const std::vector<S> base_before(base->params().begin(), base->params().end());

  Trainer trainer(process, rtb::Model<Post>(Post(base->net(), {.rank = 2, .seed = 1}), base), reward(), kConfig);
  // q, k, v of 4 attentions (down_blocks.1, mid, up_blocks.0 ×2), each [8, 8]: A [2, 8] + B [8, 2].
  CHECK(trainer.posterior().net().modules().size() == 12);
  CHECK(trainer.posterior().num_params() == 12 * (2 * 8 + 8 * 2));
  CHECK(trainer.optimizer().size() == static_cast<std::size_t>(trainer.posterior().num_params()));
  CHECK(trainer.prior().params().data() == base->params().data());

  // Fresh adapters (B = 0) are the prior exactly: the same samples, bit for bit, for one seed.
  const rtb::Index n = 64;
  const auto from_prior = rtb::sample_end_states(process, *base, n, 77, 1);
  const auto from_post = trainer.sample(n, 77);
  CHECK(std::equal(from_prior.begin(), from_prior.end(), from_post.begin(), from_post.end()));

  std::vector<double> log_r, loss;
  trainer.train(40, [&](const Trainer&, const rtb::StepStats& st) {
    log_r.push_back(st.mean_log_r);
    loss.push_back(st.loss);
    return true;
  });
  REQUIRE(log_r.size() == 40);
  const double r0 = mean_of(log_r, 0, 5), r1 = mean_of(log_r, 35, 40);
  const double l0 = mean_of(loss, 0, 5), l1 = mean_of(loss, 35, 40);
  const auto after = trainer.sample(n, 77);  // the same noise as from_prior: a paired comparison
  const double before_r = mean_log_reward(from_prior), after_r = mean_log_reward(after);
  MESSAGE("Lora<UNet> RTB: batch mean log r " << r0 << " -> " << r1 << ", loss " << l0 << " -> " << l1
                                              << "; mean log r of 64 samples, same noise: prior " << before_r
                                              << ", posterior " << after_r);
  CHECK(r1 > r0);
  CHECK(l1 < 0.6 * l0);
  CHECK(after_r > 0.9 * before_r);  // log r <= 0: the gap to the best reward closes by 10%
  CHECK(std::equal(base_before.begin(), base_before.end(), base->params().begin()));  // the base never moves
  CHECK(!std::equal(from_prior.begin(), from_prior.end(), after.begin(), after.end()));

  // Checkpoint: a trainer with other initial adapters resumes the run bit for bit.
  const std::string path = (std::filesystem::temp_directory_path() / "rtb_unet_ddpm_test.ckpt").string();
  trainer.save(path);
  Trainer resumed(process, rtb::Model<Post>(Post(base->net(), {.rank = 2, .seed = 4}), base), reward(), kConfig);
  resumed.load(path);
  std::filesystem::remove(path);
  CHECK(resumed.iteration() == 40);
  CHECK(std::equal(trainer.posterior().params().begin(), trainer.posterior().params().end(),
                   resumed.posterior().params().begin(), resumed.posterior().params().end()));
  const rtb::StepStats a0 = trainer.step(), b0 = resumed.step();
  const rtb::StepStats a1 = trainer.step(), b1 = resumed.step();
  CHECK(a0.loss == b0.loss);
  CHECK(a1.loss == b1.loss);
  CHECK(trainer.learned_log_z() == resumed.learned_log_z());
  CHECK(std::equal(trainer.posterior().params().begin(), trainer.posterior().params().end(),
                   resumed.posterior().params().begin(), resumed.posterior().params().end()));
}
