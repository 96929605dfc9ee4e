// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// One element of Adam (Kingma & Ba), exactly as torch.optim.Adam computes it (no weight decay),
/// shared by every memory space's optimiser loop (multiply-adds as explicit fmas, so the CPU and
/// the GPU round them alike: rtb/math/portable.hpp):
///
///     m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
///     θ ← θ − (lr/(1−β₁ᵏ)) · m / (√v/√(1−β₂ᵏ) + ε).

#include <cmath>

#include "rtb/base.hpp"
#include "rtb/math/portable.hpp"  // math::fma

namespace rtb::math {

/// The per-step constants of an Adam update: bias corrections folded in once per step.
template <class S>
struct AdamStep {
  S beta1, beta2, epsilon;
  S step_size;     ///< lr / (1 − β₁ᵏ)
  S inv_sqrt_bc2;  ///< 1 / √(1 − β₂ᵏ)
};

template <class S>
RTB_HOST_DEVICE inline void adam_update(S& param, S grad, S& m, S& v, const AdamStep<S>& c) {
  m = fma(c.beta1, m, (S(1) - c.beta1) * grad);
  v = fma(c.beta2, v, (S(1) - c.beta2) * grad * grad);
  param -= c.step_size * m / fma(std::sqrt(v), c.inv_sqrt_bc2, c.epsilon);
}

}  // namespace rtb::math
