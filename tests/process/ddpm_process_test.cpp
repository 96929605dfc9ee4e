// SPDX-License-Identifier: Apache-2.0
// DdpmProcess: the schedule against values computed here by hand, the log-density and its
// gradient with respect to ε̂ against central differences (clamp on, where it is active too, and
// off), sampling against the density's mean and variance, and the noising and backward kernels
// against their closed forms (the posterior q(x' | x, x_T) against Bayes' rule on the two kernels).

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <rtb/concepts/noise_process.hpp>
#include <rtb/error.hpp>
#include <rtb/process/ddpm.hpp>

#include "../test_util.hpp"

using rtb::ConstMatrixView;
using rtb::Index;
using rtb::MatrixView;
using rtb::RowMatrix;
using M = RowMatrix<double>;

namespace {
ConstMatrixView<double> cv(const M& m) { return ConstMatrixView<double>(m.data(), m.rows(), m.cols()); }
MatrixView<double> mv(M& m) { return MatrixView<double>(m.data(), m.rows(), m.cols()); }
constexpr double kPi = 3.14159265358979323846;

static_assert(rtb::ReversibleNoiseProcess<rtb::DdpmProcess<float>>);
static_assert(rtb::ReversibleNoiseProcess<rtb::DdpmProcess<double>>);
static_assert(rtb::has_bridge<rtb::DdpmProcess<double>>);

/// ᾱ_j by hand: the product of (1 − β_k), β_k = 1e-4 + (0.02 − 1e-4)·k/999.
double alpha_bar_by_hand(Index j) {
  double p = 1;
  for (Index k = 0; k <= j; ++k) p *= 1 - (1e-4 + (0.02 - 1e-4) * static_cast<double>(k) / 999.0);
  return p;
}

/// μ for one entry, written out from the reference's formulas.
double mean_by_hand(const rtb::DdpmProcess<double>& p, Index step, double x, double eps, bool clip) {
  const Index tau = static_cast<Index>(p.time(step));
  const Index ratio = 1000 / p.num_steps();
  const double ab = alpha_bar_by_hand(tau), abp = tau - ratio >= 0 ? alpha_bar_by_hand(tau - ratio) : 1.0;
  const double beta = 1 - ab / abp;
  double x0 = (x - std::sqrt(1 - ab) * eps) / std::sqrt(ab);
  if (clip) x0 = std::clamp(x0, -1.0, 1.0);
  return std::sqrt(abp) * beta / (1 - ab) * x0 + std::sqrt(ab / abp) * (1 - abp) / (1 - ab) * x;
}
}  // namespace

