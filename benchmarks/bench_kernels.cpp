// SPDX-License-Identifier: Apache-2.0
// The kernels under an RTB step, each against the number that bounds it:
//
//   BM_GemmPeak/M/K/N/threads      Eigen float C = A·Wᵀ (Linear's product), GFLOP/s: the ceiling
//   BM_GemmBf16/M/K/N/threads      the same product in Precision::BFloat16 (detail::gemm_bf16 on the
//                                  machine's engine, named in the label), GFLOP/s
//   BM_LogProbAccumulate/B         GaussianProcess::log_prob_step over a B×2 batch, GB/s
//   BM_Gelu/B                      GELU and GELU' over one B×64 activation, Gelem/s
//   BM_MlpForward/B, BM_MlpInference/B, BM_MlpBackward/B
//                                  the 2-D PisMlp (D=2, H=64, F=64, 2 hidden layers), GFLOP/s
//
// Every rate is wall-clock (see setup.hpp); FLOP counts come from flops.hpp.

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>
#include <rtb/math/activations.hpp>
#include <rtb/math/philox.hpp>

#include "flops.hpp"
#include "setup.hpp"

namespace {

using rtb::ConstMatrixView;
using rtb::Index;
using rtb::MatrixView;
using rtb_bench::S;

void fill_normal(std::vector<S>& v, std::uint64_t seed, S scale = S(1)) {
  const rtb::math::NoiseKey key{seed, rtb::math::Stream::User, 0xBE4Cu};
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = scale * rtb::math::normal<S>(key, i, 0, 0);
}

/// The calling thread plus one persistent worker that spin-waits for work: a fork-join with no
/// sleeping and no thread creation per call, so a 2-thread GEMM of a few microseconds measures
/// the arithmetic and not the hand-off. (The machine has exactly two cores.)
class SpinPair {
 public:
  explicit SpinPair(std::function<void(int)> job) : job_(std::move(job)), worker_([this] { loop(); }) {}
  ~SpinPair() {
    stop_.store(true, std::memory_order_release);
    go_.fetch_add(1, std::memory_order_acq_rel);
    worker_.join();
  }
  SpinPair(const SpinPair&) = delete;
  SpinPair& operator=(const SpinPair&) = delete;

  /// Runs job(0) here and job(1) on the worker; returns when both are done.
  void run() {
    const std::uint64_t g = go_.fetch_add(1, std::memory_order_acq_rel) + 1;
    job_(0);
    while (done_.load(std::memory_order_acquire) != g) __builtin_ia32_pause();
  }

 private:
  void loop() {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t g;
      while ((g = go_.load(std::memory_order_acquire)) == seen) __builtin_ia32_pause();
      if (stop_.load(std::memory_order_acquire)) return;
      seen = g;
      job_(1);
      done_.store(g, std::memory_order_release);
    }
  }

  std::function<void(int)> job_;
  std::atomic<std::uint64_t> go_{0}, done_{0};
  std::atomic<bool> stop_{false};
  std::thread worker_;  // declared last: starts once the members it reads exist
};

// C[M,N] = A[M,K]·W[N,K]ᵀ, exactly the expression Linear::forward hands to Eigen. With two
// threads each runs a single-threaded Eigen GEMM on half of the rows (Eigen's own OpenMP
// threading is not used: it is not enabled in this build, and it collapses on products this
// small anyway).
/// Times rows(r0, n) over M = range(0) rows of an M×K·K×N product (K, N = range(1), range(2)),
/// on 1 thread or split in two halves over 2 (range(3)); GFLOP/s.
template <class Rows>
void gemm_rate(benchmark::State& state, Rows& rows, const S* c) {
  const Index M = state.range(0), K = state.range(1), N = state.range(2), threads = state.range(3);
  const Index half = M / 2;
  SpinPair pair([&](int part) { part == 0 ? rows(0, half) : rows(half, M - half); });
  auto once = [&] {
    if (threads == 1)
      rows(0, M);
    else
      pair.run();
  };
  once();  // warm-up: caches, page faults, Eigen's blocking buffers
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    once();
    benchmark::DoNotOptimize(c);
    benchmark::ClobberMemory();
  }
  const double secs = timer.seconds();
  state.counters["GFLOP/s"] =
      2.0 * static_cast<double>(M * K * N) * static_cast<double>(state.iterations()) / secs * 1e-9;
}

