// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Numerically stable log Σ exp over a strided range of values.

#include <cmath>

#include "rtb/base.hpp"
#include "rtb/math/portable.hpp"

namespace rtb::math {

/// log Σ_i exp(v[i·stride]) for i < n; −∞ for n = 0 or all −∞ inputs. In float through rtb's
/// own exp and log (rtb/math/portable.hpp), so the categorical draws and log-softmax of the masked
/// process give the same bits on every machine and on the GPU.
template <class T>
RTB_HOST_DEVICE inline T logsumexp(const T* v, Index n, Index stride = 1) {
  T top = -infinity<T>();
  for (Index i = 0; i < n; ++i) top = v[i * stride] > top ? v[i * stride] : top;
  if (!(top > -infinity<T>())) return top;
  T sum = T(0);
  for (Index i = 0; i < n; ++i) sum += math::exp(v[i * stride] - top);
  return top + math::log(sum);
}

}  // namespace rtb::math
