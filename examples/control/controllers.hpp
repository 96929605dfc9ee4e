// SPDX-License-Identifier: Apache-2.0
#pragma once
// Behaviour controllers that generate the data sets and the reference returns.
//
// Each task has a deterministic expert (`make_expert(env)` returns a callable state -> action):
//   Lqr        a = -K s / max_u with K the optimal discounted gain (lqr_gain).
//   Pendulum   energy pumping, u = clip(-k E thdot) with E = thdot^2/2 + 15 (cos th - 1) the energy
//              relative to upright rest, then a PD balance u = -(10 th + 2 thdot) once cos th > 0.85.
//   PointMass  pure pursuit along one of two mirrored routes around the obstacles (the left-and-top
//              route when y >= x, its mirror image otherwise), with a velocity-tracking
//              acceleration command that cancels the damping and brakes inside the goal disc.
// A `Controller` degrades the expert by a `Behaviour`: with probability random_prob a step's action
// is uniform in [-1, 1]^da, otherwise expert_scale * expert + N(0, noise_std^2) per dimension.
// (D4RL's medium policies are half-trained agents; an epsilon-random, noisy expert is the
// deterministic stand-in that lands its normalised score in the same band.) Draws are Philox-
// keyed by (seed, episode, step), so a controller is a pure function of (state, episode, step) and
// data sets are identical byte for byte for a seed whatever the order episodes are generated in.
// Every action is clipped to +-0.99: the offline learner arctanh's them.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "envs.hpp"

namespace control {

inline constexpr double kActionLimit = 0.99;  ///< |a| of every behaviour action is at most this

/// How a controller departs from the expert.
struct Behaviour {
  double random_prob = 0;   ///< probability that a step's action is uniform in [-1, 1]^da
  double noise_std = 0;     ///< Gaussian noise added to the expert's action otherwise
  double expert_scale = 1;  ///< the expert's action is multiplied by this before the noise
};

inline constexpr Behaviour kRandomBehaviour{1.0, 0.0, 1.0};
inline constexpr Behaviour kExpertBehaviour{0.0, 0.0, 1.0};

struct LqrExpert {
  Mat K;
  double max_u;
  Vec operator()(const Vec& s) const { return (-K * s / max_u).cwiseMax(-kActionLimit).cwiseMin(kActionLimit); }
};
inline LqrExpert make_expert(const Lqr& env) {
  return {env.gain(), env.max_u};
}

struct PendulumExpert {
  double balance_cos = 0.85, kp = 10, kd = 2, pump_gain = 1;
  Vec operator()(const Vec& s) const {
    const double th = std::atan2(s[1], s[0]), thdot = s[2];
    double u;
    if (std::cos(th) > balance_cos) {
      u = -(kp * th + kd * thdot);
    } else {
      const double energy = 0.5 * thdot * thdot + 15 * (std::cos(th) - 1);
      u = std::abs(thdot) < 1e-3 ? Pendulum::max_torque : -pump_gain * energy * thdot;
    }
    return Vec::Constant(1, std::clamp(u / Pendulum::max_torque, -kActionLimit, kActionLimit));
  }
};
inline PendulumExpert make_expert(const Pendulum&) {
  return {};
}

struct PointMassExpert {
  PointMass env;
  std::vector<Eigen::Vector2d> route{{0.12, 0.12}, {0.08, 0.55}, {0.10, 0.93}, {0.50, 0.94}, {0.85, 0.85}};
  double lookahead = 0.12, max_speed = 0.8, track_gain = 5, brake_gain = 3;

