// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/objective/reinforce_kl.hpp>
#include <rtb/objective/relative_tb.hpp>
#include <rtb/objective/relative_vargrad.hpp>

namespace {
const std::vector<double> post = {-3.0, -1.0}, prior = {-2.0, -2.0}, log_r = {0.5, -1.0};
const std::vector<char> both = {1, 1};
}  // namespace

TEST_CASE("RTB residual and loss and gradients on hand-computed values") {
  // δ = log Z + post − prior − β log r with log Z = 0.2, β = 2: δ = (−1.8, 3.2)
  std::vector<double> w(2);
  auto r = rtb::RelativeTB{}(rtb::ObjectiveBatch<double>{post, prior, log_r, both, 0.2, 2.0, 0.0, 1.0}, std::span<double>(w));
  CHECK(r.loss == doctest::Approx(0.5 * (1.8 * 1.8 + 3.2 * 3.2) / 2));
  CHECK(w[0] == doctest::Approx(-0.9));
  CHECK(w[1] == doctest::Approx(1.6));
  CHECK(r.d_log_z == doctest::Approx(0.7));
  CHECK(r.mean_delta == doctest::Approx(0.7));
  // cut-off c = 4: only |δ| > 2 contributes, ½(δ² − c)
  r = rtb::RelativeTB{}(rtb::ObjectiveBatch<double>{post, prior, log_r, both, 0.2, 2.0, 4.0, 1.0}, std::span<double>(w));
  CHECK(r.loss == doctest::Approx(0.5 * (3.2 * 3.2 - 4) / 2));
  CHECK(w[0] == 0.0);
  CHECK(r.d_log_z == doctest::Approx(1.6));
  // a skipped row leaves the mean over the rest
  const std::vector<char> second = {0, 1};
  r = rtb::RelativeTB{}(rtb::ObjectiveBatch<double>{post, prior, log_r, second, 0.2, 2.0, 0.0, 1.0}, std::span<double>(w));
  CHECK(r.used == 1);
  CHECK(r.loss == doctest::Approx(0.5 * 3.2 * 3.2));
  CHECK(w[0] == 0.0);
  CHECK(w[1] == doctest::Approx(3.2));
}

TEST_CASE("relative VarGrad centres the log-ratio with the right sign") {
  // u = post − prior − β log r = (−2, 3); log Ẑ = −mean(u) = −0.5; δ = u − mean(u) = (−2.5, 2.5)
  std::vector<double> w(2);
  const auto r =
      rtb::RelativeVarGrad{}(rtb::ObjectiveBatch<double>{post, prior, log_r, both, 99.0, 2.0, 0.0, 1.0}, std::span<double>(w));
  CHECK(r.log_z_estimate == doctest::Approx(-0.5));
  CHECK(r.loss == doctest::Approx(0.5 * 6.25));
  CHECK(w[0] == doctest::Approx(-1.25));
  CHECK(w[1] == doctest::Approx(1.25));
  CHECK(r.d_log_z == 0.0);
}

TEST_CASE("REINFORCE+KL uses exp(log r) with a mean baseline and a squared log-ratio") {
  std::vector<double> w(2);
  const auto r =
      rtb::ReinforceKL{}(rtb::ObjectiveBatch<double>{post, prior, log_r, both, 0.0, 1.0, 0.0, 0.5}, std::span<double>(w));
  const double R0 = std::exp(0.5), R1 = std::exp(-1.0), mean = (R0 + R1) / 2;
  const double A0 = R0 - mean, A1 = R1 - mean;  // ratios: −1, +1
  CHECK(r.loss == doctest::Approx(((-A0 * -3.0 + 0.5 * 1.0) + (-A1 * -1.0 + 0.5 * 1.0)) / 2));
  CHECK(w[0] == doctest::Approx((-A0 + 2 * 0.5 * -1.0) / 2));
  CHECK(w[1] == doctest::Approx((-A1 + 2 * 0.5 * 1.0) / 2));
}
