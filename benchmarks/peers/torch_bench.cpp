// SPDX-License-Identifier: Apache-2.0
// Benchmarks of the libtorch peer (torch_rtb.hpp), named like rtb's so compare.sh can pair them:
//
//   BM_TorchRtbStep/B/T/threads   one autograd RTB step, s/step
//   BM_TorchSample/B/T/threads    B trajectories without gradient, traj/s
//   BM_TorchRtbStepBf16/B/T/threads, BM_TorchSampleBf16/B/T/threads
//                                 the same under CPU autocast to bfloat16 (torch_rtb.hpp's
//                                 Bf16Autocast: linear layers on bfloat16 operands, float weights,
//                                 densities, loss and Adam), the peer of rtb's Precision::BFloat16
//   BM_TorchUnetForward/size/trained, BM_TorchUnetBackward/size/trained
//                                 rtb's BM_UnetForward/Backward (bench_unet.cpp) on torch_unet.hpp's
//                                 twin of the same UNet, the same weights (copied by name) and images,
//                                 one thread: a forward under autograd (the graph is the kept maps),
//                                 and a backward of it (retain_graph, so each iteration is one
//                                 backward; gradients accumulate into .grad as in a training loop)
//
// and two modes outside Google Benchmark:
//
//   rtb_torch_bench --config                    which BLAS and how many threads torch uses
//   rtb_torch_bench --memory T [steps] [threads]  peak RSS of training at T (fresh process per T)
//
// "threads" is torch's intra-op thread count (torch::set_num_threads). OpenBLAS keeps a pool of
// its own that torch::set_num_threads does not reach (it starts one thread per core); it is held
// at 1 thread (override with RTB_PEER_BLAS_THREADS=n), the peer's fastest setting: with 2
// OpenBLAS threads a step took 1.7× longer at 1 torch thread and 5.8× at 2 (docs/benchmarks.md).

#include <dlfcn.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>

#include <benchmark/benchmark.h>
#include <ATen/Version.h>

#include "../flops.hpp"
#include "../unet_setup.hpp"
#include "torch_rtb.hpp"
#include "torch_unet.hpp"

