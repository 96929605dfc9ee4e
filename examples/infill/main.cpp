// SPDX-License-Identifier: Apache-2.0
// Text infilling with a masked (absorbing) diffusion model, the RTB paper's language experiment
// on data this machine has: WordNet's 48k example sentences, character level.
//
// Task: given the beginning and the ending of a held-out sentence, sample the middle span.
// Prior: a masked diffusion model fitted on the training sentences with the beginning fixed; it
// generates the middle and a few characters after it, and never sees the true ending. Reward: log p(ending |
// beginning + infill) under a character 5-gram Kneser–Ney model fitted on the training sentences
// (a black-box, non-differentiable reward). RTB fine-tunes the posterior, amortised over
// beginnings and endings: the posterior reads the whole true ending through the denoiser's
// zero-initialised condition path and its first characters as revealed lookahead (so it starts as
// the prior's native infiller, infill_net.hpp), and log Z is estimated per condition by relative
// VarGrad.
//
//   infill [--seed N] [--iterations N] [--prior-iterations N] [--threads N] [--out DIR] [--smoke]
//          [--corpus FILE | --wordnet DIR] [--lr X] [--prior-lr X] [--ngram N] [--eval-examples N]
//          [--load-prior DIR] [--save-prior DIR] [--start-from-prior] [--precision f32|bf16]
//
// --precision bf16 runs the denoiser's products (prior fit, fine-tuning, sampling) with bfloat16
// operands and float sums (rtb::Precision::BFloat16); weights, Adam, log-probabilities stay float.
//
// Ends with one `metrics method=…` line for rtb, prior and prior_both_ends, and one for
// posterior_is: the target posterior itself, scored by importance sampling from the prior.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>
#include <rtb/extras.hpp>
#include <rtb/rtb.hpp>

#include "../common/plot.hpp"
#include "../common/precision.hpp"
#include "infill_net.hpp"
#include "reward.hpp"
#include "text.hpp"

