// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The trainer: fine-tunes a posterior p_φ on top of a frozen diffusion prior p_θ so that
/// p_φ(x | c) ∝ p_θ(x | c)·r(x, c)^β, by driving δ(τ) = log Z + Σ_t log p_φ − Σ_t log p_θ − β·log r(x_T)
/// to zero along trajectories from any behaviour policy (on-policy, widened by exploration, the
/// prior, or replayed end points re-noised by the backward kernel). The gradient is the two-pass
/// one of TrajectoryEngine: memory does not grow with T.
///
///     rtb::RelativeTrajectoryBalance trainer(process, prior_model, reward, rtb::Config{.batch_size = 500});
///     trainer.train(5000);
///     auto x = trainer.sample(2000, /*seed=*/1);
///
/// The trainer owns the parameters: the prior's (frozen, never trained, never checkpointed) and the
/// posterior's (trained). The posterior starts as an exact copy of the prior, or, when the net
/// wraps a frozen base (LoRA), as the wrapper over the prior, sharing its parameters. A step runs
/// in phases: collect (behaviour, conditions) → score (both models, reward) → objective statistics
/// → back-propagate → reduce (the Reduction policy: identity for one process, an all-reduce for
/// data-parallel replicas) → update. `compute_gradient()` runs all but the update, which
/// `apply_gradient()` performs; `step()` is both. `Objective` is RelativeTB (default),
/// RelativeVarGrad or the ReinforceKL baseline. Each phase, sample and evaluate flush subnormals
/// (Config::flush_denormals) and restore the caller's mode; the reward and callbacks run in it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/concepts/reduction.hpp"
#include "rtb/concepts/reward.hpp"  // and detail/flush_denormal.hpp
#include "rtb/error.hpp"
#include "rtb/net/adam.hpp"
#include "rtb/net/model.hpp"
#include "rtb/objective/relative_tb.hpp"
#include "rtb/sampling/replay_buffer.hpp"
#include "rtb/train/callbacks.hpp"
#include "rtb/train/config.hpp"
#include "rtb/train/evaluation.hpp"
#include "rtb/train/trainer_state.hpp"
#include "rtb/train/trainer_support.hpp"
#include "rtb/train/trajectory_engine.hpp"

namespace rtb {

template <NoiseProcess P, Denoiser N, class R, class Objective = RelativeTB, Reduction Red = LocalReduction>
  requires Reward<R, typename P::Value, typename P::Scalar, condition_of_t<P>>
class RelativeTrajectoryBalance {
 public:
  using S = typename P::Scalar;
  using V = typename P::Value;
  using C = condition_of_t<P>;
  using Space = space_of_t<P>;
  using PriorNet = prior_net_t<N>;
  using Engine = detail::TrajectoryEngine<P, N, PriorNet>;

