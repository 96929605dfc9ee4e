// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The two-pass, memory-constant trajectory gradient shared by every objective and by prior
/// fitting.
///
/// A batch has two kinds of rows. On-policy rows are rolled out by the posterior from x_0 with
/// counter-based noise; their states are never stored: the gradient pass regenerates them step
/// by step from the same noise and the same parameters, bit for bit (and checks x_T to prove it).
/// Stored rows (replay, data, another behaviour policy such as the prior) have their trajectories
/// kept, O(T·rows·D).
///
///   score         (forward only)  Σ_t log p_φ(x_{t+1}|x_t) and Σ_t log p_θ(x_{t+1}|x_t) per row;
///   backpropagate (step by step)  grad = Σ_i w_i Σ_{t∈K} s·∇_φ log p_φ(x_{t+1}|x_t),
///
/// where w_i = ∂L/∂(Σ_t log p_φ)_i comes from the objective and K is all steps (s = 1) or a random
/// subset (s = T/|K|: unbiased, noisier, cheaper). Every pass runs the one rollout loop, `walk`.
/// Peak activation memory is one step of one block per thread, whatever T. Rows are split into
/// fixed blocks processed in parallel; each thread keeps one gradient buffer and adds it into the
/// result in block order (detail::OrderedTurns), so results do not depend on the thread count and
/// gradient memory is threads × parameters, not blocks × parameters. The engine touches its
/// memory only through its space's operations (space.hpp), so it runs in any memory space.

#include <algorithm>
#include <span>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/error.hpp"
#include "rtb/net/model.hpp"
#include "rtb/space.hpp"
#include "rtb/train/engine_storage.hpp"

namespace rtb::detail {

/// Marks k distinct steps of T, uniformly at random (partial Fisher–Yates keyed by `key`), in
/// `keep` (T flags); `order` is T entries of scratch.
inline void choose_steps(const math::NoiseKey& key, Index T, Index k, std::span<Index> order, std::span<char> keep) {
  std::fill(keep.begin(), keep.end(), char{0});
  for (Index t = 0; t < T; ++t) order[static_cast<std::size_t>(t)] = t;
  for (Index i = 0; i < k; ++i) {
    const double u = math::uniform<double>(key, static_cast<std::uint64_t>(i), 0, 0);
    const Index j = i + std::min<Index>(static_cast<Index>(u * static_cast<double>(T - i)), T - i - 1);
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
    keep[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] = 1;
  }
}

/// The engine for a process and the two nets it scores with: the posterior (trained) and the
/// prior (frozen), which are of different types when the posterior wraps a frozen base.
template <NoiseProcess P, Denoiser Post, Denoiser Prior = Post>
class TrajectoryEngine : public EngineStorage<P, Post, Prior> {
  using Base = EngineStorage<P, Post, Prior>;
  using typename Base::Block;
  using typename Base::Work;
  using Base::active_;
  using Base::blocks_;
  using Base::cond_;
  using Base::cond_dim_;
  using Base::end_;
  using Base::log_post_;
  using Base::log_prior_;
  using Base::on_;
  using Base::process_;
  using Base::row_offset_;
  using Base::stored_;
  using Base::trajectories_;
  using Base::turns_;
  using Base::weight_;
  using Base::cspan;
  using Base::span;

 public:
  using typename Base::C;
  using typename Base::S;
  using typename Base::Space;
  using typename Base::V;
  using Base::Base;
  using Base::stored_states;
  using Base::steps;

  /// Builds the stored rows' trajectories backward from their end states.
  void build_stored_backward(const math::NoiseKey& key)
    requires ReversibleNoiseProcess<P>
  {
    if (stored_ == 0) return;
    const Index T = steps(), D = process_.state_dim();
    Space::copy(span(trajectories_, T * stored_ * D, stored_ * D), cspan(end_, on_ * D, stored_ * D));
    this->for_blocks([&](const Block& blk, Work&) {
      if (!blk.stored) return;
      const Index r0 = blk.first - on_;
      for (Index t = T - 1; t >= 0; --t)
        process_.sample_backward_step(step_of(blk, stored_at(t + 1, r0, blk.rows), t), key,
                                      View<V, Space>(stored_states(t).data() + r0 * D, blk.rows, D));
    });
  }

