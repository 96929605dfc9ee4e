// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Isotropic Gaussian mixtures: exact log-density (logsumexp over components) and exact
/// sampling (component drawn by weight, not equal counts per mode), plus the 2-D mixtures of the
/// paper: the 25-mode grid prior and the 9-mode posterior, whose log-density ratio is the reward.

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/math/gaussian.hpp"
#include "rtb/math/philox.hpp"

namespace rtb {

template <class S = float>
class GaussianMixture {
 public:
  /// `means` [K, D], per-component variance (same on every axis), weights (normalised here).
  GaussianMixture(RowMatrix<double> means, std::vector<double> weights, double variance)
      : means_(std::move(means)), variance_(variance) {
    if (means_.rows() == 0 || static_cast<Index>(weights.size()) != means_.rows())
      throw ShapeError(detail::message("GaussianMixture: ", means_.rows(), " means but ", weights.size(),
                                       " weights; give one positive weight per component"));
    if (!(variance > 0)) throw InvalidArgumentError(detail::message("GaussianMixture: variance must be positive, got ", variance));
    double total = 0;
    for (double w : weights) {
      if (!(w > 0)) throw InvalidArgumentError(detail::message("GaussianMixture: weights must be positive, got ", w));
      total += w;
    }
    for (double w : weights) {
      weights_.push_back(w / total);
      log_weights_.push_back(std::log(w / total));
    }
  }

  Index dim() const { return means_.cols(); }
  Index components() const { return means_.rows(); }
  const RowMatrix<double>& means() const { return means_; }
  const std::vector<double>& weights() const { return weights_; }
  double variance() const { return variance_; }

  /// log p(x) for one point.
  double log_density(const S* x) const {
    const Index D = dim();
    double top = -INFINITY, terms[64];
    double* t = components() <= 64 ? terms : nullptr;
    std::vector<double> heap;
    if (!t) {
      heap.resize(static_cast<std::size_t>(components()));
      t = heap.data();
    }
    const double log_norm = -0.5 * static_cast<double>(D) * (math::kLog2Pi + std::log(variance_));
    for (Index k = 0; k < components(); ++k) {
      double sq = 0;
      for (Index d = 0; d < D; ++d) {
        const double diff = static_cast<double>(x[d]) - means_(k, d);
        sq += diff * diff;
      }
      t[k] = log_weights_[k] + log_norm - 0.5 * sq / variance_;
      top = t[k] > top ? t[k] : top;
    }
    double sum = 0;
    for (Index k = 0; k < components(); ++k) sum += std::exp(t[k] - top);
    return top + std::log(sum);
  }

  /// out[i] = log p(x_i) for every row.
  void log_density(ConstMatrixView<S> x, std::span<S> out) const {
    if (x.cols() != dim())
      throw ShapeError(detail::message("GaussianMixture::log_density: x has ", x.cols(), " columns, the mixture is ",
                                       dim(), "-dimensional"));
    for (Index i = 0; i < x.rows(); ++i) out[i] = static_cast<S>(log_density(row_ptr(x, i)));
  }

  /// Exact samples into x (rows first_row… of a stream keyed by `key`).
  void sample(MatrixView<S> x, const math::NoiseKey& key, Index first_row = 0) const {
    const double sd = std::sqrt(variance_);
    for (Index i = 0; i < x.rows(); ++i) {
      const auto row = static_cast<std::uint64_t>(first_row + i);
      const double u = math::uniform<double>(key, row, 0, 0);
      Index k = 0;
      double acc = weights_[0];
      while (k + 1 < components() && u >= acc) acc += weights_[static_cast<std::size_t>(++k)];
      for (Index d = 0; d < dim(); ++d)
        x(i, d) = static_cast<S>(means_(k, d) + sd * math::normal<double>(key, row, 1, static_cast<std::uint32_t>(d)));
    }
  }

  /// The paper's prior target: 25 equal-weight modes on {−10,−5,0,5,10}², variance 0.3.
  static GaussianMixture grid25() {
    RowMatrix<double> m(25, 2);
    for (int i = 0; i < 25; ++i) {
      m(i, 0) = -10.0 + 5.0 * (i / 5);
      m(i, 1) = -10.0 + 5.0 * (i % 5);
    }
    return GaussianMixture(m, std::vector<double>(25, 1.0), 0.3);
  }

  /// The paper's posterior: 9 of those modes with weights ∝ [4,10,4,5,10,5,4,15,4].
  static GaussianMixture posterior9() {
    RowMatrix<double> m(9, 2);
    m << -10, -5, -5, -10, -5, 0, 10, -5, 0, 0, 0, 5, 5, -5, 5, 0, 5, 10;
    return GaussianMixture(m, {4, 10, 4, 5, 10, 5, 4, 15, 4}, 0.3);
  }

 private:
  RowMatrix<double> means_;
  std::vector<double> weights_, log_weights_;
  double variance_;
};

/// log r(x) = log p_num(x) − log p_den(x): the reward that turns a prior fitted to p_den into a
/// posterior p_num (the 2-D experiment's 9-mode / 25-mode ratio).
template <class S = float>
class MixtureRatioReward {
 public:
  MixtureRatioReward(GaussianMixture<S> numerator, GaussianMixture<S> denominator)
      : num_(std::move(numerator)), den_(std::move(denominator)) {
    if (num_.dim() != den_.dim())
      throw ShapeError(detail::message("MixtureRatioReward: numerator is ", num_.dim(), "-D, denominator ", den_.dim(), "-D"));
  }
  void log_reward(ConstMatrixView<S> x, std::span<S> out) const {
    if (x.cols() != num_.dim())
      throw ShapeError(detail::message("MixtureRatioReward: x has ", x.cols(), " columns, expected ", num_.dim()));
    for (Index i = 0; i < x.rows(); ++i)
      out[i] = static_cast<S>(num_.log_density(row_ptr(x, i)) - den_.log_density(row_ptr(x, i)));
  }
  const GaussianMixture<S>& numerator() const { return num_; }
  const GaussianMixture<S>& denominator() const { return den_; }

 private:
  GaussianMixture<S> num_, den_;
};

}  // namespace rtb
