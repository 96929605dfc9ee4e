// SPDX-License-Identifier: Apache-2.0
#pragma once
// Gaussian data under the DDPM, in closed form (shared by the DDPM exactness and prior tests).
//
// Data x ~ N(m, s²) per coordinate; noised to level τ, x_τ = √ᾱ·x + √(1−ᾱ)·ε, ε ~ N(0, 1), so
// x_τ ~ N(√ᾱ·m, v) with v = ᾱ·s² + 1 − ᾱ and Cov(ε, x_τ) = √(1−ᾱ). The optimal ε-predictor
// under squared error is the conditional mean, linear in x_τ:
//
//     ε̂(x_τ, τ) = E[ε | x_τ] = √(1−ᾱ)·(x_τ − √ᾱ·m)/v.
//
// With ε̂ = a·x + b the unclamped DDPM step is linear too: x̂_0 = ((1 − √(1−ᾱ)·a)·x − √(1−ᾱ)·b)/√ᾱ,
// μ = x0_coef·x̂_0 + x_coef·x = G·x + H, and x' = μ + √β·z on every step but the last, so from
// x_0 ~ N(0, 1) the terminal mean and variance follow exactly from M' = G·M + H, V' = G²·V + β.

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include <rtb/concepts/denoiser.hpp>
#include <rtb/net/parameters.hpp>
#include <rtb/process/ddpm.hpp>

namespace rtb_test {

/// ε̂ = a·x + b for coordinate d at sampling step i.
struct LinearEps {
  double a = 0, b = 0;
};

/// The optimal ε-predictor for N(m, s²) data at training timestep τ.
inline LinearEps optimal_eps(double alpha_bar, double m, double s2) {
  const double v = alpha_bar * s2 + 1 - alpha_bar, c = std::sqrt(1 - alpha_bar);
  return {c / v, -c * std::sqrt(alpha_bar) * m / v};
}

/// Terminal mean and variance of the strided sampler (clamp off) per coordinate, with
/// ε̂ = eps(i, d) at step i.
struct Moments {
  std::vector<double> mean, variance;
};
template <class S, class EpsFn>
Moments terminal_moments(const rtb::DdpmProcess<S>& p, rtb::Index dim, EpsFn&& eps) {
  Moments out{std::vector<double>(static_cast<std::size_t>(dim), 0.0), std::vector<double>(static_cast<std::size_t>(dim), 1.0)};
  for (rtb::Index i = 0; i < p.num_steps(); ++i) {
    const auto& c = p.coefficients(i);
    const bool last = i == p.num_steps() - 1;
    for (rtb::Index d = 0; d < dim; ++d) {
      const LinearEps e = eps(i, d);
      const double sa = std::sqrt(c.alpha_bar), sb = std::sqrt(1 - c.alpha_bar);
      const double G = c.x0_coef * (1 - sb * e.a) / sa + c.x_coef, H = -c.x0_coef * sb * e.b / sa;
      auto& M = out.mean[static_cast<std::size_t>(d)];
      auto& V = out.variance[static_cast<std::size_t>(d)];
      M = G * M + H;
      V = G * G * V + (last ? 0.0 : c.variance);
    }
  }
  return out;
}

/// A denoiser that is the optimal ε-predictor for N(m, s²) data times one trained gain g
/// (out = g·ε̂; g = 1 is optimal), reading the integer timestep τ from the step's time.
struct OptimalEpsilonDenoiser {
  using Scalar = double;
  using Value = double;
  struct Context {
    const double* x = nullptr;
    rtb::Index rows = 0;
    double tau = 0;
  };
  std::vector<double> alpha_bar;  // by training timestep
  std::vector<double> m, s2;      // per coordinate
  rtb::ParameterLayout layout_ = [] {
    rtb::ParameterLayout l;
    l.add("gain", {1});
    return l;
  }();