namespace {

extern "C" {
using openblas_set_fn = void (*)(int);
using openblas_get_fn = int (*)();
using openblas_config_fn = char* (*)();
}

int openblas_threads() {
  auto f = reinterpret_cast<openblas_get_fn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return f ? f() : -1;
}

/// Sets torch's intra-op threads to n and OpenBLAS's (if it is the loaded BLAS) to
/// RTB_PEER_BLAS_THREADS, default 1; returns OpenBLAS's count (-1: not OpenBLAS).
int set_threads(int n) {
  torch::set_num_threads(n);
  const char* blas = std::getenv("RTB_PEER_BLAS_THREADS");
  if (auto f = reinterpret_cast<openblas_set_fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(blas ? std::atoi(blas) : 1);
  return openblas_threads();
}

rtb::Model<rtb::PisMlp<float>> initial_prior() {
  return rtb::Model(rtb::PisMlp<float>({.seed = 12345, .zero_init_last = false}));
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void torch_step(benchmark::State& state, bool bf16) {
  const std::int64_t B = state.range(0), T = state.range(1);
  const int blas_threads = set_threads(static_cast<int>(state.range(2)));
  torch::manual_seed(12345);
  rtb_peer::Trainer trainer(initial_prior(), B, T, 0.5, 1e-3, 0.1, bf16);
  benchmark::DoNotOptimize(trainer.step());
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) benchmark::DoNotOptimize(trainer.step());
  const double secs = seconds_since(start), n = static_cast<double>(state.iterations());
  state.counters["s/step"] = secs / n;
  state.counters["GFLOP/s"] = rtb_bench::autograd_step_flops(initial_prior().layout(), B, T) * n / secs * 1e-9;
  state.counters["blas_threads"] = blas_threads;
}
void BM_TorchRtbStep(benchmark::State& state) {
  torch_step(state, false);
}
void BM_TorchRtbStepBf16(benchmark::State& state) {
  torch_step(state, true);
}
BENCHMARK(BM_TorchRtbStepBf16)->ArgsProduct({{500}, {100}, {1, 2}})->MinTime(2.0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TorchRtbStep)
    ->ArgsProduct({{500}, {100, 250, 500, 1000}, {1, 2}})
    ->MinTime(2.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void torch_sample(benchmark::State& state, bool bf16) {
  const std::int64_t B = state.range(0), T = state.range(1);
  const int blas_threads = set_threads(static_cast<int>(state.range(2)));
  torch::manual_seed(12345);
  rtb_peer::Trainer trainer(initial_prior(), B, T, 0.5, 1e-3, 0.1, bf16);
  benchmark::DoNotOptimize(trainer.sample(B));
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) benchmark::DoNotOptimize(trainer.sample(B));
  const double secs = seconds_since(start), n = static_cast<double>(state.iterations());
  state.counters["traj/s"] = static_cast<double>(B) * n / secs;
  state.counters["GFLOP/s"] = rtb_bench::sample_flops(initial_prior().layout(), B, T) * n / secs * 1e-9;
  state.counters["blas_threads"] = blas_threads;
}
void BM_TorchSample(benchmark::State& state) {
  torch_sample(state, false);
}
void BM_TorchSampleBf16(benchmark::State& state) {
  torch_sample(state, true);
}
BENCHMARK(BM_TorchSampleBf16)->Args({500, 100, 1})->Args({500, 100, 2})->MinTime(1.0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TorchSample)->Args({500, 100, 1})->Args({500, 100, 2})->MinTime(1.0)->UseRealTime()->Unit(benchmark::kMillisecond);

void torch_unet(benchmark::State& state, bool backward) {
  namespace u = rtb_bench::unet;
  const rtb::Index size = state.range(0), B = u::kBatch;
  const int blas_threads = set_threads(1);
  const auto model = u::model_of(size, state.range(1) != 0);
  rtb_peer::UNet net(rtb_peer::options_of<float>(model->net().options()));
  rtb_peer::load_parameters(net, *model);
  auto in = u::inputs(size);  // the images and ∂L/∂ε rtb's BM_Unet* read
  const std::vector<std::int64_t> shape = {B, 1, size, size};
  const torch::Tensor tx = torch::from_blob(in.x.data(), shape, torch::kFloat32).clone().requires_grad_(true);
  const torch::Tensor td = torch::from_blob(in.d_out.data(), shape, torch::kFloat32).clone();
  torch::Tensor eps = net->forward(tx, 500);  // the forward backward reads, and a warm-up
  eps.backward(td, true);
  const rtb_bench::WallTimer timer;
  for (auto _ : state) {
    if (backward) {
      eps.backward(td, true);
    } else {
      eps = net->forward(tx, 500);
    }
    benchmark::DoNotOptimize(eps.data_ptr());
    benchmark::ClobberMemory();
  }
  u::set_flop_counters(state, model->net(), backward, timer.seconds());
  state.counters["blas_threads"] = blas_threads;
}
void BM_TorchUnetForward(benchmark::State& state) {
  torch_unet(state, false);
}
void BM_TorchUnetBackward(benchmark::State& state) {
  torch_unet(state, true);
}
BENCHMARK(BM_TorchUnetForward)->ArgsProduct({{28, 16}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TorchUnetBackward)->ArgsProduct({{28, 16}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond);

int print_config() {
  std::cout << "torch " << TORCH_VERSION << "\n" << torch::show_config();
  Dl_info info{};
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  if (sgemm && dladdr(sgemm, &info) && info.dli_fname) {
    char resolved[4096];
    std::cout << "sgemm_ from: " << info.dli_fname;
    if (realpath(info.dli_fname, resolved)) std::cout << " -> " << resolved;
    std::cout << "\n";
  }
  if (auto f = reinterpret_cast<openblas_config_fn>(dlsym(RTLD_DEFAULT, "openblas_get_config")))
    std::cout << "openblas_get_config: " << f() << "\n";
  std::cout << "oneDNN (mkldnn) for bfloat16 products: " << (at::hasMKLDNN() ? "yes" : "no") << "\n";
  std::cout << "default threads: torch " << torch::get_num_threads() << ", openblas " << openblas_threads() << "\n";
  set_threads(1);
  std::cout << "as benchmarked (set_threads(1), RTB_PEER_BLAS_THREADS=" << (std::getenv("RTB_PEER_BLAS_THREADS") ? std::getenv("RTB_PEER_BLAS_THREADS") : "unset") << "): torch " << torch::get_num_threads() << ", openblas " << openblas_threads() << "\n";
  return 0;
}

int memory(int argc, char** argv) {
  const std::int64_t T = argc > 2 ? std::atol(argv[2]) : 100;
  const long steps = argc > 3 ? std::atol(argv[3]) : 3;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 1;
  set_threads(threads);
  torch::manual_seed(12345);
  rtb_peer::Trainer trainer(initial_prior(), 500, T);
  double loss = 0;
  for (long k = 0; k < steps; ++k) loss += trainer.step();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("memory impl=torch T=%lld batch=500 threads=%d steps=%ld peak_rss_kib=%ld loss=%g\n", static_cast<long long>(T),
              threads, steps, ru.ru_maxrss, loss);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::strcmp(argv[1], "--config") == 0) return print_config();
    if (argc > 1 && std::strcmp(argv[1], "--memory") == 0) return memory(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rtb_torch_bench: %s\n", e.what());
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
