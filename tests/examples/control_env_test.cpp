// SPDX-License-Identifier: Apache-2.0
// The offline-RL example's tasks, behaviour data and evaluation: dynamics against hand values,
// the LQR gain against its closed form, obstacle handling, the expert > medium > random ordering,
// data-set reproducibility, .npy round trips and the data checks' typed errors.

#include <doctest/doctest.h>

#include <Eigen/Eigenvalues>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "../../examples/control/dataset.hpp"
#include "../../examples/control/evaluate.hpp"

namespace fs = std::filesystem;
using control::Vec;

namespace {

// Reference values from Gym's Pendulum-v1 step (the formula in envs.hpp, evaluated in Python).
struct GymCase {
  double th, thdot, a;
  double cos, sin, next_thdot, reward;
};
constexpr GymCase kGym[] = {
    {1.0, 0.5, 0.25, 0.4886058494189488, 0.8725046268723092, 1.2061032386059223, -1.02525},
    {3.0, 7.9, 1.5, -0.9667981925794611, -0.2555411020268312, 8.0, -15.245},  // a clipped, speed clipped
    {-2.5, -1.0, -0.6, -0.8471754510819278, -0.5313132363155769, -1.6288541080779675, -6.35144},
};

// A task that terminates: x' = x + a, terminal once x > 1, reward 1 per step.
struct Cliff {
  int state_dim() const { return 1; }
  int action_dim() const { return 1; }
  int horizon() const { return 20; }
  std::string name() const { return "cliff"; }
  Vec reset(std::uint64_t, std::uint64_t) const { return Vec::Zero(1); }
  control::Transition step(const Vec& s, const Vec& a) const {
    const Vec n = s + a.cwiseMax(-1.0).cwiseMin(1.0);
    return {n, 1.0, n[0] > 1.0};
  }
};
// Found by argument-dependent lookup, as a task of the example's would supply them.
inline auto make_expert(const Cliff&) {
  return [](const Vec&) { return Vec::Constant(1, 0.9); };
}
inline control::Behaviour medium_behaviour(const Cliff&) {
  return {0.5, 0.1, 1.0};
}

template <class E>
double dataset_mean_return(const control::Dataset& d, const E& env) {
  return d.rewards.sum() / (static_cast<double>(d.size()) / env.horizon());
}

bool same_bytes(const control::Dataset& a, const control::Dataset& b) {
  auto eq = [](const auto& x, const auto& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), sizeof(*x.data()) * x.size()) == 0;
  };
  return eq(a.states, b.states) && eq(a.actions, b.actions) && eq(a.next_states, b.next_states) &&
         eq(a.rewards, b.rewards) && eq(a.terminals, b.terminals) && eq(a.timeouts, b.timeouts);
}

}  // namespace

TEST_CASE("pendulum: step equals Gym Pendulum-v1 and resets are in Gym's ranges") {
  const control::Pendulum env;
  for (const GymCase& g : kGym) {
    const control::Transition t = env.step(control::Pendulum::observe(g.th, g.thdot), Vec::Constant(1, g.a));
    CHECK(t.next_state[0] == doctest::Approx(g.cos).epsilon(1e-12));
    CHECK(t.next_state[1] == doctest::Approx(g.sin).epsilon(1e-12));
    CHECK(t.next_state[2] == doctest::Approx(g.next_thdot).epsilon(1e-12));
    CHECK(t.reward == doctest::Approx(g.reward).epsilon(1e-12));
    CHECK_FALSE(t.terminal);
  }
  CHECK(control::Pendulum::angle_normalize(3 * control::Pendulum::pi / 2) ==
        doctest::Approx(-control::Pendulum::pi / 2));
  for (std::uint64_t e = 0; e < 200; ++e) {
    const Vec s = env.reset(3, e);
    CHECK(s[0] * s[0] + s[1] * s[1] == doctest::Approx(1.0));
    CHECK(std::abs(s[2]) <= 1.0);
  }
  CHECK(env.reset(3, 7) == env.reset(3, 7));
  CHECK(env.reset(3, 7) != env.reset(4, 7));
  CHECK_THROWS_AS(env.step(Vec::Zero(2), Vec::Zero(1)), rtb::ShapeError);
  CHECK_THROWS_AS(env.step(Vec::Zero(3), Vec::Constant(1, NAN)), rtb::NonFiniteError);
}

