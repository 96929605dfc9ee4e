// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/error.hpp>
#include <rtb/net/adam.hpp>

TEST_CASE("Adam follows torch.optim.Adam step by step (hand-computed)") {
  rtb::Adam<double> adam(2, {.learning_rate = 0.1, .beta1 = 0.9, .beta2 = 0.999, .epsilon = 1e-8});
  std::vector<double> p = {1.0, -2.0};
  const std::vector<double> g1 = {0.5, -4.0}, g2 = {-1.0, 2.0};
  adam.step(p, g1);
  // k = 1: m̂ = g, v̂ = g², step = lr·g/(|g| + eps) ≈ lr·sign(g)
  CHECK(p[0] == doctest::Approx(1.0 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-12));
  CHECK(p[1] == doctest::Approx(-2.0 + 0.1 * 4.0 / (4.0 + 1e-8)).epsilon(1e-12));
  adam.step(p, g2);
  // k = 2 for coordinate 0: m = 0.9·0.05 + 0.1·(−1) = −0.055, v = 0.999·0.00025 + 0.001·1 = 0.00124975
  const double m = -0.055, v = 0.00124975;
  const double expected = (1.0 - 0.1 * 0.5 / (0.5 + 1e-8)) - 0.1 / (1 - 0.81) * m / (std::sqrt(v) / std::sqrt(1 - 0.999 * 0.999) + 1e-8);
  CHECK(p[0] == doctest::Approx(expected).epsilon(1e-12));
  CHECK(adam.steps() == 2);
  CHECK(adam.first_moment()[0] == doctest::Approx(m));
  CHECK(adam.second_moment()[0] == doctest::Approx(v));
}

TEST_CASE("Adam rejects a non-positive learning rate") {
  CHECK_THROWS_AS(rtb::Adam<float>(3, {.learning_rate = 0.0f}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::Adam<float>(3, {.learning_rate = 1e-3f, .beta1 = 1.0f}), rtb::InvalidArgumentError);
}
