// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/math/philox.hpp>

using rtb::math::Uint4;

namespace {
bool same(Uint4 a, Uint4 b) {
  for (int i = 0; i < 4; ++i)
    if (a.v[i] != b.v[i]) return false;
  return true;
}
}  // namespace

TEST_CASE("Philox4x32-10 matches Random123's known-answer vectors") {
  CHECK(same(rtb::math::philox4x32(Uint4{{0, 0, 0, 0}}, 0, 0), Uint4{{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}));
  CHECK(same(rtb::math::philox4x32(Uint4{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff),
             Uint4{{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}));
  CHECK(same(rtb::math::philox4x32(Uint4{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0),
             Uint4{{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}));
}

TEST_CASE("normals have mean 0 and variance 1 and uniforms cover the unit interval") {
  const rtb::math::NoiseKey key{42, rtb::math::Stream::Rollout, 3};
  const int n = 200000;
  double s1 = 0, s2 = 0, s4 = 0, umin = 1, umax = 0;
  for (int i = 0; i < n; ++i) {
    const double z = rtb::math::normal<double>(key, static_cast<std::uint64_t>(i), 5, static_cast<std::uint32_t>(i % 3));
    s1 += z;
    s2 += z * z;
    s4 += z * z * z * z;
    const double u = rtb::math::uniform<double>(key, static_cast<std::uint64_t>(i), 1, 0);
    umin = std::min(umin, u);
    umax = std::max(umax, u);
  }
  // 5 standard errors: sd(mean) = 1/sqrt(n), sd(var) = sqrt(2/n), sd(E z^4) = sqrt(96/n)
  CHECK(std::fabs(s1 / n) < 5 / std::sqrt(n));
  CHECK(std::fabs(s2 / n - 1) < 5 * std::sqrt(2.0 / n));
  CHECK(std::fabs(s4 / n - 3) < 5 * std::sqrt(96.0 / n));
  CHECK(umin >= 0);
  CHECK(umax < 1);
  CHECK(umax > 0.999);
}

TEST_CASE("draws depend on every part of the key and counter") {
  const rtb::math::NoiseKey a{1, rtb::math::Stream::Rollout, 0};
  const double base = rtb::math::normal<double>(a, 7, 3, 1);
  CHECK(base == rtb::math::normal<double>(a, 7, 3, 1));
  CHECK(base != rtb::math::normal<double>({2, rtb::math::Stream::Rollout, 0}, 7, 3, 1));
  CHECK(base != rtb::math::normal<double>({1, rtb::math::Stream::Backward, 0}, 7, 3, 1));
  CHECK(base != rtb::math::normal<double>({1, rtb::math::Stream::Rollout, 1}, 7, 3, 1));
  CHECK(base != rtb::math::normal<double>(a, 8, 3, 1));
  CHECK(base != rtb::math::normal<double>(a, 7, 4, 1));
  CHECK(base != rtb::math::normal<double>(a, 7, 3, 2));
  CHECK(base != rtb::math::normal<double>(a, 7ull | (1ull << 32), 3, 1));  // high row bits count
}
