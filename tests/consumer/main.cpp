// SPDX-License-Identifier: Apache-2.0
// The README's example, as a downstream project compiles it.
#include <cstdio>
#include <rtb/rtb.hpp>

int main() {
  rtb::GaussianProcess<float> process(/*dim=*/2, /*num_steps=*/20, /*variance_per_unit_time=*/5.0f,
                                      rtb::GaussianHead::MeanAndLogVariance);
  rtb::Model prior(rtb::PisMlp<float>({.dim = 2, .hidden = 16, .harmonics = 8}));
  auto reward = rtb::make_reward([](std::span<const float> x) { return -0.5f * (x[0] * x[0] + x[1] * x[1]); });
  rtb::RelativeTrajectoryBalance trainer(process, prior, reward, rtb::Config{.batch_size = 32, .threads = 1});
  const auto stats = trainer.train(3);
  const auto x = trainer.sample(4, /*seed=*/1);
  std::printf("consumer ok: loss %.3f, %zu samples\n", stats.loss, x.shape()[0]);
  return stats.iteration == 2 && x.shape()[0] == 4 ? 0 : 1;
}
