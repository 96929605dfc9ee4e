// SPDX-License-Identifier: Apache-2.0
// The 2-D layers of a CPU MNIST UNet, one batch of 32 images, one thread:
//
//   BM_Conv2dForward/in/out/size/kernel/stride    y = conv(x) + b, GFLOP/s
//   BM_Conv2dBackward/in/out/size/kernel/stride   dW, db and dx, GFLOP/s (twice the forward's FLOPs)
//   BM_ResnetBlock{Forward,Backward}/in/out/size   ResnetBlock2d (32 groups, temb 128), training
//                                                  forward (with context) and backward, images/s
//   BM_Attention2d{Forward,Backward}/channels/size/heads   Attention2d, the same, images/s
//
// Conv2d is im2col + GEMM; net/conv2d.hpp keeps the figures that chose it over a direct kernel.
// Sizes: 28×28, 14×14 and 7×7 (MNIST), 16×16 and 8×8 (the 32×32 UNet's lower levels), 32–64
// channels. Rates are wall-clock; FLOPs = 2 · multiply-adds.

#include <chrono>
#include <cstdint>
#include <vector>

#include <benchmark/benchmark.h>
#include <rtb/math/philox.hpp>
#include <rtb/net/attention2d.hpp>
#include <rtb/net/conv2d.hpp>
#include <rtb/net/resnet_block.hpp>

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

namespace {

/// Times `once` (after a warm-up call) and reports images per second.
template <class F>
void time_images(benchmark::State& state, F once) {
  once();
  const double start = now();
  for (auto _ : state) {
    once();
    benchmark::ClobberMemory();
  }
  state.counters["images/s"] = static_cast<double>(kBatch * state.iterations()) / (now() - start);
}

void resnet_block(benchmark::State& state, bool backward) {
  const Index in = state.range(0), out = state.range(1), size = state.range(2), temb_dim = 128;
  rtb::ParameterLayout layout;
  const rtb::ResnetBlock2d block(layout, "block.", in, out, temb_dim, 32);
  std::vector<S> p(static_cast<std::size_t>(layout.size())), grad(p.size());
  block.init_default(p.data(), 1, 0);
  const rtb::ImageShape shape{kBatch, in, size, size};
  const auto x = normals(shape.size(), 2), temb = normals(temb_dim, 3);
  const auto dy = normals(block.output_shape(shape).size(), 4);
  std::vector<S> y(dy.size()), dx(x.size()), d_temb(temb.size()),
      context(static_cast<std::size_t>(block.context_floats(shape))),
      scratch(static_cast<std::size_t>(block.scratch_floats(shape)));
  block.forward(p.data(), x.data(), shape, temb.data(), y.data(), context.data(), scratch.data());
  time_images(state, [&] {
    if (backward)
      block.backward(p.data(), x.data(), shape, dy.data(), context.data(), grad.data(), dx.data(),
                     rtb::GradientMode::Overwrite, d_temb.data(), scratch.data());
    else
      block.forward(p.data(), x.data(), shape, temb.data(), y.data(), context.data(), scratch.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
  });
}

void attention(benchmark::State& state, bool backward) {
  const Index channels = state.range(0), size = state.range(1), heads = state.range(2);
  rtb::ParameterLayout layout;
  const rtb::Attention2d attn(layout, "attn.", channels, 32, heads);
  std::vector<S> p(static_cast<std::size_t>(layout.size())), grad(p.size());
  attn.init_default(p.data(), 1, 0);
  const rtb::ImageShape shape{kBatch, channels, size, size};
  const auto x = normals(shape.size(), 2), dy = normals(shape.size(), 3);
  std::vector<S> y(x.size()), dx(x.size()), context(static_cast<std::size_t>(attn.context_floats(shape))),
      scratch(static_cast<std::size_t>(attn.scratch_floats(shape)));
  attn.forward(p.data(), x.data(), shape, y.data(), context.data(), scratch.data());
  time_images(state, [&] {
    if (backward)
      attn.backward(p.data(), x.data(), shape, dy.data(), context.data(), grad.data(), dx.data(),
                    rtb::GradientMode::Overwrite, scratch.data());
    else
      attn.forward(p.data(), x.data(), shape, y.data(), context.data(), scratch.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
  });
}

void BM_ResnetBlockForward(benchmark::State& state) {
  resnet_block(state, false);
}
void BM_ResnetBlockBackward(benchmark::State& state) {
  resnet_block(state, true);
}
void BM_Attention2dForward(benchmark::State& state) {
  attention(state, false);
}
void BM_Attention2dBackward(benchmark::State& state) {
  attention(state, true);
}

}  // namespace

BENCHMARK(BM_ResnetBlockForward)
    ->Args({32, 32, 28})
    ->Args({32, 64, 14})
    ->Args({64, 64, 7})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ResnetBlockBackward)
    ->Args({32, 32, 28})
    ->Args({32, 64, 14})
    ->Args({64, 64, 7})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Attention2dForward)
    ->Args({64, 14, 1})
    ->Args({64, 7, 1})
    ->Args({64, 7, 8})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Attention2dBackward)
    ->Args({64, 14, 1})
    ->Args({64, 7, 1})
    ->Args({64, 7, 8})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
