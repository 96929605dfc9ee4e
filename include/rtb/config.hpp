// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Project-wide basics: the host/device qualifier, the index type, the row-major matrix views
/// every policy exchanges, and the gradient mode of backward passes.

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define RTB_HOST_DEVICE __host__ __device__
#else
#define RTB_HOST_DEVICE
#endif

#if defined(NDEBUG)
#define RTB_ASSERT(cond) ((void)0)
#else
#include <cassert>
#define RTB_ASSERT(cond) assert(cond)
#endif

namespace rtb {

/// Signed index, as Eigen uses.
using Index = std::ptrdiff_t;

/// Row-major dense matrix: batch is the leading axis, one sample per row.
template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Mutable and read-only views over contiguous row-major storage. Rows [r0, r1) of a row-major
/// buffer are contiguous, so a block of a batch is again a view of this type: no copies.
template <class T>
using MatrixView = Eigen::Map<RowMatrix<T>>;
template <class T>
using ConstMatrixView = Eigen::Map<const RowMatrix<T>>;
template <class T>
using VectorView = Eigen::Map<Vector<T>>;
template <class T>
using ConstVectorView = Eigen::Map<const Vector<T>>;

/// Read-only view of a mutable one (Eigen does not convert Map<M> to Map<const M> implicitly).
template <class T>
ConstMatrixView<T> const_view(const MatrixView<T>& m) {
  return ConstMatrixView<T>(m.data(), m.rows(), m.cols());
}

/// Pointer to row r of a row-major view.
template <class M>
auto row_ptr(M& m, Index r) {
  return m.data() + r * m.cols();
}

/// Whether a backward pass overwrites the gradient buffer or adds into it.
enum class GradientMode { Overwrite, Accumulate };

}  // namespace rtb
