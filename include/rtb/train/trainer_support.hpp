// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The trainer's checks at the door and its small helpers: configuration validation, the
/// condition width a problem needs, per-row log Z entries, replayed rows, evaluations, and the
/// ConditionSource that lets train() run conditional problems.

#include <concepts>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "rtb/concepts/noise_process.hpp"
#include "rtb/concepts/reward.hpp"
#include "rtb/detail/memory_limit.hpp"
#include "rtb/error.hpp"
#include "rtb/net/adam.hpp"
#include "rtb/objective/objective.hpp"
#include "rtb/sampling/replay_buffer.hpp"
#include "rtb/train/trainer_buffers.hpp"
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

/// A rate that must be positive and finite in the trainer's scalar type S (1e300 is finite as a
/// double but infinite as a float).
template <class S>
void check_rate(double v, const char* name) {
  if (!(v > 0) || !std::isfinite(static_cast<double>(static_cast<S>(v))) || !(static_cast<S>(v) > S(0)))
    throw InvalidArgumentError(message("Config::", name, " must be positive and finite in the trainer's scalar type, got ",
                                       v, "; the reference uses 1e-3 (network) and 0.1 (log Z)"));
}

/// Checks of a Config that do not depend on the process or the objective: sizes, fractions, and
/// that every real-valued knob is finite (a NaN cut-off or clip would silently switch it off).
template <class S>
void validate_config(const Config& c) {
  if (c.batch_size <= 0)
    throw EmptyBatchError(message("Config::batch_size must be positive, got ", c.batch_size));
  if (!(c.step_fraction > 0 && c.step_fraction <= 1))
    throw InvalidArgumentError(message("Config::step_fraction must be in (0, 1], got ", c.step_fraction));
  if (!(c.replay_fraction >= 0 && c.replay_fraction < 1))
    throw InvalidArgumentError(message("Config::replay_fraction must be in [0, 1), got ", c.replay_fraction));
  if (!std::isfinite(c.beta) || !std::isfinite(c.log_z_init) || !std::isfinite(c.kl_weight) ||
      !(c.loss_cutoff >= 0 && std::isfinite(c.loss_cutoff)) || !(c.max_grad_norm >= 0 && std::isfinite(c.max_grad_norm)))
    throw InvalidArgumentError(message("Config: beta, log_z_init and kl_weight must be finite, loss_cutoff and ",
                                       "max_grad_norm finite and non-negative (beta=", c.beta, ", log_z_init=", c.log_z_init,
                                       ", kl_weight=", c.kl_weight, ", loss_cutoff=", c.loss_cutoff,
                                       ", max_grad_norm=", c.max_grad_norm, ")"));
  check_rate<S>(c.learning_rate, "learning_rate");
  check_rate<S>(c.log_z_learning_rate, "log_z_learning_rate");
  if (!(c.decay.final_ratio >= 0 && c.decay.final_ratio <= 1))
    throw InvalidArgumentError(message("Config::decay.final_ratio must be in [0, 1], got ", c.decay.final_ratio));
  if (c.exploration.initial && !(*c.exploration.initial >= 0 && std::isfinite(*c.exploration.initial)))
    throw InvalidArgumentError(message("Config::exploration.initial must be finite and >= 0, got ", *c.exploration.initial,
                                       "; leave it unset for the process's default"));
  if (c.block_rows <= 0) throw InvalidArgumentError(message("Config::block_rows must be positive, got ", c.block_rows));
  if (c.replay_capacity < 0 || c.group_size < 0)
    throw InvalidArgumentError(message("Config::replay_capacity and group_size must be >= 0, got ", c.replay_capacity,
                                       " and ", c.group_size));
  if (c.prior_behaviour_every < 0)
    throw InvalidArgumentError(message("Config::prior_behaviour_every must be >= 0, got ", c.prior_behaviour_every));
  if (c.log_z_table < 1)
    throw InvalidArgumentError(message("Config::log_z_table must be >= 1 (1 = one learned log Z), got ", c.log_z_table));
  if (c.condition_dim < 0)
    throw InvalidArgumentError(message("Config::condition_dim must be >= 0, got ", c.condition_dim));
}