namespace {

using S = float;
using Tok = std::int32_t;
using Clock = std::chrono::steady_clock;
using Process = rtb::MaskedCategoricalProcess<S>;
using Net = infill::InfillNet<S>;  // a TokenConv (chosen over TokenMlp by measurement: docs/examples.md)

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Options {
  std::uint64_t seed = 7;
  std::int64_t prior_iterations = 4000;
  std::int64_t iterations = 1600;
  rtb::Index groups = 16;     ///< conditions per RTB batch
  rtb::Index group_size = 8;  ///< samples per condition (VarGrad groups)
  rtb::Index eval_examples = 500;
  rtb::Index eval_samples = 8;  ///< samples per held-out example
  rtb::Index is_samples = 128;  ///< prior samples per held-out example for the importance-sampled posterior
  rtb::Index steps = 12;
  int ngram = 5;  ///< order of the reward's Kneser–Ney model
  double prior_lr = 8e-3;
  double lr = 5e-4;
  rtb::Index threads = 0;
  std::string out = "infill_out";
  std::string corpus;
  std::string wordnet = "/usr/share/wordnet";
  std::string load_prior, save_prior;
  bool smoke = false;
  bool start_from_prior = false;
  examples::PrecisionOption precision;
};

/// One infilling problem: a sentence and where its middle starts.
struct Example {
  const std::vector<Tok>* sentence;
  int split;
};

struct Metrics {
  double mean_log_r = 0, char_bleu = 0, distinct2 = 0, ppl = 0;
  std::vector<double> example_log_r, example_bleu;  ///< per held-out example, mean over its samples
};

/// Standard error of the mean of `v`.
double standard_error(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  double mean = 0, ss = 0;
  for (double a : v) mean += a / static_cast<double>(v.size());
  for (double a : v) ss += (a - mean) * (a - mean);
  return std::sqrt(ss / static_cast<double>(v.size() - 1) / static_cast<double>(v.size()));
}

/// Metrics of `x` (examples × samples rows, conditions `c`) against the true middles.
Metrics evaluate(const rtb::Samples<Tok>& samples, const rtb::RowMatrix<Tok>& c, const std::vector<Example>& ex,
                 rtb::Index k, const infill::Layout& lay, const rtb::KneserNeyLM& lm,
                 const infill::EndingLikelihood& reward) {
  Metrics m;
  const auto x = rtb::view_of(samples);
  std::vector<S> lr(static_cast<std::size_t>(x.rows()));
  reward.log_reward(x, rtb::ConstMatrixView<Tok>(c.data(), c.rows(), c.cols()), lr);
  double nll = 0, chars = 0;
  std::vector<double> example_log_r(ex.size(), 0.0), example_bleu(ex.size(), 0.0);
  for (std::size_t e = 0; e < ex.size(); ++e) {
    const auto& s = *ex[e].sentence;
    const std::vector<Tok> truth(s.begin() + ex[e].split, s.begin() + ex[e].split + lay.middle);
    std::vector<std::vector<Tok>> middles;
    for (rtb::Index j = 0; j < k; ++j) {
      const rtb::Index r = static_cast<rtb::Index>(e) * k + j;
      const Tok* row = rtb::row_ptr(x, r);
      std::vector<Tok> mid(row + lay.middle_begin(), row + lay.middle_begin() + lay.middle);
      const double bleu = rtb::sentence_bleu(mid, truth);
      m.mean_log_r += lr[static_cast<std::size_t>(r)] / static_cast<double>(x.rows());
      m.char_bleu += bleu / static_cast<double>(x.rows());
      example_log_r[e] += lr[static_cast<std::size_t>(r)] / static_cast<double>(k);
      example_bleu[e] += bleu / static_cast<double>(k);
      std::vector<Tok> sentence(s.begin(), s.begin() + ex[e].split);  // the whole sentence, infilled
      sentence.insert(sentence.end(), mid.begin(), mid.end());
      sentence.insert(sentence.end(), s.begin() + ex[e].split + lay.middle, s.end());
      sentence.push_back(infill::kEos);
      nll -= lm.log_prob_sequence(sentence, infill::kBos);
      chars += static_cast<double>(sentence.size());
      middles.push_back(std::move(mid));
    }
    m.distinct2 += rtb::distinct_n(middles, 2) / static_cast<double>(ex.size());
  }
  m.ppl = std::exp(nll / chars);
  m.example_log_r = std::move(example_log_r);
  m.example_bleu = std::move(example_bleu);
  return m;
}

/// Condition rows ([prefix window | ending]) for k samples of each example.
rtb::RowMatrix<Tok> conditions(const std::vector<Example>& ex, rtb::Index k, const infill::Layout& lay) {
  rtb::RowMatrix<Tok> c(static_cast<rtb::Index>(ex.size()) * k, lay.condition_length());
  std::vector<Tok> row(static_cast<std::size_t>(lay.length()));
  for (std::size_t e = 0; e < ex.size(); ++e)
    for (rtb::Index j = 0; j < k; ++j)
      infill::fill_row(lay, *ex[e].sentence, ex[e].split, row.data(), rtb::row_ptr(c, static_cast<rtb::Index>(e) * k + j));
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"RTB text infilling with a masked diffusion prior and an n-gram reward"};
  app.add_option("--seed", o.seed, "seed of every random draw");
  app.add_option("--iterations", o.iterations, "RTB fine-tuning iterations");
  app.add_option("--prior-iterations", o.prior_iterations, "prior-fitting iterations");
  app.add_option("--threads", o.threads, "threads (0 = all cores)");
  app.add_option("--out", o.out, "directory for the PNG");
  app.add_option("--corpus", o.corpus, "one sentence per line instead of WordNet's examples");
  app.add_option("--wordnet", o.wordnet, "WordNet data directory (Debian's wordnet-base)");
  app.add_option("--ngram", o.ngram, "order of the reward's character Kneser-Ney model");
  app.add_option("--eval-examples", o.eval_examples, "held-out sentences to infill");
  app.add_option("--is-samples", o.is_samples,
                 "prior samples per held-out sentence for the importance-sampled posterior (0 = skip)");
  app.add_option("--prior-lr", o.prior_lr, "prior-fitting learning rate (cosine-decayed to 1e-4)");
  app.add_option("--lr", o.lr, "fine-tuning learning rate");
  app.add_option("--load-prior", o.load_prior, "read the prior's weights (.npy per tensor) instead of fitting it");
  app.add_option("--save-prior", o.save_prior, "write the fitted prior's weights (.npy per tensor) here");
  app.add_flag("--start-from-prior", o.start_from_prior,
               "start the posterior as a copy of the prior instead of the prior's native infiller");
  app.add_flag("--smoke", o.smoke, "tiny configuration for tests");
  o.precision.add(app, "the denoiser's");
  CLI11_PARSE(app, argc, argv);
  const rtb::Precision precision = o.precision.value();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear as they happen, even in a log file
  if (o.smoke) {
    o.prior_iterations = std::min<std::int64_t>(o.prior_iterations, 20);
    o.iterations = std::min<std::int64_t>(o.iterations, 10);
    o.eval_examples = std::min<rtb::Index>(o.eval_examples, 12);
    o.groups = 4;
    o.is_samples = std::min<rtb::Index>(o.is_samples, 16);
  }

