// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The trainer: fine-tunes a copy p_φ of a frozen diffusion prior p_θ so that p_φ(x) ∝ p_θ(x)·r(x)^β,
/// by driving δ(τ) = log Z + Σ_t log p_φ − Σ_t log p_θ − β·log r(x_T) to zero along trajectories
/// from any behaviour policy (on-policy, widened by exploration, or replayed end points re-noised
/// by the backward kernel). The gradient is the two-pass one of TrajectoryEngine: memory does not
/// grow with T.
///
///     rtb::RelativeTrajectoryBalance trainer(process, prior_net, reward, rtb::Config{.batch_size = 500});
///     for (int k = 0; k < 5000; ++k) trainer.step();
///     auto x = trainer.sample(2000, /*seed=*/1);
///
/// The posterior starts as an exact copy of the prior; the prior is held by value, never trained
/// and never written to checkpoints. `Objective` is RelativeTB (default), RelativeVarGrad or the
/// ReinforceKL baseline.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/concepts/reward.hpp"
#include "rtb/error.hpp"
#include "rtb/eval/log_partition.hpp"
#include "rtb/net/adam.hpp"
#include "rtb/objective/relative_tb.hpp"
#include "rtb/sampling/replay_buffer.hpp"
#include "rtb/train/checkpoint.hpp"
#include "rtb/train/config.hpp"
#include "rtb/train/trajectory_engine.hpp"

namespace rtb {

/// Samples and importance-sampling diagnostics of the current posterior.
template <class S, class V = S>
struct Evaluation {
  RowMatrix<V> samples;           ///< x_T, [n, D]
  std::vector<S> log_r;           ///< log r(x_T)
  std::vector<S> log_weight;      ///< β log r + Σ log p_θ − Σ log p_φ
  LogPartitionEstimate log_partition;
  double mean_log_r = 0;
  double mean_log_ratio = 0;      ///< KL(p_φ ‖ p_θ) estimate over trajectories
};

namespace detail {

/// Checks rewards: NaN and +∞ always throw; −∞ throws or is skipped by policy. Returns the
/// number skipped and sets valid[i].
template <class V, class S>
Index check_log_rewards(ConstMatrixView<V> x, std::span<const S> log_r, std::span<char> valid, ZeroRewardPolicy policy,
                        Index first_checked = 0) {
  Index skipped = 0;
  const auto B = static_cast<Index>(log_r.size());
  for (Index i = first_checked; i < B; ++i) {
    const S v = log_r[static_cast<std::size_t>(i)];
    valid[static_cast<std::size_t>(i)] = 1;
    if (std::isfinite(static_cast<double>(v))) continue;
    std::string xs;
    for (Index d = 0; d < std::min<Index>(x.cols(), 8); ++d)
      xs += (d ? ", " : "") + std::to_string(static_cast<double>(x(i, d)));
    if (x.cols() > 8) xs += ", ...";
    if (std::isnan(static_cast<double>(v)))
      throw NonFiniteError(message("log_reward: sample ", i, " of ", B, " is NaN (x = [", xs,
                                   "]); check the reward's domain"));
    if (v > 0)
      throw NonFiniteError(message("log_reward: sample ", i, " of ", B, " is +inf (x = [", xs,
                                   "]); the reward must be finite"));
    if (policy == ZeroRewardPolicy::Throw)
      throw ZeroRewardError(message("log_reward: sample ", i, " of ", B, " is -inf, i.e. r = 0 (x = [", xs,
                                    "]); make the reward positive on the sampler's support, or set "
                                    "Config::on_zero_reward = ZeroRewardPolicy::Skip to leave such samples out"));
    valid[static_cast<std::size_t>(i)] = 0;
    ++skipped;
  }
  return skipped;
}

}  // namespace detail

template <NoiseProcess P, Denoiser N, class R, class Objective = RelativeTB>
  requires Reward<R, typename P::Value, typename P::Scalar>
class RelativeTrajectoryBalance {
 public:
  using S = typename P::Scalar;
  using V = typename P::Value;

