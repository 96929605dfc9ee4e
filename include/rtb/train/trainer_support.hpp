// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The trainer's checks at the door and its small helpers: configuration validation, the
/// condition width a problem needs, per-row log Z entries, replayed rows, evaluations, and the
/// ConditionSource that lets train() run conditional problems.

#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "rtb/concepts/noise_process.hpp"
#include "rtb/concepts/reward.hpp"
#include "rtb/error.hpp"
#include "rtb/sampling/replay_buffer.hpp"
#include "rtb/train/config.hpp"
#include "rtb/train/evaluation.hpp"

namespace rtb {

/// Per-step conditions for train(): fn(MatrixView<C> out, std::int64_t iteration) fills one row
/// per batch row. Build one with rtb::conditions_from(fn).
template <class F>
struct ConditionSource {
  F fn;
  template <class M>
  void fill(M out, std::int64_t iteration) {
    fn(out, iteration);
  }
};
template <class F>
ConditionSource<std::decay_t<F>> conditions_from(F&& fn) {
  return {std::forward<F>(fn)};
}

namespace detail {

template <class T>
inline constexpr bool is_condition_source_v = false;
template <class F>
inline constexpr bool is_condition_source_v<ConditionSource<F>> = true;
template <class... T>
struct first_of {
  using type = void;
};
template <class T, class... Rest>
struct first_of<T, Rest...> {
  using type = std::remove_cvref_t<T>;
};

/// Checks of a Config that do not depend on the process or the objective.
inline void validate_config(const Config& c) {
  if (c.batch_size <= 0)
    throw EmptyBatchError(message("Config::batch_size must be positive, got ", c.batch_size));
  if (!(c.step_fraction > 0 && c.step_fraction <= 1))
    throw InvalidArgumentError(message("Config::step_fraction must be in (0, 1], got ", c.step_fraction));
  if (!(c.replay_fraction >= 0 && c.replay_fraction < 1))
    throw InvalidArgumentError(message("Config::replay_fraction must be in [0, 1), got ", c.replay_fraction));
  if (!std::isfinite(c.beta) || !std::isfinite(c.log_z_init) || c.loss_cutoff < 0 || c.max_grad_norm < 0)
    throw InvalidArgumentError(message("Config: beta and log_z_init must be finite and loss_cutoff, ",
                                       "max_grad_norm non-negative (beta=", c.beta, ", log_z_init=", c.log_z_init,
                                       ", loss_cutoff=", c.loss_cutoff, ")"));
  if (c.prior_behaviour_every < 0)
    throw InvalidArgumentError(message("Config::prior_behaviour_every must be >= 0, got ", c.prior_behaviour_every));
  if (c.log_z_table < 1)
    throw InvalidArgumentError(message("Config::log_z_table must be >= 1 (1 = one learned log Z), got ", c.log_z_table));
  if (c.condition_dim < 0)
    throw InvalidArgumentError(message("Config::condition_dim must be >= 0, got ", c.condition_dim));
}

/// Checks that depend on the objective and the process.
template <class Objective, class P>
void validate_for(const Config& c, Index condition_dim) {
  if (Objective::on_policy_only && c.replay_fraction > 0)
    throw InvalidArgumentError(message(Objective::name, " is on-policy only; set Config::replay_fraction = 0"));
  if (Objective::on_policy_only && c.prior_behaviour_every > 0)
    throw InvalidArgumentError(message(Objective::name, " is on-policy only; set Config::prior_behaviour_every = 0"));
  if (c.replay_fraction > 0 && !ReversibleNoiseProcess<P>)
    throw InvalidArgumentError("replay needs a process with a backward kernel (ReversibleNoiseProcess)");
  if (c.log_z_table > 1 && (c.log_z_column < 0 || c.log_z_column >= condition_dim))
    throw InvalidArgumentError(message("Config::log_z_column ", c.log_z_column, " is not one of the ", condition_dim,
                                       " condition columns; a log Z table reads its entry from a condition column"));
}

/// A model's condition_dim() if it declares one, else 0.
template <class M>
Index declared_condition_dim(const M& m) {
  if constexpr (requires { m.condition_dim(); })
    return m.condition_dim();
  else
    return 0;
}

/// The condition columns a problem has: what the process and nets read, or more if asked.
template <class P, class Post, class Prior>
Index resolve_condition_dim(const P& p, const Post& post, const Prior& prior, Index asked) {
  const Index need = std::max({declared_condition_dim(p), declared_condition_dim(post), declared_condition_dim(prior)});
  if (asked != 0 && asked < need)
    throw ShapeError(message("Config::condition_dim = ", asked, " but the process and denoisers read ", need,
                             " condition columns; leave it 0 or make it at least ", need));
  return asked == 0 ? need : asked;
}

template <class P>
double default_exploration(const P& p) {
  if constexpr (requires { p.default_exploration(); })
    return p.default_exploration();
  else
    return 0.0;
}

/// Conditions handed to the trainer: shape, and whatever the process checks itself.
template <class P, class C>
void check_conditions(const P& p, ConstMatrixView<C> c, Index rows, Index condition_dim, const char* what) {
  if (c.rows() != rows || c.cols() != condition_dim)
    throw ShapeError(message(what, ": conditions are ", c.rows(), "x", c.cols(), ", expected ", rows, "x",
                             condition_dim, " (one row per ", rows == 0 ? "sample" : "batch row", ")"));
  if constexpr (requires { p.check_conditions(c, what); }) p.check_conditions(c, what);
}

/// The log Z entry of row i: 0 for one learned log Z, else the integer in the condition column.
template <class C>
std::size_t log_z_entry(ConstMatrixView<C> cond, Index i, std::size_t entries, Index column) {
  if (entries == 1) return 0;
  return static_cast<std::size_t>(cond(i, column));
}
template <class C>
void check_log_z_entries(ConstMatrixView<C> cond, Index entries, Index column) {
  if (entries <= 1) return;
  for (Index i = 0; i < cond.rows(); ++i) {
    const C v = cond(i, column);
    if (!(static_cast<double>(v) >= 0 && static_cast<double>(v) < static_cast<double>(entries)) ||
        static_cast<double>(static_cast<Index>(v)) != static_cast<double>(v))
      throw InvalidArgumentError(message("conditions: row ", i, " column ", column, " holds ", v,
                                         ", not a log Z entry in [0, ", entries, "); give an integer condition id"));
  }
}

/// The batch's end states and conditions as the host (the reward, the replay buffer) sees them:
/// the engine's own memory in host space, else host copies fetched once per step.
template <class Space, class V, class C>
class HostMirror {
 public:
  static constexpr bool direct = std::is_same_v<Space, HostSpace>;
  void resize(std::size_t end, std::size_t conditions) {
    if (direct) return;
    end_.resize(end);
    cond_.resize(conditions);
  }
  /// After score(): copies x_T and the conditions to the host (nothing to do in host space).
  template <class Engine>
  void fetch(Engine& eng) {
    if constexpr (!direct) {
      Space::download(std::span<V>(end_), std::span<const V>(eng.end_states().data(), end_.size()));
      Space::download(std::span<C>(cond_), std::span<const C>(eng.conditions().data(), cond_.size()));
    }
  }
  template <class Engine>
  const V* end(Engine& eng) const {
    if constexpr (direct) return eng.end_states().data();
    else return end_.data();
  }
  template <class Engine>
  const C* conditions(Engine& eng) const {
    if constexpr (direct) return eng.conditions().data();
    else return cond_.data();
  }
  /// Host scratch for rows on their way into the space.
  V* end_scratch() { return end_.data(); }
  C* condition_scratch() { return cond_.data(); }

