// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Implicit Q-Learning (Kostrikov, Nair & Levine 2021), trained offline on `Transitions`:
///
///     L_V = E[ |τ − 1(u < 0)| u² ],   u = min(Q̄₁, Q̄₂)(s, a) − V(s)          (expectile τ)
///     L_Q = ½ Σ_i E[ (Q_i(s, a) − (c·r + γ(1 − done)·V(s')))² ]
///     Q̄_i ← (1 − α)·Q̄_i + α·Q_i                                            (Polyak, α = tau_target)
///
/// one V step then one Q step per minibatch, V(s') taken before the V step, in the order of
/// IQL_PyTorch's `ImplicitQLearning.update` (algorithm-reference §4.2: τ 0.7, γ 0.99, Adam 3e-4,
/// batch 256, EMA 0.005). With τ = 0.5 V is E_a[Q] and the pair is SARSA-style evaluation of the
/// behaviour policy (what the tests check against the closed form of lqr_q.hpp).
///
/// Decisions:
/// - Nets are rtb::Mlp (net.hpp): 2 hidden layers of width `hidden`, GELU, not the reference's
///   ReLU. Q nets read [s, a] (a in the env's units, [−1, 1]); V reads s.
/// - `c = reward_scale` multiplies the rewards; q() and value() return scaled units.
/// - q() and q_action_gradient() use the target twins by default (IQL's policy extraction reads
///   `q_target`); `QHead::Online` reads the online twins. Both take min(Q₁, Q₂); its gradient is
///   that of the smaller net in each row (a subgradient at ties) and exact (net.hpp), not FD.
/// - Minibatch rows are Philox draws keyed by (seed, step), so training is reproducible and a
///   second train() call continues the sequence. No state save/load yet.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "net.hpp"
#include "transitions.hpp"

namespace control {

struct IqlConfig {
  Index hidden = 256;
  double expectile = 0.7;  ///< τ
  double discount = 0.99;  ///< γ
  double learning_rate = 3e-4;
  Index batch = 256;
  double tau_target = 0.005;  ///< α of the target EMA
  Index steps = 1'000'000;    ///< train(data) default
  std::uint64_t seed = 0;
  double reward_scale = 1.0;
  Index log_every = 1000;  ///< progress callback period
};

struct IqlProgress {
  Index step = 0;         ///< updates done
  double q_loss = 0;      ///< mean over the last period, ½ Σ_i MSE_i
  double v_loss = 0;      ///< mean expectile loss over the last period
};

enum class QHead { Target, Online };

template <class S = float>
class Iql {
 public:
  Iql(const IqlConfig& c, Index state_dim, Index action_dim)
      : c_(checked(c)), ds_(checked_dims("Iql", state_dim, action_dim)), da_(action_dim),
        q1_(opts(ds_ + da_, 1)), q2_(opts(ds_ + da_, 2)), q1_target_(opts(ds_ + da_, 1)),
        q2_target_(opts(ds_ + da_, 2)), v_(opts(ds_, 3)) {
    const auto B = static_cast<std::size_t>(c_.batch);
    sa_.resize(B * static_cast<std::size_t>(ds_ + da_));
    s_.resize(B * static_cast<std::size_t>(ds_));
    s2_.resize(s_.size());
    for (auto* v : {&r_, &y_, &a1_, &a2_, &d_}) v->resize(B);
    q1_target_.copy_from(q1_);  // the targets start as the online nets (already equal by seed)
    q2_target_.copy_from(q2_);
  }

  const IqlConfig& config() const { return c_; }
  Index state_dim() const { return ds_; }
  Index action_dim() const { return da_; }
  Index steps_done() const { return steps_done_; }

  void train(const Transitions<S>& data) { train(data, c_.steps); }
  /// `steps` updates on minibatches of `data`; `progress` every log_every updates and at the end.
  void train(const Transitions<S>& data, Index steps, const std::function<void(const IqlProgress&)>& progress = {}) {
    check_transitions("Iql::train", data);
    if (data.state_dim != ds_ || data.action_dim != da_)
      throw rtb::ShapeError(rtb::detail::message("Iql::train: data has state_dim ", data.state_dim, " and action_dim ",
                                                 data.action_dim, ", this Iql was built for ", ds_, " and ", da_));
    double q_sum = 0, v_sum = 0;
    Index in_period = 0;
    for (Index k = 0; k < steps; ++k) {
      const auto [ql, vl] = update(data);
      q_sum += ql;
      v_sum += vl;
      ++in_period;
      if (progress && (steps_done_ % c_.log_every == 0 || k + 1 == steps)) {
        progress(IqlProgress{steps_done_, q_sum / static_cast<double>(in_period), v_sum / static_cast<double>(in_period)});
        q_sum = v_sum = 0;
        in_period = 0;
      }
    }
  }

