// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Advantage-weighted regression (IQL's policy extraction, Peng et al. 2019 / Kostrikov et al.
/// 2021): a Gaussian policy in arctanh space fitted by weighted maximum likelihood,
///
///     u = arctanh(clip(a, ±0.99)),   π(u|s) = N(μ_ψ(s), diag σ²),   σ = exp(log_std)
///     w = min(exp(β·(Q(s, a) − V(s))), 100)
///     L = (1/B) Σ_i w_i · Σ_d [ ½((u_id − μ_d(s_i))/σ_d)² + log σ_d + ½ log 2π ]
///
/// Decisions:
/// - The weights are computed once for the data set (advantage_weights, from a trained Iql):
///   with Q and V fixed, that is the same objective as IQL_PyTorch's joint update, and it keeps
///   Awr free of Iql (any weights in [0, max_weight] can be passed).
/// - μ_ψ is an rtb::Mlp (GELU, 2 × 256 by default) with no tanh on its output: the policy lives
///   in arctanh space, like the diffusion prior; act() returns tanh of the mean or of a sample.
/// - log σ is state-independent, trained by its own Adam, and clamped to [−5, 2] as in
///   IQL_PyTorch's GaussianPolicy (gradient 0 where the clamp is active, as torch's clamp).
/// - No cosine learning-rate schedule (IQL_PyTorch has one); constant Adam lr.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "iql.hpp"

namespace control {

struct AwrConfig {
  Index hidden = 256;
  double beta = 3.0;          ///< inverse temperature of the advantage weights
  double max_weight = 100.0;  ///< w ≤ max_weight
  double learning_rate = 3e-4;
  Index batch = 256;
  Index steps = 1'000'000;  ///< train(data, weights) default
  std::uint64_t seed = 0;
  double action_clip = 0.99;  ///< |a| clipped to this before arctanh
  double log_std_init = 0.0;
  Index log_every = 1000;
};

inline void check_awr_weight_options(const char* who, double beta, double max_weight) {
  if (!(beta > 0 && std::isfinite(beta)))
    throw rtb::InvalidArgumentError(rtb::detail::message(who, ": beta = ", beta, " must be finite and positive (IQL uses 3)"));
  if (!(max_weight > 0))
    throw rtb::InvalidArgumentError(rtb::detail::message(who, ": max_weight = ", max_weight, " must be positive"));
}

/// w[n] = min(exp(β·(Q(s, a) − V(s))), max_weight) for every row of `data` (states, actions).
template <class S>
std::vector<S> advantage_weights(const Iql<S>& iql, const Transitions<S>& data, double beta, double max_weight = 100.0,
                                 QHead head = QHead::Target) {
  check_awr_weight_options("advantage_weights", beta, max_weight);
  check_transitions("advantage_weights", data, false);
  std::vector<S> q(static_cast<std::size_t>(data.size())), v(q.size());
  iql.q(data.states, data.actions, q, head);
  iql.value(data.states, v);
  for (std::size_t i = 0; i < q.size(); ++i)
    q[i] = static_cast<S>(std::min(std::exp(beta * static_cast<double>(q[i] - v[i])), max_weight));
  return q;
}

struct AwrProgress {
  Index step = 0;
  double loss = 0;  ///< mean weighted negative log-likelihood over the last period
};

template <class S = float>
class Awr {
 public:
  static constexpr S kLogStdMin = S(-5), kLogStdMax = S(2);

  Awr(const AwrConfig& c, Index state_dim, Index action_dim)
      : c_(checked(c)), ds_(checked_dims("Awr", state_dim, action_dim)), da_(action_dim),
        mean_({.input_dim = state_dim, .output_dim = action_dim, .hidden = {c.hidden, c.hidden},
               .seed = c.seed ^ 0xA5A5A5A5ull, .learning_rate = static_cast<S>(c.learning_rate), .max_rows = c.batch}),
        log_std_(static_cast<std::size_t>(action_dim), static_cast<S>(c.log_std_init)),
        log_std_grad_(log_std_.size()),
        log_std_adam_(action_dim, {.learning_rate = static_cast<S>(c.learning_rate)}) {}

