// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Dense products that never touch the heap. Eigen's GEMM packs its operands into buffers of
/// kc·mc and kc·nc scalars, which live on the stack up to EIGEN_STACK_ALLOCATION_LIMIT (128 KiB)
/// and come from malloc above it. Splitting a product into blocks of at most 192 rows, 192
/// columns and 128 depth bounds both buffers by 96 KiB, so the denoisers' forward and backward
/// passes allocate nothing whatever their sizes (tests/alloc checks it with malloc interposed).
/// Products that already fit run as one Eigen call, unchanged.

#include <algorithm>
#include <type_traits>

#include "rtb/detail/flush_denormal.hpp"
#include "rtb/net/gemm_bf16.hpp"
#include "rtb/space.hpp"

namespace rtb::detail {

inline constexpr Index kGemmRows = 192, kGemmCols = 192, kGemmDepth = 128;

template <class X>
inline constexpr bool direct_float = std::is_same_v<typename std::decay_t<X>::Scalar, float> &&
                                     (std::decay_t<X>::Flags & Eigen::DirectAccessBit) != 0;

/// A direct-access Eigen expression's pointer and strides.
template <class X>
StridedF32 strided(const X& x) {
  constexpr bool row_major = std::decay_t<X>::IsRowMajor;
  return {x.data(), row_major ? Index(x.outerStride()) : Index(x.innerStride()),
          row_major ? Index(x.innerStride()) : Index(x.outerStride())};
}

/// Products with fewer output rows or columns than this stay in float under Precision::BFloat16:
/// the time embedding's one-row products and the 2-D heads' 4 outputs, where packing the operands
/// costs more than the products (measured 5.7 against 34 GFLOP/s at 1×64×64) and float is the
/// more accurate anyway.
inline constexpr Index kBf16MinSide = 8;

/// dst = a·b (accumulate = false) or dst += a·b, without heap allocation. Float products follow
/// the thread's Precision (the entry point's): BFloat16 runs those with at least kBf16MinSide
/// rows and columns through gemm_bf16.
template <class Dst, class A, class B>
void gemm(Dst&& dst, const A& a, const B& b, bool accumulate) {
  const Index m = a.rows(), k = a.cols(), n = b.cols();
  RTB_ASSERT(b.rows() == k && dst.rows() == m && dst.cols() == n);
  if constexpr (direct_float<Dst> && direct_float<A> && direct_float<B>) {
    if (float_mode_state().precision == Precision::BFloat16 && std::min(m, n) >= kBf16MinSide) {
      const StridedF32 c = strided(dst);
      gemm_bf16(const_cast<float*>(c.p), c.rs, c.cs, strided(a), strided(b), m, k, n, accumulate);
      return;
    }
  }
  if (m <= kGemmRows && n <= kGemmCols && k <= kGemmDepth) {
    if (accumulate)
      dst.noalias() += a * b;
    else
      dst.noalias() = a * b;
    return;
  }
  if (!accumulate) dst.setZero();
  for (Index i = 0; i < m; i += kGemmRows) {
    const Index mi = std::min(kGemmRows, m - i);
    for (Index j = 0; j < n; j += kGemmCols) {
      const Index nj = std::min(kGemmCols, n - j);
      for (Index p = 0; p < k; p += kGemmDepth) {
        const Index kp = std::min(kGemmDepth, k - p);
        dst.block(i, j, mi, nj).noalias() += a.block(i, p, mi, kp) * b.block(p, j, kp, nj);
      }
    }
  }
}

}  // namespace rtb::detail