  try {
    const auto t0 = Clock::now();
    std::filesystem::create_directories(o.out);
    const infill::Layout lay;
    const infill::Corpus corpus = infill::load_corpus(o.wordnet, o.corpus, 0.1, o.seed);
    std::printf("corpus: %zu training and %zu held-out sentences (%zu skipped for other characters)\n",
                corpus.train.size(), corpus.held_out.size(), corpus.skipped);
    // The tasks come first, so that a corpus too small for them is said before any training.
    std::vector<Example> train_tasks;
    for (const auto& s : corpus.train) {
      const auto splits = infill::task_splits(lay, s.size());
      for (int a : splits) train_tasks.push_back({&s, a});
    }
    if (train_tasks.empty())
      throw rtb::InvalidArgumentError(rtb::detail::message(
          "infill: the corpus is too small: its ", corpus.train.size(), " training sentences give no infilling task (a ",
          lay.middle, "-character middle after at least 4 characters and before an ending of 3 to ", lay.ending - 1,
          "); use a larger corpus"));
    std::vector<Example> eval;
    const rtb::math::NoiseKey ekey{o.seed, rtb::math::Stream::Evaluation, 1};
    for (std::size_t i = 0; i < corpus.held_out.size() && static_cast<rtb::Index>(eval.size()) < o.eval_examples; ++i) {
      const auto splits = infill::task_splits(lay, corpus.held_out[i].size());
      if (splits.empty()) continue;
      eval.push_back({&corpus.held_out[i], splits[static_cast<std::size_t>(rtb::math::uniform<double>(ekey, i, 0, 0) *
                                                                           static_cast<double>(splits.size()))]});
    }
    if (eval.empty())
      throw rtb::InvalidArgumentError(rtb::detail::message(
          "infill: the corpus is too small: its ", corpus.held_out.size(),
          " held-out sentences give no infilling task to evaluate; use a larger corpus"));

    // The reward's language model: a character 5-gram Kneser–Ney model of the training sentences.
    rtb::KneserNeyLM lm(o.ngram, infill::kVocab);
    for (const auto& s : corpus.train) {
      std::vector<Tok> t = s;
      t.push_back(infill::kEos);
      lm.add(t, infill::kBos);
    }

    // Three views of the same row layout: the prior is fitted generating middle and lookahead; RTB
    // and the prior baseline generate the middle with the lookahead kept MASK (the prior's marginal
    // over the middle given the beginning, with no nuisance characters in the trajectories); native
    // infilling generates the middle with the lookahead fixed to the true ending. Fixed columns take
    // their values from the condition row [prefix window | ending], in order: the prefix window, and
    // for native infilling the lookahead, which are the ending's first characters.
    auto columns = [&](int from, int to) {
      std::vector<char> g(static_cast<std::size_t>(lay.length()), 0);
      for (int j = from; j < to; ++j) g[static_cast<std::size_t>(j)] = 1;
      return g;
    };
    std::vector<rtb::Index> lookahead;
    for (int j = lay.lookahead_begin(); j < lay.length(); ++j) lookahead.push_back(j);
    const Process fit_process({.length = lay.length(),
                               .vocab = infill::kVocab,
                               .num_steps = o.steps,
                               .generated = columns(lay.middle_begin(), lay.length())});
    const Process process({.length = lay.length(),
                           .vocab = infill::kVocab,
                           .num_steps = o.steps,
                           .generated = columns(lay.middle_begin(), lay.lookahead_begin()),
                           .masked = lookahead});
    const Process both_ends({.length = lay.length(),
                       .vocab = infill::kVocab,
                       .num_steps = o.steps,
                       .generated = columns(lay.middle_begin(), lay.lookahead_begin())});
    std::vector<rtb::Index> ending;
    for (int j = 0; j < lay.ending; ++j) ending.push_back(lay.ending_begin() + j);
    // The true ending (read from the condition, one slot per character after the state) is injected
    // aligned with the generated lookahead, next to the middle, so one convolution carries it to the
    // span being infilled.
    rtb::Model prior(Net(rtb::TokenConv<S>({.length = lay.length(),
                                            .vocab = infill::kVocab,
                                            .embed = 16,
                                            .channels = 32,
                                            .kernel = 3,
                                            .harmonics = 16,
                                            .condition = ending,
                                            .condition_shift = lay.lookahead,
                                            .seed = o.seed}),
                         lay));

    // 1. Fit the prior: windows of training sentences, the beginning fixed, the middle inside the
    //    sentence (as in the task), so the prior never learns to end a sentence mid-span.
    const auto t_prior = Clock::now();
    const rtb::PriorFitConfig pc{.batch_size = 256,
                                 .iterations = o.prior_iterations,
                                 .learning_rate = o.prior_lr,
                                 .final_learning_rate = 1e-4,
                                 .step_fraction = 2.0 / static_cast<double>(o.steps),
                                 .frozen = {"condition."},  // the prior never sees the ending
                                 .threads = o.threads,
                                 .seed = o.seed,
                                 .precision = precision};
    o.precision.print();
    if (!o.load_prior.empty()) {
      rtb::load_parameters(prior, o.load_prior);
      std::printf("prior weights read from %s\n", o.load_prior.c_str());
    } else {
      std::printf("fitting the prior: %lld iterations of 256 windows\n", static_cast<long long>(pc.iterations));
      rtb::fit_prior(
          fit_process, prior,
          [&](rtb::MatrixView<Tok> x, rtb::MatrixView<Tok> c, std::int64_t it) {
            const rtb::math::NoiseKey key{o.seed, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)};
            for (rtb::Index r = 0; r < x.rows(); ++r) {
              const auto& s = corpus.train[static_cast<std::size_t>(rtb::math::uniform<double>(key, r, 0, 0) *
                                                                    static_cast<double>(corpus.train.size()))];
              const int last = std::max(1, static_cast<int>(s.size()) - lay.middle);  // a in [1, n − M]
              const int a = 1 + static_cast<int>(rtb::math::uniform<double>(key, r, 1, 0) * static_cast<double>(last));
              infill::fill_row(lay, s, std::min(a, last), rtb::row_ptr(x, r), rtb::row_ptr(c, r));
            }
          },
          pc,
          [&](const rtb::PriorFitStats& s) {
            if ((s.iteration + 1) % std::max<std::int64_t>(1, pc.iterations / 8) == 0)
              std::printf("[prior] it %6lld/%lld  nll %.3f  %.1fs\n", static_cast<long long>(s.iteration + 1),
                          static_cast<long long>(pc.iterations), s.loss, seconds_since(t_prior));
          });
    }
    if (!o.save_prior.empty()) rtb::save_parameters(prior, o.save_prior);
    const double prior_secs = seconds_since(t_prior);

