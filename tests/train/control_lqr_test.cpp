// SPDX-License-Identifier: Apache-2.0
// KL-regularised policy extraction in closed form (issue 14's exactness test): a behaviour prior
// μ(a | s) and a quadratic Q give π(a | s) ∝ μ(a | s)·exp(Q(s, a)/α), Gaussian per state.
//
// The prior is a DdpmProcess (noise at every step, the offline-RL reference's sampler) whose ε is
// the exact minimum-MSE ε for behaviour data a ~ N(K s, v I),
//     ε*(x, τ | s) = √(1−ᾱ_τ)·(x − √ᾱ_τ·K s)/(ᾱ_τ v + 1 − ᾱ_τ),
// so every step is linear-Gaussian and the prior's terminal marginal is N(κ K s, V_T I) with κ and
// V_T from the recursion below: the prior is known exactly, as fitted priors are not. The
// posterior is rtb::Residual(prior ε, a state-conditioned Mlp starting at zero), trained with
// relative VarGrad per state (groups of 16 rows sharing a state, no learned log Z), alternating
// on-policy steps with off-policy steps from behaviour actions (step(conditions, end_states)).
// At held-out states the posterior's mean, covariance and importance-sampled log Z are checked
// against the closed form. Tolerances: 5 standard errors of the estimate plus the floor of the
// sampler family (fixed per-step variances cannot shrink as the exact posterior's transitions
// do; measured and stated at each check).

#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <array>
#include <cmath>
#include <rtb/rtb.hpp>
#include <vector>

#include "../test_util.hpp"

namespace {

using S = double;
using rtb::Index;
constexpr Index kT = 20, kGroup = 16, kStates = 8;
constexpr std::int64_t kIterations = 500;
constexpr double kV = 0.3, kAlpha = 1.0;  // behaviour variance, temperature
const Eigen::Matrix2d kK = (Eigen::Matrix2d() << 0.5, -0.3, 0.2, 0.4).finished();    // behaviour mean K s
const Eigen::Matrix2d kG = (Eigen::Matrix2d() << -0.4, 0.1, 0.3, -0.2).finished();   // Q's optimum G s
const Eigen::Matrix2d kH = (Eigen::Matrix2d() << 2.0, 0.5, 0.5, 1.0).finished();     // Q's curvature

/// M·(x, y) written out: g++ 12 warns (-Warray-bounds) on Eigen's vectorised fixed-size temporaries.
std::array<double, 2> apply(const Eigen::Matrix2d& m, double x, double y) {
  return {m(0, 0) * x + m(0, 1) * y, m(1, 0) * x + m(1, 1) * y};
}

rtb::DdpmOptions process_options() {
  return {.num_train_steps = kT, .beta_start = 1e-3, .beta_end = 0.25, .clip_denoised = false,
          .time_as_fraction = true, .noise_at_last_step = true};
}

/// The exact ε of behaviour data N(K s, v I) under the DDPM training schedule; no parameters.
struct BehaviourEps {
  using Scalar = S;
  using Value = S;
  struct Context {};
  std::vector<double> alpha_bar;  // ᾱ_j, j ∈ [0, N)
  rtb::ParameterLayout layout_;

