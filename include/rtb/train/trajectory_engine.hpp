// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The two-pass, memory-constant trajectory gradient shared by every objective and by prior
/// fitting.
///
/// A batch has two kinds of rows. On-policy rows are rolled out by the posterior from x_0 with
/// counter-based noise; their states are never stored: pass 2 regenerates them step by step from
/// the same noise and the same parameters, bit for bit (and checks x_T to prove it). Given rows
/// (replay, data) have trajectories built by the backward kernel and stored.
///
///   pass 1  (forward only)  Σ_t log p_φ(x_{t+1}|x_t) and Σ_t log p_θ(x_{t+1}|x_t) per row;
///   pass 2  (step by step)  grad = Σ_i w_i Σ_{t∈K} s·∇_φ log p_φ(x_{t+1}|x_t),
///
/// where w_i = ∂L/∂(Σ_t log p_φ)_i comes from the objective and K is all steps (s = 1) or a random
/// subset (s = T/|K|: unbiased, noisier, cheaper). Peak activation memory is one step of one
/// block, whatever T. Rows are split into fixed blocks processed in parallel; each block has its
/// own gradient buffer and they are summed in block order, so results do not depend on threads.

#include <algorithm>
#include <cstring>
#include <span>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/config.hpp"
#include "rtb/detail/thread_pool.hpp"
#include "rtb/error.hpp"

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

template <NoiseProcess P, Denoiser N>
class TrajectoryEngine {
 public:
  using S = typename P::Scalar;
  using V = typename P::Value;
  static_assert(std::is_same_v<typename N::Scalar, S>, "process and denoiser must share a Scalar");
  static_assert(std::is_same_v<typename N::Input, V>, "the denoiser must read the process's state type");

  TrajectoryEngine(const P& process, const N& net, Index block_rows, Index threads)
      : process_(process), block_rows_(block_rows), pool_(threads), num_params_(net.num_params()) {
    if (block_rows <= 0)
      throw InvalidArgumentError(detail::message("block_rows must be positive, got ", block_rows));
    if (net.input_dim() != process.state_dim() || net.output_dim() != process.output_dim())
      throw ShapeError(detail::message("denoiser/process mismatch: the denoiser maps ", net.input_dim(), " -> ",
                                       net.output_dim(), " columns but the process has state_dim ",
                                       process.state_dim(), " and expects output_dim ", process.output_dim(),
                                       "; build the denoiser with the process's dimensions"));
  }

  const P& process() const { return process_; }
  Index threads() const { return pool_.size(); }
  Index batch() const { return on_ + given_; }
  Index on_policy_rows() const { return on_; }
  Index given_rows() const { return given_; }
  Index steps() const { return process_.num_steps(); }

  /// Shapes the batch: `on_policy` regenerated rows then `given` stored rows; `net` (any net of
  /// the architecture) sizes the contexts. Allocates only when a shape needs more memory than any
  /// before.
  void shape(const N& net, Index on_policy, Index given) {
    if (on_policy < 0 || given < 0 || on_policy + given == 0)
      throw EmptyBatchError(detail::message("batch is empty (", on_policy, " on-policy + ", given,
                                            " given rows); use a positive batch size"));
    on_ = on_policy;
    given_ = given;
    const Index T = steps(), D = process_.state_dim(), B = on_ + given_;
    grow(end_, static_cast<std::size_t>(B * D));
    grow(given_states_, static_cast<std::size_t>((T + 1) * given_ * D));
    blocks_.clear();
    for (Index r = 0; r < on_; r += block_rows_) blocks_.push_back({r, std::min(block_rows_, on_ - r), false});
    for (Index r = 0; r < given_; r += block_rows_)
      blocks_.push_back({on_ + r, std::min(block_rows_, given_ - r), true});
    while (work_.size() < blocks_.size()) work_.push_back(make_work(net));
    grow(keep_, static_cast<std::size_t>(T));
  }

  /// x_T of every row, [B, D]; given rows must be written here before fill_given_backward.
  MatrixView<V> end_states() { return MatrixView<V>(end_.data(), batch(), process_.state_dim()); }
  /// States of the given rows at `step`, [given, D].
  MatrixView<V> given_states(Index step) {
    const Index D = process_.state_dim();
    return MatrixView<V>(given_states_.data() + step * given_ * D, given_, D);
  }