TEST_CASE("lqr: step is A s + B u with the clipped, scaled action") {
  const control::Lqr env;
  const Vec s{{0.3, -0.7}}, a{{0.5, -3.0}};
  const Vec u{{0.5 * env.max_u, -1.0 * env.max_u}};
  const control::Transition t = env.step(s, a);
  const double x0 = 1.02 * 0.3 + 0.10 * -0.7 + 0.10 * u[0];
  const double x1 = 1.02 * -0.7 + 0.05 * u[0] + 0.10 * u[1];
  CHECK(t.next_state[0] == doctest::Approx(x0).epsilon(1e-14));
  CHECK(t.next_state[1] == doctest::Approx(x1).epsilon(1e-14));
  CHECK(t.reward == doctest::Approx(-(0.09 + 0.49) - 0.1 * (u[0] * u[0] + u[1] * u[1])).epsilon(1e-14));
}

TEST_CASE("lqr_gain: scalar closed form, the Riccati fixed point and optimality against perturbed gains") {
  // Scalar: gamma b^2 P^2 + ((1 - gamma a^2) r - q gamma b^2) P - q r = 0, K = gamma a b P / (r + gamma b^2 P).
  const double a = 1.1, b = 0.5, q = 1.0, r = 0.2, gamma = 0.9;
  const double lin = (1 - gamma * a * a) * r - q * gamma * b * b;
  const double P = (-lin + std::sqrt(lin * lin + 4 * gamma * b * b * q * r)) / (2 * gamma * b * b);
  control::Mat P_num;
  const control::Mat K =
      control::lqr_gain(control::Mat::Constant(1, 1, a), control::Mat::Constant(1, 1, b),
                        control::Mat::Constant(1, 1, q), control::Mat::Constant(1, 1, r), gamma, &P_num);
  CHECK(P_num(0, 0) == doctest::Approx(P).epsilon(1e-9));
  CHECK(K(0, 0) == doctest::Approx(gamma * a * b * P / (r + gamma * b * b * P)).epsilon(1e-9));

  const control::Lqr env;
  control::Mat P2;
  const control::Mat K2 = control::lqr_gain(env.A, env.B, env.Q, env.R, env.gamma, &P2);
  const control::Mat& A = env.A;
  const control::Mat& B = env.B;
  // P = Q + gamma (A - BK)' P (A - BK) + K'RK at the optimum (the Bellman equation of u = -Ks).
  const control::Mat Acl = A - B * K2;
  const control::Mat bellman = env.Q + K2.transpose() * env.R * K2 + env.gamma * Acl.transpose() * P2 * Acl;
  CHECK((bellman - P2).cwiseAbs().maxCoeff() < 1e-8);
  CHECK(Eigen::EigenSolver<control::Mat>(Acl).eigenvalues().cwiseAbs().maxCoeff() < 1.0);
  // The discounted cost s0'P s0 of u = -Ks is below that of every perturbed gain.
  auto cost = [&](const control::Mat& G, const Vec& s0) {
    Vec s = s0;
    double J = 0, disc = 1;
    for (int t = 0; t < 3000; ++t, disc *= env.gamma) {
      const Vec u = -G * s;
      J += disc * (s.dot(env.Q * s) + u.dot(env.R * u));
      s = A * s + B * u;
    }
    return J;
  };
  const Vec s0{{0.8, -0.4}};
  CHECK(cost(K2, s0) == doctest::Approx(s0.dot(P2 * s0)).epsilon(1e-6));
  for (int i = 0; i < 4; ++i) {
    control::Mat D = control::Mat::Zero(2, 2);
    D(i / 2, i % 2) = 0.05;
    CHECK(cost(K2 + D, s0) > cost(K2, s0));
    CHECK(cost(K2 - D, s0) > cost(K2, s0));
  }
}