void BM_GemmPeak(benchmark::State& state) {
  const Index M = state.range(0), K = state.range(1), N = state.range(2);
  std::vector<S> a(static_cast<std::size_t>(M * K)), w(static_cast<std::size_t>(N * K)),
      c(static_cast<std::size_t>(M * N));
  fill_normal(a, 1);
  fill_normal(w, 2);
  auto rows = [&](Index r0, Index n) {
    MatrixView<S>(c.data() + r0 * N, n, N).noalias() =
        ConstMatrixView<S>(a.data() + r0 * K, n, K) * ConstMatrixView<S>(w.data(), N, K).transpose();
  };
  gemm_rate(state, rows, c.data());
}
BENCHMARK(BM_GemmPeak)
    ->Args({500, 64, 64, 1})
    ->Args({500, 64, 64, 2})
    ->Args({1024, 1024, 1024, 1})
    ->Args({1024, 1024, 1024, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void BM_GemmBf16(benchmark::State& state) {
  const Index M = state.range(0), K = state.range(1), N = state.range(2);
  std::vector<S> a(static_cast<std::size_t>(M * K)), w(static_cast<std::size_t>(N * K)),
      c(static_cast<std::size_t>(M * N));
  fill_normal(a, 1);
  fill_normal(w, 2);
  auto rows = [&](Index r0, Index n) {  // C = A·Wᵀ: W's rows are B's columns (B.rs = 1, B.cs = K)
    rtb::detail::gemm_bf16(c.data() + r0 * N, N, 1, {a.data() + r0 * K, K, 1}, {w.data(), 1, K}, n, K, N, false);
  };
  gemm_rate(state, rows, c.data());
  state.SetLabel(rtb::detail::bf16_engine_name());
}
BENCHMARK(BM_GemmBf16)
    ->Args({128, 64, 64, 1})
    ->Args({500, 64, 64, 1})
    ->Args({500, 64, 64, 2})
    ->Args({1024, 1024, 1024, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// acc[r] += log N(x_next_r; x_r + dt·μ_r, dt·σ²·I) over a B×2 batch. Bytes are those the kernel
// must move: x, x_next and the μ half of the denoiser output read, acc read and written
// (4 + 4 floats per row = 32 B).
void BM_LogProbAccumulate(benchmark::State& state) {
  const Index B = state.range(0), D = 2;
  const rtb_bench::Process process(D, 100, 5.0f, rtb::GaussianHead::MeanAndLogVariance);
  std::vector<S> x(static_cast<std::size_t>(B * D)), xn(x.size()), out(static_cast<std::size_t>(B * 2 * D)),
      acc(static_cast<std::size_t>(B), S(0));
  fill_normal(x, 3);
  fill_normal(xn, 4);
  fill_normal(out, 5);
  const ConstMatrixView<S> xv(x.data(), B, D), xnv(xn.data(), B, D), outv(out.data(), B, 2 * D);
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    process.log_prob_step(rtb::Step<S>{xv, ConstMatrixView<S>(nullptr, B, 0), 7, process.time(7), 0}, xnv, outv,
                          std::span<S>(acc));
    benchmark::DoNotOptimize(acc.data());
    benchmark::ClobberMemory();
  }
  const double secs = timer.seconds();
  state.counters["GB/s"] = 32.0 * static_cast<double>(B) * static_cast<double>(state.iterations()) / secs * 1e-9;
}
BENCHMARK(BM_LogProbAccumulate)->Arg(500)->UseRealTime()->Unit(benchmark::kNanosecond);
// The masked-categorical process's accumulation is BM_MaskedLogProbAccumulate (bench_masked.cpp).

// GELU value and derivative (rtb::math::gelu_with_derivative, the float fast path the trunk
// uses) over one hidden activation, B×64 elements, out of place so every iteration sees the
// same inputs. The trunk runs it on three such activations per network call.
void BM_Gelu(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0) * 64);
  std::vector<S> h(n), value(n), derivative(n);
  fill_normal(h, 8, S(2));
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    for (std::size_t i = 0; i < n; ++i) {
      const auto p = rtb::math::gelu_with_derivative(h[i]);
      value[i] = p.value;
      derivative[i] = p.derivative;
    }
    benchmark::DoNotOptimize(value.data());
    benchmark::DoNotOptimize(derivative.data());
    benchmark::ClobberMemory();
  }
  state.counters["Gelem/s"] = static_cast<double>(n) * static_cast<double>(state.iterations()) / timer.seconds() * 1e-9;
}
BENCHMARK(BM_Gelu)->Arg(500)->UseRealTime()->Unit(benchmark::kMicrosecond);