  RelativeTrajectoryBalance(P process, N prior, R reward, Config config = {})
      : process_(std::move(process)),
        prior_(std::move(prior)),
        posterior_(prior_),
        reward_(std::move(reward)),
        config_(config),
        engine_(process_, prior_, config.block_rows, config.threads),
        adam_(posterior_.num_params(), {static_cast<S>(config.learning_rate)}),
        log_z_adam_(1, {static_cast<S>(config.log_z_learning_rate)}),
        log_z_(static_cast<S>(config.log_z_init)),
        seed_(config.seed) {
    const Config& c = config_;
    if (c.batch_size <= 0)
      throw EmptyBatchError(detail::message("Config::batch_size must be positive, got ", c.batch_size));
    if (!(c.step_fraction > 0 && c.step_fraction <= 1))
      throw InvalidArgumentError(detail::message("Config::step_fraction must be in (0, 1], got ", c.step_fraction));
    if (!(c.replay_fraction >= 0 && c.replay_fraction < 1))
      throw InvalidArgumentError(detail::message("Config::replay_fraction must be in [0, 1), got ", c.replay_fraction));
    if (!std::isfinite(c.beta) || !std::isfinite(c.log_z_init) || c.loss_cutoff < 0 || c.max_grad_norm < 0)
      throw InvalidArgumentError(detail::message("Config: beta and log_z_init must be finite and loss_cutoff, ",
                                                 "max_grad_norm non-negative (beta=", c.beta, ", log_z_init=",
                                                 c.log_z_init, ", loss_cutoff=", c.loss_cutoff, ")"));
    if (Objective::on_policy_only && c.replay_fraction > 0)
      throw InvalidArgumentError(detail::message(Objective::name, " is on-policy only; set Config::replay_fraction = 0"));
    replay_max_ = static_cast<Index>(std::lround(c.replay_fraction * static_cast<double>(c.batch_size)));
    if (replay_max_ > 0) {
      if constexpr (!ReversibleNoiseProcess<P>)
        throw InvalidArgumentError("replay needs a process with a backward kernel (ReversibleNoiseProcess)");
      replay_ = ReplayBuffer<V, S>(c.replay_capacity, process_.state_dim(), c.replay_priority);
    }
    const auto B = static_cast<std::size_t>(c.batch_size);
    log_post_.resize(B);
    log_prior_.resize(B);
    log_r_.resize(B);
    weight_.resize(B);
    valid_.resize(B);
    grad_.resize(static_cast<std::size_t>(posterior_.num_params()));
    order_.resize(static_cast<std::size_t>(process_.num_steps()));
    if (c.prior_behaviour_every < 0)
      throw InvalidArgumentError(detail::message("Config::prior_behaviour_every must be >= 0, got ", c.prior_behaviour_every));
    if (Objective::on_policy_only && c.prior_behaviour_every > 0)
      throw InvalidArgumentError(detail::message(Objective::name, " is on-policy only; set Config::prior_behaviour_every = 0"));
    // Size every buffer for every batch composition now, so step() never allocates.
    if (c.prior_behaviour_every > 0) engine_.shape(posterior_, 0, c.batch_size);
    if (replay_max_ > 0) engine_.shape(posterior_, c.batch_size - replay_max_, replay_max_);
    engine_.shape(posterior_, c.batch_size, 0);
  }

