// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/error.hpp>
#include <rtb/process/gaussian_process.hpp>

#include "../test_util.hpp"

// Its own namespace: rtb_sanitized_tests is a unity build, and other files reuse these helper names.
namespace gaussian_process_test {

using rtb::ConstMatrixView;
using rtb::MatrixView;
using rtb::RowMatrix;
using M = RowMatrix<double>;

namespace {
ConstMatrixView<double> cv(const M& m) { return ConstMatrixView<double>(m.data(), m.rows(), m.cols()); }
MatrixView<double> mv(M& m) { return MatrixView<double>(m.data(), m.rows(), m.cols()); }
constexpr double kPi = 3.14159265358979323846;
}  // namespace

TEST_CASE("Gaussian step log-density equals the closed form with constants included") {
  const rtb::GaussianProcess<double> p(3, 50, 5.0);
  M x(4, 3), xn(4, 3), out(4, 6);
  rtb_test::fill_normal<double>(mv(x), 1);
  rtb_test::fill_normal<double>(mv(xn), 2);
  rtb_test::fill_normal<double>(mv(out), 3, 4.0);
  std::vector<double> acc(4, 10.0);  // accumulates on top of what is there
  p.log_prob_step(rtb_test::at<double>(cv(x), 7), cv(xn), cv(out), std::span<double>(acc));
  const double dt = 1.0 / 50, var = dt * 5.0;
  for (int r = 0; r < 4; ++r) {
    double expected = 10.0;
    for (int d = 0; d < 3; ++d) {
      const double mean = x(r, d) + dt * out(r, d);
      expected += -0.5 * std::log(2 * kPi * var) - (xn(r, d) - mean) * (xn(r, d) - mean) / (2 * var);
    }
    CHECK(acc[static_cast<std::size_t>(r)] == doctest::Approx(expected).epsilon(1e-12));
  }
}

TEST_CASE("d log p / d out matches central differences and the variance half gets zero") {
  const rtb::GaussianProcess<double> p(2, 20, 3.0, rtb::GaussianHead::MeanAndLogVariance);
  M x(3, 2), xn(3, 2), out(3, 4), d_out(3, 4);
  rtb_test::fill_normal<double>(mv(x), 4);
  rtb_test::fill_normal<double>(mv(xn), 5);
  rtb_test::fill_normal<double>(mv(out), 6, 3.0);
  const double w[3] = {0.5, -2.0, 1.0};
  p.d_log_prob_d_output(rtb_test::at<double>(cv(x), 3), cv(xn), cv(out), std::span<const double>(w), mv(d_out));
  std::vector<double> flat(out.data(), out.data() + out.size());
  auto f = [&] {
    M o = Eigen::Map<M>(flat.data(), 3, 4);
    std::vector<double> acc(3, 0.0);
    p.log_prob_step(rtb_test::at<double>(cv(x), 3), cv(xn), cv(o), std::span<double>(acc));
    return w[0] * acc[0] + w[1] * acc[1] + w[2] * acc[2];
  };
  const auto numeric = rtb_test::numeric_gradient(flat, f);
  std::vector<double> analytic(d_out.data(), d_out.data() + d_out.size());
  CHECK(rtb_test::relative_error(analytic, numeric) < 1e-7);
  CHECK(d_out(1, 2) == 0.0);
  CHECK(d_out(2, 3) == 0.0);
}

TEST_CASE("forward sampling has mean x + dt·mu and variance dt·sigma^2 + exploration^2") {
  const rtb::GaussianProcess<double> p(2, 10, 5.0);
  const int n = 40000;
  M x(n, 2), out(n, 4), xn(n, 2);
  for (int r = 0; r < n; ++r) {
    x(r, 0) = 1.0;
    x(r, 1) = -2.0;
    out(r, 0) = 3.0;
    out(r, 1) = 0.0;
  }
  for (double expl : {0.0, 0.3}) {
    p.sample_step(rtb_test::at<double>(cv(x), 4), cv(out), expl, {9, rtb::math::Stream::Rollout, 0}, mv(xn));
    const double var = 0.1 * 5.0 + expl * expl;
    for (int d = 0; d < 2; ++d) {
      const double mean = x(0, d) + 0.1 * out(0, d);
      double s1 = 0, s2 = 0;
      for (int r = 0; r < n; ++r) {
        s1 += xn(r, d) - mean;
        s2 += (xn(r, d) - mean) * (xn(r, d) - mean);
      }
      CHECK(std::fabs(s1 / n) < 5 * std::sqrt(var / n));
      CHECK(std::fabs(s2 / n - var) < 5 * var * std::sqrt(2.0 / n));
    }
  }
}

TEST_CASE("zero drift from x0 = 0 ends exactly at N(0 sigma^2 I)") {
  const double sigma2 = 2.5;
  const int T = 25, n = 20000;
  const rtb::GaussianProcess<double> p(2, T, sigma2);
  M x(n, 2), xn(n, 2), out = M::Zero(n, 4);
  p.initial_state(rtb::Rows<double>{}, {}, mv(x));
  CHECK(x.cwiseAbs().maxCoeff() == 0.0);
  for (int t = 0; t < T; ++t) {
    p.sample_step(rtb_test::at<double>(cv(x), t), cv(out), 0.0, {3, rtb::math::Stream::Rollout, 0}, mv(xn));
    std::swap(x, xn);
  }
  for (int d = 0; d < 2; ++d) {
    const double mean = x.col(d).mean(), var = (x.col(d).array() - mean).square().mean();
    CHECK(std::fabs(mean) < 5 * std::sqrt(sigma2 / n));
    CHECK(std::fabs(var - sigma2) < 5 * sigma2 * std::sqrt(2.0 / n));
  }
}

TEST_CASE("backward kernel is the Brownian bridge pinned at 0") {
  const double sigma2 = 5.0;
  const int T = 20, n = 20000;
  const rtb::GaussianProcess<double> p(1, T, sigma2);
  M x(n, 1), prev(n, 1);
  x.setConstant(2.0);  // x_T = 2 for every row
  std::vector<double> log_pb(n, 0.0);
  for (int t = T - 1; t >= 5; --t) {
    p.sample_backward_step(rtb_test::at<double>(cv(x), t), {4, rtb::math::Stream::Backward, 0}, mv(prev));
    p.log_prob_backward_step(rtb_test::at<double>(cv(x), t), cv(prev), std::span<double>(log_pb));
    std::swap(x, prev);
  }
  // x_5 | x_T = 2: N(s·2, sigma² s(1 − s)), s = 5/20
  const double s = 0.25, mean = 2 * s, var = sigma2 * s * (1 - s);
  const double m = x.col(0).mean(), v = (x.col(0).array() - m).square().mean();
  CHECK(std::fabs(m - mean) < 5 * std::sqrt(var / n));
  CHECK(std::fabs(v - var) < 5 * var * std::sqrt(2.0 / n));
  // step 0 is deterministic: x_0 = 0 with log-probability 0
  M x0(n, 1);
  std::vector<double> lp0(n, 0.0);
  p.sample_backward_step(rtb_test::at<double>(cv(x), 0), {4, rtb::math::Stream::Backward, 0}, mv(x0));
  p.log_prob_backward_step(rtb_test::at<double>(cv(x), 0), cv(x0), std::span<double>(lp0));
  CHECK(x0.cwiseAbs().maxCoeff() == 0.0);
  CHECK(lp0[0] == 0.0);
  CHECK(std::isfinite(log_pb[0]));
}

TEST_CASE("the closed-form bridge: marginal and expected log-likelihood and its gradient") {
  const double sigma2 = 5.0;
  const int T = 10, n = 50000, step = 6;
  const rtb::GaussianProcess<double> p(2, T, sigma2);
  M end(n, 2), x(n, 2);
  for (int r = 0; r < n; ++r) {
    end(r, 0) = 1.5;
    end(r, 1) = -0.5;
  }
  p.sample_given_end(rtb_test::at<double>(cv(end), step), {5, rtb::math::Stream::Backward, 0}, mv(x));
  const double s = 0.6, var = sigma2 * s * (1 - s);
  for (int d = 0; d < 2; ++d) {
    const double m = x.col(d).mean(), v = (x.col(d).array() - m).square().mean();
    CHECK(std::fabs(m - s * end(0, d)) < 5 * std::sqrt(var / n));
    CHECK(std::fabs(v - var) < 5 * var * std::sqrt(2.0 / n));
  }
  // E[log p(x'|x)] over x' ~ bridge(x, end) equals the Monte Carlo average of log p.
  M x1(1, 2), e1(1, 2), out(1, 4);
  x1 << 0.7, -0.2;
  e1 << 1.5, -0.5;
  out << 2.0, -1.0, 0.0, 0.0;
  double expected = 0;
  p.expected_log_prob_step(rtb_test::at<double>(cv(x1), step), cv(e1), cv(out), std::span<double>(&expected, 1));
  const double dt = 0.1, left = 1 - s, vb = sigma2 * dt * (left - dt) / left;
  M xs(n, 2), xr(n, 2), outr(n, 4);
  const rtb::math::NoiseKey key{6, rtb::math::Stream::User, 0};
  for (int r = 0; r < n; ++r)
    for (int d = 0; d < 2; ++d) {
      xr(r, d) = x1(0, d);
      outr(r, d) = out(0, d);
      outr(r, d + 2) = 0;
      xs(r, d) = x1(0, d) + dt * (e1(0, d) - x1(0, d)) / left + std::sqrt(vb) * rtb::math::normal<double>(key, r, 0, d);
    }
  std::vector<double> lp(n, 0.0);
  p.log_prob_step(rtb_test::at<double>(cv(xr), step), cv(xs), cv(outr), std::span<double>(lp));
  double mean = 0, sq = 0;
  for (double v : lp) mean += v / n;
  for (double v : lp) sq += (v - mean) * (v - mean) / n;
  CHECK(std::fabs(mean - expected) < 5 * std::sqrt(sq / n));
  // gradient of the expectation vs central differences
  M d_out(1, 4);
  const double w = 1.0;
  p.d_expected_log_prob_d_output(rtb_test::at<double>(cv(x1), step), cv(e1), cv(out), std::span<const double>(&w, 1), mv(d_out));
  std::vector<double> flat(out.data(), out.data() + 4);
  auto f = [&] {
    M o = Eigen::Map<M>(flat.data(), 1, 4);
    double acc = 0;
    p.expected_log_prob_step(rtb_test::at<double>(cv(x1), step), cv(e1), cv(o), std::span<double>(&acc, 1));
    return acc;
  };
  const auto numeric = rtb_test::numeric_gradient(flat, f);
  std::vector<double> analytic(d_out.data(), d_out.data() + 4);
  CHECK(rtb_test::relative_error(analytic, numeric) < 1e-7);
}

TEST_CASE("GaussianProcess rejects non-positive dimensions and steps and variances") {
  CHECK_THROWS_AS(rtb::GaussianProcess<double>(0, 10, 1.0), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::GaussianProcess<double>(2, 0, 1.0), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::GaussianProcess<double>(2, 10, 0.0), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::GaussianProcess<double>(2, 10, -1.0), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::GaussianProcess<double>(2, 10, std::nan("")), rtb::InvalidArgumentError);
  try {
    rtb::GaussianProcess<double>(2, 0, 1.0);
  } catch (const rtb::Error& e) {
    CHECK(std::string(e.what()).find("num_steps must be positive, got 0") != std::string::npos);
  }
}

TEST_CASE("the output layout is named, and the default exploration is relative to the step") {
  const rtb::GaussianProcess<double> mean(3, 100, 5.0), reference(3, 100, 5.0, rtb::GaussianHead::MeanAndLogVariance);
  CHECK(mean.output_dim() == 3);
  CHECK(reference.output_dim() == 6);
  CHECK(std::string(reference.output_layout()) == "[mean, log-variance (unused)]");
  // √5 step standard deviations: the reference's absolute 0.5 at σ² = 5, T = 100, ...
  CHECK(reference.default_exploration() == doctest::Approx(0.5).epsilon(1e-12));
  // ... and the same multiple of the step at another scale (σ² = 1, T = 100: step std 0.1)
  const rtb::GaussianProcess<double> unit(10, 100, 1.0);
  CHECK(unit.default_exploration() / std::sqrt(unit.step_variance()) == doctest::Approx(std::sqrt(5.0)));
}

}  // namespace gaussian_process_test
