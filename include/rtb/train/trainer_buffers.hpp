// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The trainer's host-side buffers: the batch as the host sees it (HostMirror), what an update
/// changes kept for undoing it (UpdateUndo), and replayed rows on their way into the engine.

#include <algorithm>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "rtb/net/adam.hpp"
#include "rtb/sampling/replay_buffer.hpp"
#include "rtb/space.hpp"

namespace rtb::detail {

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

/// What an update changes (parameters, Adam's moments and step, log Z and its optimiser), kept
/// before it so that an update gone non-finite is undone and the trainer is as it was.
template <class S, class Space>
class UpdateUndo {
 public:
  void reserve(Index params, std::size_t log_z) {
    p_ = typename Space::template buffer<S>(static_cast<std::size_t>(params));
    m_ = typename Space::template buffer<S>(static_cast<std::size_t>(params));
    v_ = typename Space::template buffer<S>(static_cast<std::size_t>(params));
    z_.resize(log_z);
    zm_.resize(log_z);
    zv_.resize(log_z);
  }
  void keep(std::span<const S> params, const Adam<S, Space>& adam, const std::vector<S>& log_z, const Adam<S>& z) {
    Space::copy(std::span<S>(p_), params);
    Space::copy(std::span<S>(m_), adam.first_moment());
    Space::copy(std::span<S>(v_), adam.second_moment());
    steps_ = adam.steps();
    z_ = log_z;
    std::copy(z.first_moment().begin(), z.first_moment().end(), zm_.begin());
    std::copy(z.second_moment().begin(), z.second_moment().end(), zv_.begin());
    z_steps_ = z.steps();
  }
  void restore(std::span<S> params, Adam<S, Space>& adam, std::vector<S>& log_z, Adam<S>& z) const {
    Space::copy(params, std::span<const S>(p_));
    Space::copy(adam.first_moment(), std::span<const S>(m_));
    Space::copy(adam.second_moment(), std::span<const S>(v_));
    adam.set_steps(steps_);
    log_z = z_;
    std::copy(zm_.begin(), zm_.end(), z.first_moment().begin());
    std::copy(zv_.begin(), zv_.end(), z.second_moment().begin());
    z.set_steps(z_steps_);
  }

 private:
  typename Space::template buffer<S> p_, m_, v_;
  std::vector<S> z_, zm_, zv_;
  std::int64_t steps_ = 0, z_steps_ = 0;
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

}  // namespace rtb::detail
