// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/eval/mode_coverage.hpp>
#include <rtb/reward/function.hpp>
#include <rtb/reward/gaussian_mixture.hpp>

TEST_CASE("mixture log-density equals the direct sum") {
  const auto g = rtb::GaussianMixture<double>::posterior9();
  const double x[2] = {4.2, -0.7};
  double sum = 0;
  for (int k = 0; k < 9; ++k) {
    const double dx = x[0] - g.means()(k, 0), dy = x[1] - g.means()(k, 1);
    sum += g.weights()[static_cast<std::size_t>(k)] * std::exp(-(dx * dx + dy * dy) / 0.6) / (2 * 3.14159265358979323846 * 0.3);
  }
  CHECK(g.log_density(x) == doctest::Approx(std::log(sum)).epsilon(1e-12));
  const double far[2] = {100.0, 100.0};  // no underflow to -inf
  CHECK(std::isfinite(g.log_density(far)));
}

TEST_CASE("mixture samples draw components by weight (not equal counts) with the right spread") {
  const auto g = rtb::GaussianMixture<double>::posterior9();
  const int n = 60000;
  rtb::RowMatrix<double> x(n, 2);
  g.sample(rtb::MatrixView<double>(x.data(), n, 2), {3, rtb::math::Stream::Data, 0});
  const auto c = rtb::mode_coverage<double>(rtb::ConstMatrixView<double>(x.data(), n, 2), g.means(), g.weights(), 2.0);
  for (std::size_t k = 0; k < 9; ++k) {
    const double w = g.weights()[k];
    CHECK(std::fabs(c.weights[k] - w) < 5 * std::sqrt(w * (1 - w) / n));
  }
  const double p_off = std::exp(-4.0 / (2 * 0.3));  // P(‖x − m‖ > 2) for a 2-D N(m, 0.3 I): χ²₂ tail
  CHECK(std::fabs(c.off_mode - p_off) < 5 * std::sqrt(p_off / n));
  // spread around the assigned mode: variance 0.3 per axis
  double sq = 0;
  for (int i = 0; i < n; ++i) {
    double best = 1e9;
    for (int k = 0; k < 9; ++k) {
      const double dx = x(i, 0) - g.means()(k, 0), dy = x(i, 1) - g.means()(k, 1);
      best = std::min(best, dx * dx + dy * dy);
    }
    sq += best / (2.0 * n);
  }
  CHECK(sq == doctest::Approx(0.3).epsilon(0.02));
}

TEST_CASE("the 9-over-25 ratio reward is log p9 − log p25 and checks shapes") {
  rtb::MixtureRatioReward<double> r(rtb::GaussianMixture<double>::posterior9(), rtb::GaussianMixture<double>::grid25());
  rtb::RowMatrix<double> x(2, 2);
  x << 0, 0, 10, 10;  // a target mode, and a grid mode outside the posterior
  std::vector<double> out(2);
  r.log_reward(rtb::ConstMatrixView<double>(x.data(), 2, 2), std::span<double>(out));
  CHECK(out[0] == doctest::Approx(std::log((10.0 / 61) / (1.0 / 25))).epsilon(1e-6));
  // (10, 10) is 5 from the nearest target mode (5, 10), weight 4/61: log r ≈ log(25·4/61) − 25/0.6
  CHECK(out[1] == doctest::Approx(std::log(25 * 4.0 / 61) - 25 / 0.6).epsilon(1e-6));
  rtb::RowMatrix<double> bad(1, 3);
  CHECK_THROWS_AS(r.log_reward(rtb::ConstMatrixView<double>(bad.data(), 1, 3), std::span<double>(out)), rtb::ShapeError);
  CHECK_THROWS_AS(rtb::GaussianMixture<double>(rtb::RowMatrix<double>::Zero(2, 2), {1.0}, 1.0), rtb::ShapeError);
  CHECK_THROWS_AS(rtb::GaussianMixture<double>(rtb::RowMatrix<double>::Zero(1, 2), {1.0}, 0.0), rtb::InvalidArgumentError);
}

TEST_CASE("make_reward wraps per-row and batch callables") {
  rtb::RowMatrix<double> x(3, 2);
  x << 1, 2, 3, 4, 5, 6;
  std::vector<double> out(3);
  auto per_row = rtb::make_reward([](std::span<const double> v) { return v[0] - v[1]; });
  per_row.log_reward(rtb::ConstMatrixView<double>(x.data(), 3, 2), std::span<double>(out));
  CHECK(out == std::vector<double>{-1, -1, -1});
  auto batch = rtb::make_reward([](rtb::ConstMatrixView<double> v, std::span<double> o) {
    for (rtb::Index i = 0; i < v.rows(); ++i) o[i] = v(i, 1) * 2;
  });
  batch.log_reward(rtb::ConstMatrixView<double>(x.data(), 3, 2), std::span<double>(out));
  CHECK(out == std::vector<double>{4, 8, 12});
  static_assert(rtb::Reward<decltype(per_row), double, double>);
}
