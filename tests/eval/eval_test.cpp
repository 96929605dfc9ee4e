// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <rtb/eval/log_partition.hpp>
#include <rtb/eval/mode_coverage.hpp>

TEST_CASE("log Z estimates and ELBO and ESS on hand-computed weights") {
  const std::vector<double> lw = {std::log(1.0), std::log(3.0)};
  const auto e = rtb::estimate_log_partition<double>(lw);
  CHECK(e.log_z_is == doctest::Approx(std::log(2.0)));
  CHECK(e.elbo == doctest::Approx(0.5 * std::log(3.0)));
  CHECK(e.ess == doctest::Approx(16.0 / (2 * 10.0)));  // (1+3)² / (2·(1+9))
  const std::vector<double> equal = {-5.0, -5.0, -5.0};
  CHECK(rtb::estimate_log_partition<double>(equal).ess == doctest::Approx(1.0));
  const std::vector<double> huge = {1000.0, 1000.0};  // no overflow
  CHECK(rtb::estimate_log_partition<double>(huge).log_z_is == doctest::Approx(1000.0));
  const std::vector<double> with_zero = {0.0, -std::numeric_limits<double>::infinity()};
  const auto z = rtb::estimate_log_partition<double>(with_zero);
  CHECK(z.log_z_is == doctest::Approx(std::log(0.5)));
  CHECK(std::isinf(z.elbo));
  const std::vector<double> nan = {0.0, std::nan("")};
  CHECK_THROWS_AS(rtb::estimate_log_partition<double>(nan), rtb::NonFiniteError);
}

TEST_CASE("mode coverage assigns samples to the nearest mode within the radius") {
  rtb::RowMatrix<double> modes(2, 2);
  modes << 0, 0, 10, 0;
  rtb::RowMatrix<double> x(5, 2);
  x << 0.5, 0, 9, 1, 10, -1.5, 5, 5, -0.1, 0.1;  // mode 0, mode 1, mode 1, off, mode 0
  const std::vector<double> target = {1, 1};
  const auto c = rtb::mode_coverage<double>(rtb::ConstMatrixView<double>(x.data(), 5, 2), modes, target, 2.0);
  CHECK(c.weights[0] == doctest::Approx(0.4));
  CHECK(c.weights[1] == doctest::Approx(0.4));
  CHECK(c.off_mode == doctest::Approx(0.2));
  CHECK(c.tv == doctest::Approx(0.5 * (0.1 + 0.1 + 0.2)));
  CHECK(c.modes_hit == 2);
  CHECK_THROWS_AS(rtb::mode_coverage<double>(rtb::ConstMatrixView<double>(x.data(), 0, 2), modes, target, 2.0),
                  rtb::EmptyBatchError);
}
