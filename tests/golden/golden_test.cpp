// SPDX-License-Identifier: Apache-2.0
// Golden values: what a user's runs produce, pinned bit for bit, so that refactoring the library
// cannot change anybody's results unnoticed. Pinned on commit 83bdfbb (before the seams of issue 8);
// re-pinned, deliberately, when float normals and categorical draws moved to rtb's own
// log/sin/cos/exp and the Gaussian step, Adam and the RTB residual to explicit fmas, so that the
// GPU draws and computes the same bits (issue 13, rtb/math/portable.hpp): both configurations'
// numbers moved in the 6th-7th significant digit, and infill's samples are the same tokens.
//
//  - gmm2d: the 2-D demo's configuration (PisMlp prior fitted by the Rao–Blackwellised bridge,
//    then RTB with exploration held at 0.5), prior fit shortened to 300 iterations, 50 RTB steps;
//  - infill: the text example's configuration (masked process with fixed beginning, generated
//    middle, MASK lookahead and the ending as condition; InfillNet; relative VarGrad over groups of
//    8; every 5th batch from the prior; a Kneser–Ney reward) on a synthetic corpus, 60 prior steps
//    and 50 RTB steps.
//
// Hashes are FNV-1a over the bytes of the parameters / samples; scalars are compared exactly.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <rtb/rtb.hpp>
#include <string>
#include <vector>

#include "../../examples/infill/infill_net.hpp"
#include "../../examples/infill/reward.hpp"
#include "../../examples/infill/text.hpp"
#include "../test_util.hpp"

namespace {

using rtb_test::fnv1a;

using rtb_test::trained_hash;

/// What a run produced, printed so a re-pin is a copy and paste.
struct Golden {
  std::uint64_t prior = 0, posterior = 0, samples = 0;
  double loss = 0, log_z = 0, mean_log_r = 0, mean_log_ratio = 0, grad_norm = 0;
  double log_z_is = 0, ess = 0, eval_mean_log_r = 0;

  void print(const char* name) const {
    std::printf("golden %s = {0x%016llxull, 0x%016llxull, 0x%016llxull, %.17g, %.17g, %.17g, %.17g, %.17g, %.17g, "
                "%.17g, %.17g}\n",
                name, static_cast<unsigned long long>(prior), static_cast<unsigned long long>(posterior),
                static_cast<unsigned long long>(samples), loss, log_z, mean_log_r, mean_log_ratio, grad_norm, log_z_is,
                ess, eval_mean_log_r);
  }
};

void check_equal(const Golden& got, const Golden& want) {
  CHECK(got.prior == want.prior);
  CHECK(got.posterior == want.posterior);
  CHECK(got.samples == want.samples);
  CHECK(got.loss == want.loss);
  CHECK(got.log_z == want.log_z);
  CHECK(got.mean_log_r == want.mean_log_r);
  CHECK(got.mean_log_ratio == want.mean_log_ratio);
  CHECK(got.grad_norm == want.grad_norm);
  CHECK(got.log_z_is == want.log_z_is);
  CHECK(got.ess == want.ess);
  CHECK(got.eval_mean_log_r == want.eval_mean_log_r);
}

// --- gmm2d -------------------------------------------------------------------------------------

Golden run_gmm2d() {
  using S = float;
  const std::uint64_t seed = 12345;
  const auto grid = rtb::GaussianMixture<S>::grid25();
  const auto target = rtb::GaussianMixture<S>::posterior9();
  const rtb::GaussianProcess<S> process(2, 100, 5.0f, rtb::GaussianHead::MeanAndLogVariance);
  rtb::Model prior(rtb::PisMlp<S>({.dim = 2, .seed = seed}));
  const rtb::PriorFitConfig pc{.batch_size = 500,
                               .iterations = 300,
                               .learning_rate = 1e-2,
                               .final_learning_rate = 1e-4,
                               .step_fraction = 0.05,
                               .threads = 2,
                               .seed = seed};
  rtb::fit_prior(
      process, prior,
      [&](rtb::MatrixView<S> x, std::int64_t it) {
        grid.sample(x, {seed, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)});
      },
      pc);
  Golden g;
  g.prior = trained_hash(prior);
  const std::int64_t n = 2500;
  rtb::Config cfg{.batch_size = 500,
                  .learning_rate = 5e-3,
                  .decay = {.start = n * 6 / 10, .end = n, .final_ratio = 0.05},
                  .exploration = {.initial = 0.5, .hold_until = n / 10, .zero_at = n / 2},
                  .threads = 2,
                  .seed = seed};
  rtb::RelativeTrajectoryBalance trainer(process, prior, rtb::MixtureRatioReward<S>(target, grid), cfg);
  const rtb::StepStats st = trainer.train(50);
  g.posterior = trained_hash(trainer.posterior());
  g.loss = st.loss;
  g.log_z = st.learned_log_z;
  g.mean_log_r = st.mean_log_r;
  g.mean_log_ratio = st.mean_log_ratio;
  g.grad_norm = st.grad_norm;
  const auto e = trainer.evaluate(1000, seed + 2);
  g.log_z_is = e.log_partition.log_z_is;
  g.ess = e.log_partition.ess;
  g.eval_mean_log_r = e.mean_log_r;
  g.samples = fnv1a(e.samples.data(), sizeof(S) * static_cast<std::size_t>(e.samples.size()));
  return g;
}