  const AwrConfig& config() const { return c_; }
  std::span<S> log_std() { return log_std_; }
  std::span<const S> log_std_gradient() const { return log_std_grad_; }
  Net<S>& mean_net() { return mean_; }

  void train(const Transitions<S>& data, std::span<const S> weights) { train(data, weights, c_.steps); }
  /// `steps` Adam updates of L on Philox-drawn minibatches of (states, actions, weights).
  void train(const Transitions<S>& data, std::span<const S> weights, Index steps,
             const std::function<void(const AwrProgress&)>& progress = {}) {
    check_transitions("Awr::train", data, false);
    if (data.state_dim != ds_ || data.action_dim != da_ || static_cast<Index>(weights.size()) != data.size())
      throw rtb::ShapeError(rtb::detail::message("Awr::train: data has state_dim ", data.state_dim, ", action_dim ",
                                                 data.action_dim, " and ", data.size(), " rows with ", weights.size(),
                                                 " weights; this Awr was built for ", ds_, " and ", da_,
                                                 ", and needs one weight per row"));
    for (std::size_t i = 0; i < weights.size(); ++i)
      if (!(weights[i] >= S(0) && std::isfinite(weights[i])))
        throw rtb::NonFiniteError(rtb::detail::message("Awr::train: weights row ", i, " is ", weights[i],
                                                       "; weights must be finite and >= 0 (see advantage_weights)"));
    const Index n = data.size(), B = c_.batch;
    std::vector<S> s(static_cast<std::size_t>(B * ds_)), u(static_cast<std::size_t>(B * da_)), w(static_cast<std::size_t>(B));
    double sum = 0;
    Index in_period = 0;
    for (Index k = 0; k < steps; ++k) {
      for (Index j = 0; j < B; ++j) {
        const auto i = static_cast<std::size_t>(sample_row(c_.seed, rtb::math::Stream::User, static_cast<std::uint64_t>(steps_done_), j, n));
        std::copy_n(data.states.data() + i * ds_, ds_, s.data() + j * ds_);
        for (Index d = 0; d < da_; ++d) u[j * da_ + d] = to_arctanh(data.actions[i * da_ + d]);
        w[j] = weights[i];
      }
      sum += static_cast<double>(loss_and_gradient(s.data(), u.data(), w.data(), B));
      mean_.step_optimizer();
      log_std_adam_.step(std::span<S>(log_std_), std::span<const S>(log_std_grad_));
      ++steps_done_;
      ++in_period;
      if (progress && (steps_done_ % c_.log_every == 0 || k + 1 == steps)) {
        progress(AwrProgress{steps_done_, sum / static_cast<double>(in_period)});
        sum = 0;
        in_period = 0;
      }
    }
  }

  /// L on rows (states [rows, ds], arctanh actions u [rows, da], weights [rows]), rows ≤ batch;
  /// leaves ∂L/∂ψ in mean_net().gradient() and ∂L/∂log σ in log_std_gradient().
  S loss_and_gradient(const S* states, const S* u, const S* w, Index rows) {
    if (rows <= 0 || rows > c_.batch)
      throw rtb::ShapeError(rtb::detail::message("Awr::loss_and_gradient: ", rows, " rows, expected 1 to batch = ",
                                                 c_.batch, "; split the rows or raise AwrConfig::batch"));
    mu_.resize(static_cast<std::size_t>(rows * da_));
    d_mu_.resize(mu_.size());
    mean_.forward(states, rows, mu_.data());
    std::fill(log_std_grad_.begin(), log_std_grad_.end(), S(0));
    const S invB = S(1) / static_cast<S>(rows), half_log_2pi = S(0.91893853320467274178);
    S loss = 0;
    for (Index d = 0; d < da_; ++d) {
      const S ls = std::clamp(log_std_[d], kLogStdMin, kLogStdMax), inv_var = std::exp(S(-2) * ls);
      const bool active = log_std_[d] > kLogStdMin && log_std_[d] < kLogStdMax;
      for (Index i = 0; i < rows; ++i) {
        const S e = u[i * da_ + d] - mu_[i * da_ + d], z2 = e * e * inv_var;
        loss += w[i] * invB * (S(0.5) * z2 + ls + half_log_2pi);
        d_mu_[i * da_ + d] = -w[i] * invB * e * inv_var;
        if (active) log_std_grad_[d] += w[i] * invB * (S(1) - z2);
      }
    }
    mean_.backward(d_mu_.data());
    return loss;
  }