  /// One training step: roll out / replay, score, back-propagate, update. Throws (leaving the
  /// parameters untouched) on a NaN reward, a −∞ reward under the throwing policy, or a
  /// non-finite gradient.
  StepStats step() {
    const Config& c = config_;
    const std::int64_t k = iteration_;
    StepStats st;
    st.iteration = k;
    const S expl = Objective::on_policy_only ? S(0) : static_cast<S>(c.exploration(k));
    st.exploration_std = expl;
    // Behaviour: the prior every k-th step (all rows given), else on-policy rows plus replay.
    st.from_prior = c.prior_behaviour_every > 0 && k % c.prior_behaviour_every == 0;
    const Index n_replay =
        (!st.from_prior && replay_max_ > 0 && replay_.size() >= c.batch_size) ? replay_max_ : 0;
    const Index n_on = st.from_prior ? 0 : c.batch_size - n_replay;
    engine_.shape(posterior_, n_on, c.batch_size - n_on);
    const math::NoiseKey rollout{seed_, math::Stream::Rollout, static_cast<std::uint64_t>(k)};
    if (st.from_prior) engine_.fill_given_by_rollout(prior_, rollout, expl);
    if (n_replay > 0) {
      if constexpr (ReversibleNoiseProcess<P>) {
        auto end = engine_.end_states();
        replay_.sample(n_replay, {seed_, math::Stream::Replay, static_cast<std::uint64_t>(k)},
                       MatrixView<V>(&end(n_on, 0), n_replay, end.cols()), nullptr);
        engine_.fill_given_backward({seed_, math::Stream::Backward, static_cast<std::uint64_t>(k)});
      }
    }
    st.replayed = n_replay;
    engine_.pass1(posterior_, &prior_, rollout, expl, log_post_.data(), log_prior_.data());
    auto end = engine_.end_states();
    const ConstMatrixView<V> x_end(end.data(), end.rows(), end.cols());
    reward_.log_reward(x_end, std::span<S>(log_r_));
    st.skipped = detail::check_log_rewards<V, S>(x_end, log_r_, valid_, c.on_zero_reward);
    if (st.skipped == c.batch_size)
      throw ZeroRewardError(detail::message("log_reward: all ", c.batch_size, " samples of iteration ", k,
                                            " have r = 0; nothing to train on"));
    skipped_total_ += st.skipped;

    const ObjectiveBatch<S> batch{log_post_,
                                  log_prior_,
                                  log_r_,
                                  valid_,
                                  log_z_,
                                  static_cast<S>(c.beta),
                                  static_cast<S>(c.loss_cutoff),
                                  static_cast<S>(c.kl_weight),
                                  c.group_size};
    const ObjectiveResult<S> res = Objective{}(batch, std::span<S>(weight_));
    st.loss = res.loss;
    st.mean_delta = res.mean_delta;
    double sum_lr = 0, sum_ratio = 0;
    for (std::size_t i = 0; i < log_r_.size(); ++i)
      if (valid_[i]) {
        sum_lr += log_r_[i];
        sum_ratio += static_cast<double>(log_post_[i]) - log_prior_[i];
      }
    st.mean_log_r = sum_lr / static_cast<double>(res.used);
    st.mean_log_ratio = sum_ratio / static_cast<double>(res.used);

    // Pass 2, with an unbiased random subset of steps if asked.
    const char* keep = nullptr;
    S scale = S(1);
    if (c.step_fraction < 1) {
      keep = choose_steps(k, scale);
    }
    engine_.pass2(posterior_, rollout, expl, weight_.data(), keep, scale, std::span<S>(grad_));

    double norm2 = 0;
    for (S g : grad_) norm2 += static_cast<double>(g) * g;
    st.grad_norm = std::sqrt(norm2);
    if (!std::isfinite(norm2) || !std::isfinite(static_cast<double>(res.d_log_z)))
      throw NonFiniteError(detail::message("RelativeTrajectoryBalance::step: the gradient at iteration ", k,
                                           " is not finite (norm² = ", norm2, ", d log Z = ", res.d_log_z,
                                           "); parameters left unchanged. Lower the learning rate, set "
                                           "max_grad_norm, or check the reward's scale"));
    if (c.max_grad_norm > 0 && st.grad_norm > c.max_grad_norm) {
      const S f = static_cast<S>(c.max_grad_norm / st.grad_norm);
      for (S& g : grad_) g *= f;
    }
    const double f = c.decay.factor(k);
    adam_.set_learning_rate(static_cast<S>(c.learning_rate * f));
    log_z_adam_.set_learning_rate(static_cast<S>(c.log_z_learning_rate * f));
    adam_.step(posterior_.params(), grad_);
    if constexpr (Objective::learns_log_z) {
      S g = res.d_log_z;
      if (c.log_z_optimizer == LogZOptimizer::Adam)
        log_z_adam_.step(std::span<S>(&log_z_, 1), std::span<const S>(&g, 1));
      else
        log_z_ -= log_z_adam_.options().learning_rate * g;  // the decayed rate, see above
      st.log_z = log_z_;
    } else {
      log_z_ = res.log_z_estimate;
      st.log_z = log_z_;
    }
    if (replay_max_ > 0)
      replay_.add(ConstMatrixView<V>(x_end.data(), n_on, x_end.cols()), std::span<const S>(log_r_.data(), n_on),
                  std::span<const char>(valid_.data(), n_on));
    ++iteration_;
    return st;
  }

  /// Runs `iterations` steps, calling each callback as cb(trainer, stats) after every step; a
  /// callback returning false stops training early.
  template <class... Callbacks>
  StepStats train(std::int64_t iterations, Callbacks&&... callbacks) {
    StepStats last;
    for (std::int64_t i = 0; i < iterations; ++i) {
      last = step();
      bool go = true;
      (
          [&](auto& cb) {
            if constexpr (std::is_same_v<decltype(cb(*this, last)), bool>)
              go = cb(*this, last) && go;
            else
              cb(*this, last);
          }(callbacks),
          ...);
      if (!go) break;
    }
    return last;
  }

  /// n end points of the posterior (no exploration), as an xtensor [n, D].
  xt::xtensor<V, 2> sample(Index n, std::uint64_t seed) {
    const Evaluation<S, V> e = run_rollouts(n, seed, false);
    xt::xtensor<V, 2> out = xt::empty<V>({static_cast<std::size_t>(n), static_cast<std::size_t>(process_.state_dim())});
    std::copy(e.samples.data(), e.samples.data() + e.samples.size(), out.data());
    return out;
  }