  /// Rolls out the stored rows with `behaviour` (exploration as the process defines it) and keeps
  /// their states: off-policy trajectories from another policy, such as the prior.
  template <class Behaviour>
  void roll_out_stored(const Model<Behaviour>& behaviour, const math::NoiseKey& key, S exploration) {
    static_assert(std::is_same_v<Behaviour, Post> || std::is_same_v<Behaviour, Prior>);
    if (stored_ == 0) return;
    const Index D = process_.state_dim(), T = steps();
    this->for_blocks([&](const Block& blk, Work& w) {
      if (!blk.stored) return;
      auto& ctx = context_for<Behaviour>(w);
      walk(blk, w, Source::Record, key, exploration,
           [&](const auto& s, View<S, Space> out) { behaviour.inference(s, out, ctx); }, [](const auto&, auto, auto) {});
      const Index r0 = blk.first - on_;
      Space::copy(span(end_, blk.first * D, blk.rows * D), cspan(trajectories_, (T * stored_ + r0) * D, blk.rows * D));
    });
  }

  /// Rolls out the on-policy rows with the posterior (exploration as the process defines it) and
  /// scores every row under the posterior (log_post) and, if given, the prior (log_prior).
  void score(const Model<Post>& post, const Model<Prior>* prior, const math::NoiseKey& key, S exploration) {
    const Index D = process_.state_dim();
    this->for_blocks([&](const Block& blk, Work& w) {
      const std::span<S> lp = span(log_post_, blk.first, blk.rows), lq = span(log_prior_, blk.first, blk.rows);
      Space::fill(lp, S(0));
      if (prior) Space::fill(lq, S(0));
      const V* x_end = walk(
          blk, w, blk.stored ? Source::Stored : Source::Regenerate, key, exploration,
          [&](const auto& s, View<S, Space> out) { post.forward(s, out, w.post_ctx); },
          [&](const auto& s, View<const V, Space> x_next, View<const S, Space> out) {
            process_.log_prob_step(s, x_next, out, lp);
            if (prior) {
              View<S, Space> out_prior(w.out_prior.data(), blk.rows, process_.output_dim());
              prior->inference(s, out_prior, w.prior_ctx);
              process_.log_prob_step(s, x_next, const_view(out_prior), lq);
            }
          });
      if (!blk.stored)
        Space::copy(span(end_, blk.first * D, blk.rows * D), std::span<const V>(x_end, static_cast<std::size_t>(blk.rows * D)));
    });
  }

  /// grad = Σ_i weight[i] · Σ_{t kept} scale · ∇ log p_post(x_{t+1}|x_t) (grad in the space,
  /// weights on the host). `keep` (T host flags) selects steps; null keeps all. On-policy rows must
  /// follow score() with the same parameters and key. If `log_prob_kept` is given it receives
  /// Σ_{t kept} scale · log p per row, an unbiased estimate of the full sum.
  void backpropagate(const Model<Post>& post, const math::NoiseKey& key, S exploration, std::span<const S> weight,
                     const char* keep, S scale, std::span<S> grad, std::span<S> log_prob_kept = {}) {
    const Index D = process_.state_dim();
    this->stage_weights(weight, scale);
    Space::fill(grad, S(0));
    turns_.reset();
    this->for_blocks([&](const Block& blk, Work& w, Index b) {
      this->ordered(b, grad, w, [&] {
        if (!log_prob_kept.empty()) Space::fill(log_prob_kept.subspan(static_cast<std::size_t>(blk.first), static_cast<std::size_t>(blk.rows)), S(0));
        if (!active_[static_cast<std::size_t>(b)]) return false;  // every row of the block has zero weight
        Space::fill(std::span<S>(w.grad), S(0));
        const std::span<const S> wt = cspan(weight_, blk.first, blk.rows);
        const V* x_end = walk(
            blk, w, blk.stored ? Source::Stored : Source::Regenerate, key, exploration,
            [&](const auto& s, View<S, Space> out) { post.forward(s, out, w.post_ctx); },
            [&](const auto& s, View<const V, Space> x_next, View<const S, Space> out) {
              if (keep && !keep[s.step]) return;
              if (!log_prob_kept.empty()) {
                Space::fill(std::span<S>(w.rows), S(0));
                process_.log_prob_step(s, x_next, out, std::span<S>(w.rows.data(), static_cast<std::size_t>(blk.rows)));
                Space::axpy(log_prob_kept.subspan(static_cast<std::size_t>(blk.first), static_cast<std::size_t>(blk.rows)),
                            scale, std::span<const S>(w.rows.data(), static_cast<std::size_t>(blk.rows)));
              }
              View<S, Space> d_out(w.d_out.data(), blk.rows, process_.output_dim());
              process_.d_log_prob_d_output(s, x_next, out, wt, d_out);
              post.backward(w.post_ctx, const_view(d_out), std::span<S>(w.grad), GradientMode::Accumulate);
            },
            [&](Index t) { return keep == nullptr || keep[t] != 0; });
        if (!blk.stored && !Space::equal(std::span<const V>(x_end, static_cast<std::size_t>(blk.rows * D)),
                                         cspan(end_, blk.first * D, blk.rows * D)))
          w.mismatch = true;
        return true;
      });
    });
    this->check_regenerated();
  }

