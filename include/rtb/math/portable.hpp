// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Float functions that give the same bits on every machine and on the GPU: the logarithm and
/// the sine and cosine of a fraction of a turn that Box–Muller needs (rtb/math/philox.hpp), and
/// the exponential of the categorical draws (rtb/math/logsumexp.hpp, categorical.hpp).
///
/// Why: a normal draw is r·cos(2πu) with r = √(−2 log u). Through std::log, std::cos and std::sin
/// the last bits depend on the C library (glibc's logf, sinf and cosf are not correctly rounded,
/// and pick an FMA or a non-FMA code path at load time) and on the GPU's libdevice (1–2 ulp
/// bounds of its own), so CPU and GPU rollouts of the same seed would part after the first step.
/// These use only IEEE-754 operations that both sides round the same way — +, −, ×, ÷ and √ in
/// round-to-nearest, and fused multiply-adds written out as `fma` — so the draws are identical
/// bit for bit (tests/math/portable_test.cpp, cuda/tests/kernels_test.cu).
///
/// The rule that keeps them identical: no product is ever the operand of an addition or a
/// subtraction. Compilers may contract `a·b + c` into an FMA on their own (g++ does by default
/// outside strict ISO mode, nvcc with --fmad=true), and whether they do differs between
/// compilers, so every such expression is written as an explicit `fma`, and a contraction has
/// nothing left to change. Do not build device code with --use_fast_math (it replaces ÷ and √).
///
/// Accuracy, measured exhaustively once and sampled by tests/math/portable_test.cpp: log within
/// 1 ulp on every positive normal float; sine and cosine within 1 ulp on all 2^24 angles
/// Box–Muller uses; exp within 1.03 ulp on every float in [−87, 88.72].

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "rtb/base.hpp"

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace rtb::math::portable {

/// a·b + c rounded once.
RTB_HOST_DEVICE inline float fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

RTB_HOST_DEVICE inline std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

RTB_HOST_DEVICE inline float float_of(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

/// Natural logarithm of a positive normal float (the reduction and polynomial of FreeBSD's
/// e_logf.c, every multiply-add fused): x = 2^k·(1 + f) with 1 + f ∈ [√½, √2),
/// log(1 + f) = f − f²/2 + s·(f²/2 + R(s²)), s = f/(2 + f). Zero, negative, subnormal, infinite
/// and NaN inputs are outside its contract (Box–Muller's u lies in [2⁻³², 1]).
RTB_HOST_DEVICE inline float log(float x) {
  constexpr float kLn2Hi = 6.9313812256e-01f;  // ln 2 split so that k·kLn2Hi is exact
  constexpr float kLn2Lo = 9.0580006145e-06f;
  constexpr float kLg1 = 0.66666662693f, kLg2 = 0.40000972152f;     // 0xaaaaaa.0p-24, 0xccce13.0p-25
  constexpr float kLg3 = 0.28498786688f, kLg4 = 0.24279078841f;     // 0x91e9ee.0p-25, 0xf89e26.0p-26
  const std::uint32_t shifted = bits_of(x) - 0x3f3504f3u;           // 0x3f3504f3 = √½
  const auto k = static_cast<std::int32_t>(shifted) >> 23;          // arithmetic shift (C++20)
  const float m = float_of((shifted & 0x007fffffu) + 0x3f3504f3u);  // 1 + f ∈ [√½, √2)
  const float f = m - 1.0f;                                         // exact (Sterbenz)
  const float dk = static_cast<float>(k);
  const float s = f / (2.0f + f);
  const float z = s * s;
  const float w = z * z;
  const float r = fma(z, fma(w, kLg3, kLg1), w * fma(w, kLg4, kLg2));  // R(z)
  const float half_f = 0.5f * f;                                       // exact
  float y = fma(s, fma(half_f, f, r), dk * kLn2Lo);                    // s·(f²/2 + R) + k·ln2_lo
  y = fma(-half_f, f, y);                                              // − f²/2
  y = y + f;
  return fma(dk, kLn2Hi, y);  // + k·ln2_hi
}

/// e^x for float: Cody–Waite reduction x = n·ln2 + r (|r| ≤ ½ln2, ln 2 split in two so n·ln2 is
/// exact) and Cephes' degree-6 expf polynomial, every multiply-add fused. Exactly 0 below −87
/// (where e^x would be subnormal or underflow; rtb flushes subnormals anyway), +∞ above 88.72,
/// NaN passes through. Used by the categorical draws and log-softmax (rtb/math/logsumexp.hpp).
RTB_HOST_DEVICE inline float exp(float x) {
  if (!(x >= -87.0f)) return x != x ? x : 0.0f;
  if (x > 88.72283935546875f) return float_of(0x7f800000u);
  const float n = fma(x, 1.44269504088896341f, 12582912.0f) - 12582912.0f;  // round(x / ln 2), 1.5·2^23 trick
  float r = fma(-n, 0.693359375f, x);                                       // ln 2, high part (n·it exact)
  r = fma(-n, -2.12194440e-4f, r);                                          // ln 2, low part
  float p = fma(1.9875691500e-4f, r, 1.3981999507e-3f);
  p = fma(p, r, 8.3334519073e-3f);
  p = fma(p, r, 4.1665795894e-2f);
  p = fma(p, r, 1.6666665459e-1f);
  p = fma(p, r, 5.0000001201e-1f);
  p = fma(p * r, r, r) + 1.0f;  // 1 + r + r²·P(r)
  // 2^n in two halves, so that n = 128 (x just below 88.72) does not overflow the exponent field.
  const auto k = static_cast<std::int32_t>(n);
  const std::int32_t k1 = k / 2, k2 = k - k1;
  return (p * float_of(static_cast<std::uint32_t>(k1 + 127) << 23)) *
         float_of(static_cast<std::uint32_t>(k2 + 127) << 23);
}

/// sin and cos of 2π·n/2²⁴ for n ∈ [0, 2²⁴): the angle of Box–Muller's uniform in [0, 1), whose
/// 24 bits are n. The quadrant j comes from n exactly and the remainder f = n/2²⁴ − j/4 ∈
/// [−1/8, 1/8] is exact, so there is no range-reduction error and 2π is never rounded into the
/// angle: sin(2πf) = f·(a₁ + y·P(y)) and cos(2πf) = 1 + y·Q(y), y = f², with near-minimax
/// coefficients fitted on y ∈ [0, 1/64] (Chebyshev fit in 40 digits; errors 3·10⁻⁹ and 5·10⁻¹¹,
/// far below a float ulp), and a₁ ≈ 2π split in two floats so that a₁·f is rounded only once.
struct SinCos {
  float sin, cos;
};

RTB_HOST_DEVICE inline SinCos sincos_turn24(std::uint32_t n) {
  constexpr float kTwoPow24 = 5.9604644775390625e-08f;                            // 2^-24
  constexpr float kA1Hi = 6.2831854820251465f, kA1Lo = -1.9421219974296836e-07f;  // 6.2831852878129467414
  const std::uint32_t quadrant = (n + (1u << 21)) >> 22;                          // nearest multiple of 1/4 turn: 0…4
  const auto rem = static_cast<std::int32_t>(n) - static_cast<std::int32_t>(quadrant << 22);  // |rem| ≤ 2^21
  const float f = static_cast<float>(rem) * kTwoPow24;                                        // exact
  const float y = f * f;
  const float p = fma(fma(-75.401612702747458455f, y, 81.592542871301543294f), y, -41.341662570547954912f);
  const float s = fma(kA1Hi, f, f * fma(y, p, kA1Lo));
  const float q = fma(fma(fma(59.220168958296096218f, y, -85.442844673081659515f), y, 64.939316135709049629f), y,
                      -19.739208650130595513f);
  const float c = fma(y, q, 1.0f);
  switch (quadrant & 3u) {
    case 0:
      return SinCos{s, c};
    case 1:
      return SinCos{c, -s};
    case 2:
      return SinCos{-s, -c};
    default:
      return SinCos{-c, s};
  }
}

}  // namespace rtb::math::portable

namespace rtb::math {

/// +∞ in float or double, usable in device code (std::numeric_limits is host-only under nvcc
/// without --expt-relaxed-constexpr).
template <class T>
RTB_HOST_DEVICE inline T infinity() {
  if constexpr (std::is_same_v<T, float>) {
    return portable::float_of(0x7f800000u);
  } else {
    const std::uint64_t bits = 0x7ff0000000000000ull;
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return static_cast<T>(d);
  }
}

/// e^x and log x: rtb's own in float (the same bits on host and device), the C library's in double.
template <class T>
RTB_HOST_DEVICE inline T exp(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return portable::exp(x);
  } else {
    return std::exp(x);
  }
}
template <class T>
RTB_HOST_DEVICE inline T log(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return portable::log(x);
  } else {
    return std::log(x);
  }
}

/// a·b + c rounded once, in float or double, on the host or the device.
template <class T>
RTB_HOST_DEVICE inline T fma(T a, T b, T c) {
  if constexpr (std::is_same_v<T, float>) {
    return portable::fma(a, b, c);
  } else {
#if defined(__CUDA_ARCH__)
    return ::fma(a, b, c);
#else
    return std::fma(a, b, c);
#endif
  }
}

}  // namespace rtb::math