  /// n on-policy trajectories scored under both models: samples, log r, importance weights,
  /// log Z estimates and ESS.
  Evaluation<S, V> evaluate(Index n, std::uint64_t seed) { return run_rollouts(n, seed, true); }

  S log_z() const { return log_z_; }
  void set_log_z(S v) { log_z_ = v; }
  const N& posterior() const { return posterior_; }
  N& posterior() { return posterior_; }
  const N& prior() const { return prior_; }
  const P& process() const { return process_; }
  /// The process, to change per-batch context between steps (e.g. MaskedCategoricalProcess::set_context).
  P& process() { return process_; }
  R& reward() { return reward_; }
  const Config& config() const { return config_; }
  std::int64_t iteration() const { return iteration_; }
  std::int64_t skipped_total() const { return skipped_total_; }
  Adam<S>& optimizer() { return adam_; }
  Adam<S>& log_z_optimizer() { return log_z_adam_; }
  const ReplayBuffer<V, S>& replay_buffer() const { return replay_; }
  /// Bytes of the training workspace (trajectory buffers, contexts, gradients, per-row arrays).
  std::size_t workspace_bytes() const {
    return engine_.workspace_bytes() +
           sizeof(S) * (log_post_.capacity() + log_prior_.capacity() + log_r_.capacity() + weight_.capacity() +
                        grad_.capacity()) +
           valid_.capacity() + sizeof(Index) * order_.capacity();
  }

  /// Writes posterior, log Z, both optimisers' moments, RNG (seed, iteration), replay buffer and
  /// counters to `path` atomically.
  void save(const std::string& path) const {
    CheckpointWriter w;
    const std::int64_t meta[5] = {posterior_.num_params(), process_.num_steps(), process_.state_dim(),
                                  config_.batch_size, replay_.capacity()};
    w.add("meta", std::span<const std::int64_t>(meta));
    w.add("objective", std::span<const char>(Objective::name, std::char_traits<char>::length(Objective::name)));
    w.add("posterior", posterior_.params());
    w.add_scalar("log_z", log_z_);
    w.add("adam.m", adam_.first_moment());
    w.add("adam.v", adam_.second_moment());
    w.add_scalar<std::int64_t>("adam.steps", adam_.steps());
    w.add("log_z_adam.m", log_z_adam_.first_moment());
    w.add("log_z_adam.v", log_z_adam_.second_moment());
    w.add_scalar<std::int64_t>("log_z_adam.steps", log_z_adam_.steps());
    w.add_scalar<std::uint64_t>("rng.seed", seed_);
    w.add_scalar<std::int64_t>("iteration", iteration_);
    w.add_scalar<std::int64_t>("skipped_total", skipped_total_);
    w.add("replay.x", replay_.raw_states());
    w.add("replay.log_r", replay_.raw_log_r());
    const std::int64_t rs[2] = {replay_.size(), replay_.cursor()};
    w.add("replay.state", std::span<const std::int64_t>(rs));
    w.commit(path);
  }

