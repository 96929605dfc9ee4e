// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/concepts/noise_process.hpp>
#include <rtb/math/categorical.hpp>
#include <rtb/process/masked_categorical_process.hpp>

#include "../test_util.hpp"

// Its own namespace: rtb_sanitized_tests is a unity build, and other files reuse these helper names.
namespace masked_categorical_process_test {

using Process = rtb::MaskedCategoricalProcess<double>;
using Tok = rtb::RowMatrix<std::int32_t>;
using M = rtb::RowMatrix<double>;
using rtb::ConstMatrixView;
using rtb::MatrixView;

static_assert(rtb::ReversibleNoiseProcess<Process>);
static_assert(rtb::has_bridge<Process>);

namespace {
ConstMatrixView<std::int32_t> cv(const Tok& t) {
  return ConstMatrixView<std::int32_t>(t.data(), t.rows(), t.cols());
}
ConstMatrixView<double> cv(const M& m) {
  return ConstMatrixView<double>(m.data(), m.rows(), m.cols());
}
double lse(const double* v, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(v[i]);
  return std::log(s);
}
}  // namespace

TEST_CASE("masked step log-likelihood: stay, reveal and already-revealed positions (hand-computed)") {
  // L = 4 (column 3 fixed), V = 3, MASK = 3, T = 4 linear: ρ_1 = 1 − (2/4)/(3/4) = 1/3
  const Process p({.length = 4, .vocab = 3, .num_steps = 4, .generated = {1, 1, 1, 0}});
  Tok x(1, 4), xn(1, 4);
  x << 3, 3, 1, 2;   // positions 0, 1 masked; 2 revealed earlier; 3 fixed
  xn << 3, 0, 1, 2;  // position 0 stays masked, 1 revealed as token 0
  M out(1, 12);
  out << 0.1, 0.2, 0.3, 1.0, -1.0, 0.5, 9, 9, 9, 9, 9, 9;
  double acc = 0;
  p.log_prob_step(rtb_test::at<double>(cv(x), 1), cv(xn), cv(out), std::span<double>(&acc, 1));
  const double rho = 1.0 / 3;
  const double expected = std::log(1 - rho) + std::log(rho) + (1.0 - lse(&out(0, 3), 3));
  CHECK(acc == doctest::Approx(expected).epsilon(1e-12));
  CHECK(p.time(0) == 1.0);
  CHECK(p.time(2) == doctest::Approx(0.5));
}

TEST_CASE("d log p / d logits matches central differences; log-softmax gradient too") {
  const Process p({.length = 3, .vocab = 4, .num_steps = 5});
  Tok x(2, 3), xn(2, 3);
  x << 4, 4, 2, 4, 4, 4;
  xn << 1, 4, 2, 3, 0, 4;
  M out(2, 12), d(2, 12);
  rtb_test::fill_normal<double>(MatrixView<double>(out.data(), 2, 12), 3, 2.0);
  const double w[2] = {0.7, -1.3};
  p.d_log_prob_d_output(rtb_test::at<double>(cv(x), 2), cv(xn), cv(out), std::span<const double>(w), MatrixView<double>(d.data(), 2, 12));
  std::vector<double> flat(out.data(), out.data() + out.size());
  auto f = [&] {
    const M o = Eigen::Map<M>(flat.data(), 2, 12);
    double acc[2] = {0, 0};
    p.log_prob_step(rtb_test::at<double>(cv(x), 2), cv(xn), cv(o), std::span<double>(acc));
    return w[0] * acc[0] + w[1] * acc[1];
  };
  std::vector<double> analytic(d.data(), d.data() + d.size());
  CHECK(rtb_test::relative_error(analytic, rtb_test::numeric_gradient(flat, f)) < 1e-8);
  // the softmax cross-entropy pieces on their own
  double logits[5] = {0.3, -2.0, 1.1, 0.0, 0.5}, g[5];
  rtb::math::d_log_softmax_at(logits, 5, 2, 2.0, g);
  std::vector<double> lflat(logits, logits + 5);
  auto ce = [&] { return 2.0 * rtb::math::log_softmax_at(lflat.data(), 5, 2); };
  CHECK(rtb_test::relative_error(std::vector<double>(g, g + 5), rtb_test::numeric_gradient(lflat, ce)) < 1e-8);
}

TEST_CASE(
    "forward sampling reveals at rate rho, draws tokens from the softmax, never touches fixed or revealed columns") {
  const Process p({.length = 3, .vocab = 3, .num_steps = 4, .generated = {1, 1, 0}});
  const int n = 30000;
  Tok cond(n, 1), x(n, 3), xn(n, 3);
  for (int r = 0; r < n; ++r) cond(r, 0) = r % 3;  // the fixed column's value comes from the condition
  const auto& pc = p;
  CHECK(pc.condition_dim() == 1);
  pc.initial_state(rtb::Rows<std::int32_t>{cv(cond), 0}, {}, MatrixView<std::int32_t>(x.data(), n, 3));
  for (int r = 0; r < n; ++r) {
    CHECK(x(r, 0) == 3);
    CHECK(x(r, 2) == r % 3);
    x(r, 1) = 1;  // position 1 already revealed
  }
  M out(n, 9);
  for (int r = 0; r < n; ++r)
    for (int j = 0; j < 9; ++j) out(r, j) = j % 3 == 0 ? 1.0 : 0.0;  // softmax: e/(e+2), 1/(e+2), 1/(e+2)
  pc.sample_step(rtb_test::at<double>(cv(x), 1), cv(out), 0.0, {5, rtb::math::Stream::Rollout, 0}, MatrixView<std::int32_t>(xn.data(), n, 3));
  const double rho = 1.0 / 3, p0 = std::exp(1.0) / (std::exp(1.0) + 2);
  int revealed = 0, zeros = 0;
  for (int r = 0; r < n; ++r) {
    CHECK(xn(r, 1) == 1);
    CHECK(xn(r, 2) == r % 3);
    if (xn(r, 0) != 3) {
      ++revealed;
      zeros += xn(r, 0) == 0;
    }
  }
  CHECK(std::fabs(revealed / double(n) - rho) < 5 * std::sqrt(rho * (1 - rho) / n));
  CHECK(std::fabs(zeros / double(revealed) - p0) < 5 * std::sqrt(p0 * (1 - p0) / revealed));
}

TEST_CASE("a full rollout ends with no MASK; the backward kernel re-masks at the schedule's rate") {
  const Process p({.length = 6, .vocab = 5, .num_steps = 7, .schedule = rtb::MaskingSchedule::Cosine});
  const int n = 4000;
  Tok x(n, 6), xn(n, 6);
  M out = M::Zero(n, 30);
  p.initial_state(rtb::Rows<std::int32_t>{}, {}, MatrixView<std::int32_t>(x.data(), n, 6));
  for (int t = 0; t < 7; ++t) {
    p.sample_step(rtb_test::at<double>(cv(x), t), cv(out), 0.0, {1, rtb::math::Stream::Rollout, 0}, MatrixView<std::int32_t>(xn.data(), n, 6));
    std::swap(x, xn);
  }
  CHECK((x.array() == 5).count() == 0);
  // backward from x_T down to step 3: fraction masked = α_3
  for (int t = 6; t >= 3; --t) {
    p.sample_backward_step(rtb_test::at<double>(cv(x), t), {2, rtb::math::Stream::Backward, 0}, MatrixView<std::int32_t>(xn.data(), n, 6));
    std::swap(x, xn);
  }
  const double alpha = p.schedule().alpha(3), frac = (x.array() == 5).count() / double(n * 6);
  CHECK(std::fabs(frac - alpha) < 5 * std::sqrt(alpha * (1 - alpha) / (n * 6)));
  // the closed-form bridge gives the same masked fraction directly
  Tok end(n, 6), y(n, 6);
  end.setConstant(2);
  p.sample_given_end(rtb_test::at<double>(cv(end), 3), {3, rtb::math::Stream::Backward, 0}, MatrixView<std::int32_t>(y.data(), n, 6));
  const double frac2 = (y.array() == 5).count() / double(n * 6);
  CHECK(std::fabs(frac2 - alpha) < 5 * std::sqrt(alpha * (1 - alpha) / (n * 6)));
  CHECK(((y.array() != 5) && (y.array() != 2)).count() == 0);
  // backward log-probabilities: step 0 re-masks everything with probability 1
  Tok all_masked(1, 6), one(1, 6);
  all_masked.setConstant(5);
  one << 1, 5, 2, 5, 0, 4;
  double lb = 0;
  p.log_prob_backward_step(rtb_test::at<double>(cv(one), 0), cv(all_masked), std::span<double>(&lb, 1));
  CHECK(lb == doctest::Approx(0.0));
}

TEST_CASE("expected masked log-likelihood equals the Monte Carlo mean and its gradient finite differences") {
  const Process p({.length = 4, .vocab = 3, .num_steps = 5});
  Tok x(1, 4), end(1, 4);
  x << 3, 1, 3, 3;
  end << 2, 1, 0, 1;
  M out(1, 12);
  rtb_test::fill_normal<double>(MatrixView<double>(out.data(), 1, 12), 9, 1.5);
  double expected = 0;
  p.expected_log_prob_step(rtb_test::at<double>(cv(x), 2), cv(end), cv(out), std::span<double>(&expected, 1));
  // exact expectation by enumerating which of the 3 masked positions are revealed (to end's tokens)
  const double rho = p.schedule().reveal(2);
  double exact = 0;
  for (int mask = 0; mask < 8; ++mask) {
    Tok xn = x;
    double prob = 1;
    int bit = 0;
    for (int j : {0, 2, 3}) {
      const bool rev = (mask >> bit++) & 1;
      prob *= rev ? rho : 1 - rho;
      if (rev) xn(0, j) = end(0, j);
    }
    double lp = 0;
    p.log_prob_step(rtb_test::at<double>(cv(x), 2), cv(xn), cv(out), std::span<double>(&lp, 1));
    exact += prob * lp;
  }
  CHECK(expected == doctest::Approx(exact).epsilon(1e-12));
  M d(1, 12);
  const double w = 1.0;
  p.d_expected_log_prob_d_output(rtb_test::at<double>(cv(x), 2), cv(end), cv(out), std::span<const double>(&w, 1), MatrixView<double>(d.data(), 1, 12));
  std::vector<double> flat(out.data(), out.data() + 12);
  auto f = [&] {
    const M o = Eigen::Map<M>(flat.data(), 1, 12);
    double acc = 0;
    p.expected_log_prob_step(rtb_test::at<double>(cv(x), 2), cv(end), cv(o), std::span<double>(&acc, 1));
    return acc;
  };
  CHECK(rtb_test::relative_error(std::vector<double>(d.data(), d.data() + 12), rtb_test::numeric_gradient(flat, f)) <
        1e-8);
}

TEST_CASE("always-masked columns stay MASK through rollouts and contribute nothing") {
  const Process p({.length = 4, .vocab = 3, .num_steps = 3, .generated = {1, 1, 0, 0}, .masked = {3}});
  CHECK(p.masked_columns() == std::vector<rtb::Index>{3});
  CHECK(p.fixed_columns() == std::vector<rtb::Index>{2});
  const auto& pc = p;
  Tok cond(2, 2);
  cond << 1, 7, 2, 8;  // one value for the fixed column; the process ignores extra condition columns
  Tok x(2, 4), xn(2, 4);
  pc.initial_state(rtb::Rows<std::int32_t>{cv(cond), 0}, {}, MatrixView<std::int32_t>(x.data(), 2, 4));
  M out = M::Zero(2, 12);
  for (int t = 0; t < 3; ++t) {
    pc.sample_step(rtb_test::at<double>(cv(x), t), cv(out), 0.0, {1, rtb::math::Stream::Rollout, 0}, MatrixView<std::int32_t>(xn.data(), 2, 4));
    std::swap(x, xn);
  }
  for (int r = 0; r < 2; ++r) {
    CHECK(x(r, 3) == 3);
    CHECK(x(r, 2) == r + 1);
    CHECK(x(r, 0) != 3);
  }
  pc.check_end_states(cv(x), "test");
  x(0, 3) = 1;
  CHECK_THROWS_WITH_AS(pc.check_end_states(cv(x), "test"), doctest::Contains("keeps MASK"), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(Process({.length = 3, .vocab = 3, .generated = {1, 1, 0}, .masked = {1}}), rtb::InvalidArgumentError);
}

TEST_CASE("bad masked input: out-of-range tokens and MASK in a fixed column are typed errors") {
  Process p({.length = 3, .vocab = 3, .num_steps = 4, .generated = {1, 0, 1}});
  Tok cond(2, 1);
  cond << 3, 0;  // row 0 has MASK for the fixed column
  CHECK_THROWS_WITH_AS(p.check_conditions(cv(cond), "step"), doctest::Contains("row 0 condition column 0 (fixed column 1) holds token 3 (MASK)"),
                       rtb::InvalidArgumentError);
  cond(0, 0) = 7;
  CHECK_THROWS_WITH_AS(p.check_conditions(cv(cond), "step"), doctest::Contains("a real token in [0, 3)"),
                       rtb::InvalidArgumentError);
  Tok narrow(1, 0);
  CHECK_THROWS_AS(p.check_conditions(ConstMatrixView<std::int32_t>(narrow.data(), 1, 0), "step"), rtb::ShapeError);
  Tok end(1, 3);
  end << 0, 3, 1;
  CHECK_THROWS_WITH_AS(p.check_end_states(cv(end), "data"), doctest::Contains("(MASK)"), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(Process({.length = 0, .vocab = 3}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(Process({.length = 2, .vocab = 3, .generated = {1}}), rtb::ShapeError);
  CHECK_THROWS_AS(Process({.length = 2, .vocab = 3, .generated = {0, 0}}), rtb::InvalidArgumentError);
}

}  // namespace masked_categorical_process_test