  /// Builds the given rows' trajectories backward from their end states.
  void fill_given_backward(const math::NoiseKey& key)
    requires ReversibleNoiseProcess<P>
  {
    if (given_ == 0) return;
    const Index T = steps(), D = process_.state_dim();
    std::copy_n(end_.data() + on_ * D, given_ * D, given_states_.data() + T * given_ * D);
    pool_.parallel_for(static_cast<Index>(blocks_.size()), [&](Index b) {
      const Block& blk = blocks_[b];
      if (!blk.given) return;
      const Index r0 = blk.first - on_;
      for (Index t = T - 1; t >= 0; --t)
        process_.sample_backward_step(ConstMatrixView<V>(given_states(t + 1).data() + r0 * D, blk.rows, D), t, key,
                                      blk.first, MatrixView<V>(given_states(t).data() + r0 * D, blk.rows, D));
    });
  }

  /// Rolls out the given rows with `net` (exploration σ) and stores their states: off-policy
  /// trajectories from another behaviour policy, such as the prior.
  void fill_given_by_rollout(const N& net, const math::NoiseKey& key, S exploration_std) {
    if (given_ == 0) return;
    const Index T = steps(), D = process_.state_dim(), O = process_.output_dim();
    pool_.parallel_for(static_cast<Index>(blocks_.size()), [&](Index b) {
      const Block& blk = blocks_[b];
      if (!blk.given) return;
      Work& w = work_[b];
      const Index r0 = blk.first - on_, n = blk.rows;
      MatrixView<S> out(w.out_prior.data(), n, O);
      process_.initial_state(MatrixView<V>(given_states(0).data() + r0 * D, n, D), blk.first);
      for (Index t = 0; t < T; ++t) {
        const ConstMatrixView<V> x(given_states(t).data() + r0 * D, n, D);
        net.inference(x, process_.time(t), out, w.ctx_prior);
        process_.sample_step(x, const_view(out), t, exploration_std, key, blk.first,
                             MatrixView<V>(given_states(t + 1).data() + r0 * D, n, D));
      }
      std::copy_n(given_states(T).data() + r0 * D, n * D, end_.data() + blk.first * D);
    });
  }

  /// Pass 1: rolls out the on-policy rows (posterior, exploration σ_expl) and scores every row
  /// under the posterior (log_post) and, if given, the prior (log_prior). Arrays have B entries.
  void pass1(const N& post, const N* prior, const math::NoiseKey& key, S exploration_std, S* log_post,
             S* log_prior) {
    pool_.parallel_for(static_cast<Index>(blocks_.size()), [&](Index b) {
      const Block& blk = blocks_[b];
      Work& w = work_[b];
      const Index T = steps(), D = process_.state_dim(), O = process_.output_dim(), n = blk.rows;
      std::fill_n(log_post + blk.first, n, S(0));
      if (prior) std::fill_n(log_prior + blk.first, n, S(0));
      MatrixView<S> out(w.out.data(), n, O);
      MatrixView<S> out_prior(w.out_prior.data(), n, O);
      V* x = w.xa.data();
      V* x_next = w.xb.data();
      if (!blk.given) process_.initial_state(MatrixView<V>(x, n, D), blk.first);
      for (Index t = 0; t < T; ++t) {
        if (blk.given) {
          x = given_states(t).data() + (blk.first - on_) * D;
          x_next = given_states(t + 1).data() + (blk.first - on_) * D;
        }
        const ConstMatrixView<V> xv(x, n, D);
        const S time = process_.time(t);
        post.forward(xv, time, out, w.ctx);
        if (!blk.given) process_.sample_step(xv, const_view(out), t, exploration_std, key, blk.first, MatrixView<V>(x_next, n, D));
        const ConstMatrixView<V> xn(x_next, n, D);
        process_.log_prob_step(xv, xn, const_view(out), t, log_post + blk.first);
        if (prior) {
          prior->inference(xv, time, out_prior, w.ctx_prior);
          process_.log_prob_step(xv, xn, const_view(out_prior), t, log_prior + blk.first);
        }
        if (!blk.given) std::swap(x, x_next);
      }
      if (!blk.given) std::copy_n(x, n * D, end_.data() + blk.first * D);
    });
  }

