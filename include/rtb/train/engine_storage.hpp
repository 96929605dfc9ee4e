// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The memory of the trajectory engine, designed up front: the batch's end states, conditions,
/// stored trajectories and per-row sums in the process's space; one Work (ping-pong states,
/// outputs, gradient, both nets' contexts) per executor thread; the blocks of rows; and the
/// ordered reduction that adds each block's gradient into the result in block order. Nothing here
/// reads the space's memory: it is sized, handed out as views, and moved with the space's own
/// operations. TrajectoryEngine (trajectory_engine.hpp) adds the passes.

#include <algorithm>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/error.hpp"
#include "rtb/space.hpp"

namespace rtb::detail {

template <NoiseProcess P, Denoiser Post, Denoiser Prior = Post>
class EngineStorage {
 public:
  using S = typename P::Scalar;
  using V = typename P::Value;
  using C = condition_of_t<P>;
  using Space = space_of_t<P>;
  template <class T>
  using Buffer = typename Space::template buffer<T>;
  static_assert(std::is_same_v<typename Post::Scalar, S> && std::is_same_v<typename Prior::Scalar, S>,
                "process and denoisers must share a Scalar");
  static_assert(std::is_same_v<typename Post::Value, V> && std::is_same_v<typename Prior::Value, V>,
                "the denoisers must read the process's state type");
  static_assert(std::is_same_v<condition_of_t<Post>, C> && std::is_same_v<condition_of_t<Prior>, C>,
                "process and denoisers must agree on the condition type");
  static_assert(std::is_same_v<space_of_t<Post>, Space> && std::is_same_v<space_of_t<Prior>, Space>,
                "process and denoisers must live in the same memory space");

  EngineStorage(const P& process, const Post& post, const Prior& prior, Index condition_dim, Index block_rows,
                Index threads)
      : process_(process), post_(post), prior_(prior), cond_dim_(condition_dim), block_rows_(block_rows),
        executor_(threads), num_params_(post.num_params()) {
    if (block_rows <= 0) throw InvalidArgumentError(detail::message("block_rows must be positive, got ", block_rows));
    check_dims(post, "posterior");
    check_dims(prior, "prior");
  }

  const P& process() const { return process_; }
  Index threads() const { return executor_.size(); }
  Index batch() const { return on_ + stored_; }
  Index on_policy_rows() const { return on_; }
  Index stored_rows() const { return stored_; }
  Index steps() const { return process_.num_steps(); }
  Index condition_dim() const { return cond_dim_; }
  /// Global index of this engine's first row (data-parallel replicas offset their keys by it).
  void set_row_offset(Index offset) { row_offset_ = offset; }

  /// Shapes the batch: `on_policy` regenerated rows then `stored` rows. Allocates only when a
  /// shape needs more memory than any before.
  void shape(Index on_policy, Index stored) {
    if (on_policy < 0 || stored < 0 || on_policy + stored == 0)
      throw EmptyBatchError(detail::message("batch is empty (", on_policy, " on-policy + ", stored,
                                            " stored rows); use a positive batch size"));
    on_ = on_policy;
    stored_ = stored;
    const Index T = steps(), D = process_.state_dim(), B = on_ + stored_;
    grow(end_, B * D);
    grow(cond_, B * cond_dim_);
    grow(trajectories_, (T + 1) * stored_ * D);
    grow(log_post_, B);
    grow(log_prior_, B);
    grow(weight_, B);
    if (static_cast<Index>(host_weight_.size()) < B) host_weight_.resize(static_cast<std::size_t>(B));
    blocks_.clear();
    for (Index r = 0; r < on_; r += block_rows_) blocks_.push_back({r, std::min(block_rows_, on_ - r), false});
    for (Index r = 0; r < stored_; r += block_rows_) blocks_.push_back({on_ + r, std::min(block_rows_, stored_ - r), true});
    active_.resize(std::max(active_.size(), blocks_.size()));
    while (static_cast<Index>(work_.size()) < executor_.size()) work_.push_back(make_work());
    keep_.resize(static_cast<std::size_t>(T));
  }

  /// x_T of every row, [B, D]; stored rows' end states are written here before build_stored_backward.
  View<V, Space> end_states() { return View<V, Space>(end_.data(), batch(), process_.state_dim()); }
  /// The rows' conditions, [B, condition_dim].
  View<C, Space> conditions() { return View<C, Space>(cond_.data(), batch(), cond_dim_); }
  /// States of the stored rows at `step`, [stored, D].
  View<V, Space> stored_states(Index step) {
    const Index D = process_.state_dim();
    return View<V, Space>(trajectories_.data() + step * stored_ * D, stored_, D);
  }
  /// Per-row sums of the last score(): Σ log p_post and Σ log p_prior, B entries each.
  std::span<const S> log_post() const { return cspan(log_post_, 0, batch()); }
  std::span<const S> log_prior() const { return cspan(log_prior_, 0, batch()); }
  /// Step flags for backpropagate (T entries, host), owned here so steps need no allocation.
  std::span<char> keep_flags() { return std::span<char>(keep_.data(), static_cast<std::size_t>(steps())); }

  /// Bytes of every buffer this engine holds (trajectory storage, contexts, gradients).
  std::size_t workspace_bytes() const {
    std::size_t b = buffer_bytes(end_) + buffer_bytes(cond_) + buffer_bytes(trajectories_) + buffer_bytes(log_post_) +
                    buffer_bytes(log_prior_) + buffer_bytes(weight_) + keep_.capacity() +
                    host_weight_.capacity() * sizeof(S);
    for (const auto& w : work_)
      b += buffer_bytes(w.xa) + buffer_bytes(w.xb) + buffer_bytes(w.out) + buffer_bytes(w.out_prior) +
           buffer_bytes(w.d_out) + buffer_bytes(w.grad) + buffer_bytes(w.rows) + context_bytes(w.post_ctx) +
           context_bytes(w.prior_ctx);
    return b;
  }