  /// out[n] = min(Q₁, Q₂)(states[n, ds], actions[n, da]).
  void q(std::span<const S> states, std::span<const S> actions, std::span<S> out, QHead head = QHead::Target) const {
    twins(states, actions, out, {}, head);
  }
  /// Each twin apart: q1[n] = Q₁(s, a), q2[n] = Q₂(s, a) (diagnostics: how far the twins disagree).
  void q_twins(std::span<const S> states, std::span<const S> actions, std::span<S> q1, std::span<S> q2,
               QHead head = QHead::Target) const {
    if (q1.size() != q2.size())
      throw rtb::ShapeError(rtb::detail::message("Iql::q_twins: q1 has ", q1.size(), " values and q2 ", q2.size()));
    twins(states, actions, q1, q2, head);
  }
  double q(std::span<const S> state, std::span<const S> action, QHead head = QHead::Target) const {
    S out[1];
    q(state, action, std::span<S>(out, 1), head);
    return static_cast<double>(out[0]);
  }
  /// out[n] = V(states[n, ds]).
  void value(std::span<const S> states, std::span<S> out) const {
    if (states.size() != out.size() * static_cast<std::size_t>(ds_))
      throw rtb::ShapeError(rtb::detail::message("Iql::value: states has ", states.size(), " values for ", out.size(),
                                                 " outputs of state_dim ", ds_, "; pass [n, state_dim] row-major"));
    v_.inference(states.data(), static_cast<Index>(out.size()), out.data());
  }
  /// grad[n, da] = ∂ min(Q₁, Q₂)(s, a)/∂a (optionally also q_out[n] = the min).
  void q_action_gradient(std::span<const S> states, std::span<const S> actions, std::span<S> grad,
                         QHead head = QHead::Target, std::span<S> q_out = {}) {
    const Index n = check_query("Iql::q_action_gradient", states, actions, grad.size() / std::max<Index>(da_, 1));
    if (static_cast<Index>(grad.size()) != n * da_ || (!q_out.empty() && static_cast<Index>(q_out.size()) != n))
      throw rtb::ShapeError(rtb::detail::message("Iql::q_action_gradient: grad has ", grad.size(), " values and q_out ",
                                                 q_out.size(), " for ", n, " rows; pass [n, action_dim] and [n] (or none)"));
    Net<S>* n1 = head == QHead::Target ? &q1_target_ : &q1_;  // forward/backward: context and gradient only
    Net<S>* n2 = head == QHead::Target ? &q2_target_ : &q2_;
    std::vector<S> g2(static_cast<std::size_t>(c_.batch * da_));
    std::fill(d_.begin(), d_.end(), S(1));
    for (Index r0 = 0; r0 < n; r0 += c_.batch) {
      const Index m = std::min(c_.batch, n - r0);
      pack(states.data() + r0 * ds_, actions.data() + r0 * da_, m, sa_.data());
      S* g1 = grad.data() + r0 * da_;
      n1->forward(sa_.data(), m, a1_.data());
      n1->backward(d_.data());
      n1->input_gradient(ds_, da_, g1);
      n2->forward(sa_.data(), m, a2_.data());
      n2->backward(d_.data());
      n2->input_gradient(ds_, da_, g2.data());
      for (Index i = 0; i < m; ++i) {
        if (a2_[i] < a1_[i])
          for (Index j = 0; j < da_; ++j) g1[i * da_ + j] = g2[static_cast<std::size_t>(i * da_ + j)];
        if (!q_out.empty()) q_out[static_cast<std::size_t>(r0 + i)] = std::min(a1_[i], a2_[i]);
      }
    }
  }

 private:
  struct Losses {
    double q, v;
  };

