// SPDX-License-Identifier: Apache-2.0
#pragma once
// The UNet benchmarks' workload, shared by rtb's (bench_unet.cpp) and the libtorch peer's
// (peers/torch_bench.cpp) so both run the same net on the same weights and images: the small
// paper-like configuration (1 channel, levels {32, 64}, one ResNet block a level, attention at the
// lower level and in the middle, 32 groups), smooth random images, and the fresh or briefly
// fitted weights ("trained": 20 ε-MSE Adam iterations of fit_prior on those images).

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>

#include <rtb/math/philox.hpp>
#include <rtb/net/model.hpp>
#include <rtb/net/unet.hpp>
#include <rtb/process/ddpm.hpp>
#include <rtb/train/prior.hpp>

#include "setup.hpp"

namespace rtb_bench::unet {

using rtb::Index;
using S = float;
using Net = rtb::UNet<S>;

inline constexpr Index kBatch = 32;

inline Net::Options paper_like(Index size) {
  return {.height = size,
          .width = size,
          .channels = 1,
          .channels_per_level = {32, 64},
          .blocks_per_level = 1,
          .attention_levels = {1},
          .mid_attention = true,
          .groups = 32,
          .seed = kSeed};
}

/// Smooth random images in [−1, 1]: a random-phase plane wave per image plus a little noise.
inline void wave_images(rtb::MatrixView<S> x, std::int64_t it, Index size) {
  const rtb::math::NoiseKey key{kSeed, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)};
  for (Index r = 0; r < x.rows(); ++r) {
    const auto row = static_cast<std::uint64_t>(r);
    const S fx = 3 * rtb::math::uniform<S>(key, row, 1, 0), fy = 3 * rtb::math::uniform<S>(key, row, 1, 1);
    const S phase = 6.2831853f * rtb::math::uniform<S>(key, row, 1, 2);
    for (Index i = 0; i < size; ++i)
      for (Index j = 0; j < size; ++j)
        x(r, i * size + j) = 0.8f * std::sin(phase + 6.2831853f * (fx * static_cast<S>(i) + fy * static_cast<S>(j)) /
                                                         static_cast<S>(size)) +
                             0.1f * rtb::math::normal<S>(key, row, 0, static_cast<std::uint32_t>(i * size + j));
  }
}

/// What a forward and a backward of kBatch images read: wave images (draw 1000) and a standard
/// normal ∂L/∂ε, each [kBatch, size²].
struct Inputs {
  rtb::RowMatrix<S> x, d_out;
};
inline Inputs inputs(Index size) {
  const Index D = size * size;
  Inputs in{rtb::RowMatrix<S>(kBatch, D), rtb::RowMatrix<S>(kBatch, D)};
  wave_images(rtb::MatrixView<S>(in.x.data(), kBatch, D), 1000, size);
  const rtb::math::NoiseKey key{kSeed, rtb::math::Stream::User, 0xD0u};
  for (Index i = 0; i < in.d_out.size(); ++i)
    in.d_out.data()[i] = rtb::math::normal<S>(key, static_cast<std::uint64_t>(i), 0, 0);
  return in;
}

/// GFLOP and GFLOP/s of `iterations` forwards (or backwards, counted as twice a forward) of kBatch
/// images in `secs`: 2·macs_per_row() a forward image. (A template, so that this header needs no
/// Google Benchmark: rtb_torch_check includes it and does not link it.)
template <class State>
void set_flop_counters(State& state, const Net& net, bool backward, double secs) {
  const double flops = 2.0 * static_cast<double>(net.macs_per_row() * kBatch) * (backward ? 2.0 : 1.0);
  state.counters["GFLOP/s"] = flops * static_cast<double>(state.iterations()) / secs * 1e-9;
  state.counters["GFLOP"] = flops * 1e-9;
}

/// The fresh or the (once-)fitted model of a size.
inline std::shared_ptr<const rtb::Model<Net>> model_of(Index size, bool trained) {
  static std::map<std::pair<Index, bool>, std::shared_ptr<const rtb::Model<Net>>> cache;
  auto& m = cache[{size, trained}];
  if (!m) {
    rtb::Model<Net> model{Net(paper_like(size))};
    if (trained)
      rtb::fit_prior(
          rtb::DdpmProcess<S>(size * size, 100), model,
          [&](rtb::MatrixView<S> x, std::int64_t it) { wave_images(x, it, size); },
          rtb::PriorFitConfig{.batch_size = 16,
                              .iterations = 20,
                              .learning_rate = 1e-3,
                              .step_fraction = 0.01,  // one step of the 100 a row
                              .threads = 1,
                              .block_rows = 16,
                              .seed = kSeed});
    m = std::make_shared<const rtb::Model<Net>>(std::move(model));
  }
  return m;
}

}  // namespace rtb_bench::unet