TEST_CASE("point mass: free flight, walls, obstacles and the goal reward") {
  const control::PointMass env;
  // Free flight: semi-implicit Euler with damping.
  const Vec s{{0.1, 0.3, 0.2, -0.1}};
  const control::Transition t = env.step(s, Vec{{0.5, 1.0}});
  const double vx = 0.2 + 0.05 * (0.5 - 0.2), vy = -0.1 + 0.05 * (1.0 + 0.1);
  CHECK(t.next_state[2] == doctest::Approx(vx));
  CHECK(t.next_state[3] == doctest::Approx(vy));
  CHECK(t.next_state[0] == doctest::Approx(0.1 + 0.05 * vx));
  CHECK(t.next_state[1] == doctest::Approx(0.3 + 0.05 * vy));
  CHECK(t.reward == doctest::Approx(-0.01 * env.goal_distance(t.next_state[0], t.next_state[1])));
  // Into the central obstacle from the left: back on its surface, at rest.
  const control::Circle& c = env.obstacles[0];
  const control::Transition hit = env.step(Vec{{c.x - c.radius - 0.001, c.y, 1.0, 0.0}}, Vec{{1.0, 0.0}});
  CHECK(std::hypot(hit.next_state[0] - c.x, hit.next_state[1] - c.y) >= c.radius);
  CHECK(std::hypot(hit.next_state[0] - c.x, hit.next_state[1] - c.y) == doctest::Approx(c.radius));
  CHECK(hit.next_state[0] < c.x);
  CHECK(hit.next_state[2] == 0.0);
  CHECK(hit.next_state[3] == 0.0);
  CHECK_FALSE(env.in_obstacle(hit.next_state[0], hit.next_state[1]));
  // Into the left wall: clamped, the normal velocity zeroed, the tangential one kept.
  const control::Transition wall = env.step(Vec{{0.001, 0.4, -0.5, 0.3}}, Vec{{-1.0, 0.0}});
  CHECK(wall.next_state[0] == 0.0);
  CHECK(wall.next_state[2] == 0.0);
  CHECK(wall.next_state[3] > 0.2);
  // In the goal disc: +1 minus the shaping.
  const control::Transition goal = env.step(Vec{{env.goal_x, env.goal_y, 0.0, 0.0}}, Vec{{0.0, 0.0}});
  CHECK(goal.reward == doctest::Approx(1.0));
  // The expert goes around the obstacles: never stopped by one, and it reaches the goal.
  const control::Controller<control::PointMass> expert(env, control::kExpertBehaviour, 0);
  const auto res = control::evaluate(env, control::controller_policy(expert), {50, 11, true});
  for (const auto& path : res.trajectories) {
    for (rtb::Index i = 0; i < path.rows(); ++i) CHECK_FALSE(env.in_obstacle(path(i, 0), path(i, 1)));
    CHECK(env.goal_distance(path(path.rows() - 1, 0), path(path.rows() - 1, 1)) < env.goal_radius);
  }
}

TEST_CASE_TEMPLATE("behaviour: expert > medium > random, medium's normalised score in the medium band", E, control::Lqr,
                   control::Pendulum, control::PointMass) {
  const E env;
  const auto ref = control::reference_returns(env, 400);  // LQR's returns are heavy-tailed
  const control::Controller<E> medium(env, control::medium_behaviour(env), 5);
  const auto m = control::evaluate(env, control::controller_policy(medium), {400, 77, false});
  INFO(env.name(), ": random ", ref.random, " +- ", ref.random_se, ", medium ", m.mean_return, " +- ", m.std_error,
       ", expert ", ref.expert, " +- ", ref.expert_se);
  CHECK(ref.expert - 3 * ref.expert_se > m.mean_return + 3 * m.std_error);
  CHECK(m.mean_return - 3 * m.std_error > ref.random + 3 * ref.random_se);
  const double score = control::normalised_score(m.mean_return, ref);
  CHECK(score > 25);
  CHECK(score < 65);
  CHECK(control::normalised_score(ref.expert, ref) == doctest::Approx(100));
  // Every behaviour action is strictly inside (-1, 1), so arctanh is finite.
  for (auto kind : {control::DataKind::Random, control::DataKind::MediumReplay, control::DataKind::Expert}) {
    const control::Dataset d = control::make_dataset(env, kind, 8, 2);
    CHECK(d.actions.cwiseAbs().maxCoeff() <= control::kActionLimit);
  }
}

