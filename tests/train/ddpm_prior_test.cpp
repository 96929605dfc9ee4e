// SPDX-License-Identifier: Apache-2.0
// Fitting a DDPM prior by ε-MSE through fit_prior: a small Mlp on N(m, s²) data. The loss
// fit_prior reports for DdpmFitLoss::EpsilonMse is N·E_τ[½‖ε̂ − ε‖²] (one uniform τ of the N = 1000
// training steps per block, scaled by N), which is N·D/2 = 1000 for the zero-initialised net and
//     L* = Σ_τ Σ_d ½·(1 − (1 − ᾱ_τ)/v_τ,d),   v = ᾱ·s² + 1 − ᾱ,
// for the optimal predictor (the conditional variance of ε given x_τ). The fitted net must come
// close to L*, and a strided sampler driven by it to the terminal moments the optimal predictor
// gives (ddpm_gaussian.hpp), which themselves sit close to the data's.

#include <doctest/doctest.h>

#include <cmath>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"
#include "ddpm_gaussian.hpp"

namespace {

using S = double;
const std::vector<double> kMean = {0.3, -0.2}, kVar = {0.25, 0.09};

void gaussian_data(rtb::MatrixView<S> x, std::int64_t it) {
  const rtb::math::NoiseKey key{17, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)};
  for (rtb::Index r = 0; r < x.rows(); ++r)
    for (rtb::Index d = 0; d < 2; ++d)
      x(r, d) = kMean[static_cast<std::size_t>(d)] +
                std::sqrt(kVar[static_cast<std::size_t>(d)]) *
                    rtb::math::normal<S>(key, static_cast<std::uint64_t>(r), 0, static_cast<std::uint32_t>(d));
}

double optimal_loss(const rtb::DdpmProcess<S>& p) {
  double l = 0;
  for (rtb::Index tau = 0; tau < p.options().num_train_steps; ++tau)
    for (std::size_t d = 0; d < 2; ++d) {
      const double ab = p.train_alpha_bar(tau);
      l += 0.5 * (1 - (1 - ab) / (ab * kVar[d] + 1 - ab));
    }
  return l;
}

}  // namespace

TEST_CASE("DDPM prior by eps-MSE: fit_prior lowers the loss to near the optimum and the sampler approaches the data") {
  const rtb::DdpmOptions opts{.clip_denoised = false, .time_as_fraction = true};
  const rtb::DdpmProcess<S> fit_process(2, 1000, opts);  // every training step: uniform τ
  rtb::Model model(rtb::Mlp<S>({.input_dim = 2, .hidden = {64, 64}, .output_dim = 2, .time_harmonics = 8, .seed = 3}));
  const std::int64_t iterations = 1500;
  std::vector<double> losses;
  rtb::fit_prior(fit_process, model, gaussian_data,
                 rtb::PriorFitConfig{.batch_size = 256,
                                     .iterations = iterations,
                                     .learning_rate = 3e-3,
                                     .final_learning_rate = 1e-4,
                                     .step_fraction = 1e-3,
                                     .threads = 1,
                                     .block_rows = 32,
                                     .seed = 5},
                 [&](const rtb::PriorFitStats& st) {
                   losses.push_back(st.loss);
                   return true;
                 });
  REQUIRE(static_cast<std::int64_t>(losses.size()) == iterations);
  auto mean_of = [&](std::size_t from, std::size_t to) {
    double s = 0;
    for (std::size_t i = from; i < to; ++i) s += losses[i];
    return s / static_cast<double>(to - from);
  };
  const double first = mean_of(0, 10), last = mean_of(losses.size() - 500, losses.size());
  const double best = optimal_loss(fit_process);
  MESSAGE("eps-MSE loss: first 10 iterations " << first << ", last 500 " << last << ", optimum " << best);
  CHECK(first == doctest::Approx(1000).epsilon(0.1));
  CHECK(last < 0.5 * first);
  CHECK(last > 0.9 * best);  // nothing beats the conditional mean (up to batch noise)
  CHECK(last < 1.1 * best);

  // Held out: the excess of the fitted net over the optimal predictor, N·E_τ[½‖ε̂ − ε*(x_τ)‖²]
  // on fresh noised data at every 10th τ, must be a small share of L* (it is L*'s 1000 − L* for
  // the zero net).
  const rtb::Index rows = 400;
  rtb::RowMatrix<S> x0(rows, 2), xt(rows, 2), eps(rows, 2);
  auto ctx = model.make_context(rows);
  double excess = 0;
  int count = 0;
  for (rtb::Index tau = 0; tau < 1000; tau += 10, ++count) {
    gaussian_data(rtb::MatrixView<S>(x0.data(), rows, 2), 100000 + tau);
    const double ab = fit_process.train_alpha_bar(tau);
    for (rtb::Index r = 0; r < rows; ++r)
      for (rtb::Index d = 0; d < 2; ++d)
        xt(r, d) = std::sqrt(ab) * x0(r, d) +
                   std::sqrt(1 - ab) * rtb::math::normal<S>({23, rtb::math::Stream::User, static_cast<std::uint64_t>(tau)},
                                                            static_cast<std::uint64_t>(r), 0, static_cast<std::uint32_t>(d));
    const rtb::Step<S> st{rtb::ConstMatrixView<S>(xt.data(), rows, 2), rtb::ConstMatrixView<S>(nullptr, rows, 0),
                          999 - tau, static_cast<S>(tau) / 1000.0, 0};
    model.inference(st, rtb::MatrixView<S>(eps.data(), rows, 2), ctx);
    for (rtb::Index r = 0; r < rows; ++r)
      for (std::size_t d = 0; d < 2; ++d) {
        const auto opt = rtb_test::optimal_eps(ab, kMean[d], kVar[d]);
        const double e = eps(r, static_cast<rtb::Index>(d)) - (opt.a * xt(r, static_cast<rtb::Index>(d)) + opt.b);
        excess += 0.5 * e * e / rows;
      }
  }
  excess *= 1000.0 / count;
  MESSAGE("held-out excess over the optimal predictor: " << excess << " (zero net: " << 1000 - best << ")");
  CHECK(excess < 0.05 * best);

  // Sampling with 50 strided steps: the moments of the fitted net's samples against those of the
  // optimal predictor (exact recursion), within sampling error plus a modelling allowance.
  const rtb::DdpmProcess<S> sampler(2, 50, opts);
  const rtb::DdpmProcess<S> sampler_tau(2, 50, {.clip_denoised = false});
  const rtb_test::Moments exact = rtb_test::terminal_moments(sampler_tau, 2, [&](rtb::Index i, rtb::Index d) {
    return rtb_test::optimal_eps(sampler_tau.coefficients(i).alpha_bar, kMean[static_cast<std::size_t>(d)],
                                 kVar[static_cast<std::size_t>(d)]);
  });
  const rtb::Index n = 8000;
  const auto samples = rtb::sample_end_states(sampler, model, n, 99, 1);
  const auto x = rtb::view_of(samples);
  for (rtb::Index d = 0; d < 2; ++d) {
    const double M = exact.mean[static_cast<std::size_t>(d)], V = exact.variance[static_cast<std::size_t>(d)];
    const double mean = x.col(d).mean(), var = (x.col(d).array() - mean).square().mean();
    MESSAGE("d = " << d << ": sampled mean " << mean << " var " << var << "; optimal predictor " << M << ", " << V
                   << "; data " << kMean[static_cast<std::size_t>(d)] << ", " << kVar[static_cast<std::size_t>(d)]);
    CHECK(std::fabs(mean - M) < 5 * std::sqrt(V / n) + 0.05 * std::sqrt(V));
    CHECK(std::fabs(var - V) < 5 * V * std::sqrt(2.0 / n) + 0.1 * V);
  }
}