    // 2. Fine-tune with RTB, amortised over (beginning, ending) pairs of training sentences.
    const infill::EndingLikelihood reward{&lm, lay};
    const rtb::Index B = o.groups * o.group_size;
    rtb::RelativeTrajectoryBalance<Process, Net, infill::EndingLikelihood, rtb::RelativeVarGrad> trainer(
        process, prior, reward,
        rtb::Config{.batch_size = B,
                    .learning_rate = o.lr,
                    .group_size = o.group_size,
                    .exploration = rtb::ExplorationSchedule::none(),
                    .prior_behaviour_every = 5,
                    .threads = o.threads,
                    .block_rows = B / 2,  // two blocks, so both cores work on a batch of 128 rows
                    .seed = o.seed,
                    .precision = precision});
    // The posterior starts as the prior's native infiller: the prior's weights, reading the ending's
    // first characters as revealed lookahead (infill_net.hpp). The residual's prior is unchanged.
    trainer.posterior().net().reads_ending = !o.start_from_prior;
    std::printf(
        "fine-tuning with RTB (relative VarGrad): %lld iterations of %lld conditions x %lld samples, "
        "every 5th batch from the prior\n",
        static_cast<long long>(o.iterations), static_cast<long long>(o.groups), static_cast<long long>(o.group_size));
    const auto t_rtb = Clock::now();
    std::vector<double> curve_log_r, curve_ratio;
    std::vector<Example> batch(static_cast<std::size_t>(o.groups));
    for (std::int64_t it = 0; it < o.iterations; ++it) {
      const rtb::math::NoiseKey key{o.seed, rtb::math::Stream::User, static_cast<std::uint64_t>(it)};
      for (rtb::Index g = 0; g < o.groups; ++g)
        batch[static_cast<std::size_t>(g)] = train_tasks[static_cast<std::size_t>(
            rtb::math::uniform<double>(key, g, 0, 0) * static_cast<double>(train_tasks.size()))];
      const auto cond = conditions(batch, o.group_size, lay);
      const rtb::StepStats st = trainer.step(rtb::ConstMatrixView<Tok>(cond.data(), cond.rows(), cond.cols()));
      if (!st.from_prior) {
        curve_log_r.push_back(st.mean_log_r);
        curve_ratio.push_back(st.mean_log_ratio);
      }
      if ((it + 1) % std::max<std::int64_t>(1, o.iterations / 10) == 0)
        std::printf("[rtb] it %5lld/%lld  loss %8.3f  mean_log_r %8.3f  log_ratio %7.3f  %.1fs\n",
                    static_cast<long long>(it + 1), static_cast<long long>(o.iterations), st.loss, st.mean_log_r,
                    st.mean_log_ratio, seconds_since(t_rtb));
    }
    const double rtb_secs = seconds_since(t_rtb);
    examples::line_chart(o.out + "/training.png",
                         {{"batch mean log r", curve_log_r}, {"batch mean log p_post/p_prior", curve_ratio}},
                         "on-policy iteration");
    std::printf("wrote %s/training.png (batch mean log r and log p_post/p_prior over on-policy iterations)\n",
                o.out.c_str());

