// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// SiLU over a contiguous buffer, in place, optionally keeping SiLU'(h) for the backward pass:
///
///     h ← h·σ(h),   derivative ← σ(h)·(1 + h·(1 − σ(h))),   backward: d ← d·derivative.
///
/// One loop, one exp per element (see math/activations.hpp); the compiler vectorises it. The
/// buffer is any tensor seen flat, e.g. a whole [B, C, H, W] batch after GroupNorm.

#include "rtb/space.hpp"
#include "rtb/math/activations.hpp"

namespace rtb {

/// h[i] ← SiLU(h[i]); if `derivative` is non-null, derivative[i] ← SiLU'(h[i]).
template <class S>
void silu_inplace(S* __restrict h, S* __restrict derivative, Index n) {
  if (derivative) {
    for (Index i = 0; i < n; ++i) {
      const auto p = math::silu_with_derivative(h[i]);
      h[i] = p.value;
      derivative[i] = p.derivative;
    }
  } else {
    for (Index i = 0; i < n; ++i) h[i] = math::silu_with_derivative(h[i]).value;
  }
}

/// d[i] ← d[i] · derivative[i]: the backward of SiLU given the kept derivative.
template <class S>
void silu_backward_inplace(S* __restrict d, const S* __restrict derivative, Index n) {
  for (Index i = 0; i < n; ++i) d[i] *= derivative[i];
}

}  // namespace rtb
