// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Mode weights of a sample set: each sample goes to its nearest mode if that is within
/// `radius`, else to "off". Total variation against target weights (with 0 off-mode mass):
///
///     TV = ½ (Σ_k |ŵ_k − w_k| + ŵ_off).

#include <cmath>
#include <span>
#include <vector>

#include "rtb/space.hpp"
#include "rtb/error.hpp"

namespace rtb {

struct ModeCoverage {
  std::vector<double> weights;  ///< fraction of samples per mode
  double off_mode = 0;          ///< fraction near no mode
  double tv = 0;                ///< total variation to the target weights
  Index modes_hit = 0;          ///< modes with at least one sample
};

template <class S>
ModeCoverage mode_coverage(ConstMatrixView<S> x, const RowMatrix<double>& modes, std::span<const double> target,
                           double radius) {
  if (x.rows() == 0) throw EmptyBatchError("mode_coverage: no samples");
  if (x.cols() != modes.cols() || static_cast<Index>(target.size()) != modes.rows())
    throw ShapeError(detail::message("mode_coverage: samples are ", x.cols(), "-D, modes ", modes.cols(), "-D, ",
                                     modes.rows(), " modes but ", target.size(), " target weights"));
  ModeCoverage c;
  c.weights.assign(static_cast<std::size_t>(modes.rows()), 0.0);
  const double inv_n = 1.0 / static_cast<double>(x.rows());
  for (Index i = 0; i < x.rows(); ++i) {
    Index best = -1;
    double best_d2 = radius * radius;
    for (Index k = 0; k < modes.rows(); ++k) {
      double d2 = 0;
      for (Index d = 0; d < x.cols(); ++d) {
        const double diff = static_cast<double>(x(i, d)) - modes(k, d);
        d2 += diff * diff;
      }
      if (d2 <= best_d2) {
        best_d2 = d2;
        best = k;
      }
    }
    if (best < 0)
      c.off_mode += inv_n;
    else
      c.weights[static_cast<std::size_t>(best)] += inv_n;
  }
  double total = 0, tsum = 0;
  for (double t : target) tsum += t;
  for (std::size_t k = 0; k < c.weights.size(); ++k) {
    total += std::fabs(c.weights[k] - target[k] / tsum);
    c.modes_hit += c.weights[k] > 0;
  }
  c.tv = 0.5 * (total + c.off_mode);
  return c;
}

}  // namespace rtb