  explicit BehaviourEps(const rtb::DdpmProcess<S>& p) {
    for (Index j = 0; j < p.options().num_train_steps; ++j) alpha_bar.push_back(p.train_alpha_bar(j));
  }
  Index input_dim() const { return 2; }
  Index output_dim() const { return 2; }
  Index condition_dim() const { return 2; }
  Index num_params() const { return 0; }
  const rtb::ParameterLayout& layout() const { return layout_; }
  void initialize(std::span<S>) const {}
  Context make_context(Index) const { return {}; }
  void inference(const rtb::Weights<S>&, const rtb::Step<S>& s, rtb::MatrixView<S> out, Context&) const {
    const auto tau = static_cast<std::size_t>(std::llround(s.time * static_cast<S>(alpha_bar.size())));
    const double ab = alpha_bar[tau], scale = std::sqrt(1 - ab) / (ab * kV + 1 - ab);
    for (Index r = 0; r < s.rows(); ++r) {
      const std::array<double, 2> m = apply(kK, s.condition(r, 0), s.condition(r, 1));
      for (Index d = 0; d < 2; ++d) out(r, d) = scale * (s.x(r, d) - std::sqrt(ab) * m[static_cast<std::size_t>(d)]);
    }
  }
  void forward(const rtb::Weights<S>& w, const rtb::Step<S>& s, rtb::MatrixView<S> out, Context& c) const {
    inference(w, s, out, c);
  }
  void backward(const rtb::Weights<S>&, Context&, rtb::ConstMatrixView<S>, std::span<S>, rtb::GradientMode) const {}
};
static_assert(rtb::Denoiser<BehaviourEps>);

/// The prior's terminal marginal N(κ·K s, V_T·I): the mean and variance of x_{i+1} = a_i x_i +
/// b_i·m + √β_i z from x_0 ~ N(0, I), a_i and b_i the step's mean coefficients under ε*.
struct PriorMarginal {
  double kappa = 0, var = 1;
  explicit PriorMarginal(const rtb::DdpmProcess<S>& p) {
    for (Index i = 0; i < p.num_steps(); ++i) {
      const rtb::DdpmStepCoefficients& k = p.coefficients(i);
      const double ab = k.alpha_bar, den = ab * kV + 1 - ab;
      const double g = std::sqrt(ab) * kV / den, h = (1 - ab) / den;  // x̂_0 = g·x + h·m
      const double a = k.x0_coef * g + k.x_coef, b = k.x0_coef * h;
      kappa = a * kappa + b;
      var = a * a * var + k.variance;
    }
  }
};

/// log r(s, a) = Q(s, a)/α, Q = −½(a − G s)ᵀH(a − G s).
double log_reward(double s0, double s1, double a0, double a1) {
  const std::array<double, 2> g = apply(kG, s0, s1);
  const double e0 = a0 - g[0], e1 = a1 - g[1];
  return -0.5 * (kH(0, 0) * e0 * e0 + 2 * kH(0, 1) * e0 * e1 + kH(1, 1) * e1 * e1) / kAlpha;
}

struct ExactPosterior {
  Eigen::Vector2d mean;
  Eigen::Matrix2d cov;
  double log_z;
  ExactPosterior(const PriorMarginal& pm, const Eigen::Vector2d& s) {
    const Eigen::Vector2d mu0 = pm.kappa * (kK * s), g = kG * s;
    const Eigen::Matrix2d I = Eigen::Matrix2d::Identity(), A = kH / kAlpha;
    cov = (I / pm.var + A).inverse();
    mean = cov * (mu0 / pm.var + A * g);
    const Eigen::Vector2d d = mu0 - g;
    log_z = -0.5 * std::log((I + pm.var * A).determinant()) - 0.5 * d.dot((pm.var * I + A.inverse()).inverse() * d);
  }
};

/// Group j of the batch (rows j·16 … j·16+15) shares state j of this iteration's draw.
void fill_states(rtb::MatrixView<S> c, std::uint64_t seed) {
  std::vector<double> u(static_cast<std::size_t>(2 * kStates));
  rtb_test::fill_normal<double>(rtb::MatrixView<double>(u.data(), kStates, 2), seed, 0.8);
  for (Index i = 0; i < c.rows(); ++i)
    for (Index d = 0; d < 2; ++d) c(i, d) = u[static_cast<std::size_t>(2 * (i / kGroup) + d)];
}

}  // namespace

