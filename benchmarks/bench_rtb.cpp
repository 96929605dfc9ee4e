// SPDX-License-Identifier: Apache-2.0
// Whole-trainer benchmarks on the 2-D reference problem (setup.hpp):
//
//   BM_Sample/B/T/threads    trainer.sample(B): B trajectories of T steps, no gradient, traj/s
//   BM_RtbStep/B/T/threads   one RelativeTrajectoryBalance::step(), s/step and GFLOP/s
//   BM_SampleTrained/B/T/threads/weights/flush, BM_RtbStepTrained/B/T/threads/weights/flush
//                            the same on the weights users run (setup.hpp's Weights: 1 = the gmm2d
//                            demo's fitted prior, 2 = that prior and a partly fine-tuned posterior),
//                            with Config::flush_denormals on (1, the default) or off (0)
//   BM_SampleBf16/B/T/threads/weights, BM_RtbStepBf16/B/T/threads/weights
//                            the same with Config::precision = BFloat16 (flushing on); the label
//                            names the engine (amx, avx512bf16, or emulated where the CPU lacks both)
//
// Timings are wall-clock. The trainer is built and stepped once before timing, so the timed steps
// are the steady state (no allocation, warm caches). The exploration schedule holds σ_expl = 0.5
// over the first 500 iterations, which covers every timed step.

#include <benchmark/benchmark.h>

#include "flops.hpp"
#include "setup.hpp"

namespace {

using rtb_bench::Weights;

/// trainer.sample(B) on the given weights, traj/s and GFLOP/s.
void sample_bench(benchmark::State& state, Weights w, bool flush,
                  rtb::Precision precision = rtb::Precision::Float32) {
  const rtb::Index B = state.range(0), T = state.range(1), threads = state.range(2);
  rtb_bench::Trainer trainer = rtb_bench::make_trainer(B, T, threads, w, flush, precision);
  if (precision == rtb::Precision::BFloat16) state.SetLabel(rtb::detail::bf16_engine_name());
  rtb_bench::load_posterior(trainer, w);
  std::uint64_t seed = 1;
  benchmark::DoNotOptimize(trainer.sample(B, seed++));
  const rtb_bench::WallTimer timer;
  for (auto _ : state) benchmark::DoNotOptimize(trainer.sample(B, seed++));
  const double secs = timer.seconds(), n = static_cast<double>(state.iterations());
  state.counters["traj/s"] = static_cast<double>(B) * n / secs;
  state.counters["GFLOP/s"] = rtb_bench::sample_flops(trainer.posterior().layout(), B, T) * n / secs * 1e-9;
}

/// One trainer.step() on the given weights, s/step and GFLOP/s.
void step_bench(benchmark::State& state, Weights w, bool flush, rtb::Precision precision = rtb::Precision::Float32) {
  const rtb::Index B = state.range(0), T = state.range(1), threads = state.range(2);
  rtb_bench::Trainer trainer = rtb_bench::make_trainer(B, T, threads, w, flush, precision);
  if (precision == rtb::Precision::BFloat16) state.SetLabel(rtb::detail::bf16_engine_name());
  rtb_bench::load_posterior(trainer, w);
  benchmark::DoNotOptimize(trainer.step());
  const rtb_bench::WallTimer timer;
  for (auto _ : state) benchmark::DoNotOptimize(trainer.step());
  const double secs = timer.seconds(), n = static_cast<double>(state.iterations());
  state.counters["s/step"] = secs / n;
  state.counters["GFLOP/s"] = rtb_bench::rtb_step_flops(trainer.posterior().layout(), B, T) * n / secs * 1e-9;
}

Weights weights_of(const benchmark::State& state) {
  return static_cast<Weights>(state.range(3));
}

void BM_Sample(benchmark::State& state) {
  sample_bench(state, Weights::Fresh, true);
}
BENCHMARK(BM_Sample)
    ->Args({500, 100, 1})
    ->Args({500, 100, 2})
    ->MinTime(1.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_RtbStep(benchmark::State& state) {
  step_bench(state, Weights::Fresh, true);
}
// T = 250 and 500 feed the step-time-against-T plot (docs/benchmarks_vs_T.png).
BENCHMARK(BM_RtbStep)
    ->ArgsProduct({{500}, {100, 250, 500, 1000}, {1, 2}})
    ->MinTime(2.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_SampleTrained(benchmark::State& state) {
  sample_bench(state, weights_of(state), state.range(4) != 0);
}
BENCHMARK(BM_SampleTrained)
    ->ArgsProduct({{500}, {100}, {1, 2}, {1, 2}, {1, 0}})
    ->MinTime(1.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_RtbStepTrained(benchmark::State& state) {
  step_bench(state, weights_of(state), state.range(4) != 0);
}
BENCHMARK(BM_RtbStepTrained)
    ->ArgsProduct({{500}, {100}, {1, 2}, {1, 2}, {1, 0}})
    ->MinTime(2.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_SampleBf16(benchmark::State& state) {
  sample_bench(state, weights_of(state), true, rtb::Precision::BFloat16);
}
BENCHMARK(BM_SampleBf16)
    ->ArgsProduct({{500}, {100}, {1, 2}, {0, 1}})
    ->MinTime(1.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_RtbStepBf16(benchmark::State& state) {
  step_bench(state, weights_of(state), true, rtb::Precision::BFloat16);
}
BENCHMARK(BM_RtbStepBf16)
    ->ArgsProduct({{500}, {100}, {1, 2}, {0, 1}})
    ->MinTime(2.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