TEST_CASE_TEMPLATE("datasets: reproducible by seed, consistent with evaluate, medium-replay mixes levels", E,
                   control::Lqr, control::Pendulum, control::PointMass) {
  const E env;
  const control::Dataset a = control::make_dataset(env, control::DataKind::Medium, 6, 42);
  const control::Dataset b = control::make_dataset(env, control::DataKind::Medium, 6, 42);
  const control::Dataset c = control::make_dataset(env, control::DataKind::Medium, 6, 43);
  CHECK(a.size() == 6 * env.horizon());
  CHECK(same_bytes(a, b));
  CHECK_FALSE(same_bytes(a, c));
  CHECK(a.timeouts.sum() == 6);
  CHECK(a.terminals.sum() == 0);
  CHECK_NOTHROW(control::validate(a, env));
  // Transitions chain within an episode.
  for (rtb::Index i = 0; i + 1 < a.size(); ++i)
    if (!a.timeouts[i]) CHECK(a.next_states.row(i) == a.states.row(i + 1));
  // The data set's episodes are evaluate()'s episodes of the same controller and seed.
  const control::Controller<E> ctrl(env, control::medium_behaviour(env), 42);
  const auto ev = control::evaluate(env, control::controller_policy(ctrl), {6, 42, false});
  CHECK(dataset_mean_return(a, env) == doctest::Approx(ev.mean_return).epsilon(1e-12));
  // Medium-replay: the random quarter scores below the medium quarter.
  const control::Dataset r = control::make_dataset(env, control::DataKind::MediumReplay, 40, 1);
  const rtb::Index q = r.size() / 4;
  CHECK(r.rewards.head(q).sum() < r.rewards.tail(q).sum());
}

TEST_CASE("datasets: .npy save/load round trip and a missing file") {
  const control::PointMass env;
  const control::Dataset d = control::make_dataset(env, control::DataKind::MediumReplay, 4, 9);
  const fs::path dir = fs::temp_directory_path() / "rtb_control_dataset_test";
  fs::remove_all(dir);
  control::save_dataset(d, dir);
  for (const char* f : {"states", "actions", "rewards", "next_states", "terminals", "timeouts"})
    CHECK(fs::exists(dir / (std::string(f) + ".npy")));
  CHECK(same_bytes(control::load_dataset(dir, env), d));
  CHECK_THROWS_AS(control::load_dataset(dir, control::Pendulum{}), rtb::ShapeError);  // 4-D states
  fs::remove(dir / "rewards.npy");
  CHECK_THROWS_WITH_AS(control::load_dataset(dir), doctest::Contains("rewards.npy is missing"), rtb::IoError);
  fs::remove_all(dir);
}