// --- infill ------------------------------------------------------------------------------------

using Tok = std::int32_t;

/// Sentences of random words from a small lexicon, all made of the example's alphabet.
std::vector<std::vector<Tok>> synthetic_corpus(std::size_t count) {
  static const char* words[] = {"the", "a",     "cat",  "dog", "sat",  "on",   "mat", "ran",   "far", "away",
                                "big", "small", "red",  "old", "tree", "over", "hill", "river", "and", "slowly"};
  const rtb::math::NoiseKey key{99, rtb::math::Stream::Data, 7};
  std::vector<std::vector<Tok>> out;
  for (std::size_t s = 0; s < count; ++s) {
    const int len = 4 + static_cast<int>(rtb::math::uniform<double>(key, s, 0, 0) * 6);
    std::string text;
    for (int w = 0; w < len; ++w) {
      if (w > 0) text.push_back(' ');
      text.append(words[static_cast<int>(rtb::math::uniform<double>(key, s, 1, static_cast<std::uint32_t>(w)) * 20)]);
    }
    text.push_back('.');
    out.push_back(infill::encode_sentence(text));
  }
  return out;
}

Golden run_infill() {
  using S = float;
  using Process = rtb::MaskedCategoricalProcess<S>;
  using Net = infill::InfillNet<S>;
  const std::uint64_t seed = 7;
  const infill::Layout lay;
  const auto corpus = synthetic_corpus(300);
  rtb::KneserNeyLM lm(5, infill::kVocab);
  for (const auto& s : corpus) {
    std::vector<Tok> t = s;
    t.push_back(infill::kEos);
    lm.add(t, infill::kBos);
  }
  auto columns = [&](int from, int to) {
    std::vector<char> g(static_cast<std::size_t>(lay.length()), 0);
    for (int j = from; j < to; ++j) g[static_cast<std::size_t>(j)] = 1;
    return g;
  };
  std::vector<rtb::Index> lookahead, ending;
  for (int j = lay.lookahead_begin(); j < lay.length(); ++j) lookahead.push_back(j);
  for (int j = 0; j < lay.ending; ++j) ending.push_back(lay.ending_begin() + j);
  const rtb::Index steps = 12;
  const Process fit_process({.length = lay.length(),
                             .vocab = infill::kVocab,
                             .num_steps = steps,
                             .generated = columns(lay.middle_begin(), lay.length())});
  const Process process({.length = lay.length(),
                         .vocab = infill::kVocab,
                         .num_steps = steps,
                         .generated = columns(lay.middle_begin(), lay.lookahead_begin()),
                         .masked = lookahead});
  rtb::Model prior(Net(rtb::TokenConv<S>({.length = lay.length(),
                                          .vocab = infill::kVocab,
                                          .embed = 16,
                                          .channels = 32,
                                          .kernel = 3,
                                          .harmonics = 16,
                                          .condition = ending,
                                          .condition_shift = lay.lookahead,
                                          .seed = seed}),
                       lay));
  const rtb::PriorFitConfig pc{.batch_size = 256,
                               .iterations = 60,
                               .learning_rate = 8e-3,
                               .final_learning_rate = 1e-4,
                               .step_fraction = 2.0 / static_cast<double>(steps),
                               .frozen = {"condition."},
                               .threads = 2,
                               .seed = seed};
  rtb::fit_prior(
      fit_process, prior,
      [&](rtb::MatrixView<Tok> x, rtb::MatrixView<Tok> c, std::int64_t it) {
        const rtb::math::NoiseKey key{seed, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)};
        for (rtb::Index r = 0; r < x.rows(); ++r) {
          const auto& s = corpus[static_cast<std::size_t>(rtb::math::uniform<double>(key, r, 0, 0) *
                                                          static_cast<double>(corpus.size()))];
          const int last = std::max(1, static_cast<int>(s.size()) - lay.middle);
          const int a = 1 + static_cast<int>(rtb::math::uniform<double>(key, r, 1, 0) * static_cast<double>(last));
          infill::fill_row(lay, s, std::min(a, last), rtb::row_ptr(x, r), rtb::row_ptr(c, r));
        }
      },
      pc);
  Golden g;
  g.prior = trained_hash(prior);

  const rtb::Index groups = 16, group_size = 8, B = groups * group_size;
  rtb::RelativeTrajectoryBalance<Process, Net, infill::EndingLikelihood, rtb::RelativeVarGrad> trainer(
      process, prior, infill::EndingLikelihood{&lm, lay},
      rtb::Config{.batch_size = B,
                  .learning_rate = 5e-4,
                  .group_size = group_size,
                  .exploration = rtb::ExplorationSchedule::none(),
                  .prior_behaviour_every = 5,
                  .threads = 2,
                  .block_rows = B / 2,
                  .seed = seed});
  trainer.posterior().net().reads_ending = true;
  struct Task {
    const std::vector<Tok>* s;
    int a;
  };
  std::vector<Task> tasks;
  for (const auto& s : corpus)
    for (int a : infill::task_splits(lay, s.size())) tasks.push_back({&s, a});
  REQUIRE(tasks.size() > 100);
  rtb::RowMatrix<Tok> scratch(1, lay.length());
  auto conditions = [&](const std::vector<Task>& batch, rtb::Index k) {
    rtb::RowMatrix<Tok> c(static_cast<rtb::Index>(batch.size()) * k, lay.condition_length());
    for (std::size_t e = 0; e < batch.size(); ++e)
      for (rtb::Index j = 0; j < k; ++j)
        infill::fill_row(lay, *batch[e].s, batch[e].a, scratch.data(), rtb::row_ptr(c, static_cast<rtb::Index>(e) * k + j));
    return c;
  };
  rtb::StepStats st;
  std::vector<Task> batch(static_cast<std::size_t>(groups));
  for (std::int64_t it = 0; it < 50; ++it) {
    const rtb::math::NoiseKey key{seed, rtb::math::Stream::User, static_cast<std::uint64_t>(it)};
    for (rtb::Index k = 0; k < groups; ++k)
      batch[static_cast<std::size_t>(k)] =
          tasks[static_cast<std::size_t>(rtb::math::uniform<double>(key, k, 0, 0) * static_cast<double>(tasks.size()))];
    const auto c = conditions(batch, group_size);
    st = trainer.step(rtb::ConstMatrixView<Tok>(c.data(), c.rows(), c.cols()));
  }
  g.posterior = trained_hash(trainer.posterior());
  g.loss = st.loss;
  g.log_z = st.learned_log_z;
  g.mean_log_r = st.mean_log_r;
  g.mean_log_ratio = st.mean_log_ratio;
  g.grad_norm = st.grad_norm;
  // Evaluation as the example does it: 32 tasks × 4 samples under the posterior.
  std::vector<Task> eval(tasks.begin(), tasks.begin() + 32);
  const auto c = conditions(eval, 4);
  const rtb::ConstMatrixView<Tok> cv(c.data(), c.rows(), c.cols());
  const auto x = rtb::sample_end_states(trainer.process(), trainer.posterior(), cv, seed + 11, 2);
  // The pinned commit's rows also held the ending (12 columns after the lookahead); hash what it saw.
  rtb::RowMatrix<Tok> old_rows(x.shape(0), lay.length() + lay.ending);
  for (rtb::Index r = 0; r < old_rows.rows(); ++r) {
    std::copy_n(&x(r, 0), lay.length(), &old_rows(r, 0));
    std::copy_n(&c(r, lay.ending_begin()), lay.ending, &old_rows(r, lay.length()));
  }
  g.samples = fnv1a(old_rows.data(), sizeof(Tok) * static_cast<std::size_t>(old_rows.size()));
  const auto e = trainer.evaluate(cv, seed + 12);
  g.log_z_is = e.log_partition.log_z_is;
  g.ess = e.log_partition.ess;
  g.eval_mean_log_r = e.mean_log_r;
  return g;
}

}  // namespace

TEST_CASE("golden: the gmm2d configuration gives the pinned numbers bit for bit") {
  const Golden g = run_gmm2d();
  g.print("gmm2d");
  check_equal(g, Golden{0x44a6b1a84cbe29c6ull, 0xc86e89e5e07abb7cull, 0xb81cd2ce4d6bd489ull, 84.357307434082031,
                        -17.223932266235352, -7.247064405433834, 8.6083796386718756, 48.368381457777176,
                        -0.50546917484127007, 0.036480633720333375, 0.7833340145647526});
}

TEST_CASE("golden: the infill configuration gives the pinned numbers bit for bit") {
  const Golden g = run_infill();
  g.print("infill");
  check_equal(g, Golden{0xa53ef3f724da74c7ull, 0x6a751835fee0e84cull, 0xca8d3b323f4fbbf5ull, 2.8696036338806152,
                        -10.874497413635254, -9.6591716278344393, 1.2153259515762329, 18.702945536453591,
                        -6.7113268647148416, 0.10526616648881931, -9.876755116507411});
}
