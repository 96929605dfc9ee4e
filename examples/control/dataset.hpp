// SPDX-License-Identifier: Apache-2.0
#pragma once
// D4RL-style behaviour data sets for the offline-RL example: generation, .npy files, checks.
//
// A data set is N transitions (s, a, r, s', terminal, timeout) stored as row-major matrices, so
// rows hand straight to rtb::ConstMatrixView<double> (states_view() etc.). Actions are in env
// units, [-1, 1]^da (in fact within +-kActionLimit = 0.99, so arctanh is finite). Kinds:
//   random         uniform actions
//   medium         medium_behaviour(env): the expert degraded to a normalised score of about 30-60
//   expert         the task's expert controller
//   medium_replay  the replay buffer of an agent learning up to medium: a quarter of the episodes
//                  at each of the levels random, 1/3, 2/3 and medium (replay_behaviour)
// make_dataset(env, kind, episodes, seed) rolls whole episodes (horizon() steps unless one
// terminates): episode i starts at env.reset(seed, i) and its controller draws from seed's
// Behaviour streams, so the same seed gives the same bytes. timeouts[i] = 1 on the last step of
// an episode that ran to the horizon (D4RL's `timeouts`), terminals[i] = 1 on a true termination.
//
// Files: <dir>/{states, actions, rewards, next_states, terminals, timeouts}.npy, float64 matrices
// [N, ds] / [N, da], rewards [N] float64, terminals and timeouts [N] int32, each written
// atomically by rtb's npy writer; numpy.load reads them.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include <Eigen/Core>
#include <rtb/error.hpp>
#include <rtb/io/npy.hpp>
#include <rtb/space.hpp>

#include "controllers.hpp"
#include "envs.hpp"

namespace control {

enum class DataKind { Random, Medium, Expert, MediumReplay };

inline std::string to_string(DataKind k) {
  switch (k) {
    case DataKind::Random:
      return "random";
    case DataKind::Medium:
      return "medium";
    case DataKind::Expert:
      return "expert";
    case DataKind::MediumReplay:
      return "medium_replay";
  }
  return "?";
}
/// "random", "medium", "expert", "medium_replay" (or D4RL's "medium-replay").
inline DataKind parse_data_kind(std::string_view s) {
  if (s == "random") return DataKind::Random;
  if (s == "medium") return DataKind::Medium;
  if (s == "expert") return DataKind::Expert;
  if (s == "medium_replay" || s == "medium-replay") return DataKind::MediumReplay;
  throw rtb::InvalidArgumentError(
      rtb::detail::message("data kind '", s, "' is unknown; use random, medium, expert or medium_replay"));
}

struct Dataset {
  rtb::RowMatrix<double> states, actions, next_states;  ///< [N, ds], [N, da], [N, ds]
  Eigen::VectorXd rewards;                              ///< [N]
  Eigen::VectorXi terminals, timeouts;                  ///< [N], 0 or 1

