// SPDX-License-Identifier: Apache-2.0
#pragma once
// Policy evaluation for the offline-RL example: batched rollouts and D4RL-normalised scores.
//
// evaluate() runs E episodes side by side: at each step the policy is called once with all E
// current states as the rows of a row-major matrix (so a neural policy runs one batch per step)
// and returns E actions in [-1, 1]^da. Row r is always episode r, whose first state is
// env.reset(seed, r): the result depends on the seed and the policy, not on the batch size. A
// policy may take (states) or (states, t); an episode that has terminated keeps its last state
// in the batch and its actions are ignored, so the batch shape never changes.
//
// normalised_score(R) = 100 (R - R_random) / (R_expert - R_random), D4RL's convention, with the
// reference returns measured by reference_returns(): the random and the expert controllers over
// kReferenceEpisodes episodes from kReferenceSeed.

#include <cmath>
#include <concepts>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <rtb/error.hpp>
#include <rtb/space.hpp>

#include "controllers.hpp"
#include "envs.hpp"

namespace control {

struct EvalConfig {
  std::size_t episodes = 10;
  std::uint64_t seed = 0;  ///< reset seed: episode r starts at env.reset(seed, r)
  bool record = false;     ///< keep each episode's states (its length + 1 rows) in the result
};

struct EvalResult {
  double mean_return = 0;
  double std_error = 0;                              ///< sample standard deviation of the returns / sqrt(episodes)
  std::vector<double> returns;                       ///< undiscounted return of each episode
  std::vector<int> lengths;                          ///< steps of each episode (horizon unless it terminated)
  std::vector<rtb::RowMatrix<double>> trajectories;  ///< with record: states s_0 .. s_T per episode
};

namespace detail {
inline void mean_and_error(EvalResult& r) {
  const auto n = static_cast<double>(r.returns.size());
  double sum = 0, sq = 0;
  for (double x : r.returns) sum += x;
  r.mean_return = sum / n;
  for (double x : r.returns) sq += (x - r.mean_return) * (x - r.mean_return);
  r.std_error = n > 1 ? std::sqrt(sq / (n - 1) / n) : 0.0;
}
}  // namespace detail

/// Rolls `policy` out in `env` for cfg.episodes episodes in parallel; see the file comment.
template <Environment E, class Policy>
EvalResult evaluate(const E& env, Policy&& policy, const EvalConfig& cfg = {}) {
  if (cfg.episodes == 0)
    throw rtb::InvalidArgumentError("evaluate: episodes = 0; evaluate at least one episode (EvalConfig::episodes)");
  const auto n = static_cast<rtb::Index>(cfg.episodes);
  const int ds = env.state_dim(), da = env.action_dim(), horizon = env.horizon();
  rtb::RowMatrix<double> states(n, ds);
  for (rtb::Index r = 0; r < n; ++r) states.row(r) = env.reset(cfg.seed, static_cast<std::uint64_t>(r)).transpose();
  EvalResult out;
  out.returns.assign(cfg.episodes, 0.0);
  out.lengths.assign(cfg.episodes, horizon);
  std::vector<bool> done(cfg.episodes, false);
  std::vector<std::vector<double>> path(cfg.record ? cfg.episodes : 0);
  auto record = [&](rtb::Index r) {
    if (cfg.record)
      for (int c = 0; c < ds; ++c) path[static_cast<std::size_t>(r)].push_back(states(r, c));
  };
  for (rtb::Index r = 0; r < n; ++r) record(r);
  for (int t = 0; t < horizon; ++t) {
    const rtb::ConstMatrixView<double> view(states.data(), n, ds);
    rtb::RowMatrix<double> actions;
    if constexpr (std::is_invocable_v<Policy&, const rtb::ConstMatrixView<double>&, int>)
      actions = policy(view, t);
    else
      actions = policy(view);
    if (actions.rows() != n || actions.cols() != da)
      throw rtb::ShapeError(rtb::detail::message("evaluate(", env.name(), "): the policy returned ", actions.rows(),
                                                 " x ", actions.cols(), " actions at step ", t, "; expected ", n, " x ",
                                                 da, " (one row per state it was given)"));
    for (rtb::Index r = 0; r < n; ++r) {
      const auto e = static_cast<std::size_t>(r);
      if (done[e]) continue;
      if (!actions.row(r).allFinite())
        throw rtb::NonFiniteError(rtb::detail::message("evaluate(", env.name(), "): the policy's action for episode ",
                                                       r, " at step ", t, " is not finite; check the policy"));
      const Transition tr = env.step(states.row(r).transpose(), actions.row(r).transpose());
      states.row(r) = tr.next_state.transpose();
      out.returns[e] += tr.reward;
      record(r);
      if (tr.terminal) done[e] = true, out.lengths[e] = t + 1;
    }
  }
  if (cfg.record)
    for (std::size_t e = 0; e < cfg.episodes; ++e)
      out.trajectories.emplace_back(rtb::ConstMatrixView<double>(path[e].data(), out.lengths[e] + 1, ds));
  detail::mean_and_error(out);
  return out;
}

/// A controller as a batch policy: row r of the states is episode r. The policy refers to `c`,
/// which must outlive it.
template <Environment E>
auto controller_policy(const Controller<E>& c) {
  return [&c](const rtb::ConstMatrixView<double>& states, int t) {
    rtb::RowMatrix<double> a(states.rows(), c.env.action_dim());
    for (rtb::Index r = 0; r < states.rows(); ++r)
      a.row(r) = c.act(states.row(r).transpose(), static_cast<std::uint64_t>(r), t).transpose();
    return a;
  };
}

inline constexpr std::size_t kReferenceEpisodes = 200;
inline constexpr std::uint64_t kReferenceSeed = 1234567;

/// The returns a normalised score is measured against.
struct ReferenceReturns {
  double random = 0, expert = 0;
  double random_se = 0, expert_se = 0;
};

/// Mean returns of the random and expert controllers (evaluation seed `seed`, controller seed
/// seed + 1) over `episodes` episodes.
template <Environment E>
ReferenceReturns reference_returns(const E& env, std::size_t episodes = kReferenceEpisodes,
                                   std::uint64_t seed = kReferenceSeed) {
  const Controller<E> random(env, kRandomBehaviour, seed + 1), expert(env, kExpertBehaviour, seed + 1);
  const EvalResult r = evaluate(env, controller_policy(random), {episodes, seed, false});
  const EvalResult x = evaluate(env, controller_policy(expert), {episodes, seed, false});
  return {r.mean_return, x.mean_return, r.std_error, x.std_error};
}

/// 100 (R - R_random) / (R_expert - R_random).
inline double normalised_score(double R, double R_random, double R_expert) {
  if (!(R_expert != R_random))
    throw rtb::InvalidArgumentError(rtb::detail::message("normalised_score: R_expert = R_random = ", R_random,
                                                         "; the reference returns must differ"));
  return 100 * (R - R_random) / (R_expert - R_random);
}
inline double normalised_score(double R, const ReferenceReturns& ref) {
  return normalised_score(R, ref.random, ref.expert);
}

}  // namespace control