/// One PisMlp and a batch for the network benchmarks.
struct MlpBench {
  explicit MlpBench(Index B)
      : net(rtb_bench::make_prior()),
        ctx(net.make_context(B)),
        x(static_cast<std::size_t>(B * 2)),
        out(static_cast<std::size_t>(B * 4)),
        d_out(out.size()),
        grad(static_cast<std::size_t>(net.num_params())),
        rows(B) {
    fill_normal(x, 6, S(3));
    fill_normal(d_out, 7, S(0.01));
  }
  rtb::Step<S> xv() const {
    return {ConstMatrixView<S>(x.data(), rows, 2), ConstMatrixView<S>(nullptr, rows, 0), 37, kTime, 0};
  }
  MatrixView<S> outv() { return MatrixView<S>(out.data(), rows, 4); }
  static constexpr S kTime = 0.37f;

  rtb::Model<rtb_bench::Net> net;
  rtb_bench::Net::Context ctx;
  std::vector<S> x, out, d_out, grad;
  Index rows;
};


// Training forward: keeps every activation and GELU'(h) for backward.
void BM_MlpForward(benchmark::State& state) {
  MlpBench b(state.range(0));
  const double flops = rtb_bench::pis_mlp_flops(b.net.layout(), b.rows).forward;
  b.net.forward(b.xv(), b.outv(), b.ctx);
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    b.net.forward(b.xv(), b.outv(), b.ctx);
    benchmark::DoNotOptimize(b.out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = flops * static_cast<double>(state.iterations()) / timer.seconds() * 1e-9;
}
BENCHMARK(BM_MlpForward)->Arg(500)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Inference forward: the same products, no GELU derivatives kept (what sampling and the prior need).
void BM_MlpInference(benchmark::State& state) {
  MlpBench b(state.range(0));
  const double flops = rtb_bench::pis_mlp_flops(b.net.layout(), b.rows).forward;
  b.net.inference(b.xv(), b.outv(), b.ctx);
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    b.net.inference(b.xv(), b.outv(), b.ctx);
    benchmark::DoNotOptimize(b.out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = flops * static_cast<double>(state.iterations()) / timer.seconds() * 1e-9;
}
BENCHMARK(BM_MlpInference)->Arg(500)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Backward of the last forward (weight and input gradients, accumulated).
void BM_MlpBackward(benchmark::State& state) {
  MlpBench b(state.range(0));
  const double flops = rtb_bench::pis_mlp_flops(b.net.layout(), b.rows).backward;
  b.net.forward(b.xv(), b.outv(), b.ctx);
  const ConstMatrixView<S> d_out(b.d_out.data(), b.rows, 4);
  b.net.backward(b.ctx, d_out, std::span<S>(b.grad), rtb::GradientMode::Overwrite);
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    b.net.backward(b.ctx, d_out, std::span<S>(b.grad), rtb::GradientMode::Accumulate);
    benchmark::DoNotOptimize(b.grad.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = flops * static_cast<double>(state.iterations()) / timer.seconds() * 1e-9;
}
BENCHMARK(BM_MlpBackward)->Arg(500)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
