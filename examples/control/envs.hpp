// SPDX-License-Identifier: Apache-2.0
#pragma once
// Three small continuous-control tasks for the offline-RL example, each a value type with the same
// members (the `Environment` concept below), so data generation and evaluation are generic:
//
//   state_dim(), action_dim(), horizon(), name()
//   reset(seed, episode) -> initial state      a pure function of (seed, episode): Philox-keyed
//   step(state, action)  -> {next_state, reward, terminal}   deterministic, no hidden state
//
// The state is the whole Markov state, so step() needs nothing else and an episode can be replayed
// from its first state and actions. Actions arrive in [-1, 1]^da (the policy's tanh-squashed
// output); each task clips them to [-1, 1] and scales them to its own range. None of the tasks
// terminates (terminal is always false; episodes end by timeout at horizon()): a termination on
// failure would reward ending an episode early where every reward is negative, and D4RL's maze
// and pendulum-like tasks have none either. The interface still carries the flag so data sets and
// evaluation handle tasks that do terminate.
//
//   Lqr        s' = A s + B u, r = -(s'Qs + u'Ru), a mildly unstable, coupled 2-D system (both
//              eigenvalues 1.02) with u = max_u a; horizon 50; s0 ~ U[-1, 1]^2. No process noise.
//              lqr_gain() gives the optimal discounted gain, u = -K s is the expert.
//   PointMass  a mass in the unit box with three circular obstacles between the start region
//              (bottom left) and the goal (top right); see the PointMass comment for the physics,
//              the collision rule and the reward.
//   Pendulum   Gym Pendulum-v1, exactly: state [cos th, sin th, thdot], u = 2 a, horizon 200.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>
#include <utility>

#include <Eigen/Core>
#include <Eigen/LU>

#include <rtb/error.hpp>
#include <rtb/math/philox.hpp>

namespace control {

using Vec = Eigen::VectorXd;
using Mat = Eigen::MatrixXd;

/// What step() returns.
struct Transition {
  Vec next_state;
  double reward = 0;
  bool terminal = false;  ///< true termination (not a timeout)
};

/// The members data generation and evaluation use.
template <class E>
concept Environment = requires(const E& e, const Vec& v, std::uint64_t n) {
  { e.state_dim() } -> std::convertible_to<int>;
  { e.action_dim() } -> std::convertible_to<int>;
  { e.horizon() } -> std::convertible_to<int>;
  { e.name() } -> std::convertible_to<std::string>;
  { e.reset(n, n) } -> std::convertible_to<Vec>;
  { e.step(v, v) } -> std::same_as<Transition>;
};

namespace detail {

/// What a draw is for (part of the Philox key, so the streams never overlap).
enum class Purpose : std::uint32_t { Reset = 1, Behaviour = 2, BehaviourNoise = 3 };

inline rtb::math::NoiseKey key(std::uint64_t seed, Purpose p) {
  return {seed,
          static_cast<rtb::math::Stream>(static_cast<std::uint32_t>(rtb::math::Stream::User) +
                                         static_cast<std::uint32_t>(p)),
          0};
}
/// Uniform in [lo, hi) for (seed, purpose, episode, step, lane).
inline double uniform(std::uint64_t seed, Purpose p, std::uint64_t episode, std::uint32_t step, std::uint32_t lane,
                      double lo, double hi) {
  return lo + (hi - lo) * rtb::math::uniform<double>(key(seed, p), episode, step, lane);
}
inline double normal(std::uint64_t seed, Purpose p, std::uint64_t episode, std::uint32_t step, std::uint32_t lane) {
  return rtb::math::normal<double>(key(seed, p), episode, step, lane);
}

/// The action clipped to [-1, 1]; throws on a wrong length or a NaN (a policy bug, not a state).
inline Vec clip_action(const Vec& a, int da, const char* who) {
  if (a.size() != da)
    throw rtb::ShapeError(rtb::detail::message(who, ".step: action has ", a.size(), " entries; expected ", da,
                                               " (one per action dimension)"));
  if (!a.allFinite())
    throw rtb::NonFiniteError(rtb::detail::message(who, ".step: action is not finite; check the policy's output"));
  return a.cwiseMax(-1.0).cwiseMin(1.0);
}
inline void check_state(const Vec& s, int ds, const char* who) {
  if (s.size() != ds)
    throw rtb::ShapeError(rtb::detail::message(who, ".step: state has ", s.size(), " entries; expected ", ds));
}

}  // namespace detail

/// Optimal gain of the discounted LQR  min sum_t gamma^t (s'Qs + u'Ru),  s' = A s + B u, by
/// Riccati iteration from P = Q:
///   P <- Q + gamma A'PA - gamma^2 A'PB (R + gamma B'PB)^-1 B'PA,   K = gamma (R + gamma B'PB)^-1 B'PA,
/// so u = -K s. Throws InvalidArgumentError if the iteration does not settle (an unstabilisable
/// pair at this discount).
inline Mat lqr_gain(const Mat& A, const Mat& B, const Mat& Q, const Mat& R, double gamma, Mat* P_out = nullptr) {
  if (A.rows() != A.cols() || B.rows() != A.rows() || Q.rows() != A.rows() || Q.cols() != A.rows() ||
      R.rows() != B.cols() || R.cols() != B.cols())
    throw rtb::ShapeError(rtb::detail::message("lqr_gain: A ", A.rows(), "x", A.cols(), ", B ", B.rows(), "x", B.cols(),
                                               ", Q ", Q.rows(), "x", Q.cols(), ", R ", R.rows(), "x", R.cols(),
                                               " do not fit; expected A n x n, B n x m, Q n x n, R m x m"));
  if (!(gamma > 0 && gamma <= 1))
    throw rtb::InvalidArgumentError(rtb::detail::message("lqr_gain: gamma = ", gamma, "; expected 0 < gamma <= 1"));
  Mat P = Q;
  for (int it = 0; it < 100000; ++it) {
    const Mat S = R + gamma * B.transpose() * P * B;
    const Mat K = gamma * S.partialPivLu().solve(B.transpose() * P * A);
    const Mat next = Q + gamma * A.transpose() * P * A - gamma * A.transpose() * P * B * K;
    const double change = (next - P).cwiseAbs().maxCoeff();
    P = 0.5 * (next + next.transpose());
    if (!P.allFinite()) break;
    if (change <= 1e-12 * (1 + P.cwiseAbs().maxCoeff())) {
      if (P_out) *P_out = P;
      return gamma * (R + gamma * B.transpose() * P * B).partialPivLu().solve(B.transpose() * P * A);
    }
  }
  throw rtb::InvalidArgumentError(
      "lqr_gain: the Riccati iteration did not converge; (A, B) is not stabilisable at this discount");
}

/// s' = A s + B u, u = max_u clip(a), r = -(s'Qs + u'Ru) on the state before the step.
struct Lqr {
  Mat A{{1.02, 0.10}, {0.0, 1.02}};
  Mat B{{0.10, 0.0}, {0.05, 0.10}};
  Mat Q = Mat::Identity(2, 2);
  Mat R = 0.1 * Mat::Identity(2, 2);
  double max_u = 2.0;
  double gamma = 0.99;  ///< the discount the expert gain is optimal for
  double init_range = 1.0;