    // 3. Held-out evaluation: the same examples for all three samplers.
    const auto cond = conditions(eval, o.eval_samples, lay);
    const rtb::ConstMatrixView<Tok> cond_view(cond.data(), cond.rows(), cond.cols());
    struct Run {
      const char* method;
      rtb::Samples<Tok> x;
      double seconds;
    };
    std::vector<Run> runs;
    auto timed = [&](const char* method, auto&& sample, double base) {
      const auto t = Clock::now();
      auto x = sample();
      runs.push_back({method, std::move(x), base + seconds_since(t)});
    };
    timed(
        "rtb",
        [&] {
          return rtb::sample_end_states(trainer.process(), trainer.posterior(), cond_view, o.seed + 11, o.threads, 128,
                                        precision);
        },
        prior_secs + rtb_secs);
    timed(
        "prior",
        [&] {
          return rtb::sample_end_states(trainer.process(), prior, cond_view, o.seed + 11, o.threads, 128, precision);
        },
        prior_secs);
    timed(
        "prior_both_ends",
        [&] { return rtb::sample_end_states(both_ends, prior, cond_view, o.seed + 11, o.threads, 128, precision); },
        prior_secs);

    std::printf("\nsample infills (beginning [middle] ending), held-out sentences:\n");
    for (std::size_t e = 0; e < std::min<std::size_t>(eval.size(), 4); ++e) {
      const auto& s = *eval[e].sentence;
      std::printf(
          "  truth            %s[%s]%s\n", infill::render(s.data(), eval[e].split).c_str(),
          infill::render(s.data() + eval[e].split, lay.middle).c_str(),
          infill::render(s.data() + eval[e].split + lay.middle, static_cast<int>(s.size()) - eval[e].split - lay.middle)
              .c_str());
      for (const Run& r : runs)
        for (rtb::Index j = 0; j < 2; ++j) {
          const Tok* row = &r.x(static_cast<std::size_t>(e * static_cast<std::size_t>(o.eval_samples) + static_cast<std::size_t>(j)), 0);
          std::printf("  %-16s %s[%s]%s\n", r.method, infill::render(s.data(), eval[e].split).c_str(),
                      infill::render(row + lay.middle_begin(), lay.middle).c_str(),
                      infill::render(s.data() + eval[e].split + lay.middle,
                                     static_cast<int>(s.size()) - eval[e].split - lay.middle)
                          .c_str());
        }
    }
    std::printf("\n");
    std::vector<Metrics> metrics;
    for (const Run& r : runs) metrics.push_back(evaluate(r.x, cond, eval, o.eval_samples, lay, lm, reward));
    // Paired by held-out example (the same sentences for every method), the difference to the prior
    // alone has a smaller standard error than either mean.
    auto paired = [](const std::vector<double>& a, const std::vector<double>& b) {
      std::vector<double> d(a.size());
      double mean = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        d[i] = a[i] - b[i];
        mean += d[i] / static_cast<double>(a.size());
      }
      return std::pair{mean, standard_error(d)};
    };
    for (std::size_t i = 0; i < runs.size(); ++i) {
      if (i == 1) continue;  // the prior itself
      const auto [dr, dr_se] = paired(metrics[i].example_log_r, metrics[1].example_log_r);
      const auto [db, db_se] = paired(metrics[i].example_bleu, metrics[1].example_bleu);
      std::printf(
          "%s − prior, paired over %zu held-out sentences: mean_log_r %+.3f ± %.3f, char_bleu %+.4f ± %.4f (SE)\n",
          runs[i].method, eval.size(), dr, dr_se, db, db_se);
    }
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const Run& r = runs[i];
      const Metrics& m = metrics[i];
      std::printf(
          "metrics method=%s mean_log_r=%.4f char_bleu=%.4f distinct2=%.4f ppl=%.4f seconds=%.1f mean_log_r_se=%.4f "
          "char_bleu_se=%.4f\n",
          r.method, m.mean_log_r, m.char_bleu, m.distinct2, m.ppl, r.seconds, standard_error(m.example_log_r),
          standard_error(m.example_bleu));
    }
    // 4. What the target posterior itself scores, by self-normalised importance sampling with the
    //    prior as proposal: per held-out sentence, K prior samples weighted by r (the prior's own
    //    density cancels), so E_post[f] ≈ Σ r_i f_i / Σ r_i. The reference point for RTB: an exact
    //    sampler of p_prior·r would score this, whatever the native infiller does.
    if (o.is_samples > 0) {
      const auto t_is = Clock::now();
      const rtb::Index K = o.is_samples;
      const auto cond_is = conditions(eval, K, lay);
      const rtb::ConstMatrixView<Tok> cond_is_view(cond_is.data(), cond_is.rows(), cond_is.cols());
      const auto samples =
          rtb::sample_end_states(trainer.process(), prior, cond_is_view, o.seed + 13, o.threads, 128, precision);
      const auto x = rtb::view_of(samples);
      std::vector<S> lr(static_cast<std::size_t>(x.rows()));
      reward.log_reward(x, cond_is_view, lr);
      double log_r = 0, bleu = 0, ess = 0;
      std::vector<double> w(static_cast<std::size_t>(K));
      for (std::size_t e = 0; e < eval.size(); ++e) {
        const auto& sen = *eval[e].sentence;
        const std::vector<Tok> truth(sen.begin() + eval[e].split, sen.begin() + eval[e].split + lay.middle);
        const rtb::Index base = static_cast<rtb::Index>(e) * K;
        double top = -1e300;
        for (rtb::Index j = 0; j < K; ++j)
          top = std::max(top, static_cast<double>(lr[static_cast<std::size_t>(base + j)]));
        double sum = 0, sum2 = 0, lr_e = 0, bleu_e = 0;
        for (rtb::Index j = 0; j < K; ++j) {
          const double wj = std::exp(static_cast<double>(lr[static_cast<std::size_t>(base + j)]) - top);
          const Tok* row = rtb::row_ptr(x, base + j);
          const std::vector<Tok> mid(row + lay.middle_begin(), row + lay.middle_begin() + lay.middle);
          sum += wj;
          sum2 += wj * wj;
          lr_e += wj * static_cast<double>(lr[static_cast<std::size_t>(base + j)]);
          bleu_e += wj * rtb::sentence_bleu(mid, truth);
        }
        log_r += lr_e / sum / static_cast<double>(eval.size());
        bleu += bleu_e / sum / static_cast<double>(eval.size());
        ess += sum * sum / sum2 / static_cast<double>(eval.size());
      }
      std::printf(
          "metrics method=posterior_is mean_log_r=%.4f char_bleu=%.4f ess=%.1f samples_per_sentence=%lld "
          "seconds=%.1f\n",
          log_r, bleu, ess, static_cast<long long>(K), prior_secs + seconds_since(t_is));
    }
    std::printf("total %.1fs\n", seconds_since(t0));
  } catch (const rtb::Error& e) {
    std::fprintf(stderr, "infill: %s\n", e.what());
    return 1;
  }
  return 0;
}