  /// From a model: the prior with its weights, or a wrapper over it (then the posterior trains
  /// only the wrapper's own tensors and the prior is the wrapper's base).
  RelativeTrajectoryBalance(P process, Model<N> model, R reward, Config config = {}, Red reduction = {})
      : process_(std::move(process)),
        prior_(prior_of(model)),
        posterior_(std::move(model)),
        reward_(std::move(reward)),
        config_(validated(config)),
        reduction_(std::move(reduction)),
        cond_dim_(detail::resolve_condition_dim(process_, posterior_.net(), prior_->net(), config.condition_dim)),
        engine_(process_, posterior_.net(), prior_->net(), cond_dim_, std::min(config.block_rows, config.batch_size),
                config.threads),
        adam_(posterior_.num_params(), {static_cast<S>(config.learning_rate)}),
        log_z_adam_(std::max<Index>(config.log_z_table, 1), {static_cast<S>(config.log_z_learning_rate)}),
        seed_(config.seed) {
    const Config& c = config_;
    detail::validate_for<Objective, P>(c, cond_dim_);
    exploration_ = c.exploration.resolved(detail::default_exploration(process_));
    log_z_.assign(static_cast<std::size_t>(c.log_z_table), static_cast<S>(c.log_z_init));
    replay_max_ = static_cast<Index>(std::lround(c.replay_fraction * static_cast<double>(c.batch_size)));
    detail::check_trainer_memory<V, S, C>(c, process_.state_dim(), process_.output_dim(), process_.num_steps(), cond_dim_,
                                          replay_max_, engine_.threads());
    if (replay_max_ > 0) replay_ = ReplayBuffer<V, S, C>(c.replay_capacity, process_.state_dim(), c.replay_priority, cond_dim_);
    engine_.set_row_offset(reduction_.row_offset(c.batch_size));
    const auto B = static_cast<std::size_t>(c.batch_size);
    log_post_.resize(B);
    log_prior_.resize(B);
    log_r_.resize(B);
    row_log_z_.resize(B);
    weight_.resize(B);
    d_log_z_.resize(B);
    valid_.resize(B);
    d_log_z_table_.resize(log_z_.size());
    d_log_z_acc_.resize(log_z_.size());
    host_cond_.resize(B * static_cast<std::size_t>(cond_dim_));
    mirror_.resize(B * static_cast<std::size_t>(process_.state_dim()), host_cond_.size());
    grad_ = typename Space::template buffer<S>(static_cast<std::size_t>(posterior_.num_params()));
    undo_.reserve(posterior_.num_params(), log_z_.size());
    order_.resize(static_cast<std::size_t>(process_.num_steps()));
    // Size every buffer for every batch composition now, so step() never allocates.
    if (c.prior_behaviour_every > 0) engine_.shape(0, c.batch_size);
    if (replay_max_ > 0) engine_.shape(c.batch_size - replay_max_, replay_max_);
    engine_.shape(c.batch_size, 0);
  }
  /// From a net with fresh weights (its initialiser).
  RelativeTrajectoryBalance(P process, N net, R reward, Config config = {}, Red reduction = {})
    requires(!WrapsFrozenBase<N>)
      : RelativeTrajectoryBalance(std::move(process), Model<N>(std::move(net)), std::move(reward), config,
                                  std::move(reduction)) {}

  /// One training step: compute_gradient(…) then apply_gradient(). Unconditional problems call
  /// step(); conditional ones step(conditions) with [batch, Dc] (row i's condition; replayed rows
  /// keep the one they were drawn with). step(conditions, end_states) is an off-policy step from
  /// given end points (a data set, another sampler's draws): row i's trajectory is drawn backward
  /// from end_states row i [batch, D] by the process's backward kernel, under condition row i
  /// ([batch, 0] when unconditional). This is the offline-RL reference's off-policy source; such
  /// rows are not added to the replay buffer.
  StepStats step() {
    StepStats st = compute_gradient();
    apply_gradient(st);
    return st;
  }
  StepStats step(ConstMatrixView<C> conditions) {
    StepStats st = compute_gradient(conditions);
    apply_gradient(st);
    return st;
  }
  StepStats step(ConstMatrixView<C> conditions, ConstMatrixView<V> end_states)
    requires ReversibleNoiseProcess<P>
  {
    StepStats st = compute_gradient(conditions, end_states);
    apply_gradient(st);
    return st;
  }

  /// Every phase but the update: the reduced gradient in gradient(), parameters untouched. Throws
  /// (changing nothing) on a NaN reward, a −∞ one under the throwing policy, or a non-finite gradient.
  StepStats compute_gradient() {
    const detail::ScopedFlushDenormal flush(config_.flush_denormals, config_.precision);
    if (cond_dim_ > 0)
      throw InvalidArgumentError(detail::message("this problem reads ", cond_dim_,
                                                 " condition columns per row; pass them: step(conditions)"));
    return compute(false);
  }
  StepStats compute_gradient(ConstMatrixView<C> conditions) {
    const detail::ScopedFlushDenormal flush(config_.flush_denormals, config_.precision);
    take_conditions(conditions);
    return compute(true);
  }
  StepStats compute_gradient(ConstMatrixView<C> conditions, ConstMatrixView<V> end_states)
    requires ReversibleNoiseProcess<P>
  {
    const detail::ScopedFlushDenormal flush(config_.flush_denormals, config_.precision);
    detail::check_end_points(process_, end_states, config_.batch_size);
    if (cond_dim_ > 0 || conditions.size() > 0) take_conditions(conditions);
    return compute(cond_dim_ > 0, end_states.data());
  }

