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
  using Input = double;
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
  std::vector<double> p_ = {0.5, 1.0};
  rtb::Index input_dim() const { return 1; }
  rtb::Index output_dim() const { return 2; }
  rtb::Index num_params() const { return 2; }
  const rtb::ParameterLayout& layout() const { return layout_; }
  std::span<double> params() { return p_; }
  std::span<const double> params() const { return p_; }
  Context make_context(rtb::Index) const { return {}; }
  void inference(ConstMatrixView<double> x, double t, MatrixView<double> out, Context&) const {
    for (rtb::Index r = 0; r < x.rows(); ++r) {
      out(r, 0) = p_[0] * x(r, 0) + p_[1] * t;
      out(r, 1) = 0;
    }
  }
  void forward(ConstMatrixView<double> x, double t, MatrixView<double> out, Context& c) const {
    c = {x.data(), x.rows(), t};
    inference(x, t, out, c);
  }
  void backward(Context& c, ConstMatrixView<double> d, std::span<double> g, rtb::GradientMode mode) const {
    if (mode == rtb::GradientMode::Overwrite) g[0] = g[1] = 0;
    for (rtb::Index r = 0; r < c.rows; ++r) {
      g[0] += d(r, 0) * c.x[r];
      g[1] += d(r, 0) * c.t;
    }
  }
};
static_assert(rtb::Denoiser<LineNet>);

double log_normal(double x, double mean, double var) {
  return -0.5 * std::log(2 * 3.14159265358979323846 * var) - (x - mean) * (x - mean) / (2 * var);
}

}  // namespace

TEST_CASE("the RTB residual of a hand-computed two-step trajectory") {
  // T = 2, σ² = 1: dt = 0.5, step variance 0.5, times 0 and 0.5. Trajectory 0 → 0.4 → −0.3.
  const Process p(1, 2, 1.0);
  LineNet prior, post;
  post.p_ = {-1.0, 2.0};
  rtb::detail::TrajectoryEngine<Process, LineNet> eng(p, prior, 8, 1);
  eng.shape(prior, 0, 1);
  eng.given_states(0)(0, 0) = 0.0;
  eng.given_states(1)(0, 0) = 0.4;
  eng.given_states(2)(0, 0) = -0.3;
  double lp = 0, lq = 0;
  eng.pass1(post, &prior, {1, rtb::math::Stream::Rollout, 0}, 0.0, &lp, &lq);
  // posterior means: 0 + 0.5·(−1·0 + 2·0) = 0;  0.4 + 0.5·(−1·0.4 + 2·0.5) = 0.7
  // prior means:     0 + 0.5·(0.5·0 + 1·0) = 0; 0.4 + 0.5·(0.5·0.4 + 1·0.5) = 0.75
  const double want_post = log_normal(0.4, 0.0, 0.5) + log_normal(-0.3, 0.7, 0.5);
  const double want_prior = log_normal(0.4, 0.0, 0.5) + log_normal(-0.3, 0.75, 0.5);
  CHECK(lp == doctest::Approx(want_post).epsilon(1e-14));
  CHECK(lq == doctest::Approx(want_prior).epsilon(1e-14));
  // δ = log Z + Σ log p_φ − Σ log p_θ − β log r, log Z = 0.3, β = 1.5, log r(−0.3) = −0.09:
  // the first step cancels; (−1² + 1.05²)/(2·0.5) = 0.1025, so δ = 0.3 + 0.1025 + 0.135 = 0.5375
  const double log_r = -0.09;
  const char valid = 1;
  double w = 0;
  const auto res = rtb::RelativeTB{}(
      rtb::ObjectiveBatch<double>{std::span<const double>(&lp, 1), std::span<const double>(&lq, 1),
                                  std::span<const double>(&log_r, 1), std::span<const char>(&valid, 1), 0.3, 1.5, 0, 1},
      std::span<double>(&w, 1));
  CHECK(res.mean_delta == doctest::Approx(0.5375).epsilon(1e-12));
  CHECK(res.loss == doctest::Approx(0.5 * 0.5375 * 0.5375).epsilon(1e-12));
}

