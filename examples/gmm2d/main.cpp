// SPDX-License-Identifier: Apache-2.0
// The RTB paper's 2-D experiment: a diffusion prior fitted to a 25-mode Gaussian mixture is
// fine-tuned by Relative Trajectory Balance into a sampler of the 9-mode posterior
// p_post ∝ p_prior · r with log r = log p_9GMM − log p_25GMM (so log Z = 0 for an exact prior).
//
//   gmm2d [--seed N] [--iterations N] [--batch N] [--out DIR] [--threads N] [--baseline] [--smoke]
//         [--save-prior DIR] [--save-posterior DIR] [--tv-every N [--tv-samples N] [--tv-target X]]
//         [--precision f32|bf16]
//
// --precision bf16 runs the network's products (prior fit, fine-tuning and sampling) with
// bfloat16 operands and float sums (rtb::Precision::BFloat16); weights, Adam and every
// log-density stay float.
// --tv-every N measures time to quality: every N fine-tuning iterations it draws --tv-samples
// posterior samples (2 000) and prints their TV over the 9 modes, and the `time_to_quality`
// metrics line gives the fine-tuning wall time (evaluations excluded, reported apart) and the
// iterations until TV first reached --tv-target (0.05). Sampling does not touch the training's
// state or random draws, so every other metric is the same as without the flag.
//
// Prints progress, writes PNGs to --out and ends with one `metrics method=…` line per method.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>
#include <rtb/rtb.hpp>

#include "../common/plot.hpp"
#include "../common/precision.hpp"

namespace {

using S = float;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Defaults fit the whole demo (prior fit + fine-tuning) in about 2.5 minutes on 2 cores; see
// docs/examples.md for how they relate to the reference's 10 000 + 5 000 iterations.
struct Options {
  std::uint64_t seed = 12345;
  std::int64_t iterations = 2500;
  std::int64_t prior_iterations = 6000;
  double prior_step_fraction = 0.05;
  double learning_rate = 5e-3;
  rtb::Index batch = 500;
  rtb::Index eval_samples = 10000;
  std::string out = "gmm2d_out";
  rtb::Index threads = 0;
  bool baseline = false;
  bool smoke = false;
  std::string save_prior, save_posterior;  // empty: not saved
  std::int64_t tv_every = 0;                // 0: no time-to-quality probe
  rtb::Index tv_samples = 2000;
  double tv_target = 0.05;
  examples::PrecisionOption precision;
};

struct Quality {
  rtb::ModeCoverage modes;
  double mean_log_r = 0;
  double log_z_is = 0;
  double ess = 0;
};

/// Mode weights, off-mode share and TV of samples against the 9-mode posterior (radius 2).
rtb::ModeCoverage nine_modes(const rtb::Samples<S>& x) {
  const auto target = rtb::GaussianMixture<S>::posterior9();
  return rtb::mode_coverage<S>(rtb::view_of(x), target.means(), target.weights(), 2.0);
}

Quality quality(const rtb::Evaluation<S>& e) {
  Quality q;
  q.modes = nine_modes(e.samples);
  q.mean_log_r = e.mean_log_r;
  q.log_z_is = e.log_partition.log_z_is;
  q.ess = e.log_partition.ess;
  return q;
}

/// `learned_log_z` is the trainer's learned value (below log Z by the sampler's KL); `log_z_is` is
/// the importance-sampled estimate, the one to compare with the true log Z (0 here).
void print_metrics(const char* method, const Quality& q, double learned_log_z, double secs) {
  std::printf(
      "metrics method=%s tv=%.4f off_mode=%.4f mean_log_r=%.4f learned_log_z=%.4f log_z_is=%.4f ess=%.4f "
      "seconds=%.1f\n",
      method, q.modes.tv, q.modes.off_mode, q.mean_log_r, learned_log_z, q.log_z_is, q.ess, secs);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"RTB on the 2-D mixture: 25-mode prior -> 9-mode posterior"};
  app.add_option("--seed", o.seed, "seed of every random draw");
  app.add_option("--iterations", o.iterations, "RTB fine-tuning iterations");
  app.add_option("--prior-iterations", o.prior_iterations, "prior-fitting iterations");
  app.add_option("--batch", o.batch, "trajectories per iteration");
  app.add_option("--lr", o.learning_rate, "fine-tuning learning rate");
  app.add_option("--eval-samples", o.eval_samples, "samples for the metrics");
  app.add_option("--out", o.out, "directory for the PNGs");
  app.add_option("--threads", o.threads, "threads (0 = all cores)");
  app.add_flag("--baseline", o.baseline, "also run the REINFORCE+KL baseline");
  app.add_flag("--smoke", o.smoke, "tiny configuration for tests");
  app.add_option("--save-prior", o.save_prior, "directory to save the fitted prior's weights in (.npy per tensor)");
  app.add_option("--save-posterior", o.save_posterior, "directory to save the fine-tuned posterior's weights in");
  app.add_option("--tv-every", o.tv_every, "time to quality: TV over the 9 modes every N iterations (0 = off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--tv-samples", o.tv_samples, "samples per time-to-quality evaluation")->check(CLI::PositiveNumber);
  app.add_option("--tv-target", o.tv_target, "the TV that counts as reached")->check(CLI::PositiveNumber);
  o.precision.add(app, "the network's");
  CLI11_PARSE(app, argc, argv);
  const rtb::Precision precision = o.precision.value();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear as they happen, even in a log file
  if (o.smoke) {
    o.iterations = std::min<std::int64_t>(o.iterations, 30);
    o.prior_iterations = std::min<std::int64_t>(o.prior_iterations, 30);
    o.batch = std::min<rtb::Index>(o.batch, 64);
    o.eval_samples = std::min<rtb::Index>(o.eval_samples, 256);
  }