  static IqlConfig checked(const IqlConfig& c) {
    auto bad = [](const char* field, double v, const char* want) {
      throw rtb::InvalidArgumentError(rtb::detail::message("IqlConfig: ", field, " = ", v, " but it must be ", want));
    };
    if (!(c.expectile > 0 && c.expectile < 1)) bad("expectile", c.expectile, "in (0, 1) (0.5 = mean, 0.7 = IQL's)");
    if (!(c.discount >= 0 && c.discount < 1)) bad("discount", c.discount, "in [0, 1)");
    if (!(c.learning_rate > 0)) bad("learning_rate", c.learning_rate, "positive");
    if (!(c.tau_target > 0 && c.tau_target <= 1)) bad("tau_target", c.tau_target, "in (0, 1]");
    if (!(c.reward_scale > 0 && std::isfinite(c.reward_scale))) bad("reward_scale", c.reward_scale, "finite and positive");
    if (c.hidden <= 0) bad("hidden", static_cast<double>(c.hidden), "positive");
    if (c.batch <= 0) bad("batch", static_cast<double>(c.batch), "positive");
    if (c.log_every <= 0) bad("log_every", static_cast<double>(c.log_every), "positive");
    return c;
  }
  typename Net<S>::Options opts(Index in, std::uint64_t id) const {
    return {.input_dim = in, .output_dim = 1, .hidden = {c_.hidden, c_.hidden},
            .seed = c_.seed ^ (0x9E3779B97F4A7C15ull * id), .learning_rate = static_cast<S>(c_.learning_rate),
            .max_rows = c_.batch};
  }
  std::pair<const Net<S>*, const Net<S>*> heads(QHead h) const {
    if (h == QHead::Target) return {&q1_target_, &q2_target_};
    return {&q1_, &q2_};
  }
  /// out = min(Q₁, Q₂), or with q2 given, out = Q₁ and q2 = Q₂.
  void twins(std::span<const S> states, std::span<const S> actions, std::span<S> out, std::span<S> q2,
             QHead head) const {
    const Index n = check_query("Iql::q", states, actions, out.size());
    const auto [n1, n2] = heads(head);
    for (Index r0 = 0; r0 < n; r0 += c_.batch) {
      const Index m = std::min(c_.batch, n - r0);
      pack(states.data() + r0 * ds_, actions.data() + r0 * da_, m, sa_.data());
      n1->inference(sa_.data(), m, a1_.data());
      n2->inference(sa_.data(), m, a2_.data());
      for (Index i = 0; i < m; ++i) {
        const auto o = static_cast<std::size_t>(r0 + i);
        if (q2.empty()) {
          out[o] = std::min(a1_[i], a2_[i]);
        } else {
          out[o] = a1_[i];
          q2[o] = a2_[i];
        }
      }
    }
  }
  Index check_query(const char* who, std::span<const S> states, std::span<const S> actions, std::size_t n) const {
    if (states.size() != n * static_cast<std::size_t>(ds_) || actions.size() != n * static_cast<std::size_t>(da_))
      throw rtb::ShapeError(rtb::detail::message(who, ": states has ", states.size(), " values and actions ",
                                                 actions.size(), " for ", n, " rows; expected [n, ", ds_, "] and [n, ",
                                                 da_, "] row-major"));
    return static_cast<Index>(n);
  }
  /// dst[m, ds + da] = [s, a] row by row.
  void pack(const S* s, const S* a, Index m, S* dst) const {
    for (Index i = 0; i < m; ++i) {
      std::copy(s + i * ds_, s + (i + 1) * ds_, dst + i * (ds_ + da_));
      std::copy(a + i * da_, a + (i + 1) * da_, dst + i * (ds_ + da_) + ds_);
    }
  }

  Losses update(const Transitions<S>& d) {
    const Index B = c_.batch, n = d.size();
    for (Index j = 0; j < B; ++j) {
      const Index i = sample_row(c_.seed, rtb::math::Stream::User, static_cast<std::uint64_t>(steps_done_), j, n);
      const auto row = static_cast<std::size_t>(i);
      std::copy_n(d.states.data() + row * ds_, ds_, s_.data() + j * ds_);
      std::copy_n(d.next_states.data() + row * ds_, ds_, s2_.data() + j * ds_);
      r_[j] = static_cast<S>(c_.reward_scale) * d.rewards[row];
      d_[j] = d.terminals[row];
      pack(d.states.data() + row * ds_, d.actions.data() + row * da_, 1, sa_.data() + j * (ds_ + da_));
    }
    // Targets: y = c·r + γ(1 − done)·V(s') and min of the target twins, before any step.
    v_.inference(s2_.data(), B, y_.data());
    for (Index j = 0; j < B; ++j) y_[j] = r_[j] + static_cast<S>(c_.discount) * (S(1) - d_[j]) * y_[j];
    q1_target_.inference(sa_.data(), B, a1_.data());
    q2_target_.inference(sa_.data(), B, a2_.data());
    // V step: expectile regression towards min(Q̄₁, Q̄₂).
    v_.forward(s_.data(), B, r_.data());  // r_ is free now: holds V(s)
    double vl = 0;
    const S tau = static_cast<S>(c_.expectile), invB = S(1) / static_cast<S>(B);
    for (Index j = 0; j < B; ++j) {
      const S u = std::min(a1_[j], a2_[j]) - r_[j];
      const S w = u < S(0) ? S(1) - tau : tau;
      vl += static_cast<double>(w * u * u);
      d_[j] = S(-2) * w * u * invB;
    }
    v_.backward(d_.data());
    v_.step_optimizer();
    // Q steps: ½ Σ_i mean (Q_i − y)², so ∂/∂Q_i = (Q_i − y)/B.
    double ql = 0;
    for (Net<S>* net : {&q1_, &q2_}) {
      net->forward(sa_.data(), B, a1_.data());
      for (Index j = 0; j < B; ++j) {
        const S e = a1_[j] - y_[j];
        ql += 0.5 * static_cast<double>(e * e);
        d_[j] = e * invB;
      }
      net->backward(d_.data());
      net->step_optimizer();
    }
    q1_target_.track(q1_, static_cast<S>(c_.tau_target));
    q2_target_.track(q2_, static_cast<S>(c_.tau_target));
    ++steps_done_;
    return {ql / static_cast<double>(B), vl / static_cast<double>(B)};
  }
  IqlConfig c_;
  Index ds_, da_;
  Net<S> q1_, q2_, q1_target_, q2_target_, v_;
  Index steps_done_ = 0;
  mutable std::vector<S> sa_, a1_, a2_, d_;
  std::vector<S> s_, s2_, r_, y_;
};

}  // namespace control