namespace {

using Net = rtb::PisMlp<double>;

/// Reference gradient with none of the engine's tricks: keep every step's context, store every
/// state, back-propagate all steps at the end (what autograd does).
std::vector<double> naive_gradient(const Process& p, const Net& post, const M& states_flat, rtb::Index B,
                                   const std::vector<double>& weight) {
  const rtb::Index T = p.num_steps(), D = p.state_dim(), O = p.output_dim();
  std::vector<Net::Context> ctx;
  std::vector<M> outs;
  for (rtb::Index t = 0; t < T; ++t) {
    ctx.push_back(post.make_context(B));
    outs.emplace_back(B, O);
    post.forward(ConstMatrixView<double>(states_flat.data() + t * B * D, B, D), p.time(t),
                 MatrixView<double>(outs.back().data(), B, O), ctx.back());
  }
  std::vector<double> grad(static_cast<std::size_t>(post.num_params()), 0.0);
  for (rtb::Index t = 0; t < T; ++t) {
    M d_out(B, O);
    p.d_log_prob_d_output(ConstMatrixView<double>(states_flat.data() + t * B * D, B, D),
                          ConstMatrixView<double>(states_flat.data() + (t + 1) * B * D, B, D),
                          ConstMatrixView<double>(outs[t].data(), B, O), t, weight.data(),
                          MatrixView<double>(d_out.data(), B, O));
    post.backward(ctx[t], ConstMatrixView<double>(d_out.data(), B, O), std::span<double>(grad), rtb::GradientMode::Accumulate);
  }
  return grad;
}

}  // namespace

TEST_CASE("two-pass gradient equals the naive whole-trajectory gradient and finite differences") {
  const Process p(2, 6, 5.0);
  Net prior({.dim = 2, .hidden = 8, .harmonics = 4, .seed = 3, .zero_init_last = false});
  Net post = prior;
  for (double& v : post.params()) v *= 1.1;  // posterior ≠ prior
  const rtb::Index on = 5, given = 3, B = on + given, T = 6, D = 2;
  rtb::detail::TrajectoryEngine<Process, Net> eng(p, prior, /*block_rows=*/2, /*threads=*/2);
  eng.shape(post, on, given);
  auto end = eng.end_states();
  rtb_test::fill_normal<double>(MatrixView<double>(&end(on, 0), given, D), 5, 3.0);
  eng.fill_given_backward({7, rtb::math::Stream::Backward, 0});
  const rtb::math::NoiseKey key{7, rtb::math::Stream::Rollout, 0};
  const double expl = 0.3;
  std::vector<double> lp(B), lq(B);
  eng.pass1(post, &prior, key, expl, lp.data(), lq.data());
  std::vector<double> log_r(B);
  for (rtb::Index i = 0; i < B; ++i) log_r[i] = -0.1 * end(i, 0) * end(i, 0) + 0.2 * end(i, 1);
  const std::vector<char> valid(B, 1);
  std::vector<double> w(B);
  rtb::RelativeTB{}(rtb::ObjectiveBatch<double>{lp, lq, log_r, valid, 0.4, 1.0, 0.0, 1.0}, std::span<double>(w));
  std::vector<double> grad(static_cast<std::size_t>(post.num_params()));
  eng.pass2(post, key, expl, w.data(), nullptr, 1.0, grad);

  // Rebuild every state the way a naive implementation would: on-policy rows by sampling with
  // the same noise, given rows from the engine's storage.
  M states((T + 1) * B, D);
  M x(on, D), xn(on, D), out(on, 2 * D);
  auto ctx = post.make_context(on);
  p.initial_state(MatrixView<double>(x.data(), on, D), 0);
  for (rtb::Index t = 0; t <= T; ++t) {
    for (rtb::Index r = 0; r < on; ++r) states.row(t * B + r) = x.row(r);
    for (rtb::Index r = 0; r < given; ++r) states.row(t * B + on + r) = eng.given_states(t).row(r);
    if (t == T) break;
    post.inference(ConstMatrixView<double>(x.data(), on, D), p.time(t), MatrixView<double>(out.data(), on, 2 * D), ctx);
    p.sample_step(ConstMatrixView<double>(x.data(), on, D), ConstMatrixView<double>(out.data(), on, 2 * D), t, expl, key,
                  0, MatrixView<double>(xn.data(), on, D));
    std::swap(x, xn);
  }
  for (rtb::Index r = 0; r < on; ++r) CHECK(states(T * B + r, 0) == end(r, 0));  // same x_T as the engine
  const auto naive = naive_gradient(p, post, states, B, w);
  CHECK(rtb_test::relative_error(grad, naive) < 1e-12);

  // Finite differences of L = ½ mean δ² with the states held fixed (all rows given).
  rtb::detail::TrajectoryEngine<Process, Net> fixed(p, prior, 3, 1);
  fixed.shape(post, 0, B);
  for (rtb::Index t = 0; t <= T; ++t)
    for (rtb::Index r = 0; r < B; ++r) fixed.given_states(t).row(r) = states.row(t * B + r);
  auto loss = [&] {
    std::vector<double> a(B), b(B), ww(B);
    fixed.pass1(post, &prior, key, 0.0, a.data(), b.data());
    return static_cast<double>(
        rtb::RelativeTB{}(rtb::ObjectiveBatch<double>{a, b, log_r, valid, 0.4, 1.0, 0.0, 1.0}, std::span<double>(ww)).loss);
  };
  CHECK(rtb_test::relative_error(grad, rtb_test::numeric_gradient(post.params(), loss)) < 1e-6);
}

