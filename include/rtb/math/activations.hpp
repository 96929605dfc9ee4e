// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Element-wise activations and the fast transcendental functions behind them.
///
/// GELU is the exact (erf) form, GELU(x) = x·Φ(x) = ½x(1 + erf(x/√2)), with derivative
/// GELU'(x) = Φ(x) + x·φ(x). In double both use the C library (finite-difference tests need the
/// exact function). In float they use branch-free approximations that the compiler vectorises:
/// exp by Cody–Waite range reduction with a degree-6 polynomial (≈1 ulp) and erf by Abramowitz &
/// Stegun 7.1.26 (|error| ≤ 1.5e-7, below float's resolution of 1), sharing one exp between the
/// value and the derivative.
///
/// SiLU (swish, the UNet's activation) is SiLU(x) = x·σ(x) with σ(x) = 1/(1 + e^{−x}), and
/// SiLU'(x) = σ(x)·(1 + x·(1 − σ(x))); one exp for both, fast_exp in float, std::exp in double,
/// and 1 − σ(x) taken as e^{−x}·σ(x) so that it does not cancel for large x.

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "rtb/base.hpp"

namespace rtb::math {

/// x clamped to [lo, hi] (NaN passes through), as a bitwise select on the float's bits. A float
/// ternary before further arithmetic is a branch GCC does not if-convert under -ftrapping-math
/// (the default), so every loop calling fast_exp stayed scalar ("control flow in loop"); the
/// integer select vectorises and gives the same bits. fmin/fmax are calls.
RTB_HOST_DEVICE inline float clamp_select(float x, float lo, float hi) {
  const std::int32_t below = -static_cast<std::int32_t>(x < lo), above = -static_cast<std::int32_t>(x > hi);
  std::int32_t b = std::bit_cast<std::int32_t>(x);
  b = (b & ~below) | (std::bit_cast<std::int32_t>(lo) & below);
  b = (b & ~above) | (std::bit_cast<std::int32_t>(hi) & above);
  return std::bit_cast<float>(b);
}

/// e^x for float, branch-free; exact to about one ulp on [-87, 88], saturating outside.
/// The same polynomial on the host and on a device (no __expf), so both give the same bits.
RTB_HOST_DEVICE inline float fast_exp(float x) {
  x = clamp_select(x, -87.0f, 88.0f);
  // n = round(x / ln 2) by the 1.5·2²³ trick (std::floor would block vectorisation).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;      // ln 2, high part (exact in float)
  r = r - n * -2.12194440e-4f;          // ln 2, low part
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const std::int32_t e = (static_cast<std::int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(e);
}

/// GELU value and derivative at x, computed together (one exp).
template <class T>
struct GeluPair {
  T value;
  T derivative;
};

template <class T>
RTB_HOST_DEVICE inline GeluPair<T> gelu_with_derivative(T x) {
  constexpr T inv_sqrt2 = T(0.70710678118654752440);
  constexpr T inv_sqrt_2pi = T(0.39894228040143267794);
  if constexpr (std::is_same_v<T, float>) {
    const float z = std::fabs(x) * inv_sqrt2;
    const float t = 1.0f / (1.0f + 0.3275911f * z);
    float poly = 1.061405429f;
    poly = poly * t - 1.453152027f;
    poly = poly * t + 1.421413741f;
    poly = poly * t - 0.284496736f;
    poly = poly * t + 0.254829592f;
    const float e = fast_exp(-z * z);  // = exp(-x²/2)
    const float erf_abs = 1.0f - poly * t * e;
    const float cdf = 0.5f + 0.5f * std::copysign(erf_abs, x);
    return {x * cdf, cdf + x * inv_sqrt_2pi * e};
  } else {
    const T cdf = T(0.5) * (T(1) + std::erf(x * inv_sqrt2));
    return {x * cdf, cdf + x * inv_sqrt_2pi * std::exp(T(-0.5) * x * x)};
  }
}

/// GELU(x) = x·Φ(x).
template <class T>
RTB_HOST_DEVICE inline T gelu(T x) {
  return gelu_with_derivative(x).value;
}

/// SiLU value and derivative at x, computed together (one exp).
template <class T>
struct SiluPair {
  T value;
  T derivative;
};

template <class T>
RTB_HOST_DEVICE inline SiluPair<T> silu_with_derivative(T x) {
  // e^{−x}, kept finite: fast_exp saturates at e^88, and double is clamped at e^700, so that for
  // very negative x σ is tiny but e·σ = 1 − σ stays 1 instead of ∞·0.
  T e;
  if constexpr (std::is_same_v<T, float>)
    e = fast_exp(-x);
  else
    e = std::exp(-x < T(700) ? -x : T(700));
  const T sigma = T(1) / (T(1) + e);
  return {x * sigma, sigma * (T(1) + x * (e * sigma))};  // e·σ ≤ 1 first: x·e could overflow
}

/// SiLU(x) = x·σ(x).
template <class T>
RTB_HOST_DEVICE inline T silu(T x) {
  return silu_with_derivative(x).value;
}

}  // namespace rtb::math