TEST_CASE("control LQR: RTB's amortised policy is mu(a|s) exp(Q/alpha) at held-out states, log Z per state within 0.05") {
  const rtb::DdpmProcess<S> process(2, kT, process_options());
  const PriorMarginal pm(process);
  CHECK(pm.var > kV * 0.8);  // the prior is a real behaviour model: near N(K s, v I)
  CHECK(pm.var < kV * 1.2);
  const rtb::Model<BehaviourEps> prior{BehaviourEps(process)};
  using Net = rtb::Residual<BehaviourEps, rtb::Mlp<S>>;
  const rtb::Mlp<S> residual({.input_dim = 2, .hidden = {64, 64}, .output_dim = 2, .time_harmonics = 8,
                              .condition_dim = 2, .seed = 11});
  const rtb::Model<Net> posterior(Net(prior.net(), residual), prior);
  auto reward = rtb::make_reward([](rtb::ConstMatrixView<S> x, rtb::ConstMatrixView<S> c, std::span<S> out) {
    for (Index i = 0; i < x.rows(); ++i)
      out[static_cast<std::size_t>(i)] = log_reward(c(i, 0), c(i, 1), x(i, 0), x(i, 1));
  });
  const Index B = kGroup * kStates;
  rtb::RelativeTrajectoryBalance<rtb::DdpmProcess<S>, Net, decltype(reward), rtb::RelativeVarGrad> trainer(
      process, posterior, reward,
      rtb::Config{.batch_size = B, .learning_rate = 2e-3, .decay = {.start = 0, .end = kIterations, .final_ratio = 0.05},
                  .group_size = kGroup,
                  .exploration = rtb::ExplorationSchedule::none(), .threads = 2, .seed = 4});

  // The untrained posterior is the prior exactly (zero last layer): δ's spread is 0 within a group.
  rtb::RowMatrix<S> cond(B, 2), ends(B, 2);
  fill_states(rtb::MatrixView<S>(cond.data(), B, 2), 1);
  const rtb::ConstMatrixView<S> cv(cond.data(), B, 2), ev(ends.data(), B, 2);

  // Typed errors for bad end points: wrong shape, a NaN row.
  CHECK_THROWS_AS(trainer.step(cv, rtb::ConstMatrixView<S>(ends.data(), B - 1, 2)), rtb::ShapeError);
  ends.setZero();
  ends(7, 1) = std::nan("");
  CHECK_THROWS_AS(trainer.step(cv, ev), rtb::InvalidArgumentError);
  CHECK(trainer.iteration() == 0);

  for (std::int64_t k = 0; k < kIterations; ++k) {
    fill_states(rtb::MatrixView<S>(cond.data(), B, 2), 100 + static_cast<std::uint64_t>(k));
    if (k % 2 == 0) {
      const rtb::StepStats st = trainer.step(cv);
      CHECK_MESSAGE(st.given == 0, "on-policy step");
    } else {  // behaviour actions a ~ N(K s, v I) as the data set would hold them
      rtb_test::fill_normal<double>(rtb::MatrixView<double>(ends.data(), B, 2), 5000 + static_cast<std::uint64_t>(k),
                                    std::sqrt(kV));
      for (Index i = 0; i < B; ++i) {
        const std::array<double, 2> m = apply(kK, cond(i, 0), cond(i, 1));
        ends(i, 0) += m[0];
        ends(i, 1) += m[1];
      }
      const rtb::StepStats st = trainer.step(cv, ev);
      REQUIRE(st.given == B);
      CHECK(st.replayed == 0);
    }
  }

  // Held-out states: the closed-form posterior against 4000 draws of each.
  const Index n = 4000;
  const double held_out[4][2] = {{0.0, 0.0}, {1.0, -0.5}, {-0.8, -0.9}, {0.4, 1.2}};
  for (int j = 0; j < 4; ++j) {
    CAPTURE(j);
    const Eigen::Vector2d s(held_out[j][0], held_out[j][1]);
    const ExactPosterior exact(pm, s);
    rtb::RowMatrix<S> c(n, 2);
    c.col(0).setConstant(held_out[j][0]);
    c.col(1).setConstant(held_out[j][1]);
    const auto ev2 = trainer.evaluate(rtb::ConstMatrixView<S>(c.data(), n, 2), 77 + static_cast<std::uint64_t>(j));
    const rtb::ConstMatrixView<S> x = rtb::view_of(ev2.samples);
    const Eigen::Vector2d mean = x.colwise().mean().transpose();
    const rtb::RowMatrix<S> centred = x.rowwise() - mean.transpose();
    const Eigen::Matrix2d cov = centred.transpose() * centred / static_cast<double>(n - 1);
    MESSAGE("state (", s(0), ", ", s(1), "): mean ", mean(0), " ", mean(1), " exact ", exact.mean(0), " ", exact.mean(1),
            "; cov ", cov(0, 0), " ", cov(0, 1), " ", cov(1, 1), " exact ", exact.cov(0, 0), " ", exact.cov(0, 1), " ",
            exact.cov(1, 1), "; log Z is ", ev2.log_partition.log_z_is, " exact ", exact.log_z, "; ess ",
            ev2.log_partition.ess);
    for (int d = 0; d < 2; ++d) {
      CHECK(std::fabs(mean(d) - exact.mean(d)) < 5 * std::sqrt(exact.cov(d, d) / n));
      CHECK(std::fabs(cov(d, d) - exact.cov(d, d)) < 5 * exact.cov(d, d) * std::sqrt(2.0 / n));
    }
    CHECK(std::fabs(cov(0, 1) - exact.cov(0, 1)) < 5 * std::sqrt(exact.cov(0, 0) * exact.cov(1, 1) / n));
    CHECK(std::fabs(ev2.log_partition.log_z_is - exact.log_z) < 0.05);
  }
}