  OptimalEpsilonDenoiser(const rtb::DdpmProcess<double>& p, std::vector<double> mean, std::vector<double> var)
      : m(std::move(mean)), s2(std::move(var)) {
    for (rtb::Index j = 0; j < p.options().num_train_steps; ++j) alpha_bar.push_back(p.train_alpha_bar(j));
  }
  rtb::Index input_dim() const { return static_cast<rtb::Index>(m.size()); }
  rtb::Index output_dim() const { return input_dim(); }
  rtb::Index num_params() const { return 1; }
  const rtb::ParameterLayout& layout() const { return layout_; }
  void initialize(std::span<double> p) const { p[0] = 1.0; }
  Context make_context(rtb::Index) const { return {}; }
  double eps(double x, double tau, rtb::Index d) const {
    const LinearEps e = optimal_eps(alpha_bar[static_cast<std::size_t>(std::lround(tau))], m[static_cast<std::size_t>(d)],
                                    s2[static_cast<std::size_t>(d)]);
    return e.a * x + e.b;
  }
  void inference(const rtb::Weights<double>& w, const rtb::Step<double>& s, rtb::MatrixView<double> out, Context&) const {
    for (rtb::Index r = 0; r < s.rows(); ++r)
      for (rtb::Index d = 0; d < input_dim(); ++d) out(r, d) = w.params[0] * eps(s.x(r, d), s.time, d);
  }
  void forward(const rtb::Weights<double>& w, const rtb::Step<double>& s, rtb::MatrixView<double> out, Context& c) const {
    c = {s.x.data(), s.rows(), s.time};
    inference(w, s, out, c);
  }
  void backward(const rtb::Weights<double>&, Context& c, rtb::ConstMatrixView<double> d_out, std::span<double> grad,
                rtb::GradientMode mode) const {
    if (mode == rtb::GradientMode::Overwrite) grad[0] = 0;
    const rtb::Index D = input_dim();
    for (rtb::Index r = 0; r < c.rows; ++r)
      for (rtb::Index d = 0; d < D; ++d) grad[0] += d_out(r, d) * eps(c.x[r * D + d], c.tau, d);
  }
};
static_assert(rtb::Denoiser<OptimalEpsilonDenoiser>);

/// ε̂ = a_{i,d}·x + b_{i,d} with trained coefficients per sampling step i (read from the step
/// index) and coordinate d: the family the optimal predictors of every Gaussian belong to.
/// Initialised to the optimal predictor for N(m, s²) data on the given process.
struct LinearStepEpsDenoiser {
  using Scalar = double;
  using Value = double;
  struct Context {
    const double* x = nullptr;
    rtb::Index rows = 0, step = 0;
  };
  rtb::Index steps = 0, dim = 0;
  std::vector<double> init;  // [a (T·D), b (T·D)]
  rtb::ParameterLayout layout_;

  LinearStepEpsDenoiser(const rtb::DdpmProcess<double>& p, const std::vector<double>& m, const std::vector<double>& s2)
      : steps(p.num_steps()), dim(static_cast<rtb::Index>(m.size())) {
    layout_.add("a", {steps, dim});
    layout_.add("b", {steps, dim});
    init.resize(static_cast<std::size_t>(2 * steps * dim));
    for (rtb::Index i = 0; i < steps; ++i)
      for (rtb::Index d = 0; d < dim; ++d) {
        const LinearEps e = optimal_eps(p.coefficients(i).alpha_bar, m[static_cast<std::size_t>(d)], s2[static_cast<std::size_t>(d)]);
        init[static_cast<std::size_t>(i * dim + d)] = e.a;
        init[static_cast<std::size_t>((steps + i) * dim + d)] = e.b;
      }
  }
  rtb::Index input_dim() const { return dim; }
  rtb::Index output_dim() const { return dim; }
  rtb::Index num_params() const { return 2 * steps * dim; }
  const rtb::ParameterLayout& layout() const { return layout_; }
  void initialize(std::span<double> p) const { std::copy(init.begin(), init.end(), p.begin()); }
  Context make_context(rtb::Index) const { return {}; }
  void inference(const rtb::Weights<double>& w, const rtb::Step<double>& s, rtb::MatrixView<double> out, Context&) const {
    const double* a = w.params.data() + s.step * dim;
    const double* b = w.params.data() + (steps + s.step) * dim;
    for (rtb::Index r = 0; r < s.rows(); ++r)
      for (rtb::Index d = 0; d < dim; ++d) out(r, d) = a[d] * s.x(r, d) + b[d];
  }
  void forward(const rtb::Weights<double>& w, const rtb::Step<double>& s, rtb::MatrixView<double> out, Context& c) const {
    c = {s.x.data(), s.rows(), s.step};
    inference(w, s, out, c);
  }
  void backward(const rtb::Weights<double>&, Context& c, rtb::ConstMatrixView<double> d_out, std::span<double> grad,
                rtb::GradientMode mode) const {
    if (mode == rtb::GradientMode::Overwrite) std::fill(grad.begin(), grad.end(), 0.0);
    double* ga = grad.data() + c.step * dim;
    double* gb = grad.data() + (steps + c.step) * dim;
    for (rtb::Index r = 0; r < c.rows; ++r)
      for (rtb::Index d = 0; d < dim; ++d) {
        ga[d] += d_out(r, d) * c.x[r * dim + d];
        gb[d] += d_out(r, d);
      }
  }
};
static_assert(rtb::Denoiser<LinearStepEpsDenoiser>);

}  // namespace rtb_test