  /// Bridge pass for fitting to data: every block draws `k` distinct random steps t and, at each,
  /// x_t | x_T from the process's closed-form bridge, and accumulates
  ///     grad = Σ_i weight[i] · (T/k) Σ_t ∇ E[log p(x_{t+1}|x_t) | x_t, x_T],
  /// an unbiased estimate of the gradient along whole backward trajectories. `log_prob` (B
  /// entries, may be empty) receives the matching estimate of Σ_t E[log p] per row. Uses the
  /// stored rows' end states; shape(0, B) first.
  void backpropagate_bridge(const Model<Post>& net, const math::NoiseKey& key, std::span<const S> weight, Index k,
                            std::span<S> grad, std::span<S> log_prob)
    requires has_bridge<P>
  {
    const Index T = steps(), D = process_.state_dim();
    k = std::clamp<Index>(k, 1, T);
    const S scale = static_cast<S>(T) / static_cast<S>(k);
    this->stage_weights(weight, scale);
    const math::NoiseKey step_key{key.seed, math::Stream::StepSubset, key.iteration};  // not the bridge's draws
    Space::fill(grad, S(0));
    turns_.reset();
    this->for_blocks([&](const Block& blk, Work& w, Index b) {
      this->ordered(b, grad, w, [&] {
        const Index n = blk.rows;
        Space::fill(std::span<S>(w.grad), S(0));
        const std::span<S> lp = log_prob.empty() ? std::span<S>() : log_prob.subspan(static_cast<std::size_t>(blk.first), static_cast<std::size_t>(n));
        if (!lp.empty()) Space::fill(lp, S(0));
        const Step<V, S, C, Space> end = step_of(blk, View<const V, Space>(end_.data() + blk.first * D, n, D), 0);
        View<S, Space> out(w.out.data(), n, process_.output_dim());
        View<S, Space> d_out(w.d_out.data(), n, process_.output_dim());
        View<V, Space> x(w.xa.data(), n, D);
        std::uint64_t chosen_mask[4] = {0, 0, 0, 0};  // distinct steps for T <= 256, else with replacement
        for (Index j = 0; j < k; ++j) {
          Index t = 0;
          for (int attempt = 0; attempt < 64; ++attempt) {
            t = std::min<Index>(T - 1, static_cast<Index>(math::uniform<double>(step_key, static_cast<std::uint64_t>(blk.first),
                                                                                static_cast<std::uint32_t>(j),
                                                                                static_cast<std::uint32_t>(attempt)) *
                                                           static_cast<double>(T)));
            if (T > 256 || !(chosen_mask[t / 64] >> (t % 64) & 1u)) break;
          }
          if (T <= 256) chosen_mask[t / 64] |= std::uint64_t{1} << (t % 64);
          Step<V, S, C, Space> at_end = end;
          at_end.step = t;
          process_.sample_given_end(at_end, key, x);
          const Step<V, S, C, Space> s = step_of(blk, const_view(x), t);
          net.forward(s, out, w.post_ctx);
          if (!lp.empty()) {
            Space::fill(std::span<S>(w.rows), S(0));
            process_.expected_log_prob_step(s, end.x, const_view(out), std::span<S>(w.rows.data(), static_cast<std::size_t>(n)));
            Space::axpy(lp, scale, std::span<const S>(w.rows.data(), static_cast<std::size_t>(n)));
          }
          process_.d_expected_log_prob_d_output(s, end.x, const_view(out), cspan(weight_, blk.first, n), d_out);
          net.backward(w.post_ctx, const_view(d_out), std::span<S>(w.grad), GradientMode::Accumulate);
        }
        return true;
      });
    });
  }

