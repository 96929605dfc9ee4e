// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <rtb/math/activations.hpp>
#include <rtb/math/logsumexp.hpp>

TEST_CASE("fast_exp is accurate to a few ulp over its range") {
  double worst = 0;
  for (double x = -80; x <= 80; x += 0.0137) {
    const double ref = std::exp(x);
    worst = std::max(worst, std::fabs(rtb::math::fast_exp(static_cast<float>(x)) - ref) / ref);
  }
  // float rounding of x itself moves exp(x) by up to |x|·2^-24 ≈ 5e-6 at |x| = 80
  CHECK(worst < 1e-5);
  double worst_small = 0;
  for (double x = -5; x <= 5; x += 0.001) {
    const auto xf = static_cast<float>(x);
    const double ref = std::exp(static_cast<double>(xf));
    worst_small = std::max(worst_small, std::fabs(rtb::math::fast_exp(xf) - ref) / ref);
  }
  CHECK(worst_small < 4e-7);  // a few ulp
}

TEST_CASE("clamp_select gives the float ternary's bits, NaN, infinities, signed zeros and bounds included") {
  constexpr float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> xs = {-inf, -1e30f, -87.0001f, -87.0f, -86.9999f, -1.0f, -0.0f, 0.0f,
                                 std::numeric_limits<float>::denorm_min(), 1.0f, 87.9999f, 88.0f, 88.0001f,
                                 1e30f, inf, std::numeric_limits<float>::quiet_NaN()};
  for (float x : xs) {
    const float want = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    CAPTURE(x);
    CHECK(std::bit_cast<std::uint32_t>(rtb::math::clamp_select(x, -87.0f, 88.0f)) == std::bit_cast<std::uint32_t>(want));
  }
  CHECK(rtb::math::fast_exp(-inf) == rtb::math::fast_exp(-87.0f));  // saturates, never 0·∞
  CHECK(rtb::math::fast_exp(inf) == rtb::math::fast_exp(88.0f));
}

TEST_CASE("float GELU and its derivative match the exact double forms") {
  double worst_v = 0, worst_d = 0;
  for (double x = -8; x <= 8; x += 0.003) {
    const auto f = rtb::math::gelu_with_derivative(static_cast<float>(x));
    const auto d = rtb::math::gelu_with_derivative(static_cast<double>(static_cast<float>(x)));
    worst_v = std::max(worst_v, std::fabs(f.value - d.value) / std::max(1.0, std::fabs(d.value)));
    worst_d = std::max(worst_d, std::fabs(f.derivative - d.derivative));
  }
  CHECK(worst_v < 5e-7);
  CHECK(worst_d < 5e-7);
}

TEST_CASE("double GELU derivative equals central differences") {
  for (double x = -6; x <= 6; x += 0.25) {
    const double h = 1e-6;
    const double fd = (rtb::math::gelu(x + h) - rtb::math::gelu(x - h)) / (2 * h);
    CHECK(rtb::math::gelu_with_derivative(x).derivative == doctest::Approx(fd).epsilon(1e-8));
  }
  CHECK(rtb::math::gelu(0.0) == 0.0);
  CHECK(rtb::math::gelu(1.0) == doctest::Approx(0.8413447460685429));  // Φ(1)
}

TEST_CASE("logsumexp is stable") {
  const double v[3] = {1000.0, 1000.0, -std::numeric_limits<double>::infinity()};
  CHECK(rtb::math::logsumexp(v, 3) == doctest::Approx(1000.0 + std::log(2.0)));
  const double none[1] = {-std::numeric_limits<double>::infinity()};
  CHECK(std::isinf(rtb::math::logsumexp(none, 1)));
}
