// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A keyed uniform index, for the examples' minibatches and shuffles: the same draw for the same
/// (seed, stream, iteration, j) on any machine and thread count.

#include <cstdint>
#include <rtb/base.hpp>
#include <rtb/math/philox.hpp>

namespace examples {

/// Draw j of `iteration`: uniform over [0, n) from Philox keyed by (seed, stream).
inline rtb::Index sample_row(std::uint64_t seed, rtb::math::Stream stream, std::uint64_t iteration, rtb::Index j,
                             rtb::Index n) {
  const rtb::math::NoiseKey key{seed, stream, iteration};
  const rtb::math::Uint4 b = key.block(static_cast<std::uint64_t>(j), 0, 0);
  const std::uint64_t bits = (std::uint64_t{b.v[0]} << 32) | b.v[1];
  return static_cast<rtb::Index>(bits % static_cast<std::uint64_t>(n));  // bias ≤ n/2^64
}

}  // namespace examples