  try {
    std::filesystem::create_directories(o.out);
    const auto grid = rtb::GaussianMixture<S>::grid25();
    const auto target = rtb::GaussianMixture<S>::posterior9();
    // The reference's process: σ² = 5, T = 100, and its denoiser's [mean, log-variance] output.
    const rtb::GaussianProcess<S> process(2, 100, 5.0f, rtb::GaussianHead::MeanAndLogVariance);

    // 1. Fit the prior to exact samples of the 25-mode mixture.
    const auto t_prior = Clock::now();
    rtb::Model prior(rtb::PisMlp<S>({.dim = 2, .seed = o.seed}));
    const rtb::PriorFitConfig pc{.batch_size = o.batch,
                                 .iterations = o.prior_iterations,
                                 .learning_rate = 1e-2,
                                 .final_learning_rate = 1e-4,
                                 .step_fraction = o.prior_step_fraction,
                                 .threads = o.threads,
                                 .seed = o.seed,
                                 .precision = precision};
    o.precision.print();
    std::printf("fitting the prior: %lld iterations, batch %lld, %.0f%% of steps per iteration\n",
                static_cast<long long>(pc.iterations), static_cast<long long>(pc.batch_size), 100 * pc.step_fraction);
    rtb::fit_prior(
        process, prior,
        [&](rtb::MatrixView<S> x, std::int64_t it) {
          grid.sample(x, {o.seed, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)});
        },
        pc,
        [&](const rtb::PriorFitStats& s) {
          if ((s.iteration + 1) % 1000 == 0 || s.iteration + 1 == pc.iterations)
            std::printf("[prior] it %6lld/%lld  nll %8.4f  %.1fs\n", static_cast<long long>(s.iteration + 1),
                        static_cast<long long>(pc.iterations), s.loss, seconds_since(t_prior));
        });
    const double prior_secs = seconds_since(t_prior);
    if (!o.save_prior.empty()) {
      rtb::save_parameters(prior, o.save_prior);
      std::printf("wrote the prior's weights to %s\n", o.save_prior.c_str());
    }

    rtb::MixtureRatioReward<S> reward(target, grid);
    // The reference's schedule (exploration 0.5 held for 10% of the run, then linear to 0 at 90%;
    // lr 1e-3) compressed into fewer iterations: exploration ends at 50%, the learning rate is
    // 5e-3 and decays (cosine) over the last 40% to 5%.
    const std::int64_t n = o.iterations;
    rtb::Config cfg{.batch_size = o.batch,
                    .learning_rate = o.learning_rate,
                    .decay = {.start = n * 6 / 10, .end = n, .final_ratio = 0.05},
                    .exploration = {.initial = 0.5, .hold_until = n / 10, .zero_at = n / 2},
                    .threads = o.threads,
                    .seed = o.seed,
                    .precision = precision};
    rtb::RelativeTrajectoryBalance trainer(process, prior, reward, cfg);

    // The prior itself, scored as a posterior sampler (the starting point).
    const auto prior_eval = trainer.evaluate(o.eval_samples, o.seed + 1);
    const auto prior_grid = rtb::mode_coverage<S>(rtb::view_of(prior_eval.samples), grid.means(), grid.weights(), 2.0);
    std::printf("prior fitted in %.1fs: TV to the uniform 25 modes %.4f, off-mode %.4f\n", prior_secs, prior_grid.tv,
                prior_grid.off_mode);
    print_metrics("prior", quality(prior_eval), 0.0, prior_secs);
    examples::scatter_over_density<S>(o.out + "/prior_samples.png", rtb::view_of(prior_eval.samples),
                                      [&](double a, double b) {
                                        const S p[2] = {S(a), S(b)};
                                        return grid.log_density(p);
                                      });

