// SPDX-License-Identifier: Apache-2.0
#pragma once
// Shared helpers for the test suite: finite-difference gradient checks and tolerances.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <vector>

#include <rtb/config.hpp>
#include <rtb/math/philox.hpp>

namespace rtb_test {

/// FNV-1a over raw bytes: the hashes the golden tests pin (tests/golden/golden_test.cpp).
inline std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
template <class T>
std::uint64_t hash_of(std::span<const T> v) {
  return fnv1a(v.data(), v.size_bytes());
}

/// A result pinned before a refactoring (see tests/golden/golden_test.cpp): printed, so that a
/// deliberate change is re-pinned by copying the line, and checked for exact equality.
struct Pinned {
  std::uint64_t params_hash;
  double log_z;
};
inline void check_pinned(const char* label, std::uint64_t params_hash, double log_z, const Pinned& want) {
  std::printf("pinned %s = {0x%016llxull, %.17g}\n", label, static_cast<unsigned long long>(params_hash), log_z);
  CHECK(params_hash == want.params_hash);
  CHECK(log_z == want.log_z);
}

/// Tolerances by scalar type (one place, as ensmallen's Tolerances<MatType>).
template <class S>
struct Tolerances;
template <>
struct Tolerances<double> {
  static constexpr double fd_step = 1e-6;
  static constexpr double gradient = 1e-6;  // relative, central differences in double
};
template <>
struct Tolerances<float> {
  static constexpr double fd_step = 1e-2;
  static constexpr double gradient = 2e-2;
};

/// max |a − n| / max(1, max |n|) over all entries: relative to the gradient's scale.
inline double relative_error(std::span<const double> analytic, std::span<const double> numeric) {
  double scale = 1.0, err = 0.0;
  for (double v : numeric) scale = std::max(scale, std::fabs(v));
  for (std::size_t i = 0; i < analytic.size(); ++i) err = std::max(err, std::fabs(analytic[i] - numeric[i]));
  return err / scale;
}

/// Central-difference gradient of f with respect to every entry of params (restored after).
inline std::vector<double> numeric_gradient(std::span<double> params, const std::function<double()>& f,
                                            double h = Tolerances<double>::fd_step) {
  std::vector<double> g(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    const double keep = params[i];
    params[i] = keep + h;
    const double up = f();
    params[i] = keep - h;
    const double down = f();
    params[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

/// Fills a matrix with deterministic normals (scaled).
template <class S>
void fill_normal(rtb::MatrixView<S> m, std::uint64_t seed, double scale = 1.0) {
  const rtb::math::NoiseKey key{seed, rtb::math::Stream::User, 77};
  for (rtb::Index r = 0; r < m.rows(); ++r)
    for (rtb::Index c = 0; c < m.cols(); ++c)
      m(r, c) = static_cast<S>(scale * rtb::math::normal<double>(key, static_cast<std::uint64_t>(r), 0,
                                                                  static_cast<std::uint32_t>(c)));
}

/// Checks a Denoiser's backward against central differences of L = Σ d_out ⊙ net(x, t), in
/// double, over every parameter.
template <class N>
void check_denoiser_gradient(N net, rtb::Index rows, double t, std::uint64_t seed) {
  rtb::RowMatrix<double> x(rows, net.input_dim()), d_out(rows, net.output_dim()), out(rows, net.output_dim());
  fill_normal<double>(rtb::MatrixView<double>(x.data(), x.rows(), x.cols()), seed, 1.5);
  fill_normal<double>(rtb::MatrixView<double>(d_out.data(), d_out.rows(), d_out.cols()), seed + 1);
  auto ctx = net.make_context(rows);
  const rtb::ConstMatrixView<double> xv(x.data(), x.rows(), x.cols());
  rtb::MatrixView<double> ov(out.data(), out.rows(), out.cols());
  auto loss = [&] {
    net.inference(xv, t, ov, ctx);
    return (out.array() * d_out.array()).sum();
  };
  net.forward(xv, t, ov, ctx);
  std::vector<double> analytic(static_cast<std::size_t>(net.num_params()), 123.0);
  net.backward(ctx, rtb::ConstMatrixView<double>(d_out.data(), rows, d_out.cols()), std::span<double>(analytic),
               rtb::GradientMode::Overwrite);
  const std::vector<double> numeric = numeric_gradient(net.params(), loss);
  CHECK(relative_error(analytic, numeric) < Tolerances<double>::gradient);
}

}  // namespace rtb_test
