// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The offline-RL example's diffusion pieces (issue 14, items 3 and 5), on rtb's library:
///
/// - `BehaviourPrior`: μ(u | s), a DdpmProcess over actions in arctanh space u = arctanh(clip(a,
///   ±0.99)) with the state as the per-row condition of an `Mlp` ε-net, fitted to the data set by
///   `fit_prior` (the ε-MSE over uniformly drawn steps, the standard DDPM loss; the reference adds
///   Min-SNR-5 weights, which rtb does not have). The process draws noise at every step, the last
///   included (`noise_at_last_step`), and conditions the net on τ/N, as the reference does.
/// - `RtbPolicy`: π(u | s) ∝ μ(u | s)·exp(Q(s, tanh u)/α), the posterior ε_φ = ε_θ + ε_res
///   (`rtb::Residual`, ε_res a state-conditioned Mlp starting at zero, so step 0 is the prior),
///   trained by relative VarGrad with log Z estimated per state over a group of rows sharing it.
///   Each iteration takes `states_per_batch` data rows, one on-policy update on their states, then
///   one off-policy update from their data actions noised backward (the reference's schedule).
/// - `q_sampling`: K draws of the prior per state, the one with the highest Q kept.
///
/// The tanh Jacobian. The reference's log r adds α·Σ log(1 − tanh²u + 1e-7). rtb leaves it out by
/// default: KL-regularised extraction is invariant to the bijection u ↔ a, so in u-space the
/// target is μ_u(u | s)·exp(Q/α) with nothing more; the extra term tilts the policy toward
/// a = 0 (by Π(1 − a²)). `jacobian = true` adds it, to match the reference.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <rtb/rtb.hpp>

namespace control {

using rtb::Index;
using Real = float;
using Matrix = rtb::RowMatrix<Real>;
using ConstView = rtb::ConstMatrixView<Real>;
using View = rtb::MatrixView<Real>;

/// |a| is clipped here before arctanh (the reference's 0.99).
inline constexpr double kActionClip = 0.99;

inline ConstView cview(const Matrix& m) { return ConstView(m.data(), m.rows(), m.cols()); }
inline View mview(Matrix& m) { return View(m.data(), m.rows(), m.cols()); }

/// A data row drawn uniformly from N by counter-based noise (row r of the draw keyed by `key`).
inline Index pick(Index N, const rtb::math::NoiseKey& key, Index r) {
  const double u = rtb::math::uniform<double>(key, static_cast<std::uint64_t>(r), 0, 0);
  return std::min(N - 1, static_cast<Index>(u * static_cast<double>(N)));
}

/// Environment actions in [−1, 1] to arctanh space, clipped at ±0.99. Throws InvalidArgumentError
/// naming the row for a non-finite action or one outside [−1, 1].
inline Matrix to_latent(ConstView actions, const char* what = "actions") {
  Matrix u(actions.rows(), actions.cols());
  for (Index i = 0; i < actions.rows(); ++i)
    for (Index d = 0; d < actions.cols(); ++d) {
      const double a = actions(i, d);
      if (!std::isfinite(a) || a < -1.0 || a > 1.0)
        throw rtb::InvalidArgumentError(rtb::detail::message(
            what, " row ", i, " column ", d, " is ", a,
            "; actions must be finite and inside the squashing range [-1, 1] (scale them to the env's units)"));
      u(i, d) = static_cast<Real>(std::atanh(std::clamp(a, -kActionClip, kActionClip)));
    }
  return u;
}
/// tanh, in place: the action an environment receives.
inline void to_env(View u) { u = u.array().tanh().matrix(); }

/// Q(s, a) for a batch: states [n, ds], env actions [n, da] → out [n].
using QFunction = std::function<void(ConstView states, ConstView actions, std::span<Real> out)>;

struct DiffusionOptions {
  Index steps = 20;                    ///< T
  double beta_start = 1e-3, beta_end = 0.25;  ///< ᾱ ≈ 0.07 at the noise end for T = 20
  std::vector<Index> hidden = {128, 128};
  Index harmonics = 8;                 ///< Fourier time features of τ/N
  std::int64_t prior_iterations = 3000;
  Index prior_batch = 256;
  double prior_learning_rate = 1e-3;
  double prior_final_learning_rate = 1e-4;
  Index threads = 0;
  std::uint64_t seed = 1;
};

inline rtb::DdpmProcess<Real> make_process(Index action_dim, const DiffusionOptions& o) {
  return rtb::DdpmProcess<Real>(action_dim, o.steps,
                                {.num_train_steps = o.steps, .beta_start = o.beta_start, .beta_end = o.beta_end,
                                 .clip_denoised = false, .time_as_fraction = true, .noise_at_last_step = true});
}

inline rtb::Mlp<Real> make_eps_net(Index action_dim, Index state_dim, const DiffusionOptions& o, std::uint64_t seed,
                                   bool zero_last) {
  return rtb::Mlp<Real>({.input_dim = action_dim, .hidden = o.hidden, .output_dim = action_dim,
                         .time_harmonics = o.harmonics, .condition_dim = state_dim, .seed = seed,
                         .zero_init_last = zero_last});
}

/// μ(u | s): the behaviour policy as a conditional diffusion over latent actions.
class BehaviourPrior {
 public:
  BehaviourPrior(Index state_dim, Index action_dim, DiffusionOptions o)
      : o_(std::move(o)), state_dim_(state_dim), process_(make_process(action_dim, o_)),
        model_(make_eps_net(action_dim, state_dim, o_, o_.seed, false)) {}

