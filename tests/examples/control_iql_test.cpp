// SPDX-License-Identifier: Apache-2.0
// The offline-RL example's critics and policy extraction: the closed-form LQR Q against Monte
// Carlo, IQL (τ = 0.5) recovering it from data, ∂Q/∂a against finite differences, AWR against
// the closed-form weighted Gaussian, and the typed errors at the door.

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "../../examples/control/awr.hpp"
#include "../../examples/control/iql.hpp"
#include "../../examples/control/lqr_q.hpp"

namespace {

/// A small stable 2-D system and a behaviour policy a = K s + N(0, Σ_a), F = A + BK with ρ ≈ 0.7.
struct Lqr2 {
  Eigen::MatrixXd A{{0.9, 0.2}, {-0.1, 0.8}};
  Eigen::MatrixXd B{{0.5, 0.0}, {0.1, 0.4}};
  Eigen::MatrixXd Qc{{1.0, 0.0}, {0.0, 0.5}};
  Eigen::MatrixXd R{{0.5, 0.0}, {0.0, 0.3}};
  Eigen::MatrixXd K{{-0.3, -0.1}, {0.05, -0.4}};
  Eigen::MatrixXd Sigma_a{{0.0225, 0.0}, {0.0, 0.0225}};  // std 0.15
  double reward(const Eigen::VectorXd& s, const Eigen::VectorXd& a) const {
    return -(s.dot(Qc * s) + a.dot(R * a));
  }
};

template <class S>
control::Transitions<S> view(const std::vector<S>& s, const std::vector<S>& a, const std::vector<S>& r,
                             const std::vector<S>& s2, const std::vector<S>& done, rtb::Index ds, rtb::Index da) {
  return {ds, da, s, a, r, s2, done};
}

}  // namespace

TEST_CASE("lqr_q matches a Monte-Carlo estimate of the discounted Q of a linear-Gaussian policy") {
  const Lqr2 m;
  const double gamma = 0.9;
  const control::LqrQ lq = control::lqr_q(m.A, m.B, m.Qc, m.R, m.K, m.Sigma_a, gamma);
  CHECK((lq.M - lq.M.transpose()).cwiseAbs().maxCoeff() < 1e-12);
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal;
  const Eigen::LLT<Eigen::MatrixXd> chol(m.Sigma_a);
  const int rollouts = 20000, horizon = 200;  // γ^200 ≈ 7e-10
  const std::vector<std::pair<Eigen::Vector2d, Eigen::Vector2d>> points = {
      {{0.0, 0.0}, {0.0, 0.0}}, {{0.8, -0.5}, {0.3, 0.2}}, {{-1.0, 0.7}, {-0.6, 0.9}}};
  const Eigen::Matrix2d A = m.A, B = m.B, Qc = m.Qc, R = m.R, K = m.K, L = chol.matrixL();  // fixed size: fast loop
  for (const auto& [s0, a0] : points) {
    double sum = 0, sum2 = 0;
    for (int k = 0; k < rollouts; ++k) {
      Eigen::Vector2d s = s0, a = a0;
      double ret = 0, disc = 1;
      for (int t = 0; t < horizon; ++t) {
        ret -= disc * (s.dot(Qc * s) + a.dot(R * a));
        disc *= gamma;
        s = A * s + B * a;
        a = K * s + L * Eigen::Vector2d(normal(rng), normal(rng));
      }
      sum += ret;
      sum2 += ret * ret;
    }
    const double mean = sum / rollouts, se = std::sqrt((sum2 / rollouts - mean * mean) / rollouts);
    const double q = lq.q(s0, a0);
    CAPTURE(s0.transpose());
    CAPTURE(a0.transpose());
    CAPTURE(mean);
    CAPTURE(se);
    CHECK(std::abs(q - mean) < 4 * se);
    CHECK(lq.c > 10 * se);  // so a missing noise constant (or a wrong γ in it) would fail
  }
  // V = E_a Q: integrating Q over the policy's action gives the value.
  const Eigen::VectorXd s(Eigen::Vector2d(0.4, -0.9));
  const Eigen::VectorXd mu = m.K * s;
  const Eigen::MatrixXd Maa = lq.M.bottomRightCorner(2, 2);
  CHECK(lq.value(s) == doctest::Approx(lq.q(s, mu) - (Maa * m.Sigma_a).trace()).epsilon(1e-12));
  CHECK_THROWS_AS(control::lqr_q(2 * m.A, m.B, m.Qc, m.R, Eigen::MatrixXd::Zero(2, 2), m.Sigma_a, 0.99),
                  rtb::InvalidArgumentError);
  CHECK_THROWS_AS(control::lqr_q(m.A, m.B, m.Qc, m.R, m.K.transpose().topRows(1), m.Sigma_a, 0.9), rtb::ShapeError);
}