  /// μ_ψ(states) in arctanh space, out [n, da].
  void mean(std::span<const S> states, std::span<S> out) const {
    const Index n = check_rows("Awr::mean", states, out);
    mean_.inference(states.data(), n, out.data());
  }

  /// actions [n, da] in [−1, 1]: tanh(μ) if deterministic, else tanh(μ + σ·z) with z keyed by
  /// (seed, row, dimension).
  void act(std::span<const S> states, std::span<S> actions, bool deterministic, std::uint64_t seed = 0) const {
    const Index n = check_rows("Awr::act", states, actions);
    mean_.inference(states.data(), n, actions.data());
    const rtb::math::NoiseKey key{seed, static_cast<rtb::math::Stream>(static_cast<std::uint32_t>(rtb::math::Stream::User) + 1), 0};
    for (Index i = 0; i < n; ++i)
      for (Index d = 0; d < da_; ++d) {
        S& a = actions[static_cast<std::size_t>(i * da_ + d)];
        if (!deterministic)
          a += std::exp(std::clamp(log_std_[d], kLogStdMin, kLogStdMax)) *
               rtb::math::normal<S>(key, static_cast<std::uint64_t>(i), 0, static_cast<std::uint32_t>(d));
        a = std::tanh(a);
      }
  }

  /// arctanh(clip(a, ±action_clip)): a data-set action in the policy's space.
  S to_arctanh(S a) const {
    const S m = static_cast<S>(c_.action_clip);
    return std::atanh(std::clamp(a, -m, m));
  }

 private:
  static AwrConfig checked(const AwrConfig& c) {
    check_awr_weight_options("AwrConfig", c.beta, c.max_weight);
    auto bad = [](const char* field, double v, const char* want) {
      throw rtb::InvalidArgumentError(rtb::detail::message("AwrConfig: ", field, " = ", v, " but it must be ", want));
    };
    if (!(c.learning_rate > 0)) bad("learning_rate", c.learning_rate, "positive");
    if (!(c.action_clip > 0 && c.action_clip < 1)) bad("action_clip", c.action_clip, "in (0, 1) (arctanh must stay finite)");
    if (c.hidden <= 0) bad("hidden", static_cast<double>(c.hidden), "positive");
    if (c.batch <= 0) bad("batch", static_cast<double>(c.batch), "positive");
    if (c.log_every <= 0) bad("log_every", static_cast<double>(c.log_every), "positive");
    return c;
  }
  Index check_rows(const char* who, std::span<const S> states, std::span<const S> out) const {
    const std::size_t n = states.size() / static_cast<std::size_t>(ds_);
    if (states.size() != n * static_cast<std::size_t>(ds_) || out.size() != n * static_cast<std::size_t>(da_))
      throw rtb::ShapeError(rtb::detail::message(who, ": states has ", states.size(), " values and the output ",
                                                 out.size(), "; expected [n, ", ds_, "] and [n, ", da_, "] row-major"));
    return static_cast<Index>(n);
  }

  AwrConfig c_;
  Index ds_, da_;
  Net<S> mean_;
  std::vector<S> log_std_, log_std_grad_;
  rtb::Adam<S> log_std_adam_;
  Index steps_done_ = 0;
  std::vector<S> mu_, d_mu_;
};

}  // namespace control