  /// Pass 2: grad = Σ_i weight[i] · Σ_{t kept} scale · ∇ log p_post(x_{t+1}|x_t). `keep` (T
  /// flags) selects steps; null keeps all. On-policy rows must follow pass1 with the same
  /// parameters and key. If `log_prob_kept` is given, it receives Σ_{t kept} scale · log p per row
  /// (an unbiased estimate of the full sum, for losses that need no pass 1).
  void pass2(const N& post, const math::NoiseKey& key, S exploration_std, const S* weight, const char* keep, S scale,
             std::span<S> grad, S* log_prob_kept = nullptr) {
    pool_.parallel_for(static_cast<Index>(blocks_.size()), [&](Index b) {
      const Block& blk = blocks_[b];
      Work& w = work_[b];
      const Index T = steps(), D = process_.state_dim(), O = process_.output_dim(), n = blk.rows;
      std::fill(w.grad.begin(), w.grad.end(), S(0));
      if (log_prob_kept) std::fill_n(log_prob_kept + blk.first, n, S(0));
      for (Index r = 0; r < n; ++r) w.weight[r] = weight[blk.first + r] * scale;
      bool any = false;
      for (Index r = 0; r < n; ++r) any = any || w.weight[r] != S(0);
      if (!any) return;  // every row of the block has zero weight (skipped or cut off)
      MatrixView<S> out(w.out.data(), n, O);
      MatrixView<S> d_out(w.d_out.data(), n, O);
      V* x = w.xa.data();
      V* x_next = w.xb.data();
      if (!blk.given) process_.initial_state(MatrixView<V>(x, n, D), blk.first);
      for (Index t = 0; t < T; ++t) {
        const bool train = keep == nullptr || keep[t] != 0;
        if (blk.given) {
          if (!train) continue;
          x = given_states(t).data() + (blk.first - on_) * D;
          x_next = given_states(t + 1).data() + (blk.first - on_) * D;
        }
        const ConstMatrixView<V> xv(x, n, D);
        post.forward(xv, process_.time(t), out, w.ctx);
        if (!blk.given) process_.sample_step(xv, const_view(out), t, exploration_std, key, blk.first, MatrixView<V>(x_next, n, D));
        if (train) {
          if (log_prob_kept) {
            std::fill_n(w.out_prior.data(), n, S(0));  // free here: a per-row scratch
            process_.log_prob_step(xv, ConstMatrixView<V>(x_next, n, D), const_view(out), t, w.out_prior.data());
            for (Index r = 0; r < n; ++r) log_prob_kept[blk.first + r] += scale * w.out_prior[r];
          }
          process_.d_log_prob_d_output(xv, ConstMatrixView<V>(x_next, n, D), const_view(out), t, w.weight.data(), d_out);
          post.backward(w.ctx, const_view(d_out), std::span<S>(w.grad), GradientMode::Accumulate);
        }
        if (!blk.given) std::swap(x, x_next);
      }
      if (!blk.given && std::memcmp(x, end_.data() + blk.first * D, sizeof(V) * n * D) != 0)
        w.mismatch = true;
    });
    for (std::size_t b = 0; b < blocks_.size(); ++b) {
      if (work_[b].mismatch) {
        work_[b].mismatch = false;
        throw Error(
            "TrajectoryEngine: pass 2 did not regenerate pass 1's trajectories bit for bit; the denoiser's forward "
            "must be deterministic and its parameters unchanged between the passes");
      }
    }
    reduce(grad);
  }

