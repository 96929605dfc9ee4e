// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/net/pis_mlp.hpp>
#include <rtb/objective/relative_tb.hpp>
#include <rtb/process/gaussian_process.hpp>
#include <rtb/train/trajectory_engine.hpp>

#include "../test_util.hpp"

using rtb::ConstMatrixView;
using rtb::MatrixView;
using M = rtb::RowMatrix<double>;
using Process = rtb::GaussianProcess<double>;

namespace {

/// out = [a·x + b·t, 0]: the smallest Gaussian-process denoiser, with two parameters.
struct LineNet {
  using Scalar = double;
  using Value = double;
  struct Context {
    const double* x = nullptr;
    rtb::Index rows = 0;
    double t = 0;
  };
  rtb::ParameterLayout layout_ = [] {
    rtb::ParameterLayout l;
    l.add("a", {1});
    l.add("b", {1});
    return l;
  }();
  rtb::Index input_dim() const { return 1; }
  rtb::Index output_dim() const { return 2; }
  rtb::Index num_params() const { return 2; }
  const rtb::ParameterLayout& layout() const { return layout_; }
  void initialize(std::span<double> p) const {
    p[0] = 0.5;
    p[1] = 1.0;
  }
  Context make_context(rtb::Index) const { return {}; }
  void inference(const rtb::Weights<double>& w, const rtb::Step<double>& s, MatrixView<double> out, Context&) const {
    for (rtb::Index r = 0; r < s.rows(); ++r) {
      out(r, 0) = w.params[0] * s.x(r, 0) + w.params[1] * s.time;
      out(r, 1) = 0;
    }
  }
  void forward(const rtb::Weights<double>& w, const rtb::Step<double>& s, MatrixView<double> out, Context& c) const {
    c = {s.x.data(), s.rows(), s.time};
    inference(w, s, out, c);
  }
  void backward(const rtb::Weights<double>&, Context& c, ConstMatrixView<double> d, std::span<double> g,
                rtb::GradientMode mode) const {
    if (mode == rtb::GradientMode::Overwrite) g[0] = g[1] = 0;
    for (rtb::Index r = 0; r < c.rows; ++r) {
      g[0] += d(r, 0) * c.x[r];
      g[1] += d(r, 0) * c.t;
    }
  }
};
static_assert(rtb::Denoiser<LineNet>);

using Line = rtb::Model<LineNet>;
Line line(double a, double b) {
  const double p[2] = {a, b};
  return Line(LineNet{}, std::span<const double>(p));
}
using LineEngine = rtb::detail::TrajectoryEngine<Process, LineNet>;

/// RTB's loss and weights for rows with log Z = `log_z` and β = `beta`.
double rtb_weights(std::span<const double> lp, std::span<const double> lq, const std::vector<double>& log_r, double log_z,
                   double beta, std::span<double> w, double* mean_delta = nullptr) {
  const std::vector<char> valid(lp.size(), 1);
  const std::vector<double> z(lp.size(), log_z);
  std::vector<double> d(lp.size());
  rtb::LocalReduction one;
  const auto res = rtb::RelativeTB{}(rtb::ObjectiveBatch<double>{lp, lq, log_r, valid, z, beta, 0.0, 1.0},
                                     rtb::ObjectiveOutputs<double>{w, d}, one);
  if (mean_delta) *mean_delta = res.mean_delta;
  return res.loss;
}

double log_normal(double x, double mean, double var) {
  return -0.5 * std::log(2 * 3.14159265358979323846 * var) - (x - mean) * (x - mean) / (2 * var);
}

}  // namespace

TEST_CASE("the RTB residual of a hand-computed two-step trajectory") {
  // T = 2, σ² = 1: dt = 0.5, step variance 0.5, times 0 and 0.5. Trajectory 0 → 0.4 → −0.3.
  const Process p(1, 2, 1.0, rtb::GaussianHead::MeanAndLogVariance);
  const Line prior = line(0.5, 1.0), post = line(-1.0, 2.0);
  LineEngine eng(p, post.net(), prior.net(), 0, 8, 1);
  eng.shape(0, 1);
  eng.stored_states(0)(0, 0) = 0.0;
  eng.stored_states(1)(0, 0) = 0.4;
  eng.stored_states(2)(0, 0) = -0.3;
  eng.score(post, &prior, {1, rtb::math::Stream::Rollout, 0}, 0.0);
  const double lp = eng.log_post()[0], lq = eng.log_prior()[0];
  // posterior means: 0 + 0.5·(−1·0 + 2·0) = 0;  0.4 + 0.5·(−1·0.4 + 2·0.5) = 0.7
  // prior means:     0 + 0.5·(0.5·0 + 1·0) = 0; 0.4 + 0.5·(0.5·0.4 + 1·0.5) = 0.75
  const double want_post = log_normal(0.4, 0.0, 0.5) + log_normal(-0.3, 0.7, 0.5);
  const double want_prior = log_normal(0.4, 0.0, 0.5) + log_normal(-0.3, 0.75, 0.5);
  CHECK(lp == doctest::Approx(want_post).epsilon(1e-14));
  CHECK(lq == doctest::Approx(want_prior).epsilon(1e-14));
  // δ = log Z + Σ log p_φ − Σ log p_θ − β log r, log Z = 0.3, β = 1.5, log r(−0.3) = −0.09:
  // the first step cancels; (−1² + 1.05²)/(2·0.5) = 0.1025, so δ = 0.3 + 0.1025 + 0.135 = 0.5375
  double w = 0, mean_delta = 0;
  const double loss = rtb_weights(std::span<const double>(&lp, 1), std::span<const double>(&lq, 1), {-0.09}, 0.3, 1.5,
                                  std::span<double>(&w, 1), &mean_delta);
  CHECK(mean_delta == doctest::Approx(0.5375).epsilon(1e-12));
  CHECK(loss == doctest::Approx(0.5 * 0.5375 * 0.5375).epsilon(1e-12));
}