  /// The update: clip, Adam on the posterior, log Z; adds the batch's on-policy end points to the
  /// replay buffer; advances the iteration. `st` is what compute_gradient() returned.
  void apply_gradient(StepStats& st) {
    const detail::ScopedFlushDenormal flush(config_.flush_denormals, config_.precision);
    if (!pending_) throw InvalidArgumentError("apply_gradient: call compute_gradient() first");
    pending_ = false;
    const Config& c = config_;
    const std::int64_t k = iteration_;
    if (c.max_grad_norm > 0 && st.grad_norm > c.max_grad_norm)
      Space::scale(std::span<S>(grad_), static_cast<S>(c.max_grad_norm / st.grad_norm));
    const double f = c.decay.factor(k);
    adam_.set_learning_rate(static_cast<S>(c.learning_rate * f));
    log_z_adam_.set_learning_rate(static_cast<S>(c.log_z_learning_rate * f));
    undo_.keep(posterior_.params(), adam_, log_z_, log_z_adam_);
    adam_.step(posterior_.params(), std::span<const S>(grad_));
    if constexpr (Objective::learns_log_z)
      detail::update_log_z(c.log_z_optimizer, log_z_adam_, log_z_, d_log_z_table_);
    else
      log_z_[0] = last_estimate_;
    if (!std::isfinite(Space::sum_squares(std::span<const S>(posterior_.params()))) ||
        !std::isfinite(learned_log_z())) {
      undo_.restore(posterior_.params(), adam_, log_z_, log_z_adam_);
      throw NonFiniteError(detail::message("RelativeTrajectoryBalance::step: the update at iteration ", k,
                                           " made the parameters or log Z non-finite; undone, nothing changed. Lower "
                                           "the learning rate (", c.learning_rate * f, ") or set max_grad_norm"));
    }
    st.learned_log_z = learned_log_z();
    if (replay_max_ > 0) {
      const Index n_on = last_on_policy_;
      replay_.add(ConstMatrixView<V>(mirror_.end(engine_), n_on, process_.state_dim()),
                  ConstMatrixView<C>(mirror_.conditions(engine_), n_on, cond_dim_), std::span<const S>(log_r_.data(), n_on),
                  std::span<const char>(valid_.data(), n_on));
    }
    ++iteration_;
  }

  /// Runs `iterations` steps, calling cb(trainer, stats) after each (false stops); conditional problems
  /// pass a source first: `train(n, rtb::conditions_from(fn), callbacks…)`, fn(MatrixView<C>, iteration).
  template <class... Callbacks>
  StepStats train(std::int64_t iterations, Callbacks&&... callbacks) {
    if constexpr (sizeof...(Callbacks) > 0 && detail::is_condition_source_v<typename detail::first_of<Callbacks...>::type>) {
      return train_conditional(iterations, std::forward<Callbacks>(callbacks)...);
    } else {
      StepStats last;
      for (std::int64_t i = 0; i < iterations; ++i) {
        last = step();
        if (!detail::call_callbacks(std::tuple<RelativeTrajectoryBalance&, StepStats&>(*this, last), callbacks...)) break;
      }
      return last;
    }
  }

  /// n end points of the posterior (no exploration), [n, D]; conditional problems give the rows' conditions.
  Samples<V> sample(Index n, std::uint64_t seed) { return rollouts(n, seed, false, nullptr).samples; }
  Samples<V> sample(ConstMatrixView<C> conditions, std::uint64_t seed) {
    return rollouts(conditions.rows(), seed, false, &conditions).samples;
  }

  /// n on-policy trajectories scored under both models: samples, log r, importance weights, the
  /// importance-sampled log Z (log_partition.log_z_is, the estimate to report), ELBO and ESS.
  Evaluation<S, V> evaluate(Index n, std::uint64_t seed) { return rollouts(n, seed, true, nullptr); }
  Evaluation<S, V> evaluate(ConstMatrixView<C> conditions, std::uint64_t seed) {
    return rollouts(conditions.rows(), seed, true, &conditions);
  }