  /// Bridge pass for fitting to data: every block draws `k` distinct random steps t and, at each,
  /// x_t | x_T from the process's closed-form bridge, and accumulates
  ///     grad = Σ_i weight[i] · (T/k) Σ_t ∇ E[log p(x_{t+1}|x_t) | x_t, x_T],
  /// an unbiased estimate of the gradient along whole backward trajectories. `log_prob` (B
  /// entries, may be null) receives the matching estimate of Σ_t E[log p] per row. Uses the given
  /// rows' end states; shape(net, 0, B) first.
  void pass_bridge(const N& net, const math::NoiseKey& key, const S* weight, Index k, std::span<S> grad, S* log_prob)
    requires has_bridge<P>
  {
    const Index T = steps();
    k = std::clamp<Index>(k, 1, T);
    const S scale = static_cast<S>(T) / static_cast<S>(k);
    const math::NoiseKey step_key{key.seed, math::Stream::StepSubset, key.iteration};  // not the bridge's draws
    pool_.parallel_for(static_cast<Index>(blocks_.size()), [&](Index b) {
      const Block& blk = blocks_[b];
      Work& w = work_[b];
      const Index D = process_.state_dim(), O = process_.output_dim(), n = blk.rows;
      std::fill(w.grad.begin(), w.grad.end(), S(0));
      if (log_prob) std::fill_n(log_prob + blk.first, n, S(0));
      for (Index r = 0; r < n; ++r) w.weight[r] = weight[blk.first + r] * scale;
      const ConstMatrixView<V> x_end(end_.data() + blk.first * D, n, D);
      MatrixView<S> out(w.out.data(), n, O);
      MatrixView<S> d_out(w.d_out.data(), n, O);
      MatrixView<V> x(w.xa.data(), n, D);
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
        process_.sample_given_end(x_end, t, key, blk.first, x);
        const ConstMatrixView<V> xv = const_view(x);
        net.forward(xv, process_.time(t), out, w.ctx);
        if (log_prob) {
          std::fill_n(w.out_prior.data(), n, S(0));
          process_.expected_log_prob_step(xv, x_end, const_view(out), t, w.out_prior.data());
          for (Index r = 0; r < n; ++r) log_prob[blk.first + r] += scale * w.out_prior[r];
        }
        process_.d_expected_log_prob_d_output(xv, x_end, const_view(out), t, w.weight.data(), d_out);
        net.backward(w.ctx, const_view(d_out), std::span<S>(w.grad), GradientMode::Accumulate);
      }
    });
    reduce(grad);
  }

  /// Step flags for pass 2 (T entries), owned here so steps need no allocation.
  std::span<char> keep_flags() { return std::span<char>(keep_.data(), static_cast<std::size_t>(steps())); }

  /// Bytes of every buffer this engine holds (trajectory storage, contexts, gradients).
  std::size_t workspace_bytes() const {
    std::size_t b = sizeof(V) * (end_.capacity() + given_states_.capacity()) + keep_.capacity();
    for (const auto& w : work_)
      b += sizeof(V) * (w.xa.capacity() + w.xb.capacity()) +
           sizeof(S) * (w.out.capacity() + w.out_prior.capacity() + w.d_out.capacity() + w.grad.capacity() +
                        w.weight.capacity()) +
           context_bytes(w.ctx) + context_bytes(w.ctx_prior);
    return b;
  }

  /// Runs f(block_first_row, rows) over fixed blocks of `n` rows in parallel (for callers'
  /// inference-only loops, e.g. sampling).
  template <class F>
  void for_blocks(Index n, F&& f) {
    pool_.parallel_for((n + block_rows_ - 1) / block_rows_,
                       [&](Index b) { f(b, b * block_rows_, std::min(block_rows_, n - b * block_rows_)); });
  }
  Index block_rows() const { return block_rows_; }

 private:
  struct Block {
    Index first;
    Index rows;
    bool given;
  };
  struct Work {
    std::vector<V> xa, xb;
    std::vector<S> out, out_prior, d_out, grad, weight;
    typename N::Context ctx, ctx_prior;
    bool mismatch = false;
  };

  /// A context's own count if it keeps one (the Denoiser concept does not require it).
  static std::size_t context_bytes(const typename N::Context& c) {
    if constexpr (requires { c.bytes(); })
      return c.bytes();
    else
      return sizeof(c);
  }

  /// grad = Σ_b block gradients, in block order (independent of the thread count).
  void reduce(std::span<S> grad) const {
    std::fill(grad.begin(), grad.end(), S(0));
    for (std::size_t b = 0; b < blocks_.size(); ++b) {
      const S* g = work_[b].grad.data();
      for (Index i = 0; i < num_params_; ++i) grad[i] += g[i];
    }
  }

  template <class T>
  static void grow(std::vector<T>& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }
  Work make_work(const N& net) const {
    const Index D = process_.state_dim(), O = process_.output_dim();
    Work w{std::vector<V>(static_cast<std::size_t>(block_rows_ * D)),
           std::vector<V>(static_cast<std::size_t>(block_rows_ * D)),
           std::vector<S>(static_cast<std::size_t>(block_rows_ * O)),
           std::vector<S>(static_cast<std::size_t>(block_rows_ * O)),
           std::vector<S>(static_cast<std::size_t>(block_rows_ * O)),
           std::vector<S>(static_cast<std::size_t>(num_params_)),
           std::vector<S>(static_cast<std::size_t>(block_rows_)),
           net.make_context(block_rows_),
           net.make_context(block_rows_)};
    return w;
  }

  const P& process_;  // owned by the caller (the trainer), which may change its per-batch context
  Index block_rows_;
  ThreadPool pool_;
  Index num_params_;
  Index on_ = 0, given_ = 0;
  std::vector<V> end_, given_states_;
  std::vector<char> keep_;
  std::vector<Block> blocks_;
  std::vector<Work> work_;
};

}  // namespace rtb::detail
