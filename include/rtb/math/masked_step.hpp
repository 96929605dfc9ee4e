// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// One row of the masked-categorical step (rtb::MaskedCategoricalProcess), written once for the
/// CPU loops and the CUDA kernels (cuda/include/rtb/cuda/masked_step.cuh): each generated column
/// that is MASK in x_k is revealed with probability ρ_k, to a token drawn from
/// (1 − ε)·softmax(logits) + ε/V; the step's log-probability sums log(1 − ρ_k) over the columns
/// that stay masked and log ρ_k + log softmax(logits)[token] over the revealed ones; the adjoint is
/// w·(1{token} − softmax) on the revealed columns' logits. Logits are [length, vocab] per row.

#include <cstdint>

#include "rtb/base.hpp"
#include "rtb/math/categorical.hpp"
#include "rtb/math/philox.hpp"

namespace rtb::math {

/// The per-step constants of a masked step.
template <class S, class V>
struct MaskedStepConstants {
  Index vocab;    ///< V (MASK is the token V)
  V mask;         ///< the MASK token
  S reveal;       ///< ρ_k
  S log_stay;     ///< log(1 − ρ_k) (−∞ at ρ_k = 1)
  S log_reveal;   ///< log ρ_k
  S uniform_mix;  ///< ε ∈ [0, 1], the sampling policy's uniform mixture (exploration)
};

/// x_next = x with the masked generated columns `gen[0..n_gen)` revealed or kept, from the
/// Philox block of (row, step, column).
template <class S, class V>
RTB_HOST_DEVICE inline void masked_sample_row(const V* x, const S* logits, Index length, const Index* gen, Index n_gen,
                                              const MaskedStepConstants<S, V>& c, const NoiseKey& key,
                                              std::uint64_t row, std::uint32_t step, V* x_next) {
  for (Index j = 0; j < length; ++j) x_next[j] = x[j];
  for (Index g = 0; g < n_gen; ++g) {
    const Index j = gen[g];
    if (x[j] != c.mask) continue;
    const Uint4 u = key.block(row, step, static_cast<std::uint32_t>(j));
    if (uniform01<S>(u.v[0]) >= c.reveal) continue;  // stays masked
    x_next[j] = static_cast<V>(sample_categorical(logits + j * c.vocab, c.vocab, uniform01<S>(u.v[1]), c.uniform_mix));
  }
}

/// log p(x_next | x) of one row under the logits (no uniform mixture: the policy's own density).
template <class S, class V>
RTB_HOST_DEVICE inline S masked_log_prob_row(const V* x, const V* x_next, const S* logits, const Index* gen,
                                             Index n_gen, const MaskedStepConstants<S, V>& c) {
  S sum = S(0);
  for (Index g = 0; g < n_gen; ++g) {
    const Index j = gen[g];
    if (x[j] != c.mask) continue;
    sum += x_next[j] == c.mask
               ? c.log_stay
               : c.log_reveal + log_softmax_at(logits + j * c.vocab, c.vocab, static_cast<Index>(x_next[j]));
  }
  return sum;
}

/// d_out += w·∂ log p(x_next | x) / ∂logits for one row (d_out's row zeroed by the caller).
template <class S, class V>
RTB_HOST_DEVICE inline void masked_adjoint_row(const V* x, const V* x_next, const S* logits, const Index* gen,
                                               Index n_gen, S w, const MaskedStepConstants<S, V>& c, S* d_out) {
  if (w == S(0)) return;
  for (Index g = 0; g < n_gen; ++g) {
    const Index j = gen[g];
    if (x[j] == c.mask && x_next[j] != c.mask)
      d_log_softmax_at(logits + j * c.vocab, c.vocab, static_cast<Index>(x_next[j]), w, d_out + j * c.vocab);
  }
}

}  // namespace rtb::math
