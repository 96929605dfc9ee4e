// SPDX-License-Identifier: Apache-2.0
// The control example's diffusion pieces: the arctanh squashing and its errors, the behaviour
// prior and RTB policy on a 1-D task against the importance-sampled posterior of the fitted prior
// itself (the best achievable reference: the prior is what RTB tilts), q_sampling against a
// recomputation of its K draws, and bad input (α ≤ 0, mismatched data, a wrong state width).

#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "../../examples/control/diffusion_policy.hpp"

using namespace control;

namespace {

/// Behaviour: a = tanh(0.6·s + 0.4·z); states on a grid in [−1, 1].
void behaviour_data(Matrix& s, Matrix& a, Index n) {
  s.resize(n, 1);
  a.resize(n, 1);
  for (Index i = 0; i < n; ++i) {
    s(i, 0) = static_cast<Real>(-1.0 + 2.0 * static_cast<double>(i % 41) / 40.0);
    const double z = rtb::math::normal<double>({5, rtb::math::Stream::User, 0}, static_cast<std::uint64_t>(i), 0, 0);
    a(i, 0) = static_cast<Real>(std::tanh(0.6 * s(i, 0) + 0.4 * z));
  }
}

DiffusionOptions small_prior() {
  DiffusionOptions o;
  o.steps = 10;
  o.beta_end = 0.45;
  o.hidden = {32, 32};
  o.prior_iterations = 1500;
  o.prior_learning_rate = 3e-3;
  o.threads = 2;
  o.seed = 3;
  return o;
}

}  // namespace

TEST_CASE("control: to_latent clips at 0.99 before arctanh and names bad rows") {
  Matrix a(3, 2);
  a << 0.5f, -1.0f, 0.0f, 0.995f, -0.2f, 0.3f;
  const Matrix u = to_latent(cview(a));
  CHECK(u(0, 0) == doctest::Approx(std::atanh(0.5f)));
  CHECK(u(0, 1) == doctest::Approx(-std::atanh(0.99)));
  CHECK(u(1, 1) == doctest::Approx(std::atanh(0.99)));
  a(2, 1) = std::nanf("");
  try {
    (void)to_latent(cview(a));
    FAIL("no error for a NaN action");
  } catch (const rtb::InvalidArgumentError& e) {
    CHECK(std::string(e.what()).find("row 2 column 1") != std::string::npos);
  }
  a(2, 1) = 1.5f;
  CHECK_THROWS_AS((void)to_latent(cview(a)), rtb::InvalidArgumentError);
}

TEST_CASE("control: RTB's policy is the fitted prior tilted by exp(Q/alpha), against importance sampling of that prior") {
  Matrix s, a;
  behaviour_data(s, a, 2000);
  const Matrix u = to_latent(cview(a));
  BehaviourPrior prior(1, 1, small_prior());
  prior.fit(cview(s), cview(u));
  // Q prefers a near 0.6 whatever the state, with a curvature strong enough to move the policy.
  const QFunction q = [](ConstView, ConstView act, std::span<Real> out) {
    for (Index i = 0; i < act.rows(); ++i) out[static_cast<std::size_t>(i)] = static_cast<Real>(-4.0 * (act(i, 0) - 0.6) * (act(i, 0) - 0.6));
  };
  RtbOptions ro;
  ro.alpha = 1.0;
  ro.iterations = 300;
  ro.hidden = {32, 32};
  ro.learning_rate = 2e-3;
  ro.threads = 2;
  RtbPolicy policy(prior, q, ro);
  policy.train(cview(s), cview(u));

  const Index n = 6000;
  for (double state : {-0.8, 0.0, 0.7}) {
    CAPTURE(state);
    Matrix c(n, 1);
    c.setConstant(static_cast<Real>(state));
    // Reference: prior draws weighted by exp(Q(s, tanh u)/α), self-normalised.
    Matrix x = prior.sample(cview(c), 11);
    Matrix ax = x;
    to_env(mview(ax));
    std::vector<Real> qv(static_cast<std::size_t>(n));
    q(cview(c), cview(ax), std::span<Real>(qv));
    double wsum = 0, wmean = 0, w2 = 0, prior_mean = 0;
    for (Index i = 0; i < n; ++i) {
      const double w = std::exp(qv[static_cast<std::size_t>(i)] / ro.alpha);
      wsum += w;
      w2 += w * w;
      wmean += w * x(i, 0);
      prior_mean += x(i, 0) / static_cast<double>(n);
    }
    wmean /= wsum;
    const double ess = wsum * wsum / w2;
    const Matrix y = policy.sample(cview(c), 12);
    const double mean = y.col(0).cast<double>().mean();
    const double sd = std::sqrt((y.col(0).cast<double>().array() - mean).square().mean());
    MESSAGE("state ", state, ": prior mean ", prior_mean, ", IS posterior mean ", wmean, " (ess ", ess, "), RTB mean ", mean);
    CHECK(std::fabs(prior_mean - wmean) > 0.1);                          // the tilt is real
    CHECK(std::fabs(mean - wmean) < 5 * sd / std::sqrt(ess) + 0.05);      // and RTB follows it
  }
}

