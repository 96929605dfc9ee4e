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
/// (`has_bridge`: both of rtb's processes) and `rao_blackwell` is set, x_t is drawn directly from
/// x_t | x_T and the log-likelihood is taken in expectation over x_{t+1} | x_t, x_T: the same
/// objective and the same expected gradient, without the noise of sampling x_{t+1} (for the
/// Gaussian process that noise has std σ/√dt ≈ 22 per coordinate against drifts of order 10, so
/// this is what makes a prior fit in seconds; for the masked process it is the usual masked
/// cross-entropy weighted by the schedule).

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/error.hpp"
#include "rtb/net/adam.hpp"
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
  Index threads = 0;
  Index block_rows = 128;
  std::uint64_t seed = 12345;
};

struct PriorFitStats {
  std::int64_t iteration = 0;
  double loss = 0;  ///< −mean Σ_t log p_θ over the batch (estimated from the kept steps)
};

/// Fits `net` to data. `data(MatrixView<V> x, std::int64_t iteration)` fills a batch of end
/// points. Callbacks are called as cb(stats) after each iteration; returning false stops.
/// Returns the optimiser, whose moments a fine-tuning run may carry over.
template <ReversibleNoiseProcess P, Denoiser N, class DataFn, class... Callbacks>
Adam<typename N::Scalar> fit_prior(const P& process, N& net, DataFn&& data, const PriorFitConfig& cfg,
                                   Callbacks&&... callbacks) {
  using S = typename P::Scalar;
  if (cfg.batch_size <= 0)
    throw EmptyBatchError(detail::message("fit_prior: batch_size must be positive, got ", cfg.batch_size));
  if (!(cfg.step_fraction > 0 && cfg.step_fraction <= 1))
    throw InvalidArgumentError(detail::message("fit_prior: step_fraction must be in (0, 1], got ", cfg.step_fraction));
  detail::TrajectoryEngine<P, N> eng(process, net, cfg.block_rows, cfg.threads);
  eng.shape(net, 0, cfg.batch_size);
  Adam<S> adam(net.num_params(), {static_cast<S>(cfg.learning_rate)});
  const Index T = process.num_steps(), B = cfg.batch_size;
  const Index K = std::max<Index>(1, static_cast<Index>(std::lround(cfg.step_fraction * static_cast<double>(T))));
  const S scale = static_cast<S>(T) / static_cast<S>(K);
  std::vector<S> weight(static_cast<std::size_t>(B), S(-1) / static_cast<S>(B));
  std::vector<S> grad(static_cast<std::size_t>(net.num_params())), log_p(static_cast<std::size_t>(B));
  std::vector<Index> order(static_cast<std::size_t>(T));
  std::vector<std::pair<Index, Index>> frozen;  // (offset, size) of frozen tensors
  for (const ParameterTensor& t : net.layout().tensors())
    for (const std::string& prefix : cfg.frozen)
      if (t.name.rfind(prefix, 0) == 0) frozen.emplace_back(t.offset, t.size);
  auto finish = [&](std::int64_t it) {
    for (auto [offset, size] : frozen) std::fill_n(grad.begin() + offset, size, S(0));
    double loss = 0, norm2 = 0;
    for (S v : log_p) loss -= static_cast<double>(v) / static_cast<double>(B);
    for (S g : grad) norm2 += static_cast<double>(g) * g;
    if (!std::isfinite(norm2) || !std::isfinite(loss))
      throw NonFiniteError(detail::message("fit_prior: non-finite loss or gradient at iteration ", it,
                                           "; check the data for NaN or lower the learning rate"));
    if (cfg.final_learning_rate >= 0 && cfg.iterations > 1) {
      const double c = 0.5 * (1 + std::cos(3.14159265358979323846 * static_cast<double>(it) /
                                           static_cast<double>(cfg.iterations - 1)));
      adam.set_learning_rate(static_cast<S>(cfg.final_learning_rate + (cfg.learning_rate - cfg.final_learning_rate) * c));
    }
    adam.step(net.params(), grad);
    const PriorFitStats st{it, loss};
    bool go = true;
    (
        [&](auto& cb) {
          if constexpr (std::is_same_v<decltype(cb(st)), bool>)
            go = cb(st) && go;
          else
            cb(st);
        }(callbacks),
        ...);
    return go;
  };
  for (std::int64_t it = 0; it < cfg.iterations; ++it) {
    data(eng.end_states(), it);
    if constexpr (has_bridge<P>) {
      if (cfg.rao_blackwell) {
        eng.pass_bridge(net, {cfg.seed, math::Stream::Backward, static_cast<std::uint64_t>(it)}, weight.data(), K,
                        std::span<S>(grad), log_p.data());
        if (!finish(it)) break;
        continue;
      }
    }
    eng.fill_given_backward({cfg.seed, math::Stream::Backward, static_cast<std::uint64_t>(it)});
    auto keep = eng.keep_flags();
    detail::choose_steps({cfg.seed, math::Stream::StepSubset, static_cast<std::uint64_t>(it)}, T, K, order, keep);
    eng.pass2(net, {cfg.seed, math::Stream::Rollout, static_cast<std::uint64_t>(it)}, S(0), weight.data(), keep.data(),
              scale, std::span<S>(grad), log_p.data());
    if (!finish(it)) break;
  }
  return adam;
}

}  // namespace rtb