TEST_CASE("validate: each bad input is a typed error naming the array and the row") {
  const control::Pendulum env;
  const control::Dataset good = control::make_dataset(env, control::DataKind::Random, 1, 0);
  auto bad = good;
  bad.rewards.conservativeResize(good.size() - 1);
  CHECK_THROWS_WITH_AS(control::validate(bad, env), doctest::Contains("rewards has 199 rows"), rtb::ShapeError);
  bad = good;
  bad.states.conservativeResize(Eigen::NoChange, 2);
  CHECK_THROWS_WITH_AS(control::validate(bad, env), doctest::Contains("states has 2 columns"), rtb::ShapeError);
  CHECK_THROWS_WITH_AS(control::validate(good, control::Lqr{}), doctest::Contains("lqr needs 2"), rtb::ShapeError);
  bad = good;
  bad.next_states(3, 1) = NAN;
  CHECK_THROWS_WITH_AS(control::validate(bad, env), doctest::Contains("next_states row 3 column 1"),
                       rtb::NonFiniteError);
  bad = good;
  bad.rewards[5] = INFINITY;
  CHECK_THROWS_WITH_AS(control::validate(bad, env), doctest::Contains("rewards row 5"), rtb::NonFiniteError);
  bad = good;
  bad.actions(17, 0) = 1.5;
  CHECK_THROWS_WITH_AS(control::validate(bad, env), doctest::Contains("actions row 17 column 0 is 1.5"),
                       rtb::InvalidArgumentError);
  bad = good;
  bad.terminals[2] = 2;
  CHECK_THROWS_WITH_AS(control::validate(bad, env), doctest::Contains("terminals row 2"), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(control::validate(control::Dataset{}, env), rtb::EmptyBatchError);
  CHECK(control::parse_data_kind("medium-replay") == control::DataKind::MediumReplay);
  CHECK_THROWS_AS(control::parse_data_kind("mediocre"), rtb::InvalidArgumentError);
}

TEST_CASE("evaluate: one batched call per step, batch-size independent, terminations, bad policies") {
  const control::Pendulum env;
  int calls = 0;
  auto pd = [&](const rtb::ConstMatrixView<double>& s) {
    ++calls;
    CHECK(s.rows() == 10);
    rtb::RowMatrix<double> a(s.rows(), 1);
    for (rtb::Index r = 0; r < s.rows(); ++r) a(r, 0) = std::tanh(-s(r, 1) - 0.5 * s(r, 2));
    return a;
  };
  const auto ten = control::evaluate(env, pd, {10, 5, false});
  CHECK(calls == env.horizon());
  const auto five =
      control::evaluate(env,
                        [](const rtb::ConstMatrixView<double>& s) {
                          return rtb::RowMatrix<double>((-s.col(1) - 0.5 * s.col(2)).array().tanh().matrix());
                        },
                        {5, 5, false});
  for (int e = 0; e < 5; ++e)
    CHECK(five.returns[static_cast<std::size_t>(e)] == ten.returns[static_cast<std::size_t>(e)]);

  // A task that terminates: episodes stop at the termination, data sets flag it.
  const Cliff cliff;
  auto push = [](const rtb::ConstMatrixView<double>& s) { return rtb::RowMatrix<double>::Constant(s.rows(), 1, 0.3); };
  const auto res = control::evaluate(cliff, push, {3, 0, true});
  CHECK(res.lengths[0] == 4);  // 0.3, 0.6, 0.9, 1.2 > 1
  CHECK(res.returns[0] == 4.0);
  CHECK(res.std_error == 0.0);
  CHECK(res.trajectories[0].rows() == 5);
  const control::Dataset d = control::make_dataset(cliff, control::DataKind::Random, 5, 3);
  CHECK(d.terminals.sum() + d.timeouts.sum() == 5);
  CHECK_NOTHROW(control::validate(d, cliff));

  auto wrong = [](const rtb::ConstMatrixView<double>& s) { return rtb::RowMatrix<double>::Zero(s.rows(), 2); };
  CHECK_THROWS_WITH_AS(control::evaluate(env, wrong, {4, 0, false}), doctest::Contains("expected 4 x 1"),
                       rtb::ShapeError);
  auto nan = [](const rtb::ConstMatrixView<double>& s) { return rtb::RowMatrix<double>::Constant(s.rows(), 1, NAN); };
  CHECK_THROWS_AS(control::evaluate(env, nan, {4, 0, false}), rtb::NonFiniteError);
  CHECK_THROWS_AS(control::evaluate(env, pd, {0, 0, false}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(control::normalised_score(1.0, 2.0, 2.0), rtb::InvalidArgumentError);
}