TEST_CASE("step subsampling is unbiased: the average over many subsets equals the full gradient") {
  const Process p(1, 8, 1.0);
  LineNet prior, post;
  post.p_ = {-0.3, 0.7};
  rtb::detail::TrajectoryEngine<Process, LineNet> eng(p, prior, 4, 1);
  eng.shape(post, 4, 0);
  const rtb::math::NoiseKey key{2, rtb::math::Stream::Rollout, 0};
  std::vector<double> lp(4), lq(4), w = {0.3, -0.1, 0.25, 0.5}, full(2), sub(2), mean(2, 0.0);
  eng.pass1(post, &prior, key, 0.0, lp.data(), lq.data());
  eng.pass2(post, key, 0.0, w.data(), nullptr, 1.0, full);
  // all C(8, 2) subsets of 2 steps, scaled by 8/2: their mean is exactly the full gradient
  int count = 0;
  for (int a = 0; a < 8; ++a)
    for (int b = a + 1; b < 8; ++b) {
      auto keep = eng.keep_flags();
      std::fill(keep.begin(), keep.end(), char{0});
      keep[a] = keep[b] = 1;
      eng.pass2(post, key, 0.0, w.data(), keep.data(), 4.0, sub);
      mean[0] += sub[0];
      mean[1] += sub[1];
      ++count;
    }
  CHECK(mean[0] / count == doctest::Approx(full[0]).epsilon(1e-12));
  CHECK(mean[1] / count == doctest::Approx(full[1]).epsilon(1e-12));
}

TEST_CASE("the engine rejects a denoiser of the wrong shape and an empty batch") {
  const Process p(2, 4, 1.0);
  LineNet one_d;  // 1 -> 2, the process needs 2 -> 4
  try {
    rtb::detail::TrajectoryEngine<Process, LineNet> eng(p, one_d, 4, 1);
    FAIL("expected a ShapeError");
  } catch (const rtb::ShapeError& e) {
    CHECK(std::string(e.what()).find("state_dim 2") != std::string::npos);
  }
  const Process q(1, 4, 1.0);
  rtb::detail::TrajectoryEngine<Process, LineNet> eng(q, one_d, 4, 1);
  CHECK_THROWS_AS(eng.shape(one_d, 0, 0), rtb::EmptyBatchError);
}
