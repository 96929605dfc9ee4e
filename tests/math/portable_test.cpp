// SPDX-License-Identifier: Apache-2.0
// rtb's own float log, sine, cosine and exp (rtb/math/portable.hpp): accurate to about 1 ulp, and
// the same bits whatever the compiler flags — the float normals are pinned by a hash measured at
// -O2 -march=x86-64-v3 and checked here in rtb_sanitized_tests (-O1, ASan, the machine's own
// instruction set); cuda/tests/kernels_test.cu compares them with the GPU's.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <rtb/math/philox.hpp>
#include <rtb/math/portable.hpp>

namespace portable_test {

namespace {

namespace pm = rtb::math::portable;

/// |got − want| in units of the float spacing at want.
double ulps(float got, long double want) {
  const float w = static_cast<float>(want);
  const float aw = std::fabs(w);
  const double spacing = aw == 0 ? 1.4e-45 : static_cast<double>(std::nextafter(aw, INFINITY) - aw);
  return static_cast<double>(std::fabs(static_cast<long double>(got) - want)) / spacing;
}

}  // namespace

TEST_CASE("portable::log is within 1 ulp on positive normal floats and on Box-Muller's uniforms") {
  double worst = 0;
  for (std::uint64_t b = 0x00800000u; b < 0x7f800000u; b += 1013) {  // every 1013th positive normal float
    const float x = pm::float_of(static_cast<std::uint32_t>(b));
    worst = std::max(worst, ulps(pm::log(x), std::log(static_cast<long double>(x))));
  }
  for (std::uint64_t b = 0; b <= 0xffffffffu; b += 65521) {  // u = uniform_open0(bits) ∈ [2^-32, 1]
    const float u = rtb::math::uniform_open0<float>(static_cast<std::uint32_t>(b));
    worst = std::max(worst, ulps(pm::log(u), std::log(static_cast<long double>(u))));
  }
  CHECK(pm::log(1.0f) == 0.0f);
  CHECK(pm::log(0x1p-32f) == static_cast<float>(-32 * std::log(2.0L)));
  MESSAGE("portable::log worst error " << worst << " ulp");
  CHECK(worst <= 1.0);
}

TEST_CASE("portable::sincos_turn24 is within 1 ulp, with exact zeros and ones at the quarter turns") {
  double worst = 0;
  auto check_at = [&](std::uint32_t n) {
    const pm::SinCos sc = pm::sincos_turn24(n);
    const long double angle = 6.283185307179586476925286766559L * (static_cast<long double>(n) / 16777216.0L);
    worst = std::max({worst, ulps(sc.sin, std::sin(angle)), ulps(sc.cos, std::cos(angle))});
  };
  for (std::uint32_t n = 0; n < (1u << 24); n += 7) check_at(n);
  for (std::uint32_t q = 0; q <= 4; ++q)  // around each eighth of a turn, where the quadrant switches
    for (std::int32_t d = -64; d <= 64; ++d) {
      const std::int64_t n = static_cast<std::int64_t>(q) * (1 << 22) + (1 << 21) + d;
      if (n >= 0 && n < (1 << 24)) check_at(static_cast<std::uint32_t>(n));
    }
  const float sin_q[4] = {0, 1, 0, -1}, cos_q[4] = {1, 0, -1, 0};
  for (std::uint32_t q = 0; q < 4; ++q) {
    CHECK(std::fabs(pm::sincos_turn24(q << 22).sin) == std::fabs(sin_q[q]));
    CHECK(pm::sincos_turn24(q << 22).cos == cos_q[q] + 0.0f);
  }
  MESSAGE("portable::sincos_turn24 worst error " << worst << " ulp");
  CHECK(worst <= 1.0);
}

TEST_CASE("portable::exp is within 1.03 ulp on [-87, 88.72], 0 below, infinite above, NaN through") {
  double worst = 0;
  for (std::uint64_t b = 0; b <= 0xffffffffu; b += 4099) {
    const float x = pm::float_of(static_cast<std::uint32_t>(b));
    if (!(x >= -87.0f && x <= 88.72f)) continue;
    worst = std::max(worst, ulps(pm::exp(x), std::exp(static_cast<long double>(x))));
  }
  MESSAGE("portable::exp worst error " << worst << " ulp");
  CHECK(worst <= 1.03);
  CHECK(pm::exp(0.0f) == 1.0f);
  CHECK(pm::exp(-87.5f) == 0.0f);
  CHECK(pm::exp(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(std::isinf(pm::exp(89.0f)));
  CHECK(std::isnan(pm::exp(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isfinite(pm::exp(88.72f)));
}

TEST_CASE("float normals are Box-Muller's of their uniforms to a few ulp, and their bits are pinned") {
  const rtb::math::NoiseKey key{2026, rtb::math::Stream::Rollout, 12};
  double worst = 0, s1 = 0, s2 = 0, s4 = 0;
  std::uint64_t hash = 14695981039346656037ull;  // FNV-1a over the float bits
  const int n = 400000;
  for (int i = 0; i < n; ++i) {
    const auto row = static_cast<std::uint64_t>(i / 4);
    const auto d = static_cast<std::uint32_t>(i % 4);
    const float z = rtb::math::normal<float>(key, row, 9, d);
    // Box-Muller in long double from the same float uniform and the same 24 angle bits.
    const rtb::math::Uint4 b = key.block(row, 9, 0);
    const long double r =
        std::sqrt(-2.0L * std::log(static_cast<long double>(rtb::math::uniform_open0<float>(b.v[d < 2 ? 0 : 2]))));
    const long double angle =
        6.283185307179586476925286766559L * static_cast<long double>(b.v[d < 2 ? 1 : 3] >> 8) / 16777216.0L;
    const long double want = (d % 2 == 0) ? r * std::cos(angle) : r * std::sin(angle);
    worst = std::max(worst, static_cast<double>(std::fabs(z - want) / (r * 0x1p-24L)));  // in units of r's ulp scale
    s1 += z;
    s2 += static_cast<double>(z) * z;
    s4 += static_cast<double>(z) * z * z * z;
    const std::uint32_t bits = pm::bits_of(z);
    for (int k = 0; k < 4; ++k) {
      hash ^= (bits >> (8 * k)) & 0xffu;
      hash *= 1099511628211ull;
    }
  }
  MESSAGE("float normal vs long double Box-Muller: worst " << worst << " units of r*2^-24");
  CHECK(worst <= 4.0);
  CHECK(std::fabs(s1 / n) < 5 / std::sqrt(n));
  CHECK(std::fabs(s2 / n - 1) < 5 * std::sqrt(2.0 / n));
  CHECK(std::fabs(s4 / n - 3) < 5 * std::sqrt(96.0 / n));
  // Pinned on g++ 12 at -O2 -march=x86-64-v3 and at -O1 -march=native (Zen 4), with and without
  // -ffp-contract=off: the same bits (the point of portable.hpp). A change here changes every
  // float rollout of every user, and the GPU's draws with it.
  std::printf("portable normals hash 0x%016llx\n", static_cast<unsigned long long>(hash));
  CHECK(hash == 0xc4cce94d34072904ull);
}

}  // namespace portable_test