 private:
  std::vector<V> end_;
  std::vector<C> cond_;
};

/// Draws n_replay end points (and their conditions) from the buffer into rows n_on… of the engine.
template <class Engine, class V, class S, class C>
void replay_into(Engine& eng, ReplayBuffer<V, S, C>& replay, Index n_on, Index n_replay, const math::NoiseKey& key,
                 HostMirror<typename Engine::Space, V, C>& mirror) {
  using Space = typename Engine::Space;
  const Index D = replay.dim(), Dc = replay.condition_dim();
  if constexpr (std::is_same_v<Space, HostSpace>) {
    (void)mirror;
    replay.sample(n_replay, key, MatrixView<V>(eng.end_states().data() + n_on * D, n_replay, D),
                  MatrixView<C>(eng.conditions().data() + n_on * Dc, n_replay, Dc), nullptr);
  } else {
    V* host_end = mirror.end_scratch();
    C* host_cond = mirror.condition_scratch();
    replay.sample(n_replay, key, MatrixView<V>(host_end, n_replay, D), MatrixView<C>(host_cond, n_replay, Dc), nullptr);
    Space::upload(std::span<V>(eng.end_states().data() + n_on * D, static_cast<std::size_t>(n_replay * D)),
                  std::span<const V>(host_end, static_cast<std::size_t>(n_replay * D)));
    Space::upload(std::span<C>(eng.conditions().data() + n_on * Dc, static_cast<std::size_t>(n_replay * Dc)),
                  std::span<const C>(host_cond, static_cast<std::size_t>(n_replay * Dc)));
  }
}

/// ∂L/∂(log Z entry e) = Σ over rows with that entry of ∂L/∂log Z_i, summed over replicas, into
/// `table`; returns Σ |entries| (for the finiteness check). `acc` is scratch of the table's size.
template <class S, class C, class R>
double log_z_gradient(std::span<const double> d_rows, ConstMatrixView<C> cond, Index column, R& reduction,
                      std::vector<double>& acc, std::vector<S>& table) {
  std::fill(acc.begin(), acc.end(), 0.0);
  for (std::size_t i = 0; i < d_rows.size(); ++i) acc[log_z_entry(cond, static_cast<Index>(i), acc.size(), column)] += d_rows[i];
  reduction.all_sum(std::span<double>(acc));
  double total = 0;
  for (std::size_t e = 0; e < acc.size(); ++e) {
    table[e] = static_cast<S>(acc[e]);
    total += std::fabs(acc[e]);
  }
  return total;
}

/// The end states of an engine's last score(), on the host.
template <class Engine>
Samples<typename Engine::V> samples_of(Engine& eng) {
  using V = typename Engine::V;
  const Index n = eng.batch(), D = eng.process().state_dim();
  Samples<V> x = make_samples<V>(n, D);
  Engine::Space::download(std::span<V>(x.data(), static_cast<std::size_t>(n * D)),
                          std::span<const V>(eng.end_states().data(), static_cast<std::size_t>(n * D)));
  return x;
}

/// Samples (and, if `score`, the importance-sampling diagnostics) of an engine's last score().
template <class Engine, class R>
auto evaluation_of(Engine& eng, R& reward, double beta, bool score, const ConstMatrixView<typename Engine::C>* conditions) {
  using S = typename Engine::S;
  using V = typename Engine::V;
  using C = typename Engine::C;
  using Space = typename Engine::Space;
  const Index n = eng.batch();
  Evaluation<S, V> e;
  e.samples = samples_of(eng);
  if (!score) return e;
  std::vector<S> lp(static_cast<std::size_t>(n)), lq(static_cast<std::size_t>(n));
  Space::download(std::span<S>(lp), eng.log_post());
  Space::download(std::span<S>(lq), eng.log_prior());
  e.log_r.resize(static_cast<std::size_t>(n));
  const ConstMatrixView<V> x_end = view_of(std::as_const(e.samples));
  const ConstMatrixView<C> cond = conditions ? *conditions : ConstMatrixView<C>(nullptr, n, 0);
  call_log_reward(reward, x_end, cond, std::span<S>(e.log_r));
  std::vector<char> valid(static_cast<std::size_t>(n));
  check_log_rewards<V, S>(x_end, e.log_r, valid, ZeroRewardPolicy::Skip);
  e.log_weight.resize(static_cast<std::size_t>(n));
  double sum_lr = 0, sum_ratio = 0;
  Index used = 0;
  for (std::size_t i = 0; i < e.log_weight.size(); ++i) {
    e.log_weight[i] = static_cast<S>(beta * e.log_r[i] + lq[i] - lp[i]);
    sum_ratio += static_cast<double>(lp[i]) - lq[i];
    if (valid[i]) {
      sum_lr += e.log_r[i];
      ++used;
    }
  }
  e.mean_log_r = used ? sum_lr / static_cast<double>(used) : -std::numeric_limits<double>::infinity();
  e.mean_log_ratio = sum_ratio / static_cast<double>(n);
  e.log_partition = estimate_log_partition<S>(e.log_weight);
  return e;
}

/// Rolls out n rows of `post` (conditions, if given, one row per sample) in a fresh engine, scored
/// under `prior` when given: what sample() and evaluate() return.
template <class Engine, class Post, class Prior, class R>
auto rollouts(Engine& eng, const Post& post, const Prior* prior, R& reward, double beta, Index n, std::uint64_t seed,
              const ConstMatrixView<typename Engine::C>* conditions) {
  using C = typename Engine::C;
  using Space = typename Engine::Space;
  const Index cond_dim = eng.condition_dim();
  if (n <= 0) throw EmptyBatchError(message("sample/evaluate: n must be positive, got ", n));
  if (!conditions && cond_dim > 0)
    throw InvalidArgumentError(message("this problem reads ", cond_dim,
                                       " condition columns per row; pass one condition row per sample"));
  if (conditions) check_conditions(eng.process(), *conditions, n, cond_dim, "sample/evaluate");
  eng.shape(n, 0);
  if (conditions)
    Space::upload(std::span<C>(eng.conditions().data(), static_cast<std::size_t>(n * cond_dim)),
                  std::span<const C>(conditions->data(), static_cast<std::size_t>(n * cond_dim)));
  eng.score(post, prior, {seed, math::Stream::Evaluation, 0}, typename Engine::S(0));
  return evaluation_of(eng, reward, beta, prior != nullptr, conditions);
}

}  // namespace detail
}  // namespace rtb