TEST_CASE("DDPM schedule: linear betas, cumulative products and strided steps equal hand-computed values") {
  const rtb::DdpmProcess<double> p(3, 100);
  CHECK(p.train_beta(0) == doctest::Approx(1e-4).epsilon(1e-14));
  CHECK(p.train_beta(999) == doctest::Approx(0.02).epsilon(1e-14));
  CHECK(p.train_beta(500) == doctest::Approx(1e-4 + 0.0199 * 500.0 / 999.0).epsilon(1e-14));
  for (Index j : {0, 1, 9, 500, 990, 999}) CHECK(p.train_alpha_bar(j) == doctest::Approx(alpha_bar_by_hand(j)).epsilon(1e-12));
  CHECK(p.time(0) == 990.0);
  CHECK(p.time(1) == 980.0);
  CHECK(p.time(99) == 0.0);
  const auto& first = p.coefficients(0);
  CHECK(first.alpha_bar_prev == doctest::Approx(alpha_bar_by_hand(980)).epsilon(1e-12));
  CHECK(first.variance == doctest::Approx(1 - alpha_bar_by_hand(990) / alpha_bar_by_hand(980)).epsilon(1e-12));
  // The last step: σ² = β_0 (the anchor), and μ = x̂_0 exactly.
  const auto& last = p.coefficients(99);
  CHECK(last.variance == doctest::Approx(1e-4).epsilon(1e-12));
  CHECK(last.alpha_bar_prev == 1.0);
  CHECK(last.x0_coef == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(last.x_coef == 0.0);
  CHECK(last.posterior_variance == 0.0);
  // Unstrided (T = N): the step variance is the training β_τ itself.
  const rtb::DdpmProcess<double> full(1, 1000);
  for (Index i : {0, 1, 500, 998, 999}) {
    const Index tau = 999 - i;
    CHECK(full.time(i) == static_cast<double>(tau));
    CHECK(full.coefficients(i).variance == doctest::Approx(full.train_beta(tau)).epsilon(1e-9));
  }
  // T that does not divide N: leading spacing with ratio ⌊N/T⌋.
  const rtb::DdpmProcess<double> odd(1, 30);
  CHECK(odd.time(0) == 29.0 * 33.0);
  CHECK(odd.time(29) == 0.0);
  // Time as a fraction of the training steps, for nets with periodic time features.
  const rtb::DdpmProcess<double> frac(1, 100, {.time_as_fraction = true});
  CHECK(frac.time(0) == doctest::Approx(0.99).epsilon(1e-15));
  CHECK(frac.time(99) == 0.0);
}

TEST_CASE("DDPM log-density equals the closed form, with and without the clamp") {
  for (bool clip : {true, false}) {
    CAPTURE(clip);
    const rtb::DdpmProcess<double> p(5, 10, {.clip_denoised = clip});
    M x(4, 5), xn(4, 5), out(4, 5);
    rtb_test::fill_normal<double>(mv(x), 1);
    rtb_test::fill_normal<double>(mv(xn), 2);
    rtb_test::fill_normal<double>(mv(out), 3);
    for (Index step : {0, 4, 9}) {
      std::vector<double> acc(4, 3.0);
      p.log_prob_step(rtb_test::at<double>(cv(x), step), cv(xn), cv(out), std::span<double>(acc));
      const double var = p.coefficients(step).variance;
      for (Index r = 0; r < 4; ++r) {
        double want = 3.0;
        for (Index d = 0; d < 5; ++d) {
          const double e = xn(r, d) - mean_by_hand(p, step, x(r, d), out(r, d), clip);
          want += -0.5 * std::log(2 * kPi * var) - e * e / (2 * var);
        }
        CHECK(acc[static_cast<std::size_t>(r)] == doctest::Approx(want).epsilon(1e-10));
      }
    }
  }
}

TEST_CASE("DDPM d log p / d eps matches central differences; clamped entries get exactly zero") {
  for (bool clip : {true, false}) {
    CAPTURE(clip);
    const rtb::DdpmProcess<double> p(6, 10, {.clip_denoised = clip});
    const Index R = 5, D = 6;
    M x(R, D), xn(R, D), out(R, D), d_out(R, D);
    rtb_test::fill_normal<double>(mv(x), 11);
    rtb_test::fill_normal<double>(mv(xn), 12);
    rtb_test::fill_normal<double>(mv(out), 13);
    const std::vector<double> weight = {1.0, -0.5, 2.0, 0.25, 3.0};
    for (Index step : {0, 3, 6, 9}) {
      CAPTURE(step);
      const auto s = rtb_test::at<double>(cv(x), step);
      p.d_log_prob_d_output(s, cv(xn), cv(out), std::span<const double>(weight), mv(d_out));
      auto f = [&] {
        std::vector<double> acc(R, 0.0);
        p.log_prob_step(s, cv(xn), cv(out), std::span<double>(acc));
        double sum = 0;
        for (Index r = 0; r < R; ++r) sum += weight[static_cast<std::size_t>(r)] * acc[static_cast<std::size_t>(r)];
        return sum;
      };
      const auto numeric = rtb_test::numeric_gradient(std::span<double>(out.data(), static_cast<std::size_t>(R * D)), f);
      const std::vector<double> analytic(d_out.data(), d_out.data() + R * D);
      CHECK(rtb_test::relative_error(analytic, numeric) < 1e-6);
      // Count the entries where the clamp is active: they must be there (so the case is tested)
      // when clipping, and their gradient is exactly zero.
      const auto& c = p.coefficients(step);
      Index active = 0;
      for (Index r = 0; r < R; ++r)
        for (Index d = 0; d < D; ++d) {
          const double raw = (x(r, d) - std::sqrt(1 - c.alpha_bar) * out(r, d)) / std::sqrt(c.alpha_bar);
          if (std::fabs(raw) > 1) {
            ++active;
            if (clip) CHECK(d_out(r, d) == 0.0);
          }
        }
      CHECK(active > 0);
      if (!clip) CHECK(d_out.cwiseAbs().minCoeff() > 0);
    }
  }
}

TEST_CASE("DDPM bridge objectives and their gradients match closed forms and central differences") {
  for (auto loss : {rtb::DdpmFitLoss::EpsilonMse, rtb::DdpmFitLoss::ExpectedLogLikelihood}) {
    for (bool clip : {true, false}) {
      CAPTURE(clip);
      const rtb::DdpmProcess<double> p(4, 8, {.clip_denoised = clip, .fit_loss = loss});
      const Index R = 3, D = 4;
      M x(R, D), xe(R, D), out(R, D), d_out(R, D);
      rtb_test::fill_normal<double>(mv(x), 21);
      rtb_test::fill_normal<double>(mv(xe), 22, 0.5);
      rtb_test::fill_normal<double>(mv(out), 23);
      const std::vector<double> weight = {1.0, -2.0, 0.5};
      for (Index step : {0, 5, 7}) {
        const auto s = rtb_test::at<double>(cv(x), step);
        const auto& c = p.coefficients(step);
        std::vector<double> acc(R, 0.0);
        p.expected_log_prob_step(s, cv(xe), cv(out), std::span<double>(acc));
        for (Index r = 0; r < R; ++r) {
          double want = 0;
          for (Index d = 0; d < D; ++d) {
            if (loss == rtb::DdpmFitLoss::EpsilonMse) {
              const double eps = (x(r, d) - std::sqrt(c.alpha_bar) * xe(r, d)) / std::sqrt(1 - c.alpha_bar);
              want += -0.5 * (out(r, d) - eps) * (out(r, d) - eps);
            } else {
              const double e = c.x0_coef * xe(r, d) + c.x_coef * x(r, d) - mean_by_hand(p, step, x(r, d), out(r, d), clip);
              want += -0.5 * std::log(2 * kPi * c.variance) - (e * e + c.posterior_variance) / (2 * c.variance);
            }
          }
          CHECK(acc[static_cast<std::size_t>(r)] == doctest::Approx(want).epsilon(1e-10));
        }
        p.d_expected_log_prob_d_output(s, cv(xe), cv(out), std::span<const double>(weight), mv(d_out));
        auto f = [&] {
          std::vector<double> a(R, 0.0);
          p.expected_log_prob_step(s, cv(xe), cv(out), std::span<double>(a));
          double sum = 0;
          for (Index r = 0; r < R; ++r) sum += weight[static_cast<std::size_t>(r)] * a[static_cast<std::size_t>(r)];
          return sum;
        };
        const auto numeric = rtb_test::numeric_gradient(std::span<double>(out.data(), static_cast<std::size_t>(R * D)), f);
        const std::vector<double> analytic(d_out.data(), d_out.data() + R * D);
        CHECK(rtb_test::relative_error(analytic, numeric) < 1e-6);
      }
    }
  }
}

TEST_CASE("DDPM sampling has the log-density's mean and variance; exploration widens only sampling; the last step is noiseless") {
  const Index n = 20000, D = 2;
  const rtb::DdpmProcess<double> p(D, 10);
  M x(n, D), out(n, D), xn(n, D);
  for (Index r = 0; r < n; ++r) {
    x(r, 0) = 0.3;
    x(r, 1) = -1.2;
    out(r, 0) = 0.5;
    out(r, 1) = -0.1;
  }
  const rtb::math::NoiseKey key{7, rtb::math::Stream::Rollout, 0};
  for (double extra : {0.0, 0.2}) {
    for (Index step : {2, 8}) {
      CAPTURE(extra);
      CAPTURE(step);
      const auto s = rtb_test::at<double>(cv(x), step);
      p.sample_step(s, cv(out), extra, key, mv(xn));
      const double var = p.coefficients(step).variance, sample_var = var + extra * extra;
      for (Index d = 0; d < D; ++d) {
        const double mu = mean_by_hand(p, step, x(0, d), out(0, d), true);
        const double m = xn.col(d).mean();
        const double v = (xn.col(d).array() - m).square().mean();
        CHECK(std::fabs(m - mu) < 5 * std::sqrt(sample_var / n));
        CHECK(std::fabs(v - sample_var) < 5 * sample_var * std::sqrt(2.0 / n));
      }
      // log_prob peaks at the same mean, with the un-widened variance.
      M peak(1, D);
      for (Index d = 0; d < D; ++d) peak(0, d) = mean_by_hand(p, step, x(0, d), out(0, d), true);
      std::vector<double> acc(1, 0.0);
      p.log_prob_step(rtb_test::at<double>(ConstMatrixView<double>(x.data(), 1, D), step), cv(peak),
                      ConstMatrixView<double>(out.data(), 1, D), std::span<double>(acc));
      CHECK(acc[0] == doctest::Approx(-0.5 * D * std::log(2 * kPi * var)).epsilon(1e-12));
    }
  }
  // Last step: x' = μ exactly, even with exploration; its density is still scored with β_0.
  p.sample_step(rtb_test::at<double>(cv(x), 9), cv(out), 0.3, key, mv(xn));
  for (Index d = 0; d < D; ++d) {
    const double mu = mean_by_hand(p, 9, x(0, d), out(0, d), true);
    CHECK(xn.col(d).minCoeff() == doctest::Approx(mu).epsilon(1e-14));
    CHECK(xn.col(d).maxCoeff() == doctest::Approx(mu).epsilon(1e-14));
  }
  std::vector<double> acc(1, 0.0);
  p.log_prob_step(rtb_test::at<double>(ConstMatrixView<double>(x.data(), 1, D), 9), ConstMatrixView<double>(xn.data(), 1, D),
                  ConstMatrixView<double>(out.data(), 1, D), std::span<double>(acc));
  CHECK(acc[0] == doctest::Approx(-0.5 * D * std::log(2 * kPi * 1e-4)).epsilon(1e-12));
}

TEST_CASE("DDPM noise_at_last_step: the last step draws N(mu, beta_0), the density it is scored with") {
  const Index n = 20000, D = 2;
  const rtb::DdpmProcess<double> p(D, 10, {.noise_at_last_step = true});
  M x(n, D), out(n, D), xn(n, D);
  for (Index r = 0; r < n; ++r) {
    x(r, 0) = 0.3;
    x(r, 1) = -1.2;
    out(r, 0) = 0.5;
    out(r, 1) = -0.1;
  }
  const rtb::math::NoiseKey key{7, rtb::math::Stream::Rollout, 0};
  p.sample_step(rtb_test::at<double>(cv(x), 9), cv(out), 0.0, key, mv(xn));
  const double var = p.coefficients(9).variance;
  CHECK(var == doctest::Approx(1e-4).epsilon(1e-9));
  for (Index d = 0; d < D; ++d) {
    const double mu = mean_by_hand(p, 9, x(0, d), out(0, d), true);
    const double m = xn.col(d).mean();
    const double v = (xn.col(d).array() - m).square().mean();
    CHECK(std::fabs(m - mu) < 5 * std::sqrt(var / n));
    CHECK(std::fabs(v - var) < 5 * var * std::sqrt(2.0 / n));
  }
  // The other steps draw exactly as without the option (same key, same bits).
  const rtb::DdpmProcess<double> plain(D, 10);
  M a(n, D), b(n, D);
  p.sample_step(rtb_test::at<double>(cv(x), 4), cv(out), 0.1, key, mv(a));
  plain.sample_step(rtb_test::at<double>(cv(x), 4), cv(out), 0.1, key, mv(b));
  CHECK((a - b).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("DDPM initial state is N(0, I) and keyed by row") {
  const Index n = 20000;
  const rtb::DdpmProcess<double> p(3, 10);
  M a(n, 3), b(5, 3);
  const rtb::math::NoiseKey key{3, rtb::math::Stream::Rollout, 1};
  p.initial_state(rtb::Rows<double>{{nullptr, n, 0}, 0}, key, mv(a));
  p.initial_state(rtb::Rows<double>{{nullptr, 5, 0}, 100}, key, mv(b));
  for (Index d = 0; d < 3; ++d) {
    const double m = a.col(d).mean(), v = (a.col(d).array() - m).square().mean();
    CHECK(std::fabs(m) < 5 * std::sqrt(1.0 / n));
    CHECK(std::fabs(v - 1) < 5 * std::sqrt(2.0 / n));
  }
  CHECK(b == a.middleRows(100, 5));
}

TEST_CASE("DDPM noising kernels: backward steps compose to the closed-form marginal; the posterior is Bayes' rule") {
  const Index n = 20000, D = 2;
  const rtb::DdpmProcess<double> p(D, 5);
  M end(n, D), x(n, D), prev(n, D);
  for (Index r = 0; r < n; ++r) {
    end(r, 0) = 0.7;
    end(r, 1) = -0.4;
  }
  const rtb::math::NoiseKey key{5, rtb::math::Stream::Backward, 0};
  prev = end;
  for (Index step = p.num_steps() - 1; step >= 0; --step) {
    CAPTURE(step);
    const auto s = rtb_test::at<double>(cv(prev), step);
    p.sample_backward_step(s, key, mv(x));
    const auto& c = p.coefficients(step);
    // The composition from x_T: N(√ᾱ_τ·x_T, 1 − ᾱ_τ).
    for (Index d = 0; d < D; ++d) {
      const double m = x.col(d).mean(), v = (x.col(d).array() - m).square().mean();
      const double want_v = 1 - c.alpha_bar;
      CHECK(std::fabs(m - std::sqrt(c.alpha_bar) * end(0, d)) < 5 * std::sqrt(want_v / n));
      CHECK(std::fabs(v - want_v) < 5 * want_v * std::sqrt(2.0 / n) + 1e-12);
    }
    // Its density: log N(x; √α·x_{i+1}, β).
    std::vector<double> acc(1, 0.0);
    p.log_prob_backward_step(rtb_test::at<double>(ConstMatrixView<double>(prev.data(), 1, D), step),
                             ConstMatrixView<double>(x.data(), 1, D), std::span<double>(acc));
    const double alpha = c.alpha_bar / c.alpha_bar_prev;
    double want = 0;
    for (Index d = 0; d < D; ++d)
      want += -0.5 * std::log(2 * kPi * c.variance) -
              (x(0, d) - std::sqrt(alpha) * prev(0, d)) * (x(0, d) - std::sqrt(alpha) * prev(0, d)) / (2 * c.variance);
    CHECK(acc[0] == doctest::Approx(want).epsilon(1e-12));
    prev = x;
  }
  // The bridge marginal directly.
  const auto at_end = rtb_test::at<double>(cv(end), 1);
  p.sample_given_end(at_end, key, mv(x));
  const auto& c1 = p.coefficients(1);
  for (Index d = 0; d < D; ++d) {
    const double m = x.col(d).mean(), v = (x.col(d).array() - m).square().mean();
    CHECK(std::fabs(m - std::sqrt(c1.alpha_bar) * end(0, d)) < 5 * std::sqrt((1 - c1.alpha_bar) / n));
    CHECK(std::fabs(v - (1 - c1.alpha_bar)) < 5 * (1 - c1.alpha_bar) * std::sqrt(2.0 / n));
  }
  // q(x_{i+1} | x_i, x_T) by Bayes: prior N(√ᾱ'·x_T, 1 − ᾱ'), likelihood N(x_i; √α·x_{i+1}, β).
  for (Index step = 0; step < p.num_steps() - 1; ++step) {
    const auto& c = p.coefficients(step);
    const double alpha = c.alpha_bar / c.alpha_bar_prev;
    const double precision = 1 / (1 - c.alpha_bar_prev) + alpha / c.variance;
    const double xt = 0.8, xT = -0.3;
    const double mean = (std::sqrt(c.alpha_bar_prev) * xT / (1 - c.alpha_bar_prev) + std::sqrt(alpha) * xt / c.variance) / precision;
    CHECK(c.posterior_variance == doctest::Approx(1 / precision).epsilon(1e-10));
    CHECK(c.x0_coef * xT + c.x_coef * xt == doctest::Approx(mean).epsilon(1e-10));
  }
}

TEST_CASE("DDPM rejects bad shapes, step counts, zero-variance schedules and non-finite data with typed errors") {
  CHECK_THROWS_AS(rtb::DdpmProcess<double>(0, 10), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::DdpmProcess<double>(2, 0), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::DdpmProcess<double>(2, 1001), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::DdpmProcess<double>(2, 10, {.num_train_steps = 0}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::DdpmProcess<double>(2, 10, {.beta_start = 0.0}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::DdpmProcess<double>(2, 10, {.beta_start = 0.03, .beta_end = 0.02}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::DdpmProcess<double>(2, 10, {.beta_end = 1.0}), rtb::InvalidArgumentError);
  try {
    rtb::DdpmProcess<double>(2, 10, {.beta_start = 0.0});
  } catch (const rtb::InvalidArgumentError& e) {
    CHECK(std::string(e.what()).find("beta_start") != std::string::npos);
  }
  const rtb::DdpmProcess<double> p(2, 10);
  M x(2, 2);
  x << 0.1, 0.2, std::nan(""), 0.3;
  CHECK_THROWS_AS(p.check_end_states(cv(x), "data"), rtb::NonFiniteError);
  CHECK(p.default_exploration() == 0.0);
}

TEST_CASE("DDPM in float agrees with double: same draws, same densities to float precision") {
  const rtb::DdpmProcess<double> pd(3, 20);
  const rtb::DdpmProcess<float> pf(3, 20);
  using MF = RowMatrix<float>;
  M x(4, 3), out(4, 3), xn(4, 3);
  rtb_test::fill_normal<double>(mv(x), 31);
  rtb_test::fill_normal<double>(mv(out), 32);
  MF xf = x.cast<float>(), outf = out.cast<float>(), xnf(4, 3);
  const rtb::math::NoiseKey key{9, rtb::math::Stream::Rollout, 0};
  for (Index step : {0, 10, 19}) {
    const auto sd = rtb_test::at<double>(cv(x), step);
    const auto sf = rtb_test::at<float>(ConstMatrixView<float>(xf.data(), 4, 3), step);
    CHECK(pf.time(step) == static_cast<float>(pd.time(step)));
    pd.sample_step(sd, cv(out), 0.0, key, mv(xn));
    pf.sample_step(sf, ConstMatrixView<float>(outf.data(), 4, 3), 0.0f, key, MatrixView<float>(xnf.data(), 4, 3));
    CHECK((xnf.cast<double>() - xn).cwiseAbs().maxCoeff() < 1e-4);
    std::vector<double> ad(4, 0.0);
    std::vector<float> af(4, 0.0f);
    pd.log_prob_step(sd, cv(xn), cv(out), std::span<double>(ad));
    pf.log_prob_step(sf, ConstMatrixView<float>(xnf.data(), 4, 3), ConstMatrixView<float>(outf.data(), 4, 3), std::span<float>(af));
    for (std::size_t r = 0; r < 4; ++r) CHECK(af[r] == doctest::Approx(ad[r]).epsilon(1e-3));
  }
}
