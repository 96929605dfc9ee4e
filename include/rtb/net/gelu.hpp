// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// GELU over a contiguous buffer, in place, optionally keeping GELU'(h) for the backward pass.
/// One loop, one exp per element (see math/activations.hpp); the compiler vectorises it.

#include "rtb/space.hpp"
#include "rtb/math/activations.hpp"

namespace rtb {

/// h[i] ← GELU(h[i]); if `derivative` is non-null, derivative[i] ← GELU'(h[i]).
template <class S>
void gelu_inplace(S* __restrict h, S* __restrict derivative, Index n) {
  if (derivative) {
    for (Index i = 0; i < n; ++i) {
      const auto p = math::gelu_with_derivative(h[i]);
      h[i] = p.value;
      derivative[i] = p.derivative;
    }
  } else {
    for (Index i = 0; i < n; ++i) h[i] = math::gelu_with_derivative(h[i]).value;
  }
}

/// d[i] ← d[i] · derivative[i]: the backward of GELU given the kept derivative.
template <class S>
void gelu_backward_inplace(S* __restrict d, const S* __restrict derivative, Index n) {
  for (Index i = 0; i < n; ++i) d[i] *= derivative[i];
}

}  // namespace rtb