  /// The learned log Z (entry 0, or the table's mean): it sits below log Z by the sampler's KL
  /// divergence; evaluate().log_partition.log_z_is is the consistent estimate.
  double learned_log_z() const { return detail::table_mean(log_z_); }
  /// The learned log Z table (one entry per condition id when Config::log_z_table > 1).
  std::span<const S> learned_log_z_table() const { return log_z_; }
  void set_learned_log_z(S v) { std::fill(log_z_.begin(), log_z_.end(), detail::finite(v, "set_learned_log_z")); }
  const Model<N>& posterior() const { return posterior_; }
  Model<N>& posterior() { return posterior_; }
  const Model<PriorNet>& prior() const { return *prior_; }
  const P& process() const { return process_; }
  R& reward() { return reward_; }
  const Config& config() const { return config_; }
  Red& reduction() { return reduction_; }
  Index condition_dim() const { return cond_dim_; }
  std::int64_t iteration() const { return iteration_; }
  std::int64_t skipped_total() const { return skipped_total_; }
  /// The last computed gradient (in the process's space), after reduction.
  std::span<const S> gradient() const { return grad_; }
  Adam<S, Space>& optimizer() { return adam_; }
  Adam<S>& log_z_optimizer() { return log_z_adam_; }
  const ReplayBuffer<V, S, C>& replay_buffer() const { return replay_; }
  /// Bytes of the training workspace (trajectory buffers, contexts, gradients, per-row arrays).
  std::size_t workspace_bytes() const {
    return engine_.workspace_bytes() + buffer_bytes(grad_) +
           sizeof(S) * (log_post_.capacity() + log_prior_.capacity() + log_r_.capacity() + weight_.capacity() +
                        row_log_z_.capacity()) +
           sizeof(double) * d_log_z_.capacity() + valid_.capacity() + sizeof(Index) * order_.capacity();
  }

  /// Writes the trainer's state to `path` atomically (trainer_state.hpp says what it holds).
  void save(const std::string& path) const { detail::save_trainer_state(const_cast<RelativeTrajectoryBalance&>(*this).state(), path); }
  /// Restores a checkpoint written by save() of a trainer with the same architecture and shapes.
  /// All or nothing: on error the trainer is unchanged.
  void load(const std::string& path) {
    auto st = state();
    detail::load_trainer_state(st, path);
  }

 private:
  static const Config& validated(const Config& c) {
    detail::validate_config<S>(c);
    return c;
  }
  static std::shared_ptr<const Model<PriorNet>> prior_of(const Model<N>& model) {
    if constexpr (WrapsFrozenBase<N>)
      return model.base();
    else
      return std::make_shared<const Model<N>>(model);
  }

  void take_conditions(ConstMatrixView<C> conditions) {
    detail::check_conditions(process_, conditions, config_.batch_size, cond_dim_, "step");
    detail::check_log_z_entries(conditions, config_.log_z_table, config_.log_z_column);
    std::copy_n(conditions.data(), conditions.size(), host_cond_.data());
  }

