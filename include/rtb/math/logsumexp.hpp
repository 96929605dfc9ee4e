// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Numerically stable log Σ exp over a strided range of values.

#include <cmath>
#include <limits>

#include "rtb/base.hpp"

namespace rtb::math {

/// log Σ_i exp(v[i·stride]) for i < n; −∞ for n = 0 or all −∞ inputs.
template <class T>
RTB_HOST_DEVICE inline T logsumexp(const T* v, Index n, Index stride = 1) {
  T top = -std::numeric_limits<T>::infinity();
  for (Index i = 0; i < n; ++i) top = v[i * stride] > top ? v[i * stride] : top;
  if (!(top > -std::numeric_limits<T>::infinity())) return top;
  T sum = T(0);
  for (Index i = 0; i < n; ++i) sum += std::exp(v[i * stride] - top);
  return top + std::log(sum);
}

}  // namespace rtb::math
