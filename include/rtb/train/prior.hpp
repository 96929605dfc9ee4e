// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Fitting a diffusion prior to data by maximum likelihood along backward trajectories (the
/// reference's `bwd_mle`): draw data end points x_T, build τ with the process's backward kernel,
/// and minimise  L = −(1/B) Σ_i Σ_t log p_θ(x_{t+1}|x_t).
///
/// The same engine computes the gradient with per-row weight −1/B. With `step_fraction < 1` each
/// iteration back-propagates a random subset of K steps scaled by T/K: an unbiased estimate of
/// the same objective at a fraction of the cost. When the process has a closed-form bridge
/// (`has_bridge`: all of rtb's processes) and `rao_blackwell` is set, x_t is drawn directly from
/// x_t | x_T and the log-likelihood is taken in expectation over x_{t+1} | x_t, x_T: the same
/// objective and the same expected gradient, without the noise of sampling x_{t+1} (for the
/// Gaussian process that noise has std σ/√dt ≈ 22 per coordinate against drifts of order 10, so
/// this is what makes a prior fit in seconds; for the masked process it is the usual masked
/// cross-entropy weighted by the schedule; for the DDPM, by default, the standard ε-MSE, see
/// process/ddpm.hpp). `ema_decay` keeps an exponential moving average of the weights and leaves
/// it in the model at the end.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/detail/flush_denormal.hpp"
#include "rtb/error.hpp"
#include "rtb/net/adam.hpp"
#include "rtb/net/model.hpp"
#include "rtb/train/callbacks.hpp"
#include "rtb/train/trainer_support.hpp"
#include "rtb/train/trajectory_engine.hpp"