 private:
  /// Where x_{t+1} comes from in `walk`.
  enum class Source {
    Regenerate,  ///< on-policy rows: x_0 from the process, x_{t+1} sampled into scratch
    Record,      ///< stored rows rolled out now: sampled into the stored trajectory
    Stored       ///< stored rows: read from the stored trajectory
  };

  /// The one rollout loop. For each step t of `blk`: x_t is taken from the source, `output(s, out)`
  /// computes the net's output at x_t, x_{t+1} is sampled from it (Regenerate, Record: with `key`
  /// and `exploration`) or read (Stored), and `visit(s, x_{t+1}, out)` sees the transition. Stored
  /// rows skip the steps `needed(t)` rejects entirely. Returns x_T for Regenerate.
  template <class Output, class Visit, class Needed = bool (*)(Index)>
  const V* walk(const Block& blk, Work& w, Source src, const math::NoiseKey& key, S exploration, Output&& output,
                Visit&& visit, Needed&& needed = [](Index) { return true; }) {
    const Index T = steps(), D = process_.state_dim(), O = process_.output_dim(), n = blk.rows;
    const Index r0 = blk.first - on_;  // row within the stored trajectories (stored rows only)
    View<S, Space> out(w.out.data(), n, O);
    V* x = w.xa.data();
    V* x_next = w.xb.data();
    if (src == Source::Regenerate) process_.initial_state(rows_of(blk), key, View<V, Space>(x, n, D));
    if (src == Source::Record) process_.initial_state(rows_of(blk), key, View<V, Space>(stored_states(0).data() + r0 * D, n, D));
    for (Index t = 0; t < T; ++t) {
      if (src != Source::Regenerate) {
        if (src == Source::Stored && !needed(t)) continue;
        x = stored_states(t).data() + r0 * D;
        x_next = stored_states(t + 1).data() + r0 * D;
      }
      const Step<V, S, C, Space> s = step_of(blk, View<const V, Space>(x, n, D), t);
      output(s, out);
      if (src != Source::Stored) process_.sample_step(s, const_view(out), exploration, key, View<V, Space>(x_next, n, D));
      visit(s, View<const V, Space>(x_next, n, D), const_view(out));
      if (src == Source::Regenerate) std::swap(x, x_next);
    }
    return x;
  }

  Step<V, S, C, Space> step_of(const Block& blk, View<const V, Space> x, Index t) const {
    return {x, View<const C, Space>(cond_.data() + blk.first * cond_dim_, blk.rows, cond_dim_), t, process_.time(t),
            row_offset_ + blk.first};
  }
  Rows<C, Space> rows_of(const Block& blk) const {
    return {View<const C, Space>(cond_.data() + blk.first * cond_dim_, blk.rows, cond_dim_), row_offset_ + blk.first};
  }
  View<const V, Space> stored_at(Index step, Index r0, Index n) {
    const Index D = process_.state_dim();
    return View<const V, Space>(stored_states(step).data() + r0 * D, n, D);
  }

  template <class Behaviour>
  auto& context_for(Work& w) const {
    if constexpr (std::is_same_v<Behaviour, Post>)
      return w.post_ctx;
    else
      return w.prior_ctx;
  }

};

}  // namespace rtb::detail
