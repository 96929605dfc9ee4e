// SPDX-License-Identifier: Apache-2.0
// Text infilling with a masked (absorbing) diffusion model, the RTB paper's language experiment
// on data this machine has: WordNet's 48k example sentences, character level.
//
// Task: given the beginning and the ending of a held-out sentence, sample the middle span.
// Prior: a masked diffusion model fitted on the training sentences with the beginning fixed; it
// generates the middle *and* what follows, and never sees the true ending. Reward: log p(ending |
// beginning + infill) under a character 5-gram Kneser–Ney model fitted on the training sentences
// (a black-box, non-differentiable reward). RTB fine-tunes the posterior, amortised over
// beginnings and endings: the posterior reads the true ending through the denoiser's
// zero-initialised condition path, and log Z is estimated per condition by relative VarGrad.
//
//   infill [--seed N] [--iterations N] [--prior-iterations N] [--threads N] [--out DIR] [--smoke]
//          [--corpus FILE | --wordnet DIR]
//
// Ends with one `metrics method=…` line for rtb, prior and prior_both_ends.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>
#include <rtb/rtb.hpp>

#include "../common/plot.hpp"
#include "text.hpp"

namespace {

using S = float;
using Tok = std::int32_t;
using Clock = std::chrono::steady_clock;
using Process = rtb::MaskedCategoricalProcess<S>;
using Net = rtb::TokenMlp<S>;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Options {
  std::uint64_t seed = 7;
  std::int64_t prior_iterations = 4000;
  std::int64_t iterations = 800;
  rtb::Index groups = 16;       ///< conditions per RTB batch
  rtb::Index group_size = 8;    ///< samples per condition (VarGrad groups)
  rtb::Index eval_examples = 200;
  rtb::Index eval_samples = 8;  ///< samples per held-out example
  rtb::Index steps = 16;
  rtb::Index threads = 0;
  std::string out = "infill_out";
  std::string corpus;
  std::string wordnet = "/usr/share/wordnet";
  bool smoke = false;
};

/// One infilling problem: a sentence and where its middle starts.
struct Example {
  const std::vector<Tok>* sentence;
  int split;
};

/// log r(x) = log p_KN(ending, '$' | prefix window + middle), all read from the state row (the
/// ending from the condition columns).
struct EndingLikelihood {
  const rtb::KneserNeyLM* lm;
  infill::Layout lay;
  void log_reward(rtb::ConstMatrixView<Tok> x, std::span<S> out) const {
    std::vector<Tok> seq;
    for (rtb::Index i = 0; i < x.rows(); ++i) {
      const Tok* row = rtb::row_ptr(x, i);
      seq.assign(row, row + lay.ending_begin());
      double lp = 0;
      for (int j = 0; j < lay.ending; ++j) {
        const Tok w = row[lay.condition_begin() + j];
        lp += lm->log_prob(seq, w);
        if (w == infill::kEos) break;
        seq.push_back(w);
      }
      out[static_cast<std::size_t>(i)] = static_cast<S>(lp);
    }
  }
};

struct Metrics {
  double mean_log_r = 0, char_bleu = 0, distinct2 = 0, ppl = 0;
};

/// Metrics of `x` (examples × samples rows) against the true middles.
Metrics evaluate(const rtb::RowMatrix<Tok>& x, const std::vector<Example>& ex, rtb::Index k, const infill::Layout& lay,
                 const rtb::KneserNeyLM& lm, const EndingLikelihood& reward) {
  Metrics m;
  std::vector<S> lr(static_cast<std::size_t>(x.rows()));
  reward.log_reward(rtb::ConstMatrixView<Tok>(x.data(), x.rows(), x.cols()), lr);
  double nll = 0, chars = 0;
  for (std::size_t e = 0; e < ex.size(); ++e) {
    const auto& s = *ex[e].sentence;
    const std::vector<Tok> truth(s.begin() + ex[e].split, s.begin() + ex[e].split + lay.middle);
    std::vector<std::vector<Tok>> middles;
    for (rtb::Index j = 0; j < k; ++j) {
      const rtb::Index r = static_cast<rtb::Index>(e) * k + j;
      const Tok* row = rtb::row_ptr(x, r);
      std::vector<Tok> mid(row + lay.middle_begin(), row + lay.middle_begin() + lay.middle);
      m.mean_log_r += lr[static_cast<std::size_t>(r)] / static_cast<double>(x.rows());
      m.char_bleu += rtb::sentence_bleu(mid, truth) / static_cast<double>(x.rows());
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
  return m;
}

rtb::RowMatrix<Tok> contexts(const std::vector<Example>& ex, rtb::Index k, const infill::Layout& lay) {
  rtb::RowMatrix<Tok> c(static_cast<rtb::Index>(ex.size()) * k, lay.length());
  for (std::size_t e = 0; e < ex.size(); ++e)
    for (rtb::Index j = 0; j < k; ++j)
      infill::fill_row(lay, *ex[e].sentence, ex[e].split, rtb::row_ptr(c, static_cast<rtb::Index>(e) * k + j));
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
  app.add_option("--eval-examples", o.eval_examples, "held-out sentences to infill");
  app.add_flag("--smoke", o.smoke, "tiny configuration for tests");
  CLI11_PARSE(app, argc, argv);
  if (o.smoke) {
    o.prior_iterations = std::min<std::int64_t>(o.prior_iterations, 20);
    o.iterations = std::min<std::int64_t>(o.iterations, 10);
    o.eval_examples = std::min<rtb::Index>(o.eval_examples, 12);
    o.groups = 4;
  }

  try {
    const auto t0 = Clock::now();
    std::filesystem::create_directories(o.out);
    const infill::Layout lay;
    const infill::Corpus corpus = infill::load_corpus(o.wordnet, o.corpus, 0.1, o.seed);
    std::printf("corpus: %zu training and %zu held-out sentences (%zu skipped for other characters)\n",
                corpus.train.size(), corpus.held_out.size(), corpus.skipped);

    // The reward's language model: a character 5-gram Kneser–Ney model of the training sentences.
    rtb::KneserNeyLM lm(5, infill::kVocab);
    for (const auto& s : corpus.train) {
      std::vector<Tok> t = s;
      t.push_back(infill::kEos);
      lm.add(t, infill::kBos);
    }

    std::vector<char> generated(static_cast<std::size_t>(lay.length()), 0);
    for (int j = lay.middle_begin(); j < lay.condition_begin(); ++j) generated[static_cast<std::size_t>(j)] = 1;
    Process process({.length = lay.length(), .vocab = infill::kVocab, .num_steps = o.steps, .generated = generated});
    std::vector<rtb::Index> condition;
    for (int j = lay.condition_begin(); j < lay.length(); ++j) condition.push_back(j);
    Net prior({.length = lay.length(), .vocab = infill::kVocab, .embed = 16, .hidden = 256, .num_layers = 1,
               .harmonics = 16, .condition = condition, .seed = o.seed});

    // 1. Fit the prior: windows of training sentences, the beginning fixed, the middle inside the
    //    sentence (as in the task), so the prior never learns to end a sentence mid-span.
    const auto t_prior = Clock::now();
    const rtb::PriorFitConfig pc{.batch_size = 256,
                                 .iterations = o.prior_iterations,
                                 .learning_rate = 2e-3,
                                 .final_learning_rate = 1e-4,
                                 .step_fraction = 2.0 / static_cast<double>(o.steps),
                                 .frozen = {"condition."},  // the prior never sees the ending
                                 .threads = o.threads,
                                 .seed = o.seed};
    std::printf("fitting the prior: %lld iterations of 256 windows\n", static_cast<long long>(pc.iterations));
    rtb::fit_prior(
        process, prior,
        [&](rtb::MatrixView<Tok> x, std::int64_t it) {
          const rtb::math::NoiseKey key{o.seed, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)};
          for (rtb::Index r = 0; r < x.rows(); ++r) {
            const auto& s = corpus.train[static_cast<std::size_t>(rtb::math::uniform<double>(key, r, 0, 0) *
                                                                  static_cast<double>(corpus.train.size()))];
            const int last = std::max(1, static_cast<int>(s.size()) - lay.middle);  // a in [1, n − M]
            const int a = 1 + static_cast<int>(rtb::math::uniform<double>(key, r, 1, 0) * static_cast<double>(last));
            infill::fill_row(lay, s, std::min(a, last), rtb::row_ptr(x, r));
          }
        },
        pc,
        [&](const rtb::PriorFitStats& s) {
          if ((s.iteration + 1) % std::max<std::int64_t>(1, pc.iterations / 8) == 0)
            std::printf("[prior] it %6lld/%lld  nll %.3f  %.1fs\n", static_cast<long long>(s.iteration + 1),
                        static_cast<long long>(pc.iterations), s.loss, seconds_since(t_prior));
        });
    const double prior_secs = seconds_since(t_prior);

    // 2. Fine-tune with RTB, amortised over (beginning, ending) pairs of training sentences.
    const EndingLikelihood reward{&lm, lay};
    const rtb::Index B = o.groups * o.group_size;
    rtb::RelativeTrajectoryBalance<Process, Net, EndingLikelihood, rtb::RelativeVarGrad> trainer(
        process, prior, reward,
        rtb::Config{.batch_size = B,
                    .learning_rate = 1e-3,
                    .group_size = o.group_size,
                    .exploration = rtb::ExplorationSchedule::none(),
                    .prior_behaviour_every = 5,
                    .threads = o.threads,
                    .seed = o.seed});
    std::vector<Example> train_tasks;
    for (const auto& s : corpus.train) {
      const auto splits = infill::task_splits(lay, s.size());
      for (int a : splits) train_tasks.push_back({&s, a});
    }
    std::printf("fine-tuning with RTB (relative VarGrad): %lld iterations of %lld conditions x %lld samples, "
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
      const auto ctx = contexts(batch, o.group_size, lay);
      trainer.process().set_context(rtb::ConstMatrixView<Tok>(ctx.data(), ctx.rows(), ctx.cols()));
      const rtb::StepStats st = trainer.step();
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
    examples::line_chart(o.out + "/training.png", {curve_log_r, curve_ratio});
    std::printf("wrote %s/training.png (red: batch mean log r, blue: log p_post/p_prior, on-policy steps)\n",
                o.out.c_str());

    // 3. Held-out evaluation: the same examples for all three samplers.
    std::vector<Example> eval;
    const rtb::math::NoiseKey ekey{o.seed, rtb::math::Stream::Evaluation, 1};
    for (std::size_t i = 0; i < corpus.held_out.size() && static_cast<rtb::Index>(eval.size()) < o.eval_examples; ++i) {
      const auto splits = infill::task_splits(lay, corpus.held_out[i].size());
      if (splits.empty()) continue;
      eval.push_back({&corpus.held_out[i], splits[static_cast<std::size_t>(rtb::math::uniform<double>(ekey, i, 0, 0) *
                                                                            static_cast<double>(splits.size()))]});
    }
    const auto ctx = contexts(eval, o.eval_samples, lay);
    const rtb::ConstMatrixView<Tok> ctx_view(ctx.data(), ctx.rows(), ctx.cols());
    const rtb::Index n = ctx.rows();

    Process both_ends({.length = lay.length(), .vocab = infill::kVocab, .num_steps = o.steps,
                       .generated = [&] {
                         std::vector<char> g(static_cast<std::size_t>(lay.length()), 0);
                         for (int j = lay.middle_begin(); j < lay.ending_begin(); ++j) g[static_cast<std::size_t>(j)] = 1;
                         return g;
                       }()});
    both_ends.set_context(ctx_view);
    trainer.process().set_context(ctx_view);
    struct Run {
      const char* method;
      rtb::RowMatrix<Tok> x;
      double seconds;
    };
    std::vector<Run> runs;
    auto timed = [&](const char* method, auto&& sample, double base) {
      const auto t = Clock::now();
      auto x = sample();
      runs.push_back({method, std::move(x), base + seconds_since(t)});
    };
    timed("rtb", [&] { return rtb::sample_end_states(trainer.process(), trainer.posterior(), n, o.seed + 11, o.threads); },
          prior_secs + rtb_secs);
    timed("prior", [&] { return rtb::sample_end_states(trainer.process(), prior, n, o.seed + 11, o.threads); }, prior_secs);
    timed("prior_both_ends", [&] { return rtb::sample_end_states(both_ends, prior, n, o.seed + 11, o.threads); },
          prior_secs);

    std::printf("\nsample infills (beginning [middle] ending), held-out sentences:\n");
    for (std::size_t e = 0; e < std::min<std::size_t>(eval.size(), 4); ++e) {
      const auto& s = *eval[e].sentence;
      std::printf("  truth            %s[%s]%s\n", infill::render(s.data(), eval[e].split).c_str(),
                  infill::render(s.data() + eval[e].split, lay.middle).c_str(),
                  infill::render(s.data() + eval[e].split + lay.middle,
                                 static_cast<int>(s.size()) - eval[e].split - lay.middle).c_str());
      for (const Run& r : runs)
        for (rtb::Index j = 0; j < 2; ++j) {
          const Tok* row = rtb::row_ptr(r.x, static_cast<rtb::Index>(e) * o.eval_samples + j);
          std::printf("  %-16s %s[%s]%s\n", r.method, infill::render(s.data(), eval[e].split).c_str(),
                      infill::render(row + lay.middle_begin(), lay.middle).c_str(),
                      infill::render(s.data() + eval[e].split + lay.middle,
                                     static_cast<int>(s.size()) - eval[e].split - lay.middle).c_str());
        }
    }
    std::printf("\n");
    for (const Run& r : runs) {
      const Metrics m = evaluate(r.x, eval, o.eval_samples, lay, lm, reward);
      std::printf("metrics method=%s mean_log_r=%.4f char_bleu=%.4f distinct2=%.4f ppl=%.4f seconds=%.1f\n", r.method,
                  m.mean_log_r, m.char_bleu, m.distinct2, m.ppl, r.seconds);
    }
    std::printf("total %.1fs\n", seconds_since(t0));
  } catch (const rtb::Error& e) {
    std::fprintf(stderr, "infill: %s\n", e.what());
    return 1;
  }
  return 0;
}
