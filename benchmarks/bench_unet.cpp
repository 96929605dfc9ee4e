// SPDX-License-Identifier: Apache-2.0
// The whole UNet of issue 11 and RTB steps through it (float, one thread):
//
//   BM_UnetForward/size/trained    training forward (context kept) of 32 images, GFLOP/s
//   BM_UnetForwardBf16/size/trained, BM_UnetBackwardBf16/size/trained   the same in Precision::BFloat16
//   BM_UnetBackward/size/trained   backward of 32 images after one forward (all parameter
//                                  gradients and ∂/∂x), GFLOP/s counted as twice the forward's
//   BM_DdpmRtbStep/T/step_pct      one RelativeTrajectoryBalance step, Lora<UNet> (rank 32 on every
//                                  attention's q, k, v) over a trained 16×16 UNet prior, DdpmProcess
//                                  with T steps, batch 16, step_fraction = step_pct/100; s/step
//
// The net is a small paper-like configuration: 1 channel, levels {32, 64}, one ResNet block a
// level, attention at the lower level and in the middle, 32 groups. Two levels downsample once,
// so 28×28 (MNIST) runs as it is (14×14 below); no padding to 32×32 is needed. FLOPs are
// 2·macs_per_row() per image (convolutions and attention; the timestep MLP, norms and
// activations are not counted).
//
// "trained" = 1: the weights after a short ε-MSE fit (fit_prior, DdpmProcess, 20 iterations at
// lr 1e-3 on smooth random images), so norms, biases and kernels are moved off their
// initialisation as a trained net's are (denormal or other value-dependent slowdowns show up as a
// gap to "trained" = 0, the fresh PyTorch-default weights; the `subnormal` counter counts the
// subnormal floats among the kept maps and their gradients after the run, `moved` the relative
// distance ‖θ − θ_fresh‖/‖θ_fresh‖ of the weights used). The fit runs once per size.

#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <span>
#include <vector>

#include <benchmark/benchmark.h>
#include <rtb/math/philox.hpp>
#include <rtb/net/lora.hpp>
#include <rtb/net/unet.hpp>
#include <rtb/process/ddpm.hpp>
#include <rtb/reward/function.hpp>
#include <rtb/train/prior.hpp>
#include <rtb/train/relative_trajectory_balance.hpp>

#include "setup.hpp"
#include "unet_setup.hpp"

namespace {

using namespace rtb_bench::unet;

void unet(benchmark::State& state, bool backward, rtb::Precision precision = rtb::Precision::Float32) {
  const rtb::ScopedPrecision in_precision(precision);  // the model's own guards follow it
  const Index size = state.range(0);
  const auto model = model_of(size, state.range(1) != 0);
  const Index D = model->input_dim();
  const auto [x, d_out] = inputs(size);
  rtb::RowMatrix<S> out(kBatch, D);
  auto ctx = model->make_context(kBatch);
  std::vector<S> grad(static_cast<std::size_t>(model->num_params()));
  const rtb::Step<S> step{rtb::ConstMatrixView<S>(x.data(), kBatch, D), rtb::ConstMatrixView<S>(nullptr, kBatch, 0), 0,
                          S(500), 0};
  const rtb::MatrixView<S> ov(out.data(), kBatch, D);
  const rtb::ConstMatrixView<S> dv(d_out.data(), kBatch, D);
  auto once = [&] {
    if (backward)
      model->backward(ctx, dv, std::span<S>(grad), rtb::GradientMode::Overwrite);
    else
      model->forward(step, ov, ctx);
  };
  model->forward(step, ov, ctx);  // the forward backward reads, and a warm-up
  once();
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    once();
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  set_flop_counters(state, model->net(), backward, timer.seconds());
  // Subnormal values among the kept maps and their gradients: what would make trained weights slow.
  Index subnormal = 0;
  for (const auto* buf : {&ctx.maps, &ctx.grads})
    for (S v : *buf) subnormal += std::fpclassify(v) == FP_SUBNORMAL;
  state.counters["subnormal"] = static_cast<double>(subnormal);
  // ‖θ − θ_fresh‖/‖θ_fresh‖: how far the fit moved the weights (0 for fresh ones).
  const auto fresh = model_of(size, false)->params(), used = model->params();
  double d2 = 0, f2 = 0;
  for (std::size_t i = 0; i < fresh.size(); ++i) {
    d2 += static_cast<double>(used[i] - fresh[i]) * static_cast<double>(used[i] - fresh[i]);
    f2 += static_cast<double>(fresh[i]) * static_cast<double>(fresh[i]);
  }
  state.counters["moved"] = std::sqrt(d2 / f2);
}

void BM_UnetForward(benchmark::State& state) {
  unet(state, false);
}
void BM_UnetBackward(benchmark::State& state) {
  unet(state, true);
}
void BM_UnetForwardBf16(benchmark::State& state) {
  unet(state, false, rtb::Precision::BFloat16);
  state.SetLabel(rtb::detail::bf16_engine_name());
}
void BM_UnetBackwardBf16(benchmark::State& state) {
  unet(state, true, rtb::Precision::BFloat16);
  state.SetLabel(rtb::detail::bf16_engine_name());
}

/// log r = −(mean pixel − 0.5)²/(2·0.25²).
S mean_pixel_reward(std::span<const S> x) {
  const S m = std::accumulate(x.begin(), x.end(), S(0)) / static_cast<S>(x.size()) - S(0.5);
  return -m * m / S(2 * 0.25 * 0.25);
}

using Post = rtb::Lora<Net>;
using RtbTrainer =
    rtb::RelativeTrajectoryBalance<rtb::DdpmProcess<S>, Post, rtb::RewardFunction<decltype(&mean_pixel_reward)>>;

void BM_DdpmRtbStep(benchmark::State& state) {
  const Index T = state.range(0), size = 16;
  const auto base = model_of(size, true);
  RtbTrainer trainer(rtb::DdpmProcess<S>(size * size, T), rtb::Model<Post>(Post(base->net(), {.rank = 32}), base),
                     rtb::make_reward(mean_pixel_reward),
                     rtb::Config{.batch_size = 16,
                                 .step_fraction = static_cast<double>(state.range(1)) / 100.0,
                                 .threads = 1,
                                 .block_rows = 16,
                                 .seed = rtb_bench::kSeed});
  // No warm-up step: the constructor sizes every buffer (step() never allocates), and one step
  // takes seconds to a minute.
  const rtb_bench::WallTimer timer;
  for (auto _ : state) benchmark::DoNotOptimize(trainer.step());
  state.counters["s/step"] = timer.seconds() / static_cast<double>(state.iterations());
}

}  // namespace

BENCHMARK(BM_UnetForward)->ArgsProduct({{28, 16}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_UnetBackward)->ArgsProduct({{28, 16}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_UnetForwardBf16)->ArgsProduct({{28, 16}, {1}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_UnetBackwardBf16)->ArgsProduct({{28, 16}, {1}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DdpmRtbStep)->ArgsProduct({{20, 100}, {100, 25}})->UseRealTime()->Unit(benchmark::kSecond);
