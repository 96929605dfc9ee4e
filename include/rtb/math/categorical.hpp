// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Categorical distributions from logits, in the form the masked process needs per position:
/// log-softmax by logsumexp, its gradient, and inverse-CDF sampling from one uniform; in float
/// through rtb's own exp and log and explicit fmas, so the CPU and the GPU draw the same tokens.

#include <cmath>

#include "rtb/base.hpp"
#include "rtb/math/logsumexp.hpp"

namespace rtb::math {

/// log softmax(logits)[k] = logits[k] − logsumexp(logits), over n logits.
template <class T>
RTB_HOST_DEVICE inline T log_softmax_at(const T* logits, Index n, Index k) {
  return logits[k] - logsumexp(logits, n);
}

/// grad[j] = w·(1{j = k} − softmax(logits)[j]): the gradient of w·log softmax(logits)[k].
template <class T>
RTB_HOST_DEVICE inline void d_log_softmax_at(const T* logits, Index n, Index k, T w, T* grad) {
  const T lse = logsumexp(logits, n);
  for (Index j = 0; j < n; ++j) grad[j] = -w * math::exp(logits[j] - lse);
  grad[k] += w;
}

/// Draws from (1 − ε)·softmax(logits) + ε/n with one uniform u ∈ [0, 1) (inverse CDF).
template <class T>
RTB_HOST_DEVICE inline Index sample_categorical(const T* logits, Index n, T u, T epsilon = T(0)) {
  const T lse = logsumexp(logits, n);
  T acc = T(0);
  for (Index j = 0; j + 1 < n; ++j) {
    acc += fma(T(1) - epsilon, math::exp(logits[j] - lse), epsilon / static_cast<T>(n));
    if (u < acc) return j;
  }
  return n - 1;
}

}  // namespace rtb::math