TEST_CASE("control: q_sampling returns, per state, the highest-Q of the K prior draws it made") {
  Matrix s, a;
  behaviour_data(s, a, 400);
  DiffusionOptions o = small_prior();
  o.prior_iterations = 50;
  BehaviourPrior prior(1, 1, o);
  prior.fit(cview(s), cview(to_latent(cview(a))));
  const QFunction q = [](ConstView st, ConstView act, std::span<Real> out) {
    for (Index i = 0; i < act.rows(); ++i) out[static_cast<std::size_t>(i)] = -std::fabs(act(i, 0) - 0.3f * st(i, 0));
  };
  const Index n = 5, K = 8;
  const Matrix st = s.topRows(n);
  const Matrix best = q_sampling(prior, q, cview(st), K, 21);
  Matrix rep(n * K, 1);
  for (Index i = 0; i < n * K; ++i) rep(i, 0) = st(i / K, 0);
  Matrix draws = prior.sample(cview(rep), 21);
  to_env(mview(draws));
  for (Index i = 0; i < n; ++i) {
    double top = -1e30;
    for (Index k = 0; k < K; ++k) top = std::max(top, -std::fabs(static_cast<double>(draws(i * K + k, 0)) - 0.3 * st(i, 0)));
    CHECK(-std::fabs(static_cast<double>(best(i, 0)) - 0.3 * st(i, 0)) == doctest::Approx(top));
  }
}

TEST_CASE("control: alpha <= 0, mismatched data and a state of the wrong width are typed errors") {
  Matrix s, a;
  behaviour_data(s, a, 100);
  DiffusionOptions o = small_prior();
  o.prior_iterations = 5;
  BehaviourPrior prior(1, 1, o);
  const Matrix u = to_latent(cview(a));
  CHECK_THROWS_AS(prior.fit(cview(s), ConstView(u.data(), 99, 1)), rtb::ShapeError);
  prior.fit(cview(s), cview(u));
  const QFunction q = [](ConstView, ConstView, std::span<Real> out) { std::fill(out.begin(), out.end(), Real(0)); };
  for (double bad : {0.0, -1.0, std::nan("")}) {
    RtbOptions ro;
    ro.alpha = bad;
    CHECK_THROWS_AS(RtbPolicy(prior, q, ro), rtb::InvalidArgumentError);
  }
  Matrix wide(4, 2);
  wide.setZero();
  CHECK_THROWS_AS((void)prior.sample(cview(wide), 1), rtb::ShapeError);
  RtbOptions ok;
  ok.hidden = {8};
  RtbPolicy policy(prior, q, ok);
  CHECK_THROWS_AS((void)policy.sample(cview(wide), 1), rtb::ShapeError);
  CHECK_THROWS_AS(policy.train(cview(s), ConstView(u.data(), 99, 1)), rtb::ShapeError);
}
