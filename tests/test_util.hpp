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

#include <rtb/concepts/step.hpp>
#include <rtb/net/model.hpp>
#include <rtb/space.hpp>
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

/// FNV-1a over a model's trained tensors in layout order (buffers, which learn nothing, left out).
template <class M>
std::uint64_t trained_hash(const M& model) {
  std::uint64_t h = 1469598103934665603ull;
  const auto p = model.params();
  for (const rtb::ParameterTensor& t : model.layout().tensors())
    if (t.trainable) h = fnv1a(p.data() + t.offset, sizeof(p[0]) * static_cast<std::size_t>(t.size), h);
  return h;
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

/// The Step a process is called with at `step` for rows `first_row`… (no conditions), as the
/// trainer would build it: processes read x, step and first_row.
template <class S, class V>
rtb::Step<V, S> at(rtb::ConstMatrixView<V> x, rtb::Index step, rtb::Index first_row = 0) {
  return {x, rtb::ConstMatrixView<V>(nullptr, x.rows(), 0), step, S(0), first_row};
}

/// The entries of `v` (one per parameter) that belong to trained tensors, in layout order.
inline std::vector<double> trained_entries(const rtb::ParameterLayout& layout, const std::vector<double>& v) {
  std::vector<double> out;
  for (const rtb::ParameterTensor& t : layout.tensors())
    if (t.trainable) out.insert(out.end(), v.begin() + t.offset, v.begin() + t.offset + t.size);
  return out;
}

/// A Step over x (and conditions) at time t, for calling a net or a model directly in tests.
template <class V, class S, class C = V>
rtb::Step<V, S, C> step_at(rtb::ConstMatrixView<V> x, S t, rtb::ConstMatrixView<C> condition = {nullptr, 0, 0},
                           rtb::Index step = 0) {
  return {x, rtb::ConstMatrixView<C>(condition.data(), x.rows(), condition.cols()), step, t, 0};
}

/// Checks a model's backward against central differences of L = Σ d_out ⊙ net(x, c, t), in
/// double, over every trained parameter (buffers must get exactly zero gradient).
template <class N, class V, class C = V>
void check_model_gradient(rtb::Model<N>& model, rtb::ConstMatrixView<V> x, double t, std::uint64_t seed,
                          rtb::ConstMatrixView<C> condition = {nullptr, 0, 0}) {
  const rtb::Index rows = x.rows();
  rtb::RowMatrix<double> d_out(rows, model.output_dim()), out(rows, model.output_dim());
  fill_normal<double>(rtb::MatrixView<double>(d_out.data(), d_out.rows(), d_out.cols()), seed + 1);
  auto ctx = model.make_context(rows);
  const auto s = step_at<V, double, C>(x, t, condition);
  rtb::MatrixView<double> ov(out.data(), out.rows(), out.cols());
  auto loss = [&] {
    model.inference(s, ov, ctx);
    return (out.array() * d_out.array()).sum();
  };
  model.forward(s, ov, ctx);
  std::vector<double> analytic(static_cast<std::size_t>(model.num_params()), 123.0);
  model.backward(ctx, rtb::ConstMatrixView<double>(d_out.data(), rows, d_out.cols()), std::span<double>(analytic),
                 rtb::GradientMode::Overwrite);
  const std::vector<double> numeric = numeric_gradient(model.params(), loss);
  std::vector<double> a, n;
  for (const rtb::ParameterTensor& tensor : model.layout().tensors())
    for (rtb::Index i = tensor.offset; i < tensor.offset + tensor.size; ++i) {
      if (!tensor.trainable) {
        CHECK(analytic[static_cast<std::size_t>(i)] == 0.0);
        continue;
      }
      a.push_back(analytic[static_cast<std::size_t>(i)]);
      n.push_back(numeric[static_cast<std::size_t>(i)]);
    }
  CHECK(relative_error(a, n) < Tolerances<double>::gradient);
}

/// The same for a net over real-valued states, with fresh weights and random states.
template <class N>
void check_denoiser_gradient(N net, rtb::Index rows, double t, std::uint64_t seed) {
  rtb::Model<N> model(std::move(net));
  rtb::RowMatrix<double> x(rows, model.input_dim());
  fill_normal<double>(rtb::MatrixView<double>(x.data(), x.rows(), x.cols()), seed, 1.5);
  check_model_gradient<N, double>(model, rtb::ConstMatrixView<double>(x.data(), x.rows(), x.cols()), t, seed);
}

}  // namespace rtb_test