namespace {

using Net = rtb::PisMlp<double>;
using PisModel = rtb::Model<Net>;

/// Reference gradient with none of the engine's tricks: keep every step's context, store every
/// state, back-propagate all steps at the end (what autograd does).
std::vector<double> naive_gradient(const Process& p, const PisModel& post, const M& states_flat, rtb::Index B,
                                   const std::vector<double>& weight) {
  const rtb::Index T = p.num_steps(), D = p.state_dim(), O = p.output_dim();
  std::vector<Net::Context> ctx;
  std::vector<M> outs;
  for (rtb::Index t = 0; t < T; ++t) {
    ctx.push_back(post.make_context(B));
    outs.emplace_back(B, O);
    post.forward(rtb_test::step_at(ConstMatrixView<double>(states_flat.data() + t * B * D, B, D), p.time(t)),
                 MatrixView<double>(outs.back().data(), B, O), ctx.back());
  }
  std::vector<double> grad(static_cast<std::size_t>(post.num_params()), 0.0);
  for (rtb::Index t = 0; t < T; ++t) {
    M d_out(B, O);
    p.d_log_prob_d_output(rtb_test::at<double>(ConstMatrixView<double>(states_flat.data() + t * B * D, B, D), t),
                          ConstMatrixView<double>(states_flat.data() + (t + 1) * B * D, B, D),
                          ConstMatrixView<double>(outs[t].data(), B, O), weight,
                          MatrixView<double>(d_out.data(), B, O));
    post.backward(ctx[t], ConstMatrixView<double>(d_out.data(), B, O), std::span<double>(grad), rtb::GradientMode::Accumulate);
  }
  return grad;
}

}  // namespace

