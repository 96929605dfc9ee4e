// SPDX-License-Identifier: Apache-2.0
// The 2-D layers of a CPU MNIST UNet, one batch of 32 images, one thread:
//
//   BM_Conv2dForward/in/out/size/kernel/stride    y = conv(x) + b, GFLOP/s
//   BM_Conv2dBackward/in/out/size/kernel/stride   dW, db and dx, GFLOP/s (twice the forward's FLOPs)
//
// Conv2d is im2col + GEMM; net/conv2d.hpp keeps the figures that chose it over a direct kernel.
// Sizes: 28×28, 14×14 and 7×7 (MNIST), 16×16 and 8×8 (the 32×32 UNet's lower levels), 32–64
// channels. Rates are wall-clock; FLOPs = 2 · multiply-adds.

#include <chrono>
#include <cstdint>
#include <vector>

#include <benchmark/benchmark.h>
#include <rtb/math/philox.hpp>
#include <rtb/net/conv2d.hpp>

namespace {

using rtb::Index;
using S = float;

constexpr Index kBatch = 32;

std::vector<S> normals(Index n, std::uint64_t seed) {
  const rtb::math::NoiseKey key{seed, rtb::math::Stream::User, 0xBE4Du};
  std::vector<S> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = rtb::math::normal<S>(key, i, 0, 0);
  return v;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void conv2d(benchmark::State& state, bool backward) {
  const Index in = state.range(0), out = state.range(1), size = state.range(2), k = state.range(3),
              stride = state.range(4);
  rtb::ParameterLayout layout;
  rtb::Conv2d conv(layout, "conv.", in, out, k, stride);
  std::vector<S> p(static_cast<std::size_t>(layout.size())), grad(p.size());
  conv.init_default(p.data(), 1, 0);
  const rtb::ImageShape shape{kBatch, in, size, size};
  const auto x = normals(shape.size(), 2);
  const auto dy = normals(conv.output_shape(shape).size(), 3);
  std::vector<S> y(dy.size()), dx(x.size()), scratch(static_cast<std::size_t>(conv.scratch_floats(shape)));
  auto once = [&] {
    if (backward)
      conv.backward(p.data(), x.data(), shape, dy.data(), grad.data(), dx.data(), rtb::GradientMode::Overwrite,
                    scratch.data());
    else
      conv.forward(p.data(), x.data(), shape, y.data(), scratch.data());
  };
  once();  // warm-up: caches and page faults
  const double start = now();
  for (auto _ : state) {
    once();
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  const double secs = now() - start;
  const double flops = 2.0 * static_cast<double>(conv.macs(shape) * kBatch) * (backward ? 2.0 : 1.0);
  state.counters["GFLOP/s"] = flops * static_cast<double>(state.iterations()) / secs * 1e-9;
}

void BM_Conv2dForward(benchmark::State& state) {
  conv2d(state, false);
}
void BM_Conv2dBackward(benchmark::State& state) {
  conv2d(state, true);
}

// {in, out, size, kernel, stride}: the convs of a UNet with channels (32, 64, 64) on 28×28 MNIST
// and on 32×32 (16×16 and 8×8 below the top), their stride-2 downsamplers and a 1×1 shortcut.
void conv_sizes(benchmark::internal::Benchmark* b) {
  const Index shapes[][5] = {{32, 32, 28, 3, 1}, {32, 64, 14, 3, 1}, {64, 64, 14, 3, 1}, {64, 64, 7, 3, 1},
                             {32, 32, 16, 3, 1}, {64, 64, 8, 3, 1},  {32, 32, 28, 3, 2}, {64, 64, 14, 3, 2},
                             {64, 64, 16, 3, 2}, {32, 64, 14, 1, 1}};
  for (const auto& s : shapes) b->Args({s[0], s[1], s[2], s[3], s[4]});
}

}  // namespace

BENCHMARK(BM_Conv2dForward)->Apply(conv_sizes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2dBackward)->Apply(conv_sizes)->UseRealTime()->Unit(benchmark::kMillisecond);
