// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Sampling end states from any model under a process: the prior as well as a posterior, e.g. for
/// baselines. Conditional problems give one condition row per sample.

#include <cstdint>
#include <span>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/detail/flush_denormal.hpp"
#include "rtb/error.hpp"
#include "rtb/net/model.hpp"
#include "rtb/samples.hpp"
#include "rtb/train/trainer_support.hpp"
#include "rtb/train/trajectory_engine.hpp"

namespace rtb {

/// End states x_T of `model` run forward under `process` with noise keyed by `seed`, [n, D]; row i
/// uses condition row i (conditions [n, Dc], or none for unconditional problems); `precision` is
/// the net's products' arithmetic (Config::precision).
template <NoiseProcess P, Denoiser N>
Samples<typename P::Value> sample_end_states(const P& process, const Model<N>& model,
                                             ConstMatrixView<condition_of_t<P>> conditions, std::uint64_t seed,
                                             Index threads = 0, Index block_rows = 128,
                                             Precision precision = Precision::Float32) {
  using S = typename P::Scalar;
  using C = condition_of_t<P>;
  using Space = space_of_t<P>;
  const detail::ScopedFlushDenormal flush(true, precision);
  const Index n = conditions.rows();
  if (block_rows <= 0) throw InvalidArgumentError(detail::message("sample_end_states: block_rows must be positive, got ", block_rows));
  const Index cond_dim = detail::resolve_condition_dim(process, model.net(), model.net(), conditions.cols());
  detail::check_sample_count<typename P::Value, S>(n, process.state_dim(), cond_dim, "sample_end_states");
  detail::check_conditions(process, conditions, n, cond_dim, "sample_end_states");
  detail::TrajectoryEngine<P, N> eng(process, model.net(), model.net(), cond_dim, std::min(block_rows, n), threads);
  eng.shape(n, 0);
  Space::upload(std::span<C>(eng.conditions().data(), static_cast<std::size_t>(n * cond_dim)),
                std::span<const C>(conditions.data(), static_cast<std::size_t>(n * cond_dim)));
  eng.score(model, nullptr, {seed, math::Stream::Evaluation, 0}, S(0));
  return detail::samples_of(eng);
}

template <NoiseProcess P, Denoiser N>
Samples<typename P::Value> sample_end_states(const P& process, const Model<N>& model, Index n, std::uint64_t seed,
                                             Index threads = 0, Index block_rows = 128) {
  detail::check_sample_count<typename P::Value, typename P::Scalar>(n, process.state_dim(), 0, "sample_end_states");
  return sample_end_states(process, model, ConstMatrixView<condition_of_t<P>>(nullptr, n, 0), seed, threads, block_rows);
}

}  // namespace rtb
