// SPDX-License-Identifier: Apache-2.0
// The masked-categorical process at the infilling example's default sizes (examples/infill):
// rows of L = 24 characters over V = 33 tokens (+ MASK), the middle 8 columns generated, the
// 4-column lookahead kept MASK, the 12-character beginning fixed from each row's condition (which
// also holds the 12-character ending the denoiser reads), T = 12 steps, a TokenConv(E 16, Ch 32,
// k 3) denoiser, 16 conditions × 8 samples per batch (relative VarGrad).
//
//   BM_MaskedLogProbAccumulate/B   MaskedCategoricalProcess::log_prob_step over B rows, GB/s
//   BM_MaskedRtbStepBf16/threads   the same in Precision::BFloat16
//   BM_MaskedRtbStep/threads       one RelativeTrajectoryBalance<…, RelativeVarGrad>::step(),
//                                  s/step, rows/s and GFLOP/s
//
// The reward here is a fixed per-(column, token) score table, cheap on purpose: the benchmark
// measures the trainer, not the example's n-gram model (which takes ≈4% of an example step).

#include <cstdint>
#include <vector>

#include <benchmark/benchmark.h>
#include <rtb/math/philox.hpp>
#include <rtb/net/token_conv.hpp>
#include <rtb/objective/relative_vargrad.hpp>
#include <rtb/process/masked_categorical_process.hpp>
#include <rtb/train/relative_trajectory_balance.hpp>

#include "flops.hpp"
#include "setup.hpp"