TEST_CASE("two-pass gradient equals the naive whole-trajectory gradient and finite differences") {
  const Process p(2, 6, 5.0, rtb::GaussianHead::MeanAndLogVariance);
  const PisModel prior(Net({.dim = 2, .hidden = 8, .harmonics = 4, .seed = 3, .zero_init_last = false}));
  PisModel post = prior;
  for (double& v : post.params()) v *= 1.1;  // posterior ≠ prior
  const rtb::Index on = 5, given = 3, B = on + given, T = 6, D = 2;
  rtb::detail::TrajectoryEngine<Process, Net> eng(p, post.net(), prior.net(), 0, /*block_rows=*/2, /*threads=*/2);
  eng.shape(on, given);
  auto end = eng.end_states();
  rtb_test::fill_normal<double>(MatrixView<double>(&end(on, 0), given, D), 5, 3.0);
  eng.build_stored_backward({7, rtb::math::Stream::Backward, 0});
  const rtb::math::NoiseKey key{7, rtb::math::Stream::Rollout, 0};
  const double expl = 0.3;
  eng.score(post, &prior, key, expl);
  const std::vector<double> lp(eng.log_post().begin(), eng.log_post().end()), lq(eng.log_prior().begin(), eng.log_prior().end());
  std::vector<double> log_r(B);
  for (rtb::Index i = 0; i < B; ++i) log_r[i] = -0.1 * end(i, 0) * end(i, 0) + 0.2 * end(i, 1);
  std::vector<double> w(B);
  rtb_weights(lp, lq, log_r, 0.4, 1.0, w);
  std::vector<double> grad(static_cast<std::size_t>(post.num_params()));
  eng.backpropagate(post, key, expl, w, nullptr, 1.0, grad);

  // Rebuild every state the way a naive implementation would: on-policy rows by sampling with
  // the same noise, given rows from the engine's storage.
  M states((T + 1) * B, D);
  M x(on, D), xn(on, D), out(on, 2 * D);
  auto ctx = post.make_context(on);
  p.initial_state(rtb::Rows<double>{}, key, MatrixView<double>(x.data(), on, D));
  for (rtb::Index t = 0; t <= T; ++t) {
    for (rtb::Index r = 0; r < on; ++r) states.row(t * B + r) = x.row(r);
    for (rtb::Index r = 0; r < given; ++r) states.row(t * B + on + r) = eng.stored_states(t).row(r);
    if (t == T) break;
    post.inference(rtb_test::step_at(ConstMatrixView<double>(x.data(), on, D), p.time(t)),
                   MatrixView<double>(out.data(), on, 2 * D), ctx);
    p.sample_step(rtb_test::at<double>(ConstMatrixView<double>(x.data(), on, D), t),
                  ConstMatrixView<double>(out.data(), on, 2 * D), expl, key, MatrixView<double>(xn.data(), on, D));
    std::swap(x, xn);
  }
  // Same x_T as the engine, to rounding: the engine rolls out in blocks of 2 rows, this loop all 5
  // at once, and a matrix product of 5 rows may round differently from one of 2 (it does with
  // AVX-512 kernels), so the check allows a few ulps; the gradient check below does the rest.
  for (rtb::Index r = 0; r < on; ++r)
    for (rtb::Index d = 0; d < D; ++d) CHECK(std::fabs(states(T * B + r, d) - end(r, d)) <= 1e-12 * (1 + std::fabs(end(r, d))));
  const auto naive = naive_gradient(p, post, states, B, w);
  CHECK(rtb_test::relative_error(grad, naive) < 1e-12);

  // Finite differences of L = ½ mean δ² with the states held fixed (all rows given).
  rtb::detail::TrajectoryEngine<Process, Net> fixed(p, post.net(), prior.net(), 0, 3, 1);
  fixed.shape(0, B);
  for (rtb::Index t = 0; t <= T; ++t)
    for (rtb::Index r = 0; r < B; ++r) fixed.stored_states(t).row(r) = states.row(t * B + r);
  auto loss = [&] {
    std::vector<double> ww(B);
    fixed.score(post, &prior, key, 0.0);
    return rtb_weights(fixed.log_post(), fixed.log_prior(), log_r, 0.4, 1.0, ww);
  };
  const auto numeric = rtb_test::numeric_gradient(post.params(), loss);
  CHECK(rtb_test::relative_error(rtb_test::trained_entries(post.layout(), grad),
                                 rtb_test::trained_entries(post.layout(), numeric)) < 1e-6);
}

TEST_CASE("step subsampling is unbiased: the average over many subsets equals the full gradient") {
  const Process p(1, 8, 1.0, rtb::GaussianHead::MeanAndLogVariance);
  const Line prior = line(0.5, 1.0), post = line(-0.3, 0.7);
  LineEngine eng(p, post.net(), prior.net(), 0, 4, 1);
  eng.shape(4, 0);
  const rtb::math::NoiseKey key{2, rtb::math::Stream::Rollout, 0};
  std::vector<double> w = {0.3, -0.1, 0.25, 0.5}, full(2), sub(2), mean(2, 0.0);
  eng.score(post, &prior, key, 0.0);
  eng.backpropagate(post, key, 0.0, w, nullptr, 1.0, full);
  // all C(8, 2) subsets of 2 steps, scaled by 8/2: their mean is exactly the full gradient
  int count = 0;
  for (int a = 0; a < 8; ++a)
    for (int b = a + 1; b < 8; ++b) {
      auto keep = eng.keep_flags();
      std::fill(keep.begin(), keep.end(), char{0});
      keep[a] = keep[b] = 1;
      eng.backpropagate(post, key, 0.0, w, keep.data(), 4.0, sub);
      mean[0] += sub[0];
      mean[1] += sub[1];
      ++count;
    }
  CHECK(mean[0] / count == doctest::Approx(full[0]).epsilon(1e-12));
  CHECK(mean[1] / count == doctest::Approx(full[1]).epsilon(1e-12));
}

TEST_CASE("the engine rejects a denoiser of the wrong shape and an empty batch") {
  const Process p(2, 4, 1.0, rtb::GaussianHead::MeanAndLogVariance);
  LineNet one_d;  // 1 -> 2, the process needs 2 -> 4
  try {
    LineEngine eng(p, one_d, one_d, 0, 4, 1);
    FAIL("expected a ShapeError");
  } catch (const rtb::ShapeError& e) {
    CHECK(std::string(e.what()).find("state_dim 2") != std::string::npos);
    CHECK(std::string(e.what()).find("[mean, log-variance (unused)]") != std::string::npos);
  }
  const Process q(1, 4, 1.0, rtb::GaussianHead::MeanAndLogVariance);
  LineEngine eng(q, one_d, one_d, 0, 4, 1);
  CHECK_THROWS_AS(eng.shape(0, 0), rtb::EmptyBatchError);
}