/// The trainer's workspace must fit the machine, checked before anything is allocated.
template <class V, class S, class C>
void check_trainer_memory(const Config& c, Index state_dim, Index output_dim, Index steps, Index condition_dim,
                          Index replay_rows, Index threads) {
  const auto B = static_cast<std::uint64_t>(c.batch_size), D = static_cast<std::uint64_t>(state_dim);
  const auto Dc = static_cast<std::uint64_t>(condition_dim), T = static_cast<std::uint64_t>(steps);
  const bool stores = c.prior_behaviour_every > 0 || replay_rows > 0;  // stored trajectories: (T+1)·rows·D
  const auto rows = static_cast<std::uint64_t>(std::min(c.block_rows, c.batch_size));
  MemoryBudget m("RelativeTrajectoryBalance");
  m.add(B, D * sizeof(V) + Dc * sizeof(C) + 8 * sizeof(S) + 2 * sizeof(double) + 1)
      .add(stores ? (T + 1) * B : 0, D * sizeof(V))
      .add(static_cast<std::uint64_t>(c.replay_capacity), D * sizeof(V) + Dc * sizeof(C) + sizeof(S) + 16)
      .add(static_cast<std::uint64_t>(threads) * rows, 2 * D * sizeof(V) + (3 * static_cast<std::uint64_t>(output_dim) + 1) * sizeof(S));
  m.check(message("batch_size ", c.batch_size, ", replay_capacity ", c.replay_capacity, ", block_rows ", c.block_rows,
                  " and T = ", steps).c_str());
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

/// End points given to an off-policy step: one row of the process's width per batch row, each
/// one the process accepts as an end state (finite; inside its support).
template <class P, class V>
void check_end_points(const P& p, ConstMatrixView<V> x, Index rows) {
  if (x.rows() != rows || x.cols() != p.state_dim())
    throw ShapeError(message("step: end_states are ", x.rows(), "x", x.cols(), ", expected ", rows, "x", p.state_dim(),
                             " (one end point per batch row)"));
  if constexpr (std::floating_point<V>)
    for (Index i = 0; i < x.rows(); ++i)
      for (Index d = 0; d < x.cols(); ++d)
        if (!std::isfinite(x(i, d)))
          throw InvalidArgumentError(message("step: end_states row ", i, " column ", d, " is ", x(i, d),
                                             "; pass finite end points (drop or repair that row of the data)"));
  if constexpr (requires { p.check_end_states(x, "step end_states"); }) p.check_end_states(x, "step end_states");
}

/// Writes given end points into an engine shaped (0, B) and draws their trajectories backward.
template <class Engine>
void noise_given_ends(Engine& eng, const typename Engine::V* x, const math::NoiseKey& key) {
  using V = typename Engine::V;
  const auto n = static_cast<std::size_t>(eng.batch() * eng.process().state_dim());
  Engine::Space::upload(std::span<V>(eng.end_states().data(), n), std::span<const V>(x, n));
  eng.build_stored_backward(key);
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

/// Means over the used rows of log r and of Σ log p_φ − Σ log p_θ (the KL estimate), global.
template <class S, class R>
std::pair<double, double> batch_means(const ObjectiveBatch<S>& b, Index used, R& reduction) {
  double sums[2] = {0, 0};
  for (std::size_t i = 0; i < b.log_r.size(); ++i)
    if (b.valid[i]) {
      sums[0] += b.log_r[i];
      sums[1] += static_cast<double>(b.log_pf_post[i]) - b.log_pf_prior[i];
    }
  reduction.all_sum(sums);
  return {sums[0] / static_cast<double>(used), sums[1] / static_cast<double>(used)};
}

/// The table's one entry, or its mean.
template <class S>
double table_mean(const std::vector<S>& t) {
  if (t.size() == 1) return t[0];
  double s = 0;
  for (S v : t) s += v;
  return s / static_cast<double>(t.size());
}
/// v, if it is finite.
template <class S>
S finite(S v, const char* what) {
  if (!std::isfinite(static_cast<double>(v))) throw InvalidArgumentError(message(what, ": ", v, " is not finite"));
  return v;
}

/// One update of the learned log Z table: Adam, or gradient descent with the optimiser's (decayed)
/// learning rate (LogZOptimizer in train/config.hpp says why that is the default).
template <class S>
void update_log_z(LogZOptimizer optimizer, Adam<S>& adam, std::vector<S>& log_z, const std::vector<S>& grad) {
  if (optimizer == LogZOptimizer::Adam) {
    adam.step(std::span<S>(log_z), std::span<const S>(grad));
    return;
  }
  for (std::size_t e = 0; e < log_z.size(); ++e) log_z[e] -= adam.options().learning_rate * grad[e];
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

/// Checks a sample count at the door: positive, and its buffers within the machine's memory.
template <class V, class S>
void check_sample_count(Index n, Index state_dim, Index condition_dim, const char* what) {
  if (n <= 0) throw EmptyBatchError(message(what, ": n must be positive, got ", n));
  MemoryBudget m(what);
  m.add(static_cast<std::uint64_t>(n), 2 * static_cast<std::uint64_t>(state_dim) * sizeof(V) +
                                           static_cast<std::uint64_t>(condition_dim) * sizeof(V) + 6 * sizeof(S) + 1);
  m.check(message(n, " samples of ", state_dim, " values").c_str());
}

/// Rolls out n rows of `post` (conditions, if given, one row per sample) in a fresh engine, scored
/// under `prior` when given: what sample() and evaluate() return.
template <class Engine, class Post, class Prior, class R>
auto rollouts(Engine& eng, const Post& post, const Prior* prior, R& reward, double beta, Index n, std::uint64_t seed,
              const ConstMatrixView<typename Engine::C>* conditions) {
  using C = typename Engine::C;
  using Space = typename Engine::Space;
  const Index cond_dim = eng.condition_dim();
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