namespace {

using S = float;
using Tok = std::int32_t;
using MaskedProcess = rtb::MaskedCategoricalProcess<S>;
using rtb::Index;

constexpr Index kLength = 24, kVocab = 33, kMiddleBegin = 12, kMiddle = 8, kLookahead = 4, kSteps = 12;
constexpr Index kConditionLength = 24;  // [beginning window (the fixed columns) | ending 12]
constexpr Index kGroups = 16, kGroupSize = 8;

MaskedProcess make_process() {
  std::vector<char> generated(kLength, 0);
  for (Index j = kMiddleBegin; j < kMiddleBegin + kMiddle; ++j) generated[static_cast<std::size_t>(j)] = 1;
  std::vector<Index> masked;
  for (Index j = kMiddleBegin + kMiddle; j < kMiddleBegin + kMiddle + kLookahead; ++j) masked.push_back(j);
  return MaskedProcess(
      {.length = kLength, .vocab = kVocab, .num_steps = kSteps, .generated = generated, .masked = masked});
}

/// Rows with random real tokens everywhere (the process reads only the columns it must).
std::vector<Tok> random_rows(Index rows, std::uint64_t seed) {
  std::vector<Tok> x(static_cast<std::size_t>(rows * kLength));
  const rtb::math::NoiseKey key{seed, rtb::math::Stream::User, 0xBE4Du};
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<Tok>(rtb::math::uniform<double>(key, i, 0, 0) * static_cast<double>(kVocab));
  return x;
}

/// log r(x) = Σ_j score[j][x_j] over the middle: a black box to the trainer, ≈ nothing to compute.
struct TableReward {
  std::vector<S> score = std::vector<S>(static_cast<std::size_t>(kLength * kVocab));
  TableReward() {
    const rtb::math::NoiseKey key{3, rtb::math::Stream::User, 0xBE4Eu};
    for (std::size_t i = 0; i < score.size(); ++i) score[i] = S(0.5) * rtb::math::normal<S>(key, i, 0, 0);
  }
  void log_reward(rtb::ConstMatrixView<Tok> x, std::span<S> out) const {
    for (Index r = 0; r < x.rows(); ++r) {
      S s = 0;
      for (Index j = kMiddleBegin; j < kMiddleBegin + kMiddle; ++j)
        s += score[static_cast<std::size_t>(j * kVocab + x(r, j))];
      out[static_cast<std::size_t>(r)] = s;
    }
  }
};

// acc[r] += Σ_{j generated, masked in x} log p(x_next_j | x): half the positions revealed, so
// half the terms are a log-softmax over V logits. Bytes are those the kernel must read: x and
// x_next (L int32 each), the V logits of every generated position that was masked (all of them
// at x = all-MASK, as here), and acc read and written.
void BM_MaskedLogProbAccumulate(benchmark::State& state) {
  const Index B = state.range(0);
  const MaskedProcess process = make_process();
  std::vector<Tok> x(static_cast<std::size_t>(B * kLength), static_cast<Tok>(kVocab)), xn = random_rows(B, 5);
  for (std::size_t i = 0; i < xn.size(); i += 2) xn[i] = static_cast<Tok>(kVocab);  // every other position stays MASK
  std::vector<S> out(static_cast<std::size_t>(B * kLength * kVocab)), acc(static_cast<std::size_t>(B), S(0));
  const rtb::math::NoiseKey key{9, rtb::math::Stream::User, 0xBE4Fu};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = rtb::math::normal<S>(key, i, 0, 0);
  const rtb::ConstMatrixView<Tok> xv(x.data(), B, kLength), xnv(xn.data(), B, kLength);
  const rtb::ConstMatrixView<S> outv(out.data(), B, kLength * kVocab);
  const double bytes = static_cast<double>(B) * (2.0 * kLength * 4 + kMiddle * kVocab * 4 + 2 * 4);
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    process.log_prob_step(rtb::Step<Tok, S>{xv, rtb::ConstMatrixView<Tok>(nullptr, B, 0), 5, S(0), 0}, xnv, outv,
                          std::span<S>(acc));
    benchmark::DoNotOptimize(acc.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = bytes * static_cast<double>(state.iterations()) / timer.seconds() * 1e-9;
}
BENCHMARK(BM_MaskedLogProbAccumulate)->Arg(kGroups* kGroupSize)->UseRealTime()->Unit(benchmark::kNanosecond);

void masked_step(benchmark::State& state, rtb::Precision precision) {
  const Index threads = state.range(0), B = kGroups * kGroupSize;
  std::vector<Index> condition;  // the ending, after the beginning in the condition row
  for (Index j = kMiddleBegin; j < kConditionLength; ++j) condition.push_back(j);
  const rtb::TokenConv<S> prior({.length = kLength,
                                 .vocab = kVocab,
                                 .embed = 16,
                                 .channels = 32,
                                 .kernel = 3,
                                 .harmonics = 16,
                                 .condition = condition,
                                 .condition_shift = kLookahead,
                                 .seed = rtb_bench::kSeed,
                                 .zero_init_last = false});
  rtb::RelativeTrajectoryBalance<MaskedProcess, rtb::TokenConv<S>, TableReward, rtb::RelativeVarGrad> trainer(
      make_process(), prior, TableReward{},
      rtb::Config{.batch_size = B,
                  .group_size = kGroupSize,
                  .exploration = rtb::ExplorationSchedule::none(),
                  .threads = threads,
                  .block_rows = B / 2,  // as the example: two blocks of 64 rows
                  .seed = rtb_bench::kSeed,
                  .precision = precision});
  // One condition per group (a random beginning and ending), repeated over its 8 samples.
  static_assert(kConditionLength == kLength, "random_rows makes rows of kLength tokens");
  const std::vector<Tok> groups = random_rows(kGroups, 11);
  std::vector<Tok> cond(static_cast<std::size_t>(B * kConditionLength));
  for (Index r = 0; r < B; ++r)
    std::copy_n(groups.begin() + (r / kGroupSize) * kConditionLength, kConditionLength,
                cond.begin() + r * kConditionLength);
  const rtb::ConstMatrixView<Tok> conditions(cond.data(), B, kConditionLength);
  benchmark::DoNotOptimize(trainer.step(conditions));
  const rtb_bench::WallTimer timer;
  for (auto _ : state) benchmark::DoNotOptimize(trainer.step(conditions));
  const double secs = timer.seconds(), n = static_cast<double>(state.iterations());
  state.counters["s/step"] = secs / n;
  state.counters["rows/s"] = static_cast<double>(B) * n / secs;
  state.counters["GFLOP/s"] = rtb_bench::token_conv_step_flops(prior, B, kSteps) * n / secs * 1e-9;
}
void BM_MaskedRtbStep(benchmark::State& state) {
  masked_step(state, rtb::Precision::Float32);
}
void BM_MaskedRtbStepBf16(benchmark::State& state) {
  masked_step(state, rtb::Precision::BFloat16);
  state.SetLabel(rtb::detail::bf16_engine_name());
}
BENCHMARK(BM_MaskedRtbStepBf16)->Arg(1)->Arg(2)->MinTime(2.0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MaskedRtbStep)->Arg(1)->Arg(2)->MinTime(2.0)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