  rtb::Index size() const { return states.rows(); }
  rtb::ConstMatrixView<double> states_view() const { return {states.data(), states.rows(), states.cols()}; }
  rtb::ConstMatrixView<double> actions_view() const { return {actions.data(), actions.rows(), actions.cols()}; }
  rtb::ConstMatrixView<double> next_states_view() const {
    return {next_states.data(), next_states.rows(), next_states.cols()};
  }
};

/// The behaviour of episode `episode` of `episodes` in a data set of `kind`.
template <Environment E>
Behaviour dataset_behaviour(const E& env, DataKind kind, std::size_t episode, std::size_t episodes) {
  switch (kind) {
    case DataKind::Random:
      return kRandomBehaviour;
    case DataKind::Medium:
      return medium_behaviour(env);
    case DataKind::Expert:
      return kExpertBehaviour;
    case DataKind::MediumReplay:
      return replay_behaviour(env, static_cast<double>(4 * episode / episodes) / 3.0);
  }
  return kRandomBehaviour;
}

/// `episodes` episodes of `kind` behaviour in `env`, reproducible by `seed`; see the file comment.
template <Environment E>
Dataset make_dataset(const E& env, DataKind kind, std::size_t episodes, std::uint64_t seed) {
  if (episodes == 0) throw rtb::InvalidArgumentError("make_dataset: episodes = 0; ask for at least one episode");
  const int ds = env.state_dim(), da = env.action_dim(), horizon = env.horizon();
  const auto cap = static_cast<rtb::Index>(episodes) * horizon;
  Dataset d;
  d.states.resize(cap, ds), d.next_states.resize(cap, ds), d.actions.resize(cap, da);
  d.rewards.resize(cap), d.terminals.resize(cap), d.timeouts.resize(cap);
  rtb::Index n = 0;
  for (std::size_t e = 0; e < episodes; ++e) {
    const Controller<E> c(env, dataset_behaviour(env, kind, e, episodes), seed);
    Vec s = env.reset(seed, e);
    for (int t = 0; t < horizon; ++t, ++n) {
      const Vec a = c.act(s, e, t);
      const Transition tr = env.step(s, a);
      d.states.row(n) = s.transpose(), d.actions.row(n) = a.transpose(),
      d.next_states.row(n) = tr.next_state.transpose();
      d.rewards[n] = tr.reward, d.terminals[n] = tr.terminal ? 1 : 0, d.timeouts[n] = !tr.terminal && t + 1 == horizon;
      s = tr.next_state;
      if (tr.terminal) {
        ++n;
        break;
      }
    }
  }
  d.states.conservativeResize(n, ds), d.next_states.conservativeResize(n, ds), d.actions.conservativeResize(n, da);
  d.rewards.conservativeResize(n), d.terminals.conservativeResize(n), d.timeouts.conservativeResize(n);
  return d;
}

namespace detail {
inline void check_rows(const char* array, rtb::Index rows, rtb::Index want) {
  if (rows != want)
    throw rtb::ShapeError(rtb::detail::message("dataset: ", array, " has ", rows, " rows but states has ", want,
                                               "; every array needs one row per transition"));
}
inline void check_cols(const char* array, rtb::Index cols, int want, const std::string& env) {
  if (cols != want)
    throw rtb::ShapeError(rtb::detail::message("dataset: ", array, " has ", cols, " columns; ", env, " needs ", want,
                                               "; was the data set made for another task?"));
}
template <class M>
void check_finite(const char* array, const M& m) {
  for (rtb::Index r = 0; r < m.rows(); ++r)
    for (rtb::Index c = 0; c < m.cols(); ++c)
      if (!std::isfinite(m(r, c)))
        throw rtb::NonFiniteError(rtb::detail::message("dataset: ", array, " row ", r, " column ", c, " is ", m(r, c),
                                                       "; drop or repair that transition"));
}
inline void check_flags(const char* array, const Eigen::VectorXi& v) {
  for (rtb::Index r = 0; r < v.size(); ++r)
    if (v[r] != 0 && v[r] != 1)
      throw rtb::InvalidArgumentError(
          rtb::detail::message("dataset: ", array, " row ", r, " is ", v[r], "; flags must be 0 or 1"));
}
}  // namespace detail

/// Throws a typed error naming the array and row of the first problem: EmptyBatchError (no
/// transitions), ShapeError (lengths or widths), NonFiniteError (NaN/inf), InvalidArgumentError
/// (an action outside [-1, 1], a flag other than 0/1).
template <Environment E>
void validate(const Dataset& d, const E& env) {
  const rtb::Index n = d.states.rows();
  if (n == 0) throw rtb::EmptyBatchError("dataset: no transitions; generate or load a non-empty data set");
  detail::check_rows("actions", d.actions.rows(), n);
  detail::check_rows("rewards", d.rewards.size(), n);
  detail::check_rows("next_states", d.next_states.rows(), n);
  detail::check_rows("terminals", d.terminals.size(), n);
  detail::check_rows("timeouts", d.timeouts.size(), n);
  detail::check_cols("states", d.states.cols(), env.state_dim(), env.name());
  detail::check_cols("actions", d.actions.cols(), env.action_dim(), env.name());
  detail::check_cols("next_states", d.next_states.cols(), env.state_dim(), env.name());
  detail::check_finite("states", d.states);
  detail::check_finite("actions", d.actions);
  detail::check_finite("rewards", d.rewards);
  detail::check_finite("next_states", d.next_states);
  for (rtb::Index r = 0; r < n; ++r)
    for (rtb::Index c = 0; c < d.actions.cols(); ++c)
      if (std::abs(d.actions(r, c)) > 1)
        throw rtb::InvalidArgumentError(rtb::detail::message(
            "dataset: actions row ", r, " column ", c, " is ", d.actions(r, c),
            ", outside [-1, 1]; actions are in env units (the squashed policy output): clip or rescale them"));
  detail::check_flags("terminals", d.terminals);
  detail::check_flags("timeouts", d.timeouts);
}

/// Writes the six arrays to `dir` (created if needed), each file atomically.
inline void save_dataset(const Dataset& d, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const auto rows = static_cast<std::size_t>(d.size());
  auto matrix = [&](const char* name, const rtb::RowMatrix<double>& m) {
    rtb::write_npy(dir / (std::string(name) + ".npy"), {rows, static_cast<std::size_t>(m.cols())},
                   std::span<const double>(m.data(), static_cast<std::size_t>(m.size())));
  };
  matrix("states", d.states), matrix("actions", d.actions), matrix("next_states", d.next_states);
  rtb::write_npy(dir / "rewards.npy", {rows}, std::span<const double>(d.rewards.data(), rows));
  static_assert(sizeof(int) == sizeof(std::int32_t));
  auto flags = [&](const char* name, const Eigen::VectorXi& v) {
    rtb::write_npy(dir / (std::string(name) + ".npy"), {rows},
                   std::span<const std::int32_t>(reinterpret_cast<const std::int32_t*>(v.data()), rows));
  };
  flags("terminals", d.terminals), flags("timeouts", d.timeouts);
}

namespace detail {
inline rtb::NpyArray read_array(const std::filesystem::path& dir, const char* name, std::size_t dims) {
  const std::filesystem::path path = dir / (std::string(name) + ".npy");
  if (!std::filesystem::exists(path))
    throw rtb::IoError(
        rtb::detail::message("load_dataset: ", path.string(),
                             " is missing; a data set directory holds states, actions, rewards, "
                             "next_states, terminals and timeouts .npy files (save_dataset writes them)"));
  rtb::NpyArray a = rtb::read_npy(path);
  if (a.shape.size() != dims)
    throw rtb::ShapeError(rtb::detail::message("load_dataset: ", path.string(), " is ", a.shape.size(), "-D; expected ",
                                               dims, "-D (", dims == 1 ? "[N]" : "[N, width]", ")"));
  return a;
}
}  // namespace detail

/// Reads what save_dataset wrote (or the same arrays from numpy); checks each file's rank only.
inline Dataset load_dataset(const std::filesystem::path& dir) {
  Dataset d;
  auto matrix = [&](const char* name, rtb::RowMatrix<double>& m) {
    const rtb::NpyArray a = detail::read_array(dir, name, 2);
    const std::vector<double> v = a.to_vector<double>();
    m = rtb::ConstMatrixView<double>(v.data(), static_cast<rtb::Index>(a.shape[0]),
                                     static_cast<rtb::Index>(a.shape[1]));
  };
  matrix("states", d.states), matrix("actions", d.actions), matrix("next_states", d.next_states);
  const std::vector<double> r = detail::read_array(dir, "rewards", 1).to_vector<double>();
  d.rewards = Eigen::Map<const Eigen::VectorXd>(r.data(), static_cast<rtb::Index>(r.size()));
  auto flags = [&](const char* name, Eigen::VectorXi& v) {
    const std::vector<int> f = detail::read_array(dir, name, 1).to_vector<int>();
    v = Eigen::Map<const Eigen::VectorXi>(f.data(), static_cast<rtb::Index>(f.size()));
  };
  flags("terminals", d.terminals), flags("timeouts", d.timeouts);
  return d;
}

/// load_dataset, then validate against `env`.
template <Environment E>
Dataset load_dataset(const std::filesystem::path& dir, const E& env) {
  Dataset d = load_dataset(dir);
  validate(d, env);
  return d;
}

}  // namespace control