  /// Fits to (states [N, ds], latent actions [N, da]); progress(iteration, loss) every 500.
  void fit(ConstView states, ConstView latent, const std::function<void(std::int64_t, double)>& progress = {}) {
    check_states(states, "BehaviourPrior::fit");
    if (states.rows() != latent.rows())
      throw rtb::ShapeError(rtb::detail::message("BehaviourPrior::fit: ", states.rows(), " states but ", latent.rows(),
                                                 " actions; pass one action row per state row"));
    const Index N = states.rows();
    const std::uint64_t seed = o_.seed;
    auto data = [&](View x, View c, std::int64_t it) {
      for (Index r = 0; r < x.rows(); ++r) {
        const Index i = pick(N, {seed, rtb::math::Stream::User, static_cast<std::uint64_t>(it)}, r);
        x.row(r) = latent.row(i);
        c.row(r) = states.row(i);
      }
    };
    rtb::fit_prior(process_, model_, data,
                   rtb::PriorFitConfig{.batch_size = o_.prior_batch, .iterations = o_.prior_iterations,
                                       .learning_rate = o_.prior_learning_rate,
                                       .final_learning_rate = o_.prior_final_learning_rate, .threads = o_.threads,
                                       .seed = seed + 1},
                   [&](const rtb::PriorFitStats& st) {
                     if (progress && (st.iteration + 1) % 500 == 0) progress(st.iteration + 1, st.loss);
                     return true;
                   });
  }

  /// One latent action per state row, drawn with `seed`.
  Matrix sample(ConstView states, std::uint64_t seed) const {
    check_states(states, "BehaviourPrior::sample");
    const auto x = rtb::sample_end_states(process_, model_, states, seed, o_.threads);
    return Matrix(rtb::view_of(x));
  }

  const rtb::DdpmProcess<Real>& process() const { return process_; }
  const rtb::Model<rtb::Mlp<Real>>& model() const { return model_; }
  const DiffusionOptions& options() const { return o_; }
  Index state_dim() const { return state_dim_; }
  /// Throws ShapeError unless `states` has this prior's state width.
  void check_states(ConstView states, const char* who) const {
    if (states.cols() != state_dim_)
      throw rtb::ShapeError(rtb::detail::message(who, ": states have ", states.cols(), " columns, the policy was fitted to ",
                                                 state_dim_, "-dimensional states; pass rows of the environment's state"));
  }

 private:
  DiffusionOptions o_;
  Index state_dim_;
  rtb::DdpmProcess<Real> process_;
  rtb::Model<rtb::Mlp<Real>> model_;
};

/// log r(u | s) = Q(s, tanh u)/α (+ Σ log(1 − tanh²u + 1e-7) with the Jacobian).
struct QReward {
  QFunction q;
  double alpha = 1;
  bool jacobian = false;
  Matrix actions;  // scratch: tanh u

  void log_reward(ConstView u, ConstView s, std::span<Real> out) {
    actions = Matrix(u);
    to_env(mview(actions));
    q(s, cview(actions), out);
    for (Index i = 0; i < u.rows(); ++i) {
      double lr = out[static_cast<std::size_t>(i)] / alpha;
      if (jacobian)
        for (Index d = 0; d < u.cols(); ++d) lr += std::log(1.0 - actions(i, d) * actions(i, d) + 1e-7);
      out[static_cast<std::size_t>(i)] = static_cast<Real>(lr);
    }
  }
};

struct RtbOptions {
  double alpha = 1.0;              ///< temperature: π ∝ μ·exp(Q/α)
  bool jacobian = false;
  std::int64_t iterations = 300;   ///< data batches; each gives one on-policy and one off-policy update
  Index states_per_batch = 16;
  Index group = 16;                ///< rows per state (relative VarGrad's group)
  double learning_rate = 5e-4;
  std::vector<Index> hidden = {128, 128};
  double max_grad_norm = 10.0;
  Index threads = 0;
  std::uint64_t seed = 7;
};

/// π(u | s) ∝ μ(u | s)·exp(Q(s, tanh u)/α), amortised over states.
class RtbPolicy {
 public:
  using Net = rtb::Residual<rtb::Mlp<Real>, rtb::Mlp<Real>>;
  using Trainer = rtb::RelativeTrajectoryBalance<rtb::DdpmProcess<Real>, Net, QReward, rtb::RelativeVarGrad>;