  /// Restores a checkpoint written by save() of a trainer with the same architecture and shapes.
  /// All or nothing: on error the trainer is unchanged.
  void load(const std::string& path) {
    CheckpointReader r(path);
    const auto meta = r.array<std::int64_t>("meta", 5);
    const std::int64_t want[5] = {posterior_.num_params(), process_.num_steps(), process_.state_dim(),
                                  config_.batch_size, replay_.capacity()};
    const char* what[5] = {"parameters", "steps", "state dimensions", "batch size", "replay capacity"};
    for (int i = 0; i < 5; ++i)
      if (meta[i] != want[i])
        throw CheckpointError(detail::message("checkpoint ", path, " was written with ", meta[i], " ", what[i],
                                              ", this trainer has ", want[i], "; build the trainer as it was saved"));
    const auto obj = r.array<char>("objective");
    if (std::string(obj.begin(), obj.end()) != Objective::name)
      throw CheckpointError(detail::message("checkpoint ", path, " was written by objective '",
                                            std::string(obj.begin(), obj.end()), "', this trainer runs '",
                                            Objective::name, "'"));
    const auto p = r.array<S>("posterior", posterior_.num_params());
    for (S v : p)
      if (!std::isfinite(static_cast<double>(v)))
        throw CheckpointError(detail::message("checkpoint ", path, " holds non-finite posterior parameters"));
    const auto m = r.array<S>("adam.m", adam_.size());
    const auto v = r.array<S>("adam.v", adam_.size());
    const auto zm = r.array<S>("log_z_adam.m", 1);
    const auto zv = r.array<S>("log_z_adam.v", 1);
    const auto rx = r.array<V>("replay.x", static_cast<std::ptrdiff_t>(replay_.raw_states().size()));
    const auto rl = r.array<S>("replay.log_r", static_cast<std::ptrdiff_t>(replay_.raw_log_r().size()));
    const auto rs = r.array<std::int64_t>("replay.state", 2);
    const S log_z = r.scalar<S>("log_z");
    const auto adam_steps = r.scalar<std::int64_t>("adam.steps");
    const auto z_steps = r.scalar<std::int64_t>("log_z_adam.steps");
    const auto seed = r.scalar<std::uint64_t>("rng.seed");
    const auto iteration = r.scalar<std::int64_t>("iteration");
    const auto skipped = r.scalar<std::int64_t>("skipped_total");
    replay_.restore(rs[0], rs[1]);  // validates before anything changes below
    std::copy(p.begin(), p.end(), posterior_.params().begin());
    std::copy(m.begin(), m.end(), adam_.first_moment().begin());
    std::copy(v.begin(), v.end(), adam_.second_moment().begin());
    adam_.set_steps(adam_steps);
    log_z_adam_.first_moment()[0] = zm[0];
    log_z_adam_.second_moment()[0] = zv[0];
    log_z_adam_.set_steps(z_steps);
    std::copy(rx.begin(), rx.end(), replay_.raw_states().begin());
    std::copy(rl.begin(), rl.end(), replay_.raw_log_r().begin());
    log_z_ = log_z;
    seed_ = seed;
    iteration_ = iteration;
    skipped_total_ = skipped;
  }

 private:
  const char* choose_steps(std::int64_t k, S& scale) {
    const Index T = process_.num_steps();
    const Index K = std::max<Index>(1, static_cast<Index>(std::lround(config_.step_fraction * static_cast<double>(T))));
    auto keep = engine_.keep_flags();
    detail::choose_steps({seed_, math::Stream::StepSubset, static_cast<std::uint64_t>(k)}, T, K, order_, keep);
    scale = static_cast<S>(T) / static_cast<S>(K);
    return keep.data();
  }

  Evaluation<S, V> run_rollouts(Index n, std::uint64_t seed, bool score) {
    if (n <= 0) throw EmptyBatchError(detail::message("sample/evaluate: n must be positive, got ", n));
    detail::TrajectoryEngine<P, N> eng(process_, posterior_, config_.block_rows, engine_.threads());
    eng.shape(posterior_, n, 0);
    std::vector<S> lp(static_cast<std::size_t>(n)), lq(static_cast<std::size_t>(n));
    eng.pass1(posterior_, score ? &prior_ : nullptr, {seed, math::Stream::Evaluation, 0}, S(0), lp.data(), lq.data());
    Evaluation<S, V> e;
    auto end = eng.end_states();
    e.samples = end;
    if (!score) return e;
    e.log_r.resize(static_cast<std::size_t>(n));
    const ConstMatrixView<V> x_end(end.data(), end.rows(), end.cols());
    reward_.log_reward(x_end, std::span<S>(e.log_r));
    std::vector<char> valid(static_cast<std::size_t>(n));
    detail::check_log_rewards<V, S>(x_end, e.log_r, valid, ZeroRewardPolicy::Skip);
    e.log_weight.resize(static_cast<std::size_t>(n));
    double sum_lr = 0, sum_ratio = 0;
    Index used = 0;
    for (std::size_t i = 0; i < e.log_weight.size(); ++i) {
      e.log_weight[i] = static_cast<S>(config_.beta * e.log_r[i] + lq[i] - lp[i]);
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

  P process_;
  N prior_;      // frozen: never handed out mutable, never trained, never checkpointed
  N posterior_;  // starts as an exact copy of prior_
  R reward_;
  Config config_;
  detail::TrajectoryEngine<P, N> engine_;
  Adam<S> adam_;
  Adam<S> log_z_adam_;
  S log_z_;
  std::uint64_t seed_;
  std::int64_t iteration_ = 0;
  std::int64_t skipped_total_ = 0;
  Index replay_max_ = 0;
  ReplayBuffer<V, S> replay_;
  std::vector<S> log_post_, log_prior_, log_r_, weight_, grad_;
  std::vector<char> valid_;
  std::vector<Index> order_;
};

}  // namespace rtb
