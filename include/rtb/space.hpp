// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Memory spaces and the views every policy exchanges.
///
/// A view is a pointer and a shape over row-major memory: one sample per row, the batch as the
/// leading axis, no copies. Where the memory lives is part of the type: `View<T, Space>`. In
/// host memory (`HostSpace`, the default and what users see) a view is an Eigen map,
/// `MatrixView<T>` / `ConstMatrixView<T>`, so models can use Eigen on it directly. In any other
/// space it is a `MatrixRef<T, Space>`, which offers the pointer and the shape and nothing that
/// would read the memory on the host: the trainer compiles against it without touching a
/// space's memory, and a device implementation of a process or a net is a new model of the same
/// concepts (see docs/concepts.md, "Memory spaces").
///
/// A space names its buffer type, its executor, and the few whole-array operations the trainer
/// needs between the models' own calls: fill, copy, transfers to and from the host, comparison,
/// sums, scaling and the optimiser's update. `HostSpace` below is the reference model.

#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "rtb/base.hpp"
#include "rtb/detail/thread_pool.hpp"
#include "rtb/math/adam.hpp"

namespace rtb {

/// Row-major dense matrix: batch is the leading axis, one sample per row.
template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Mutable and read-only host views over contiguous row-major storage. Rows [r0, r1) of a
/// row-major buffer are contiguous, so a block of a batch is again a view of this type.
template <class T>
using MatrixView = Eigen::Map<RowMatrix<T>>;
template <class T>
using ConstMatrixView = Eigen::Map<const RowMatrix<T>>;

/// Host memory aligned to Eigen's largest packet: every buffer a net computes on starts at the
/// same alignment whichever thread's scratch it is, so results never depend on which thread ran
/// a block (Eigen's kernels may take alignment-dependent paths).
template <class T>
using AlignedVector = std::vector<T, Eigen::aligned_allocator<T>>;

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

/// Row-major memory in a space other than the host's: a pointer and a shape. `T` may be const.
template <class T, class Space>
class MatrixRef {
 public:
  MatrixRef() = default;
  MatrixRef(T* data, Index rows, Index cols) : data_(data), rows_(rows), cols_(cols) {}
  /// A mutable view converts to a read-only one.
  template <class U>
    requires std::is_same_v<const U, T>
  MatrixRef(const MatrixRef<U, Space>& m) : data_(m.data()), rows_(m.rows()), cols_(m.cols()) {}

  T* data() const { return data_; }
  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  Index size() const { return rows_ * cols_; }

 private:
  T* data_ = nullptr;
  Index rows_ = 0, cols_ = 0;
};

template <class T, class Space>
MatrixRef<const T, Space> const_view(const MatrixRef<T, Space>& m) {
  return m;
}

struct HostSpace;

namespace detail {
template <class T, class Space>
struct ViewOf {
  using type = MatrixRef<T, Space>;
};
template <class T>
struct ViewOf<T, HostSpace> {
  using type = std::conditional_t<std::is_const_v<T>, ConstMatrixView<std::remove_const_t<T>>, MatrixView<T>>;
};
}  // namespace detail

/// The view type of `T` (possibly const) in memory space `Space`.
template <class T, class Space = HostSpace>
using View = typename detail::ViewOf<T, Space>::type;

/// Ordinary host memory: aligned std::vector buffers, Eigen-map views, the thread pool as executor.
struct HostSpace {
  static constexpr const char* name = "host";
  template <class T>
  using buffer = AlignedVector<T>;
  using Executor = detail::ThreadPool;

  template <class T>
  static void fill(std::span<T> dst, T value) {
    std::fill(dst.begin(), dst.end(), value);
  }
  /// dst = src, both in this space.
  template <class T>
  static void copy(std::span<T> dst, std::span<const T> src) {
    RTB_ASSERT(dst.size() >= src.size());
    if (!src.empty()) std::memmove(dst.data(), src.data(), src.size_bytes());
  }
  /// host_dst = src (src in this space).
  template <class T>
  static void download(std::span<T> host_dst, std::span<const T> src) {
    copy(host_dst, src);
  }
  /// dst = host_src (dst in this space).
  template <class T>
  static void upload(std::span<T> dst, std::span<const T> host_src) {
    copy(dst, host_src);
  }
  /// Bitwise equality of two arrays of this space.
  template <class T>
  static bool equal(std::span<const T> a, std::span<const T> b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
  }
  /// acc += x, element by element.
  template <class S>
  static void add(std::span<S> acc, std::span<const S> x) {
    for (std::size_t i = 0; i < x.size(); ++i) acc[i] += x[i];
  }
  /// y += a·x.
  template <class S>
  static void axpy(std::span<S> y, S a, std::span<const S> x) {
    for (std::size_t i = 0; i < x.size(); ++i) y[i] += a * x[i];
  }
  /// Σ x², accumulated in double in index order.
  template <class S>
  static double sum_squares(std::span<const S> x) {
    double s = 0;
    for (S v : x) s += static_cast<double>(v) * v;
    return s;
  }
  template <class S>
  static void scale(std::span<S> x, S factor) {
    for (S& v : x) v *= factor;
  }
  /// One Adam update of every element (math/adam.hpp).
  template <class S>
  static void adam(std::span<S> params, std::span<const S> grad, std::span<S> m, std::span<S> v,
                   const math::AdamStep<S>& c) {
    for (std::size_t i = 0; i < m.size(); ++i) math::adam_update(params[i], grad[i], m[i], v[i], c);
  }
};

/// The memory space a model declares (`using Space = …;`), HostSpace if it declares none.
template <class T>
struct space_of {
  using type = HostSpace;
};
template <class T>
  requires requires { typename T::Space; }
struct space_of<T> {
  using type = typename T::Space;
};
template <class T>
using space_of_t = typename space_of<T>::type;

/// Bytes a space buffer holds.
template <class B>
std::size_t buffer_bytes(const B& b) {
  return b.size() * sizeof(typename B::value_type);
}

}  // namespace rtb