TEST_CASE("fit_prior's EMA of weights: the model ends with the documented average of the iterates") {
  // e starts at the initial weights; after iteration k, e ← d_k·e + (1 − d_k)·θ_k with
  // d_k = min(d, (1 + k)/(10 + k)); the model receives e at the end. Callbacks see the raw θ_k.
  const rtb::DdpmProcess<S> process(2, 1000, {.clip_denoised = false, .time_as_fraction = true});
  rtb::Model model(rtb::Mlp<S>({.input_dim = 2, .hidden = {16}, .output_dim = 2, .time_harmonics = 4, .seed = 4}));
  const double decay = 0.9;
  std::vector<double> ema(model.params().begin(), model.params().end());
  std::int64_t k = 0;
  rtb::PriorFitConfig cfg{.batch_size = 64, .iterations = 60, .learning_rate = 1e-2, .step_fraction = 1e-3,
                          .threads = 1, .block_rows = 32, .seed = 6};
  cfg.ema_decay = decay;
  rtb::fit_prior(process, model, gaussian_data, cfg, [&](const rtb::PriorFitStats&) {
    const double dk = std::min(decay, (1.0 + static_cast<double>(k)) / (10.0 + static_cast<double>(k)));
    const auto p = model.params();
    for (std::size_t i = 0; i < ema.size(); ++i) ema[i] = dk * ema[i] + (1 - dk) * p[i];
    ++k;
    return true;
  });
  REQUIRE(k == 60);
  double max_diff = 0, moved = 0;
  for (std::size_t i = 0; i < ema.size(); ++i) max_diff = std::max(max_diff, std::fabs(model.params()[i] - ema[i]));
  for (std::size_t i = 0; i < ema.size(); ++i) moved = std::max(moved, std::fabs(ema[i]));
  CHECK(max_diff < 1e-12);
  CHECK(moved > 0);  // the zero-initialised last layer has moved: the average is not the start

  // The same run without EMA ends elsewhere (the raw last iterate).
  rtb::Model raw(rtb::Mlp<S>({.input_dim = 2, .hidden = {16}, .output_dim = 2, .time_harmonics = 4, .seed = 4}));
  cfg.ema_decay = 0;
  rtb::fit_prior(process, raw, gaussian_data, cfg);
  double diff = 0;
  for (std::size_t i = 0; i < ema.size(); ++i) diff = std::max(diff, std::fabs(raw.params()[i] - model.params()[i]));
  CHECK(diff > 1e-6);

  // Bad decays are refused at the door.
  for (double bad : {1.0, -0.1, std::nan("")}) {
    cfg.ema_decay = bad;
    CHECK_THROWS_AS(rtb::fit_prior(process, raw, gaussian_data, cfg), rtb::InvalidArgumentError);
  }
}