  RtbPolicy(const BehaviourPrior& prior, QFunction q, RtbOptions o)
      : o_(std::move(o)),
        prior_(&prior),
        trainer_(prior.process(),
                 rtb::Model<Net>(Net(prior.model().net(),
                                     make_residual(prior, o_)),
                                 prior.model()),
                 QReward{std::move(q), check_alpha(o_.alpha), o_.jacobian, {}},
                 rtb::Config{.batch_size = o_.states_per_batch * o_.group, .learning_rate = o_.learning_rate,
                             .group_size = o_.group, .exploration = rtb::ExplorationSchedule::none(),
                             .max_grad_norm = o_.max_grad_norm, .threads = o_.threads, .seed = o_.seed}) {}

  /// Trains on the data set (normalised states [N, ds], latent actions [N, da]). progress(it,
  /// on-policy loss, mean log r) every 50 iterations.
  void train(ConstView states, ConstView latent,
             const std::function<void(std::int64_t, double, double)>& progress = {}) {
    prior_->check_states(states, "RtbPolicy::train");
    if (states.rows() != latent.rows() || latent.cols() != prior_->process().state_dim())
      throw rtb::ShapeError(rtb::detail::message("RtbPolicy::train: ", states.rows(), " states and ", latent.rows(), "x",
                                                 latent.cols(), " actions; pass one ", prior_->process().state_dim(),
                                                 "-wide action row per state row"));
    const Index B = o_.states_per_batch * o_.group, ds = states.cols(), da = latent.cols(), N = states.rows();
    Matrix cond(B, ds), ends(B, da);
    for (std::int64_t k = 0; k < o_.iterations; ++k) {
      for (Index j = 0; j < o_.states_per_batch; ++j) {
        const Index i = pick(N, {o_.seed, rtb::math::Stream::User, static_cast<std::uint64_t>(k)}, j);
        for (Index g = 0; g < o_.group; ++g) {
          cond.row(j * o_.group + g) = states.row(i);
          ends.row(j * o_.group + g) = latent.row(i);
        }
      }
      const rtb::StepStats on = trainer_.step(cview(cond));
      trainer_.step(cview(cond), cview(ends));
      if (progress && (k + 1) % 50 == 0) progress(k + 1, on.loss, on.mean_log_r);
    }
  }

  /// One latent action per state row.
  Matrix sample(ConstView states, std::uint64_t seed) {
    prior_->check_states(states, "RtbPolicy::sample");
    const auto x = trainer_.sample(states, seed);
    return Matrix(rtb::view_of(x));
  }
  /// Per state: the importance-sampled log Z over n draws (log mean exp of the log weights).
  double log_z(ConstView state, Index n, std::uint64_t seed) {
    Matrix c(n, state.cols());
    for (Index i = 0; i < n; ++i) c.row(i) = state.row(0);
    return trainer_.evaluate(cview(c), seed).log_partition.log_z_is;
  }
  Trainer& trainer() { return trainer_; }

 private:
  static double check_alpha(double a) {
    if (!(a > 0) || !std::isfinite(a))
      throw rtb::InvalidArgumentError(rtb::detail::message("RtbPolicy: alpha must be a finite positive temperature, got ", a,
                                                           "; pass e.g. --alpha 0.1"));
    return a;
  }
  static rtb::Mlp<Real> make_residual(const BehaviourPrior& prior, const RtbOptions& o) {
    DiffusionOptions d = prior.options();
    d.hidden = o.hidden;
    return make_eps_net(prior.process().state_dim(), prior.model().net().condition_dim(), d, o.seed + 100, true);
  }

  RtbOptions o_;
  const BehaviourPrior* prior_;  // the prior outlives the policy (its model is shared with it anyway)
  Trainer trainer_;
};

/// The best of K prior draws per state by Q (env actions [n, da]).
inline Matrix q_sampling(const BehaviourPrior& prior, const QFunction& q, ConstView states, Index K, std::uint64_t seed) {
  const Index n = states.rows(), ds = states.cols();
  Matrix rep(n * K, ds);
  for (Index i = 0; i < n; ++i)
    for (Index k = 0; k < K; ++k) rep.row(i * K + k) = states.row(i);
  Matrix a = prior.sample(cview(rep), seed);
  to_env(mview(a));
  std::vector<Real> qv(static_cast<std::size_t>(n * K));
  q(cview(rep), cview(a), std::span<Real>(qv));
  Matrix best(n, a.cols());
  for (Index i = 0; i < n; ++i) {
    Index arg = i * K;
    for (Index k = 1; k < K; ++k)
      if (qv[static_cast<std::size_t>(i * K + k)] > qv[static_cast<std::size_t>(arg)]) arg = i * K + k;
    best.row(i) = a.row(arg);
  }
  return best;
}

}  // namespace control
