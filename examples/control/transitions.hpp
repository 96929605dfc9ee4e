// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// An offline-RL data set as views of row-major arrays (nothing is copied):
///
///     states [N, ds], actions [N, da], rewards [N], next_states [N, ds], terminals [N]
///
/// Actions are in the environment's units, [−1, 1] (tanh of the diffusion's arctanh-space action).
/// `check_transitions` is the door every trainer passes through: lengths, finiteness (row by
/// row, naming the row and the field), actions inside [−1, 1] and terminals in {0, 1}.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include <rtb/error.hpp>
#include <rtb/math/philox.hpp>

#include "../common/random_index.hpp"

namespace control {

using rtb::Index;

template <class S>
struct Transitions {
  Index state_dim = 0;
  Index action_dim = 0;
  std::span<const S> states;       ///< [N, state_dim]
  std::span<const S> actions;      ///< [N, action_dim], in [−1, 1]
  std::span<const S> rewards;      ///< [N]
  std::span<const S> next_states;  ///< [N, state_dim]
  std::span<const S> terminals;    ///< [N], 1 where the episode ended at s' (no bootstrap)

  /// N: rewards' length, or actions' rows where no rewards are given (policy fitting).
  Index size() const {
    if (!rewards.empty() || action_dim <= 0) return static_cast<Index>(rewards.size());
    return static_cast<Index>(actions.size()) / action_dim;
  }
};

namespace detail {

template <class S>
void check_field(const char* who, const char* field, std::span<const S> v, Index n, Index cols, const char* fix) {
  if (static_cast<Index>(v.size()) != n * cols)
    throw rtb::ShapeError(rtb::detail::message(who, ": ", field, " has ", v.size(), " values, expected ", n, " rows x ",
                                               cols, " = ", n * cols, " (one row per transition)"));
  for (Index r = 0; r < n; ++r)
    for (Index c = 0; c < cols; ++c)
      if (!std::isfinite(v[static_cast<std::size_t>(r * cols + c)]))
        throw rtb::NonFiniteError(rtb::detail::message(who, ": ", field, " row ", r, " of ", n, " column ", c, " is ",
                                                       v[static_cast<std::size_t>(r * cols + c)], "; ", fix));
}

}  // namespace detail

/// Throws rtb::ShapeError / NonFiniteError / InvalidArgumentError naming the field and row;
/// `need_next = false` checks states and actions only (what a policy fit reads).
template <class S>
void check_transitions(const char* who, const Transitions<S>& d, bool need_next = true) {
  const Index n = d.size();
  if (n == 0) throw rtb::EmptyBatchError(rtb::detail::message(who, ": the data set has no transitions"));
  if (d.state_dim <= 0 || d.action_dim <= 0)
    throw rtb::InvalidArgumentError(rtb::detail::message(who, ": state_dim and action_dim must be positive, got ",
                                                         d.state_dim, " and ", d.action_dim));
  const char* drop = "drop or repair that transition before training";
  detail::check_field(who, "states", d.states, n, d.state_dim, drop);
  detail::check_field(who, "actions", d.actions, n, d.action_dim, drop);
  if (need_next) {
    detail::check_field(who, "rewards", d.rewards, n, Index{1}, drop);
    detail::check_field(who, "next_states", d.next_states, n, d.state_dim, drop);
    detail::check_field(who, "terminals", d.terminals, n, Index{1}, drop);
  }
  for (Index r = 0; r < n; ++r) {
    for (Index c = 0; c < d.action_dim; ++c) {
      const S a = d.actions[static_cast<std::size_t>(r * d.action_dim + c)];
      if (a < S(-1) || a > S(1))
        throw rtb::InvalidArgumentError(rtb::detail::message(
            who, ": actions row ", r, " column ", c, " is ", a,
            ", outside [-1, 1]; pass actions in the environment's units (tanh of an arctanh-space action)"));
    }
    if (need_next) {
      const S t = d.terminals[static_cast<std::size_t>(r)];
      if (t != S(0) && t != S(1))
        throw rtb::InvalidArgumentError(
            rtb::detail::message(who, ": terminals row ", r, " is ", t, ", expected 0 or 1"));
    }
  }
}

/// state_dim, after checking that both dimensions are positive (for constructors' init lists).
inline Index checked_dims(const char* who, Index state_dim, Index action_dim) {
  if (state_dim <= 0 || action_dim <= 0)
    throw rtb::InvalidArgumentError(rtb::detail::message(who, ": state_dim and action_dim must be positive, got ",
                                                         state_dim, " and ", action_dim));
  return state_dim;
}

/// Row j of minibatch `iteration`: uniform over [0, n) from Philox keyed by (seed, stream).
using examples::sample_row;

}  // namespace control