  StepStats compute(bool conditional, const V* given_ends = nullptr) {
    const Config& c = config_;
    const std::int64_t k = iteration_;
    StepStats st;
    st.iteration = k;
    // collect: behaviour rows and their conditions
    const S expl = Objective::on_policy_only ? S(0) : static_cast<S>(exploration_(k));
    st.exploration = expl;
    st.from_prior = !given_ends && c.prior_behaviour_every > 0 && k % c.prior_behaviour_every == 0;
    const Index n_replay =
        (!given_ends && !st.from_prior && replay_max_ > 0 && replay_.size() >= c.batch_size) ? replay_max_ : 0;
    const Index n_on = st.from_prior || given_ends ? 0 : c.batch_size - n_replay;
    engine_.shape(n_on, c.batch_size - n_on);
    st.replayed = n_replay;
    st.given = given_ends ? c.batch_size : 0;
    last_on_policy_ = n_on;
    if (conditional)
      Space::upload(std::span<C>(engine_.conditions().data(), host_cond_.size()), std::span<const C>(host_cond_));
    const math::NoiseKey rollout{seed_, math::Stream::Rollout, static_cast<std::uint64_t>(k)};
    if (st.from_prior) engine_.roll_out_stored(*prior_, rollout, expl);
    if constexpr (ReversibleNoiseProcess<P>) {  // off-policy rows, drawn backward from given or replayed end points
      const math::NoiseKey backward{seed_, math::Stream::Backward, static_cast<std::uint64_t>(k)};
      if (given_ends) detail::noise_given_ends(engine_, given_ends, backward);
      if (n_replay > 0) {
        detail::replay_into(engine_, replay_, n_on, n_replay, {seed_, math::Stream::Replay, static_cast<std::uint64_t>(k)},
                            mirror_);
        engine_.build_stored_backward(backward);
      }
    }
    // score: both models along every row, then the reward
    engine_.score(posterior_, prior_.get(), rollout, expl);
    Space::download(std::span<S>(log_post_), engine_.log_post());
    Space::download(std::span<S>(log_prior_), engine_.log_prior());
    mirror_.fetch(engine_);
    const ConstMatrixView<V> x_end(mirror_.end(engine_), c.batch_size, process_.state_dim());
    const ConstMatrixView<C> cond(mirror_.conditions(engine_), c.batch_size, cond_dim_);
    detail::call_log_reward(reward_, x_end, cond, std::span<S>(log_r_));
    st.skipped = detail::check_log_rewards<V, S>(x_end, log_r_, valid_, c.on_zero_reward);
    if (st.skipped == c.batch_size)
      throw ZeroRewardError(detail::message("log_reward: all ", c.batch_size, " samples of iteration ", k,
                                            " have r = 0; nothing to train on"));
    // objective statistics (global through the reduction)
    for (std::size_t i = 0; i < row_log_z_.size(); ++i) row_log_z_[i] = log_z_[detail::log_z_entry(cond, static_cast<Index>(i), log_z_.size(), c.log_z_column)];
    const ObjectiveBatch<S> batch{log_post_, log_prior_, log_r_, valid_, row_log_z_, static_cast<S>(c.beta),
                                  static_cast<S>(c.loss_cutoff), static_cast<S>(c.kl_weight), c.group_size};
    const ObjectiveResult<S> res = Objective{}(batch, ObjectiveOutputs<S>{weight_, d_log_z_}, reduction_);
    if (!std::isfinite(static_cast<double>(res.loss)))
      throw NonFiniteError(detail::message("RelativeTrajectoryBalance::step: the loss at iteration ", k, " is ", res.loss,
                                           " (residuals too large for the scalar type); nothing changed. Check the "
                                           "reward's scale (β·log r) or lower beta"));
    st.loss = res.loss;
    st.mean_delta = res.mean_delta;
    last_estimate_ = res.log_z_estimate;
    std::tie(st.mean_log_r, st.mean_log_ratio) = detail::batch_means(batch, res.used, reduction_);
    // back-propagate, with an unbiased random subset of steps if asked, then reduce
    const char* keep = nullptr;
    S scale = S(1);
    if (c.step_fraction < 1) keep = choose_steps(k, scale);
    engine_.backpropagate(posterior_, rollout, expl, weight_, keep, scale, std::span<S>(grad_));
    reduction_.all_sum_gradient(std::span<S>(grad_));
    double d_table_sum[1] = {0};
    if constexpr (Objective::learns_log_z)
      d_table_sum[0] = detail::log_z_gradient(d_log_z_, cond, c.log_z_column, reduction_, d_log_z_acc_, d_log_z_table_);
    const double norm2 = Space::sum_squares(std::span<const S>(grad_));
    st.grad_norm = std::sqrt(norm2);
    if (!std::isfinite(norm2) || !std::isfinite(d_table_sum[0]))
      throw NonFiniteError(detail::message("RelativeTrajectoryBalance::step: the gradient at iteration ", k,
                                           " is not finite (norm² = ", norm2, ", |d log Z| = ", d_table_sum[0],
                                           "); parameters left unchanged. Lower the learning rate, set "
                                           "max_grad_norm, or check the reward's scale"));
    skipped_total_ += st.skipped;
    pending_ = true;
    return st;
  }

