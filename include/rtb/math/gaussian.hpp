// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Diagonal Gaussian formulas shared by the CPU loops and the CUDA kernels.

#include <cmath>

#include "rtb/base.hpp"

namespace rtb::math {

inline constexpr double kLog2Pi = 1.8378770664093454836;

/// log N(x; mean, variance) for one coordinate: −½[(x − mean)²/variance + log 2π + log variance].
template <class T>
RTB_HOST_DEVICE inline T gaussian_log_density(T x, T mean, T variance, T log_variance) {
  const T diff = x - mean;
  return T(-0.5) * (diff * diff / variance + T(kLog2Pi) + log_variance);
}

}  // namespace rtb::math
