// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <rtb/net/silu.hpp>
#include <vector>

TEST_CASE("SiLU is x·sigmoid(x) and its derivative equals central differences, in double") {
  for (double x = -12; x <= 12; x += 0.125) {
    const double exact = x / (1 + std::exp(-x));
    CHECK(rtb::math::silu(x) == doctest::Approx(exact).epsilon(1e-15));
    const double h = 1e-6;
    const double fd = (rtb::math::silu(x + h) - rtb::math::silu(x - h)) / (2 * h);
    CHECK(rtb::math::silu_with_derivative(x).derivative == doctest::Approx(fd).epsilon(1e-8));
  }
  CHECK(rtb::math::silu(0.0) == 0.0);
  CHECK(rtb::math::silu_with_derivative(0.0).derivative == 0.5);
}

TEST_CASE("float SiLU and its derivative match the double forms and stay finite far out") {
  double worst_v = 0, worst_d = 0;
  for (double x = -20; x <= 20; x += 0.0031) {
    const auto f = rtb::math::silu_with_derivative(static_cast<float>(x));
    const auto d = rtb::math::silu_with_derivative(static_cast<double>(static_cast<float>(x)));
    worst_v = std::max(worst_v, std::fabs(f.value - d.value) / std::max(1.0, std::fabs(d.value)));
    worst_d = std::max(worst_d, std::fabs(f.derivative - d.derivative));
  }
  CHECK(worst_v < 3e-7);
  CHECK(worst_d < 3e-7);
  for (float x : {-1e4f, -200.0f, -90.0f, 90.0f, 200.0f, 1e4f}) {
    const auto f = rtb::math::silu_with_derivative(x);
    CHECK(std::isfinite(f.value));
    CHECK(std::isfinite(f.derivative));
  }
  CHECK(rtb::math::silu(1e4f) == 1e4f);
  CHECK(std::fabs(rtb::math::silu(-1e4f)) < 1e-30f);
  const auto far = rtb::math::silu_with_derivative(-1e4);
  CHECK(std::fabs(far.value) < 1e-290);
  CHECK(std::fabs(far.derivative) < 1e-290);
}

TEST_CASE_TEMPLATE("silu_inplace keeps the derivative on request and its backward multiplies by it", S, float, double) {
  std::vector<S> h, ref_v, ref_d;
  for (int i = 0; i < 37; ++i) {  // not a multiple of the vector width: the tail runs too
    const S x = static_cast<S>(0.37 * (i - 18));
    h.push_back(x);
    ref_v.push_back(rtb::math::silu(x));
    ref_d.push_back(rtb::math::silu_with_derivative(x).derivative);
  }
  std::vector<S> plain = h, kept = h, deriv(h.size()), d(h.size(), S(2));
  rtb::silu_inplace(plain.data(), static_cast<S*>(nullptr), static_cast<rtb::Index>(h.size()));
  rtb::silu_inplace(kept.data(), deriv.data(), static_cast<rtb::Index>(h.size()));
  rtb::silu_backward_inplace(d.data(), deriv.data(), static_cast<rtb::Index>(h.size()));
  for (std::size_t i = 0; i < h.size(); ++i) {
    CHECK(plain[i] == ref_v[i]);
    CHECK(kept[i] == ref_v[i]);
    CHECK(deriv[i] == ref_d[i]);
    CHECK(d[i] == 2 * ref_d[i]);
  }
}
