// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The one type samples come back in: `rtb::Samples<T>`, an xtensor [n, D] (row-major, one sample
/// per row), from trainer.sample(), evaluate().samples and sample_end_states() alike. xtensor is
/// the user-facing container and the bridge to numpy (rtb::save_npy writes one in a call);
/// `view_of` gives the Eigen view rtb's own functions take, without a copy.

#include <cstddef>
#include <xtensor/xtensor.hpp>

#include "rtb/space.hpp"

namespace rtb {

template <class T>
using Samples = xt::xtensor<T, 2>;

/// An uninitialised [rows, cols] Samples.
template <class T>
Samples<T> make_samples(Index rows, Index cols) {
  return Samples<T>::from_shape({static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)});
}

/// Row-major Eigen views of samples (no copy).
template <class T>
ConstMatrixView<T> view_of(const Samples<T>& x) {
  return ConstMatrixView<T>(x.data(), static_cast<Index>(x.shape(0)), static_cast<Index>(x.shape(1)));
}
template <class T>
MatrixView<T> view_of(Samples<T>& x) {
  return MatrixView<T>(x.data(), static_cast<Index>(x.shape(0)), static_cast<Index>(x.shape(1)));
}

}  // namespace rtb
