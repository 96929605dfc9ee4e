// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <vector>
#include <rtb/objective/reinforce_kl.hpp>
#include <rtb/objective/relative_tb.hpp>
#include <rtb/objective/relative_vargrad.hpp>

#include <rtb/concepts/reduction.hpp>

namespace {
const std::vector<double> post = {-3.0, -1.0}, prior = {-2.0, -2.0}, log_r = {0.5, -1.0};
const std::vector<char> both = {1, 1};

/// What an objective returns for the two rows with log Z = z, β, cut-off c and KL weight k.
struct Run {
  rtb::ObjectiveResult<double> result;
  std::vector<double> w = std::vector<double>(2), d_log_z = std::vector<double>(2);
  double d_log_z_sum() const { return d_log_z[0] + d_log_z[1]; }
};
template <class Objective, class R = rtb::LocalReduction>
Run run(const std::vector<char>& valid, double z, double beta, double c, double k, R reduction = {}) {
  Run out;
  const std::vector<double> log_z(2, z);
  out.result = Objective{}(rtb::ObjectiveBatch<double>{post, prior, log_r, valid, log_z, beta, c, k},
                           rtb::ObjectiveOutputs<double>{out.w, out.d_log_z}, reduction);
  return out;
}
}  // namespace

TEST_CASE("RTB residual and loss and gradients on hand-computed values") {
  // δ = log Z + post − prior − β log r with log Z = 0.2, β = 2: δ = (−1.8, 3.2)
  auto r = run<rtb::RelativeTB>(both, 0.2, 2.0, 0.0, 1.0);
  CHECK(r.result.loss == doctest::Approx(0.5 * (1.8 * 1.8 + 3.2 * 3.2) / 2));
  CHECK(r.w[0] == doctest::Approx(-0.9));
  CHECK(r.w[1] == doctest::Approx(1.6));
  CHECK(r.d_log_z[0] == doctest::Approx(-0.9));  // per row: δ_i/n, summed per log Z entry by the trainer
  CHECK(r.d_log_z_sum() == doctest::Approx(0.7));
  CHECK(r.result.mean_delta == doctest::Approx(0.7));
  // cut-off c = 4: only |δ| > 2 contributes, ½(δ² − c)
  r = run<rtb::RelativeTB>(both, 0.2, 2.0, 4.0, 1.0);
  CHECK(r.result.loss == doctest::Approx(0.5 * (3.2 * 3.2 - 4) / 2));
  CHECK(r.w[0] == 0.0);
  CHECK(r.d_log_z_sum() == doctest::Approx(1.6));
  // a skipped row leaves the mean over the rest
  const std::vector<char> second = {0, 1};
  r = run<rtb::RelativeTB>(second, 0.2, 2.0, 0.0, 1.0);
  CHECK(r.result.used == 1);
  CHECK(r.result.loss == doctest::Approx(0.5 * 3.2 * 3.2));
  CHECK(r.w[0] == 0.0);
  CHECK(r.w[1] == doctest::Approx(3.2));
}

TEST_CASE("relative VarGrad centres the log-ratio with the right sign") {
  // u = post − prior − β log r = (−2, 3); log Ẑ = −mean(u) = −0.5; δ = u − mean(u) = (−2.5, 2.5)
  const auto r = run<rtb::RelativeVarGrad>(both, 99.0, 2.0, 0.0, 1.0);
  CHECK(r.result.log_z_estimate == doctest::Approx(-0.5));
  CHECK(r.result.loss == doctest::Approx(0.5 * 6.25));
  CHECK(r.w[0] == doctest::Approx(-1.25));
  CHECK(r.w[1] == doctest::Approx(1.25));
  CHECK(r.d_log_z_sum() == 0.0);
}

TEST_CASE("REINFORCE+KL uses exp(log r) with a mean baseline and a squared log-ratio") {
  const auto r = run<rtb::ReinforceKL>(both, 0.0, 1.0, 0.0, 0.5);
  const double R0 = std::exp(0.5), R1 = std::exp(-1.0), mean = (R0 + R1) / 2;
  const double A0 = R0 - mean, A1 = R1 - mean;  // ratios: −1, +1
  CHECK(r.result.loss == doctest::Approx(((-A0 * -3.0 + 0.5 * 1.0) + (-A1 * -1.0 + 0.5 * 1.0)) / 2));
  CHECK(r.w[0] == doctest::Approx((-A0 + 2 * 0.5 * -1.0) / 2));
  CHECK(r.w[1] == doctest::Approx((-A1 + 2 * 0.5 * 1.0) / 2));
}

namespace {
/// Two replicas of the same two rows: what a data-parallel step sees on each (every sum doubles).
struct TwoReplicas {
  void all_sum(std::span<double> v) const {
    for (double& x : v) x *= 2;
  }
  template <class S>
  void all_sum_gradient(std::span<S> g) const {
    for (S& x : g) x *= 2;
  }
  rtb::Index row_offset(rtb::Index rows) const { return rows; }  // this is the second replica
  rtb::Index replicas() const { return 2; }
};
static_assert(rtb::Reduction<TwoReplicas>);
}  // namespace

TEST_CASE("objectives normalise by the global row count the reduction reports") {
  // Two replicas holding the same rows are one batch of four: the loss and the means are those of
  // the two rows alone, and each row's weight is halved (n = 4, not 2).
  const auto local = run<rtb::RelativeTB>(both, 0.2, 2.0, 0.0, 1.0);
  const auto global = run<rtb::RelativeTB>(both, 0.2, 2.0, 0.0, 1.0, TwoReplicas{});
  CHECK(global.result.used == 4);
  CHECK(global.result.loss == doctest::Approx(local.result.loss));
  CHECK(global.result.mean_delta == doctest::Approx(local.result.mean_delta));
  CHECK(global.w[1] == doctest::Approx(local.w[1] / 2));
  const auto vg = run<rtb::RelativeVarGrad>(both, 0.0, 2.0, 0.0, 1.0, TwoReplicas{});
  CHECK(vg.result.loss == doctest::Approx(run<rtb::RelativeVarGrad>(both, 0.0, 2.0, 0.0, 1.0).result.loss));
  CHECK(vg.result.log_z_estimate == doctest::Approx(-0.5));
  const auto rl = run<rtb::ReinforceKL>(both, 0.0, 1.0, 0.0, 0.5, TwoReplicas{});
  CHECK(rl.result.loss == doctest::Approx(run<rtb::ReinforceKL>(both, 0.0, 1.0, 0.0, 0.5).result.loss));
}