 protected:
  struct Block {
    Index first;
    Index rows;
    bool stored;
  };
  /// One thread's scratch: ping-pong states, outputs, gradient, per-row sums, contexts.
  struct Work {
    Buffer<V> xa, xb;
    Buffer<S> out, out_prior, d_out, grad, rows;
    typename Post::Context post_ctx;
    typename Prior::Context prior_ctx;
    bool mismatch = false;
  };

  /// Runs f over the blocks in parallel: f(block, work) or f(block, work, block index).
  template <class F>
  void for_blocks(F&& f) {
    executor_.parallel_for(static_cast<Index>(blocks_.size()), [&](Index b, Index worker) {
      Work& w = work_[static_cast<std::size_t>(worker)];
      if constexpr (std::is_invocable_v<F&, const Block&, Work&, Index>)
        f(blocks_[static_cast<std::size_t>(b)], w, b);
      else
        f(blocks_[static_cast<std::size_t>(b)], w);
    });
  }

  /// Block b computes into its thread's gradient (compute() returns whether it contributed), then
  /// adds it into grad after block b − 1 has: a sum in block order, whatever the threads.
  template <class Compute>
  void ordered(Index b, std::span<S> grad, Work& w, Compute&& compute) {
    bool contributed = false;
    try {
      contributed = compute();
    } catch (...) {
      turns_.abort();
      throw;
    }
    if (!turns_.wait(b)) return;
    if (contributed) Space::add(grad, std::span<const S>(w.grad));
    turns_.pass(b);
  }

  /// weight·scale into the space, and which blocks have any nonzero weight.
  void stage_weights(std::span<const S> weight, S scale) {
    const auto B = static_cast<std::size_t>(batch());
    for (std::size_t i = 0; i < B; ++i) host_weight_[i] = weight[i] * scale;
    Space::upload(span(weight_, 0, batch()), std::span<const S>(host_weight_.data(), B));
    for (std::size_t b = 0; b < blocks_.size(); ++b) {
      bool any = false;
      for (Index r = 0; r < blocks_[b].rows; ++r) any = any || host_weight_[static_cast<std::size_t>(blocks_[b].first + r)] != S(0);
      active_[b] = any;
    }
  }

  /// Throws if a gradient pass found a block whose regenerated trajectory differs.
  void check_regenerated() {
    bool mismatch = false;
    for (Work& w : work_) {
      mismatch = mismatch || w.mismatch;
      w.mismatch = false;
    }
    if (mismatch)
      throw Error(
          "TrajectoryEngine: the gradient pass did not regenerate the scored trajectories bit for bit; the "
          "denoiser's forward must be deterministic and its parameters unchanged between the passes");
  }

  template <class T>
  static std::span<T> span(Buffer<T>& b, Index offset, Index n) {
    return std::span<T>(b.data() + offset, static_cast<std::size_t>(n));
  }
  template <class T>
  static std::span<const T> cspan(const Buffer<T>& b, Index offset, Index n) {
    return std::span<const T>(b.data() + offset, static_cast<std::size_t>(n));
  }

  const P& process_;  // owned by the caller (the trainer)
  const Post& post_;  // the nets (code and layout) the contexts are sized for
  const Prior& prior_;
  Index cond_dim_;
  Index block_rows_;
  typename Space::Executor executor_;
  Index num_params_;
  Index row_offset_ = 0;
  Index on_ = 0, stored_ = 0;
  Buffer<V> end_, trajectories_;
  Buffer<C> cond_;
  Buffer<S> log_post_, log_prior_, weight_;
  std::vector<S> host_weight_;
  std::vector<char> keep_, active_;
  std::vector<Block> blocks_;
  std::vector<Work> work_;
  OrderedTurns turns_;

 private:
  template <class Net>
  void check_dims(const Net& net, const char* which) const {
    if (net.input_dim() != process_.state_dim() || net.output_dim() != process_.output_dim())
      throw ShapeError(detail::message("denoiser/process mismatch: the ", which, " maps ", net.input_dim(), " -> ",
                                       net.output_dim(), " columns but the process has state_dim ",
                                       process_.state_dim(), " and expects output_dim ", process_.output_dim(),
                                       output_layout_note(), "; build the denoiser with the process's dimensions"));
  }
  std::string output_layout_note() const {
    if constexpr (requires { process_.output_layout(); })
      return detail::message(" ", process_.output_layout());
    else
      return "";
  }
  /// A context's own count if it keeps one (the Denoiser concept does not require it).
  template <class Ctx>
  static std::size_t context_bytes(const Ctx& c) {
    if constexpr (requires { c.bytes(); })
      return c.bytes();
    else
      return sizeof(c);
  }
  template <class T>
  static void grow(Buffer<T>& v, Index n) {
    if (static_cast<Index>(v.size()) < n) v.resize(static_cast<std::size_t>(n));
  }
  Work make_work() const {
    const Index D = process_.state_dim(), O = process_.output_dim(), R = block_rows_;
    auto buf = [](Index n) { return Buffer<S>(static_cast<std::size_t>(n)); };
    return Work{Buffer<V>(static_cast<std::size_t>(R * D)), Buffer<V>(static_cast<std::size_t>(R * D)),
                buf(R * O), buf(R * O), buf(R * O), buf(num_params_), buf(R),
                post_.make_context(R), prior_.make_context(R)};
  }
};

}  // namespace rtb::detail