  /// The point `lookahead` further along the route than the route's closest point to p.
  Eigen::Vector2d target(const Eigen::Vector2d& p) const {
    double best = 1e300, along = 0, s = 0;
    std::vector<double> length(route.size(), 0.0);
    for (std::size_t i = 0; i + 1 < route.size(); ++i) {
      const Eigen::Vector2d d = route[i + 1] - route[i];
      const double len = d.norm();
      const double t = std::clamp((p - route[i]).dot(d) / (len * len), 0.0, 1.0);
      const double dist = (route[i] + t * d - p).norm();
      if (dist < best) best = dist, along = s + t * len;
      s += len;
      length[i + 1] = s;
    }
    const double want = along + lookahead;
    for (std::size_t i = 0; i + 1 < route.size(); ++i)
      if (want <= length[i + 1])
        return route[i] + (want - length[i]) / (length[i + 1] - length[i]) * (route[i + 1] - route[i]);
    return route.back();
  }
  Vec operator()(const Vec& s) const {
    const bool mirrored = s[1] < s[0];  // the right-and-bottom route: swap x and y
    const Eigen::Vector2d p = mirrored ? Eigen::Vector2d(s[1], s[0]) : Eigen::Vector2d(s[0], s[1]);
    const Eigen::Vector2d v = mirrored ? Eigen::Vector2d(s[3], s[2]) : Eigen::Vector2d(s[2], s[3]);
    const Eigen::Vector2d goal(env.goal_x, env.goal_y);
    const Eigen::Vector2d to = (p - goal).norm() < 2 * env.goal_radius ? goal : target(p);
    const Eigen::Vector2d diff = to - p;
    const double speed = std::min(max_speed, brake_gain * (p - goal).norm() + 0.1);
    const Eigen::Vector2d v_want =
        diff.norm() > 1e-9 ? Eigen::Vector2d(speed * diff.normalized()) : Eigen::Vector2d(0, 0);
    Eigen::Vector2d a = (track_gain * (v_want - v) + env.damping * v) / env.max_accel;
    if (mirrored) std::swap(a[0], a[1]);
    return Vec{{std::clamp(a[0], -kActionLimit, kActionLimit), std::clamp(a[1], -kActionLimit, kActionLimit)}};
  }
};
inline PointMassExpert make_expert(const PointMass& env) {
  return {env};
}

/// Medium behaviour per task: tuned so the normalised score lands in D4RL's medium band (30-60;
/// measured values in docs/control_envs.md).
/// LQR's returns are quadratic in the state, so any stabilising controller scores above 90: its
/// medium is a sluggish gain (0.08 K) that lets the instability grow, with random
/// steps.
inline Behaviour medium_behaviour(const Lqr&) {
  return {0.3, 0.3, 0.08};
}
inline Behaviour medium_behaviour(const Pendulum&) {
  return {0.55, 0.3, 1.0};
}
inline Behaviour medium_behaviour(const PointMass&) {
  return {0.55, 0.3, 1.0};
}

/// Level lambda in [0, 1] between random (0) and medium (1): random_prob goes from 1 down to
/// medium's, the noise is medium's. Medium-replay mixes levels 0, 1/3, 2/3 and 1.
template <Environment E>
Behaviour replay_behaviour(const E& env, double lambda) {
  const Behaviour m = medium_behaviour(env);
  return {1 - lambda * (1 - m.random_prob), m.noise_std, m.expert_scale};
}

/// The expert degraded by a Behaviour, with its own seed.
template <Environment E>
struct Controller {
  E env;
  Behaviour behaviour;
  std::uint64_t seed = 0;
  decltype(make_expert(std::declval<const E&>())) expert;

  Controller(const E& e, Behaviour b, std::uint64_t s) : env(e), behaviour(b), seed(s), expert(make_expert(e)) {}

  Vec act(const Vec& state, std::uint64_t episode, int t) const {
    const auto step = static_cast<std::uint32_t>(t);
    const int da = env.action_dim();
    Vec a(da);
    if (detail::uniform(seed, detail::Purpose::Behaviour, episode, step, 0, 0, 1) < behaviour.random_prob) {
      for (int d = 0; d < da; ++d)
        a[d] =
            detail::uniform(seed, detail::Purpose::Behaviour, episode, step, static_cast<std::uint32_t>(d + 1), -1, 1);
    } else {
      a = behaviour.expert_scale * expert(state);
      if (behaviour.noise_std > 0)
        for (int d = 0; d < da; ++d)
          a[d] += behaviour.noise_std *
                  detail::normal(seed, detail::Purpose::BehaviourNoise, episode, step, static_cast<std::uint32_t>(d));
    }
    return a.cwiseMax(-kActionLimit).cwiseMin(kActionLimit);
  }
};

}  // namespace control