namespace rtb {

struct PriorFitConfig {
  Index batch_size = 500;
  std::int64_t iterations = 10000;
  double learning_rate = 1e-3;
  double final_learning_rate = -1;  ///< cosine decay to this by the last iteration; < 0 keeps lr constant
  double step_fraction = 1.0;   ///< share of steps back-propagated per iteration (per block)
  bool rao_blackwell = true;    ///< use the process's closed-form bridge when it has one
  std::vector<std::string> frozen = {};  ///< tensors whose names start with one of these are not trained
  Index condition_dim = 0;      ///< condition columns per row; 0 = as many as the process and the net read
  Index threads = 0;
  Index block_rows = 128;
  std::uint64_t seed = 12345;
  /// d ∈ [0, 1): keep an exponential moving average e of the weights, e ← d_k·e + (1 − d_k)·θ after
  /// iteration k with d_k = min(d, (1 + k)/(10 + k)) (diffusers' EMA warm-up), starting from the
  /// initial weights, and leave e in the model at the end (callbacks see the raw θ; the returned
  /// optimiser's moments are θ's). 0 = off. DDPM priors are usually sampled from the EMA (0.9999).
  double ema_decay = 0;
  bool flush_denormals = true;  ///< as Config::flush_denormals: subnormals flushed to zero during the fit
  Precision precision = Precision::Float32;  ///< as Config::precision: the products' arithmetic during the fit
};

struct PriorFitStats {
  std::int64_t iteration = 0;
  double loss = 0;  ///< −mean Σ_t log p_θ over the batch (estimated from the kept steps)
};

/// Fits `model` to data. `data` fills a batch of end points each iteration, as
/// data(MatrixView<V> x, std::int64_t iteration), or, for conditional problems, as
/// data(MatrixView<V> x, MatrixView<C> condition, std::int64_t iteration). End states and
/// conditions are checked by the process where it can (real tokens, MASK where it must be).
/// Callbacks are called as cb(stats) after each iteration; returning false stops. Returns the
/// optimiser, whose moments a fine-tuning run may carry over.
template <ReversibleNoiseProcess P, Denoiser N, class DataFn, class... Callbacks>
Adam<typename N::Scalar, space_of_t<N>> fit_prior(const P& process, Model<N>& model, DataFn&& data,
                                                  const PriorFitConfig& cfg, Callbacks&&... callbacks) {
  using S = typename P::Scalar;
  using V = typename P::Value;
  using C = condition_of_t<P>;
  using Space = space_of_t<P>;
  const detail::ScopedFlushDenormal flush(cfg.flush_denormals, cfg.precision);  // the data function runs in the caller's mode
  if (cfg.batch_size <= 0)
    throw EmptyBatchError(detail::message("fit_prior: batch_size must be positive, got ", cfg.batch_size));
  if (!(cfg.step_fraction > 0 && cfg.step_fraction <= 1))
    throw InvalidArgumentError(detail::message("fit_prior: step_fraction must be in (0, 1], got ", cfg.step_fraction));
  detail::check_rate<S>(cfg.learning_rate, "learning_rate (PriorFitConfig)");
  if (cfg.block_rows <= 0 || cfg.iterations < 0 || !(cfg.final_learning_rate < 0 || std::isfinite(cfg.final_learning_rate)))
    throw InvalidArgumentError(detail::message("fit_prior: block_rows must be positive, iterations >= 0 and ",
                                               "final_learning_rate finite (got ", cfg.block_rows, ", ", cfg.iterations, ", ",
                                               cfg.final_learning_rate, ")"));
  if (!(cfg.ema_decay >= 0 && cfg.ema_decay < 1))
    throw InvalidArgumentError(detail::message("fit_prior: ema_decay must be in [0, 1), got ", cfg.ema_decay,
                                               "; 0 turns the average off, DDPM priors use 0.9999"));
  // With the closed-form bridge no trajectory is stored: the rows are shaped as on-policy rows
  // (same blocks, same noise keys), so memory does not grow with T (a DDPM fitted over all 1000
  // training steps).
  constexpr bool bridge_capable = has_bridge<P>;
  const bool bridge = bridge_capable && cfg.rao_blackwell;
  const Index cond_dim = detail::resolve_condition_dim(process, model.net(), model.net(), cfg.condition_dim);
  {
    detail::MemoryBudget m("fit_prior");
    m.add(static_cast<std::uint64_t>(cfg.batch_size),
          (static_cast<std::uint64_t>(bridge ? 0 : process.num_steps()) + 3) * static_cast<std::uint64_t>(process.state_dim()) * sizeof(V) +
              static_cast<std::uint64_t>(cond_dim) * 2 * sizeof(C) + 4 * sizeof(S));
    m.check(detail::message("batch_size ", cfg.batch_size).c_str());
  }
  constexpr bool conditional = std::is_invocable_v<DataFn&, MatrixView<V>, MatrixView<C>, std::int64_t>;
  if (cond_dim > 0 && !conditional)
    throw InvalidArgumentError(detail::message("fit_prior: the process and net read ", cond_dim,
                                               " condition columns; give data(x, condition, iteration)"));
  detail::TrajectoryEngine<P, N> eng(process, model.net(), model.net(), cond_dim, std::min(cfg.block_rows, cfg.batch_size),
                                     cfg.threads);
  eng.shape(bridge ? cfg.batch_size : 0, bridge ? 0 : cfg.batch_size);
  Adam<S, Space> adam(model.num_params(), {static_cast<S>(cfg.learning_rate)});
  const Index T = process.num_steps(), B = cfg.batch_size, D = process.state_dim();
  const Index K = std::max<Index>(1, static_cast<Index>(std::lround(cfg.step_fraction * static_cast<double>(T))));
  const S scale = static_cast<S>(T) / static_cast<S>(K);
  std::vector<S> weight(static_cast<std::size_t>(B), S(-1) / static_cast<S>(B));
  typename Space::template buffer<S> grad(static_cast<std::size_t>(model.num_params())), log_p_space(static_cast<std::size_t>(B));
  std::vector<S> log_p(static_cast<std::size_t>(B));
  RowMatrix<V> x_host(B, D);
  RowMatrix<C> c_host(B, cond_dim);
  std::vector<Index> order(static_cast<std::size_t>(T));
  std::vector<std::pair<Index, Index>> frozen;  // (offset, size) of frozen tensors
  for (const ParameterTensor& t : model.layout().tensors())
    for (const std::string& prefix : cfg.frozen)
      if (t.name.rfind(prefix, 0) == 0) frozen.emplace_back(t.offset, t.size);
  const bool ema_on = cfg.ema_decay > 0;
  typename Space::template buffer<S> ema(ema_on ? static_cast<std::size_t>(model.num_params()) : 0);
  if (ema_on) Space::copy(std::span<S>(ema), std::span<const S>(model.params()));
  auto finish = [&](std::int64_t it) {
    for (auto [offset, size] : frozen)
      Space::fill(std::span<S>(grad).subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(size)), S(0));
    Space::download(std::span<S>(log_p), std::span<const S>(log_p_space));
    double loss = 0;
    for (S v : log_p) loss -= static_cast<double>(v) / static_cast<double>(B);
    const double norm2 = Space::sum_squares(std::span<const S>(grad));
    if (!std::isfinite(norm2) || !std::isfinite(loss))
      throw NonFiniteError(detail::message("fit_prior: non-finite loss or gradient at iteration ", it,
                                           "; check the data for NaN or lower the learning rate"));
    if (cfg.final_learning_rate >= 0 && cfg.iterations > 1) {
      const double c = 0.5 * (1 + std::cos(3.14159265358979323846 * static_cast<double>(it) /
                                           static_cast<double>(cfg.iterations - 1)));
      adam.set_learning_rate(static_cast<S>(cfg.final_learning_rate + (cfg.learning_rate - cfg.final_learning_rate) * c));
    }
    adam.step(model.params(), std::span<const S>(grad));
    if (ema_on) {
      const double d = std::min(cfg.ema_decay, (1.0 + static_cast<double>(it)) / (10.0 + static_cast<double>(it)));
      Space::scale(std::span<S>(ema), static_cast<S>(d));
      Space::axpy(std::span<S>(ema), static_cast<S>(1 - d), std::span<const S>(model.params()));
    }
    PriorFitStats st{it, loss};
    return detail::call_callbacks(std::tuple<PriorFitStats&>(st), callbacks...);
  };
  for (std::int64_t it = 0; it < cfg.iterations; ++it) {
    MatrixView<V> x = std::is_same_v<Space, HostSpace> ? MatrixView<V>(eng.end_states().data(), B, D)
                                                       : MatrixView<V>(x_host.data(), B, D);
    MatrixView<C> c = std::is_same_v<Space, HostSpace> ? MatrixView<C>(eng.conditions().data(), B, cond_dim)
                                                       : MatrixView<C>(c_host.data(), B, cond_dim);
    {
      const detail::ScopedCallerFloatMode callers_mode;
      if constexpr (conditional)
        data(x, c, it);
      else
        data(x, it);
    }
    if constexpr (requires { process.check_end_states(const_view(x), "fit_prior data"); })
      process.check_end_states(const_view(x), "fit_prior data");
    if (cond_dim > 0) detail::check_conditions(process, const_view(c), B, cond_dim, "fit_prior data");
    if constexpr (!std::is_same_v<Space, HostSpace>) {
      Space::upload(std::span<V>(eng.end_states().data(), static_cast<std::size_t>(B * D)),
                    std::span<const V>(x_host.data(), static_cast<std::size_t>(B * D)));
      Space::upload(std::span<C>(eng.conditions().data(), static_cast<std::size_t>(B * cond_dim)),
                    std::span<const C>(c_host.data(), static_cast<std::size_t>(B * cond_dim)));
    }
    if constexpr (bridge_capable) {
      if (bridge) {
        eng.backpropagate_bridge(model, {cfg.seed, math::Stream::Backward, static_cast<std::uint64_t>(it)}, weight, K,
                                 std::span<S>(grad), std::span<S>(log_p_space));
        if (!finish(it)) break;
        continue;
      }
    }
    eng.build_stored_backward({cfg.seed, math::Stream::Backward, static_cast<std::uint64_t>(it)});
    auto keep = eng.keep_flags();
    detail::choose_steps({cfg.seed, math::Stream::StepSubset, static_cast<std::uint64_t>(it)}, T, K, order, keep);
    eng.backpropagate(model, {cfg.seed, math::Stream::Rollout, static_cast<std::uint64_t>(it)}, S(0), weight,
                      keep.data(), scale, std::span<S>(grad), std::span<S>(log_p_space));
    if (!finish(it)) break;
  }
  if (ema_on) {  // frozen tensors keep their exact values (the average of a constant may round)
    for (auto [offset, size] : frozen)
      Space::copy(std::span<S>(ema).subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(size)),
                  std::span<const S>(model.params()).subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(size)));
    Space::copy(model.params(), std::span<const S>(ema));
  }
  return adam;
}

}  // namespace rtb
