// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Counter-based random numbers: Philox4x32-10 (Salmon et al., SC 2011). A draw is a pure
/// function of (key, counter), so the same seed gives the same numbers on CPU and GPU and for any
/// thread count or block split. rtb keys every draw by (seed, purpose) and counts it by
/// (iteration, row, step, lane).

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "rtb/base.hpp"
#include "rtb/math/portable.hpp"

namespace rtb::math {

/// Four 32-bit words: a Philox counter or output block.
struct Uint4 {
  std::uint32_t v[4];
};

/// Philox4x32 with 10 rounds.
RTB_HOST_DEVICE inline Uint4 philox4x32(Uint4 ctr, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{kMul0} * ctr.v[0];
    const std::uint64_t p1 = std::uint64_t{kMul1} * ctr.v[2];
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    ctr = Uint4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return ctr;
}

/// What a draw is for; part of the key, so streams for different purposes never overlap.
enum class Stream : std::uint32_t {
  Rollout = 1,        ///< forward-kernel noise of a rollout
  Backward = 2,       ///< backward-kernel noise (re-noising end points, prior fitting)
  Replay = 3,         ///< which replay entries a batch draws
  Data = 4,           ///< user data samplers (e.g. exact mixture samples)
  StepSubset = 5,     ///< which steps a subsampled gradient keeps
  Evaluation = 6,     ///< evaluation rollouts
  User = 100          ///< first value free for user code
};

/// A key for one purpose of one run: the seed and the stream it draws from.
struct NoiseKey {
  std::uint64_t seed = 0;
  Stream stream = Stream::Rollout;
  std::uint64_t iteration = 0;

  RTB_HOST_DEVICE Uint4 block(std::uint64_t row, std::uint32_t step, std::uint32_t lane) const {
    const auto k0 = static_cast<std::uint32_t>(seed);
    const auto k1 = static_cast<std::uint32_t>(seed >> 32) ^ (static_cast<std::uint32_t>(stream) * 0x85EBCA6Bu);
    return philox4x32(Uint4{{lane, step, static_cast<std::uint32_t>(row),
                              static_cast<std::uint32_t>(iteration) ^
                                  (static_cast<std::uint32_t>(row >> 32) * 0xC2B2AE35u) ^
                                  (static_cast<std::uint32_t>(iteration >> 32) * 0x27D4EB2Fu)}},
                      k0, k1);
  }
};

/// Uniform in (0, 1]: never 0, so log(u) is finite.
template <class T>
RTB_HOST_DEVICE inline T uniform_open0(std::uint32_t bits) {
  return (static_cast<T>(bits) + T(1)) * T(2.3283064365386963e-10);  // 2^-32
}

/// Uniform in [0, 1).
template <class T>
RTB_HOST_DEVICE inline T uniform01(std::uint32_t bits) {
  return static_cast<T>(bits >> 8) * T(5.9604644775390625e-08);  // 2^-24
}

/// Four standard normals from one Philox block (two Box-Muller pairs) for (row, step, lane4):
/// the normal for dimension d of a row is `normals4(key, row, step, d / 4)[d % 4]`. In float the
/// logarithm, sine and cosine are rtb's own (rtb/math/portable.hpp), so the draws are the same bits
/// on every machine, compiler and C library, and on the GPU; in double they are the C library's.
template <class T>
struct Normal4 {
  T v[4];
};

template <class T>
RTB_HOST_DEVICE inline Normal4<T> normals4(const NoiseKey& key, std::uint64_t row, std::uint32_t step,
                                           std::uint32_t lane4) {
  const Uint4 b = key.block(row, step, lane4);
  if constexpr (std::is_same_v<T, float>) {
    const float r0 = std::sqrt(-2.0f * portable::log(uniform_open0<float>(b.v[0])));
    const float r1 = std::sqrt(-2.0f * portable::log(uniform_open0<float>(b.v[2])));
    const portable::SinCos a0 = portable::sincos_turn24(b.v[1] >> 8);  // the angle 2π·uniform01(b.v[1])
    const portable::SinCos a1 = portable::sincos_turn24(b.v[3] >> 8);
    return Normal4<float>{{r0 * a0.cos, r0 * a0.sin, r1 * a1.cos, r1 * a1.sin}};
  } else {
    constexpr T two_pi = T(6.283185307179586476925);
    const T r0 = std::sqrt(T(-2) * std::log(uniform_open0<T>(b.v[0])));
    const T r1 = std::sqrt(T(-2) * std::log(uniform_open0<T>(b.v[2])));
    const T a0 = two_pi * uniform01<T>(b.v[1]);
    const T a1 = two_pi * uniform01<T>(b.v[3]);
    return Normal4<T>{{r0 * std::cos(a0), r0 * std::sin(a0), r1 * std::cos(a1), r1 * std::sin(a1)}};
  }
}

/// One standard normal for (row, step, dimension).
template <class T>
RTB_HOST_DEVICE inline T normal(const NoiseKey& key, std::uint64_t row, std::uint32_t step, std::uint32_t dim) {
  return normals4<T>(key, row, step, dim / 4).v[dim % 4];
}

/// One uniform in [0, 1) for (row, step, lane).
template <class T>
RTB_HOST_DEVICE inline T uniform(const NoiseKey& key, std::uint64_t row, std::uint32_t step, std::uint32_t lane) {
  return uniform01<T>(key.block(row, step, lane / 4).v[lane % 4]);
}

}  // namespace rtb::math