    // 2. Fine-tune with RTB.
    const auto t_rtb = Clock::now();
    std::printf("fine-tuning with RTB: %lld iterations, batch %lld\n", static_cast<long long>(o.iterations),
                static_cast<long long>(o.batch));
    // Time to quality: the clock of fine-tuning stops while the probe samples and scores.
    double probe_secs = 0, reached_secs = -1;
    std::int64_t reached_it = -1;
    auto probe = [&](auto& tr, const rtb::StepStats&) {
      const std::int64_t it = tr.iteration();
      if (o.tv_every <= 0 || it % o.tv_every != 0) return;
      const double train_secs = seconds_since(t_rtb) - probe_secs;
      const auto t0 = Clock::now();
      const double tv = nine_modes(tr.sample(o.tv_samples, o.seed + 1000 + static_cast<std::uint64_t>(it))).tv;
      probe_secs += seconds_since(t0);
      std::printf("[tv] it %6lld  tv %.4f  fine-tuning %.1fs  (probes %.1fs)\n", static_cast<long long>(it), tv,
                  train_secs, probe_secs);
      if (reached_it < 0 && tv <= o.tv_target) {
        reached_it = it;
        reached_secs = train_secs;
      }
    };
    trainer.train(o.iterations,
                  rtb::ProgressPrinter{.every = std::max<std::int64_t>(1, o.iterations / 10), .total = o.iterations},
                  probe);
    const double rtb_secs = seconds_since(t_rtb) - probe_secs;  // the probes' time is reported apart
    if (o.tv_every > 0)
      std::printf(
          "metrics method=time_to_quality tv_target=%.3f reached=%d iterations=%lld train_seconds=%.1f "
          "probe_seconds=%.1f every=%lld samples=%lld\n",
          o.tv_target, reached_it >= 0 ? 1 : 0, static_cast<long long>(reached_it), reached_secs, probe_secs,
          static_cast<long long>(o.tv_every), static_cast<long long>(o.tv_samples));
    if (!o.save_posterior.empty()) {
      rtb::save_parameters(trainer.posterior(), o.save_posterior);
      std::printf("wrote the posterior's weights to %s\n", o.save_posterior.c_str());
    }
    const auto post = trainer.evaluate(o.eval_samples, o.seed + 2);
    const Quality q = quality(post);
    const auto log_r_fn = [&](double a, double b) {
      const S p[2] = {S(a), S(b)};
      return target.log_density(p) - grid.log_density(p);
    };
    examples::scatter_over_density<S>(o.out + "/posterior_samples.png", rtb::view_of(post.samples), log_r_fn);
    rtb::RowMatrix<S> exact(o.eval_samples, 2);
    target.sample(rtb::MatrixView<S>(exact.data(), exact.rows(), 2), {o.seed, rtb::math::Stream::Data, 1u << 30});
    examples::scatter_over_density<S>(o.out + "/target.png", rtb::ConstMatrixView<S>(exact.data(), exact.rows(), 2),
                                      [&](double a, double b) {
                                        const S p[2] = {S(a), S(b)};
                                        return target.log_density(p);
                                      });
    std::printf("mode weights (target): ");
    for (std::size_t k = 0; k < q.modes.weights.size(); ++k)
      std::printf("%.3f(%.3f) ", q.modes.weights[k], target.weights()[k]);
    std::printf("\nwrote %s/{prior_samples,posterior_samples,target}.png\n", o.out.c_str());
    print_metrics("rtb", q, trainer.learned_log_z(), prior_secs + rtb_secs);

    // 3. Optionally the REINFORCE+KL baseline from the same prior.
    if (o.baseline) {
      const auto t_rl = Clock::now();
      rtb::RelativeTrajectoryBalance<rtb::GaussianProcess<S>, rtb::PisMlp<S>, rtb::MixtureRatioReward<S>,
                                     rtb::ReinforceKL>
          rl(process, prior, reward, cfg);
      std::printf("REINFORCE+KL baseline: %lld iterations\n", static_cast<long long>(o.iterations));
      rl.train(o.iterations, rtb::ProgressPrinter{.every = std::max<std::int64_t>(1, o.iterations / 10),
                                                  .total = o.iterations,
                                                  .label = "reinforce_kl"});
      const auto e = rl.evaluate(o.eval_samples, o.seed + 3);
      examples::scatter_over_density<S>(o.out + "/reinforce_kl_samples.png", rtb::view_of(e.samples), log_r_fn);
      print_metrics("reinforce_kl", quality(e), e.log_partition.log_z_is, prior_secs + seconds_since(t_rl));
    }
  } catch (const rtb::Error& e) {
    std::fprintf(stderr, "gmm2d: %s\n", e.what());
    return 1;
  }
  return 0;
}
