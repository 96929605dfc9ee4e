// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// What a trainer checkpoint holds and how it is written and read: the posterior's trained
/// parameters, the learned log Z table, both optimisers' moments, the RNG position (seed,
/// iteration), the replay buffer (end states, conditions, log r) and counters. Never the prior:
/// it is frozen and comes from the caller. Written atomically through CheckpointWriter; read all
/// or nothing (everything is checked before anything changes).

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/error.hpp"
#include "rtb/net/adam.hpp"
#include "rtb/sampling/replay_buffer.hpp"
#include "rtb/train/checkpoint.hpp"

namespace rtb::detail {

/// The layout version of a trainer checkpoint's sections (inside the container's own version).
inline constexpr std::int64_t kTrainerStateVersion = 2;

/// References to the parts of a trainer that a checkpoint saves and restores.
template <class S, class V, class C, class Space>
struct TrainerState {
  std::span<S> posterior;  ///< in the space
  Adam<S, Space>& adam;
  Adam<S>& log_z_adam;
  std::vector<S>& log_z;
  std::uint64_t& seed;
  std::int64_t& iteration;
  std::int64_t& skipped_total;
  ReplayBuffer<V, S, C>& replay;
  std::vector<std::int64_t> meta;  ///< shapes a checkpoint must match: see kMetaNames
  const char* objective;
};

inline constexpr const char* kMetaNames[7] = {"parameters",      "steps",          "state dimensions", "batch size",
                                              "replay capacity", "condition columns", "log Z entries"};

template <class Space, class T>
std::vector<T> to_host(std::span<const T> a) {
  std::vector<T> h(a.size());
  Space::download(std::span<T>(h), a);
  return h;
}

template <class S, class V, class C, class Space>
void save_trainer_state(const TrainerState<S, V, C, Space>& st, const std::string& path) {
  CheckpointWriter w;
  w.add_scalar<std::int64_t>("trainer_version", kTrainerStateVersion);
  w.add("meta", std::span<const std::int64_t>(st.meta));
  w.add("objective", std::span<const char>(st.objective, std::char_traits<char>::length(st.objective)));
  const auto post = to_host<Space>(std::span<const S>(st.posterior));
  w.add("posterior", std::span<const S>(post));
  w.add("log_z", std::span<const S>(st.log_z));
  const auto m = to_host<Space>(std::as_const(st.adam).first_moment());
  const auto v = to_host<Space>(std::as_const(st.adam).second_moment());
  w.add("adam.m", std::span<const S>(m));
  w.add("adam.v", std::span<const S>(v));
  w.add_scalar<std::int64_t>("adam.steps", st.adam.steps());
  w.add("log_z_adam.m", std::as_const(st.log_z_adam).first_moment());
  w.add("log_z_adam.v", std::as_const(st.log_z_adam).second_moment());
  w.add_scalar<std::int64_t>("log_z_adam.steps", st.log_z_adam.steps());
  w.add_scalar<std::uint64_t>("rng.seed", st.seed);
  w.add_scalar<std::int64_t>("iteration", st.iteration);
  w.add_scalar<std::int64_t>("skipped_total", st.skipped_total);
  w.add("replay.x", std::as_const(st.replay).raw_states());
  w.add("replay.c", std::as_const(st.replay).raw_conditions());
  w.add("replay.log_r", std::as_const(st.replay).raw_log_r());
  const std::int64_t rs[2] = {st.replay.size(), st.replay.cursor()};
  w.add("replay.state", std::span<const std::int64_t>(rs));
  w.commit(path);
}

template <class S, class V, class C, class Space>
void load_trainer_state(TrainerState<S, V, C, Space>& st, const std::string& path) {
  CheckpointReader r(path);
  if (!r.has("trainer_version") || r.scalar<std::int64_t>("trainer_version") != kTrainerStateVersion)
    throw CheckpointError(detail::message("checkpoint ", path, " holds trainer state version ",
                                          r.has("trainer_version") ? r.scalar<std::int64_t>("trainer_version") : 1,
                                          ", this build reads version ", kTrainerStateVersion,
                                          "; resume it with the rtb that wrote it, or start a new run"));
  const auto meta = r.array<std::int64_t>("meta", static_cast<std::ptrdiff_t>(st.meta.size()));
  for (std::size_t i = 0; i < st.meta.size(); ++i)
    if (meta[i] != st.meta[i])
      throw CheckpointError(detail::message("checkpoint ", path, " was written with ", meta[i], " ", kMetaNames[i],
                                            ", this trainer has ", st.meta[i], "; build the trainer as it was saved"));
  const auto obj = r.array<char>("objective");
  if (std::string(obj.begin(), obj.end()) != st.objective)
    throw CheckpointError(detail::message("checkpoint ", path, " was written by objective '",
                                          std::string(obj.begin(), obj.end()), "', this trainer runs '", st.objective,
                                          "'"));
  const auto p = r.array<S>("posterior", static_cast<std::ptrdiff_t>(st.posterior.size()));
  for (S v : p)
    if (!std::isfinite(static_cast<double>(v)))
      throw CheckpointError(detail::message("checkpoint ", path, " holds non-finite posterior parameters"));
  const auto log_z = r.array<S>("log_z", static_cast<std::ptrdiff_t>(st.log_z.size()));
  const auto m = r.array<S>("adam.m", st.adam.size());
  const auto v = r.array<S>("adam.v", st.adam.size());
  const auto zm = r.array<S>("log_z_adam.m", st.log_z_adam.size());
  const auto zv = r.array<S>("log_z_adam.v", st.log_z_adam.size());
  auto check = [&](const std::vector<S>& values, const char* name, bool non_negative) {
    for (S x : values)
      if (!std::isfinite(static_cast<double>(x)) || (non_negative && x < S(0)))
        throw CheckpointError(detail::message("checkpoint ", path, " holds ", non_negative ? "a negative or " : "a ",
                                              "non-finite value in '", name, "'; restore it from a copy or start a new run"));
  };
  check(log_z, "log_z", false);
  check(m, "adam.m", false);
  check(v, "adam.v", true);
  check(zm, "log_z_adam.m", false);
  check(zv, "log_z_adam.v", true);
  const auto rx = r.array<V>("replay.x", static_cast<std::ptrdiff_t>(st.replay.raw_states().size()));
  const auto rc = r.array<C>("replay.c", static_cast<std::ptrdiff_t>(st.replay.raw_conditions().size()));
  const auto rl = r.array<S>("replay.log_r", static_cast<std::ptrdiff_t>(st.replay.raw_log_r().size()));
  const auto rs = r.array<std::int64_t>("replay.state", 2);
  const auto adam_steps = r.scalar<std::int64_t>("adam.steps");
  const auto z_steps = r.scalar<std::int64_t>("log_z_adam.steps");
  const auto seed = r.scalar<std::uint64_t>("rng.seed");
  const auto iteration = r.scalar<std::int64_t>("iteration");
  const auto skipped = r.scalar<std::int64_t>("skipped_total");
  st.replay.restore(rs[0], rs[1]);  // validates before anything changes below
  Space::upload(st.posterior, std::span<const S>(p));
  Space::upload(st.adam.first_moment(), std::span<const S>(m));
  Space::upload(st.adam.second_moment(), std::span<const S>(v));
  st.adam.set_steps(adam_steps);
  std::copy(zm.begin(), zm.end(), st.log_z_adam.first_moment().begin());
  std::copy(zv.begin(), zv.end(), st.log_z_adam.second_moment().begin());
  st.log_z_adam.set_steps(z_steps);
  std::copy(rx.begin(), rx.end(), st.replay.raw_states().begin());
  std::copy(rc.begin(), rc.end(), st.replay.raw_conditions().begin());
  std::copy(rl.begin(), rl.end(), st.replay.raw_log_r().begin());
  std::copy(log_z.begin(), log_z.end(), st.log_z.begin());
  st.seed = seed;
  st.iteration = iteration;
  st.skipped_total = skipped;
}

}  // namespace rtb::detail