  int state_dim() const { return 2; }
  int action_dim() const { return 2; }
  int horizon() const { return 50; }
  std::string name() const { return "lqr"; }

  Vec reset(std::uint64_t seed, std::uint64_t episode) const {
    Vec s(2);
    for (int i = 0; i < 2; ++i)
      s[i] = detail::uniform(seed, detail::Purpose::Reset, episode, 0, static_cast<std::uint32_t>(i), -init_range,
                             init_range);
    return s;
  }
  Transition step(const Vec& s, const Vec& a) const {
    detail::check_state(s, 2, "Lqr");
    const Vec u = max_u * detail::clip_action(a, 2, "Lqr");
    return {A * s + B * u, -(s.dot(Q * s) + u.dot(R * u)), false};
  }
  /// The optimal gain for u (env units): u = -K s, a = u / max_u.
  Mat gain() const { return lqr_gain(A, B, Q, R, gamma); }
};

/// Gym Pendulum-v1 (g = 10, m = 1, l = 1, dt = 0.05, max_speed 8, max_torque 2). theta = 0 is upright.
///   u = 2 clip(a),  r = -(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)
///   thdot' = clip(thdot + (3g/(2l) sin th + 3/(m l^2) u) dt, -8, 8),  th' = th + thdot' dt
/// The state is Gym's observation [cos th, sin th, thdot]; th = atan2(sin, cos) gives the same
/// cost as Gym's angle_normalize and the same next observation.
struct Pendulum {
  static constexpr double g = 10, m = 1, l = 1, dt = 0.05, max_speed = 8, max_torque = 2;
  static constexpr double pi = 3.14159265358979323846;

  int state_dim() const { return 3; }
  int action_dim() const { return 1; }
  int horizon() const { return 200; }
  std::string name() const { return "pendulum"; }

  static double angle_normalize(double x) {
    const double y = std::fmod(x + pi, 2 * pi);
    return (y < 0 ? y + 2 * pi : y) - pi;
  }
  static Vec observe(double th, double thdot) { return Vec{{std::cos(th), std::sin(th), thdot}}; }