  template <class Source, class... Callbacks>
  StepStats train_conditional(std::int64_t iterations, Source&& source, Callbacks&&... callbacks) {
    StepStats last;
    RowMatrix<C> cond(config_.batch_size, cond_dim_);
    for (std::int64_t i = 0; i < iterations; ++i) {
      source.fill(MatrixView<C>(cond.data(), cond.rows(), cond.cols()), iteration_);
      last = step(ConstMatrixView<C>(cond.data(), cond.rows(), cond.cols()));
      if (!detail::call_callbacks(std::tuple<RelativeTrajectoryBalance&, StepStats&>(*this, last), callbacks...)) break;
    }
    return last;
  }

  const char* choose_steps(std::int64_t k, S& scale) {
    const Index T = process_.num_steps();
    const Index K = std::max<Index>(1, static_cast<Index>(std::lround(config_.step_fraction * static_cast<double>(T))));
    auto keep = engine_.keep_flags();
    detail::choose_steps({seed_, math::Stream::StepSubset, static_cast<std::uint64_t>(k)}, T, K, order_, keep);
    scale = static_cast<S>(T) / static_cast<S>(K);
    return keep.data();
  }

  Evaluation<S, V> rollouts(Index n, std::uint64_t seed, bool score, const ConstMatrixView<C>* conditions) {
    const detail::ScopedFlushDenormal flush(config_.flush_denormals, config_.precision);
    detail::check_sample_count<V, S>(n, process_.state_dim(), cond_dim_, "sample/evaluate");
    Engine eng(process_, posterior_.net(), prior_->net(), cond_dim_, std::min(config_.block_rows, n), engine_.threads());
    return detail::rollouts(eng, posterior_, score ? prior_.get() : nullptr, reward_, config_.beta, n, seed, conditions);
  }

  detail::TrainerState<S, V, C, Space> state() {
    return {posterior_.params(), adam_, log_z_adam_, log_z_, seed_, iteration_, skipped_total_, replay_,
            {posterior_.num_params(), process_.num_steps(), process_.state_dim(), config_.batch_size,
             replay_.capacity(), cond_dim_, static_cast<std::int64_t>(log_z_.size())},
            Objective::name};
  }

  P process_;
  std::shared_ptr<const Model<PriorNet>> prior_;  // frozen: never handed out mutable, never trained or checkpointed
  Model<N> posterior_;                            // starts as the prior (a copy, or a wrapper over it)
  R reward_;
  Config config_;
  Red reduction_;
  Index cond_dim_;
  Engine engine_;
  Adam<S, Space> adam_;
  Adam<S> log_z_adam_;
  ExplorationSchedule exploration_;
  std::vector<S> log_z_;
  S last_estimate_ = 0;
  std::uint64_t seed_;
  std::int64_t iteration_ = 0;
  std::int64_t skipped_total_ = 0;
  Index replay_max_ = 0;
  Index last_on_policy_ = 0;
  bool pending_ = false;
  ReplayBuffer<V, S, C> replay_;
  typename Space::template buffer<S> grad_;
  std::vector<S> log_post_, log_prior_, log_r_, row_log_z_, weight_, d_log_z_table_;
  std::vector<double> d_log_z_, d_log_z_acc_;
  std::vector<char> valid_;
  std::vector<C> host_cond_;
  detail::HostMirror<Space, V, C> mirror_;
  detail::UpdateUndo<S, Space> undo_;
  std::vector<Index> order_;
};

template <class P, class N, class R>
RelativeTrajectoryBalance(P, Model<N>, R, Config = {}) -> RelativeTrajectoryBalance<P, N, R>;
template <class P, Denoiser N, class R>
RelativeTrajectoryBalance(P, N, R, Config = {}) -> RelativeTrajectoryBalance<P, N, R>;

}  // namespace rtb