  Vec reset(std::uint64_t seed, std::uint64_t episode) const {
    return observe(detail::uniform(seed, detail::Purpose::Reset, episode, 0, 0, -pi, pi),
                   detail::uniform(seed, detail::Purpose::Reset, episode, 0, 1, -1, 1));
  }
  Transition step(const Vec& s, const Vec& a) const {
    detail::check_state(s, 3, "Pendulum");
    const double u = max_torque * detail::clip_action(a, 1, "Pendulum")[0];
    const double th = std::atan2(s[1], s[0]), thdot = s[2];
    const double cost = th * th + 0.1 * thdot * thdot + 0.001 * u * u;
    double new_thdot = thdot + (3 * g / (2 * l) * std::sin(th) + 3.0 / (m * l * l) * u) * dt;
    new_thdot = std::clamp(new_thdot, -max_speed, max_speed);
    return {observe(th + new_thdot * dt, new_thdot), -cost, false};
  }
};

/// A circular obstacle.
struct Circle {
  double x, y, radius;
};

/// A point mass in the unit box [0, 1]^2, state [x, y, vx, vy], action = acceleration / max_accel.
///   v' = v + dt (max_accel clip(a) - damping v),  p' = p + dt v'   (semi-implicit Euler)
/// Collisions: a step that ends inside an obstacle puts the mass back on the obstacle's surface
/// (radially, just outside) and zeroes its velocity, so crashing costs time but never ends the
/// episode; a step that leaves the box is clamped to the wall and zeroes the velocity component
/// into the wall (sliding along it is allowed).
/// Reward: +1 for each step that ends inside the goal disc, minus a small shaping term
/// 0.01 * distance(p', goal) so that data far from the goal still carries a signal. Returns range
/// from about -1.5 (never arriving) to about 120 for the expert.
struct PointMass {
  double dt = 0.05, max_accel = 1.0, damping = 1.0;
  double goal_x = 0.85, goal_y = 0.85, goal_radius = 0.08;
  double start_lo = 0.05, start_hi = 0.2;  ///< starts are uniform in [start_lo, start_hi]^2 at rest
  double shaping = 0.01;
  Circle obstacles[3] = {{0.5, 0.5, 0.2}, {0.25, 0.78, 0.1}, {0.78, 0.25, 0.1}};

  int state_dim() const { return 4; }
  int action_dim() const { return 2; }
  int horizon() const { return 150; }
  std::string name() const { return "point_mass"; }

  Vec reset(std::uint64_t seed, std::uint64_t episode) const {
    return Vec{{detail::uniform(seed, detail::Purpose::Reset, episode, 0, 0, start_lo, start_hi),
                detail::uniform(seed, detail::Purpose::Reset, episode, 0, 1, start_lo, start_hi), 0.0, 0.0}};
  }
  double goal_distance(double x, double y) const { return std::hypot(x - goal_x, y - goal_y); }

  Transition step(const Vec& s, const Vec& a) const {
    detail::check_state(s, 4, "PointMass");
    const Vec acc = max_accel * detail::clip_action(a, 2, "PointMass");
    double vx = s[2] + dt * (acc[0] - damping * s[2]);
    double vy = s[3] + dt * (acc[1] - damping * s[3]);
    double x = s[0] + dt * vx, y = s[1] + dt * vy;
    if (x < 0 || x > 1) x = std::clamp(x, 0.0, 1.0), vx = 0;
    if (y < 0 || y > 1) y = std::clamp(y, 0.0, 1.0), vy = 0;
    for (const Circle& c : obstacles) {
      const double dx = x - c.x, dy = y - c.y, d = std::hypot(dx, dy);
      if (d >= c.radius) continue;
      // Back onto the surface along the ray from the centre (from the previous position if the
      // new one is the centre itself), a hair outside so the next step starts free.
      const double ex = d > 1e-12 ? dx / d : s[0] - c.x, ey = d > 1e-12 ? dy / d : s[1] - c.y;
      const double n = std::max(std::hypot(ex, ey), 1e-12);
      x = c.x + ex / n * c.radius * (1 + 1e-9);
      y = c.y + ey / n * c.radius * (1 + 1e-9);
      vx = vy = 0;
    }
    const double dist = goal_distance(x, y);
    return {Vec{{x, y, vx, vy}}, (dist < goal_radius ? 1.0 : 0.0) - shaping * dist, false};
  }
  bool in_obstacle(double x, double y) const {
    for (const Circle& c : obstacles)
      if (std::hypot(x - c.x, y - c.y) < c.radius) return true;
    return false;
  }
};

static_assert(Environment<Lqr> && Environment<Pendulum> && Environment<PointMass>);

}  // namespace control
