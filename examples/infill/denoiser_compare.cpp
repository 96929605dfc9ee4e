// SPDX-License-Identifier: Apache-2.0
// Which token denoiser for the infilling example: TokenMlp (an MLP over the flattened sequence,
// as main.cpp configures it) or TokenConv (residual dilated 1-D convolutions)? Each net fits the
// infill prior exactly as main.cpp's step 1 does (same process, data sampler, batch, learning-rate
// schedule, frozen condition path) for the same wall-clock budget, then both are scored on the same
// held-out windows with the same noise:
//
//   nll      −(1/20)·Σ_t E[log p(x_{t+1} | x_t)]       fit_prior's objective (expected_log_prob_step
//                                                     summed over all T steps), per generated column
//   elbo     −(1/20)·Σ_t Σ_{i masked} ρ_t·log softmax(ℓ_i)[x_T[i]]
//                                                     the same without the reveal-time entropy: an
//                                                     upper bound on −log p(x_T)/20, in nats and bits
//
// with x_t ~ x_t | x_T drawn once per (window, step) from a fixed key, so the two nets see the
// same x_t and their difference is paired. Also reports parameters, GEMM multiply-adds per row,
// GELUs per row, iterations done in the budget, and the time of one inference call on 128 rows.
//
//   denoiser_compare [--seconds 60] [--threads 1] [--nets mlp,conv] [--channels 24] [--blocks 0]
//                    [--kernel 3] [--conv-lr 2e-3] [--eval-windows 4096] [--condition] [--smoke]
//
// With --condition the condition path is trained too (it reads a copy of the true ending): not the
// prior of main.cpp, but a check of how well each architecture routes the condition to the
// generated columns, which is what RTB's posterior has to learn through that path.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <rtb/rtb.hpp>

#include "text.hpp"

namespace {

using S = float;
using Tok = std::int32_t;
using Clock = std::chrono::steady_clock;
using Process = rtb::MaskedCategoricalProcess<S>;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Options {
  std::uint64_t seed = 7;
  double seconds = 60;
  rtb::Index threads = 1;
  std::string nets = "mlp,conv";
  rtb::Index channels = 24, blocks = 0, kernel = 3;
  double mlp_lr = 2e-3, conv_lr = 2e-3;
  rtb::Index eval_windows = 4096;
  std::string wordnet = "/usr/share/wordnet";
  bool condition = false;
  bool smoke = false;
};

struct Result {
  std::string name;
  rtb::Index params = 0, macs = 0, gelus = 0;
  std::int64_t iterations = 0;
  double fit_seconds = 0, last_loss = 0, nll = 0, elbo = 0, elbo_middle = 0, inference_ms = 0;
  std::vector<double> per_window;  ///< elbo sum per held-out window (for the paired comparison)
};

/// Fixed held-out windows and the noised states x_t | x_T for every step (shared by both nets).
struct HeldOut {
  rtb::RowMatrix<Tok> end, condition;
  std::vector<rtb::RowMatrix<Tok>> noised;  // one per step
};

HeldOut make_held_out(const infill::Corpus& corpus, const infill::Layout& lay, const Process& process, rtb::Index n,
                      std::uint64_t seed) {
  HeldOut h;
  h.end.resize(n, lay.length());
  h.condition.resize(n, lay.condition_length());
  const rtb::math::NoiseKey key{seed, rtb::math::Stream::Evaluation, 2};
  for (rtb::Index r = 0; r < n; ++r) {  // the training sampler's distribution, on held-out sentences
    const auto& s = corpus.held_out[static_cast<std::size_t>(rtb::math::uniform<double>(key, r, 0, 0) *
                                                             static_cast<double>(corpus.held_out.size()))];
    const int a = 1 + static_cast<int>(rtb::math::uniform<double>(key, r, 1, 0) * static_cast<double>(s.size()));
    infill::fill_row(lay, s, std::min<int>(a, static_cast<int>(s.size())), rtb::row_ptr(h.end, r),
                     rtb::row_ptr(h.condition, r));
  }
  const rtb::math::NoiseKey noise{seed, rtb::math::Stream::Evaluation, 3};
  for (rtb::Index t = 0; t < process.num_steps(); ++t) {
    h.noised.emplace_back(n, lay.length());
    process.sample_given_end(rtb::Step<Tok, S>{rtb::ConstMatrixView<Tok>(h.end.data(), n, lay.length()),
                                               rtb::ConstMatrixView<Tok>(nullptr, n, 0), t, S(0), 0},
                             noise, rtb::MatrixView<Tok>(h.noised.back().data(), n, lay.length()));
  }
  return h;
}

template <class Net>
void evaluate(const rtb::Model<Net>& net, const Process& process, const HeldOut& h, Result& res) {
  const rtb::Index n = h.end.rows(), L = h.end.cols(), V = process.vocab(), T = process.num_steps(), block = 128;
  const double generated = static_cast<double>(process.generated_columns().size());
  auto ctx = net.make_context(block);
  rtb::RowMatrix<S> out(block, L * V);
  std::vector<S> acc(static_cast<std::size_t>(block));
  double nll = 0, middle = 0;
  const auto mid_end = static_cast<rtb::Index>(infill::Layout{}.lookahead_begin());
  res.per_window.assign(static_cast<std::size_t>(n), 0.0);
  for (rtb::Index t = 0; t < T; ++t) {
    const S rho = static_cast<S>(process.schedule().reveal(t));
    for (rtb::Index first = 0; first < n; first += block) {
      const rtb::Index m = std::min(block, n - first);
      const rtb::ConstMatrixView<Tok> x(h.noised[static_cast<std::size_t>(t)].data() + first * L, m, L);
      const rtb::ConstMatrixView<Tok> x_end(h.end.data() + first * L, m, L);
      const rtb::Index Lc = h.condition.cols();
      const rtb::Step<Tok, S> s{x, rtb::ConstMatrixView<Tok>(h.condition.data() + first * Lc, m, Lc), t,
                                process.time(t), first};
      rtb::MatrixView<S> o(out.data(), m, L * V);
      net.inference(s, o, ctx);
      std::fill(acc.begin(), acc.end(), S(0));
      process.expected_log_prob_step(s, x_end, rtb::const_view(o), std::span<S>(acc.data(), static_cast<std::size_t>(m)));
      for (rtb::Index r = 0; r < m; ++r) {
        nll -= static_cast<double>(acc[static_cast<std::size_t>(r)]);
        double ce = 0;
        for (rtb::Index j : process.generated_columns())
          if (x(r, j) == process.mask_token()) {
            const double c =
                rho * rtb::math::log_softmax_at(rtb::row_ptr(o, r) + j * V, V, static_cast<rtb::Index>(x_end(r, j)));
            ce -= c;
            if (j < mid_end) middle -= c;
          }
        res.per_window[static_cast<std::size_t>(first + r)] += ce;
      }
    }
  }
  double elbo = 0;
  for (double v : res.per_window) elbo += v;
  res.nll = nll / (static_cast<double>(n) * generated);
  res.elbo = elbo / (static_cast<double>(n) * generated);
  res.elbo_middle = middle / (static_cast<double>(n) * static_cast<double>(infill::Layout{}.middle));
  // one inference call on 128 rows (mid-schedule states), averaged
  const rtb::Index rows = std::min<rtb::Index>(128, n);
  const rtb::Step<Tok, S> s{rtb::ConstMatrixView<Tok>(h.noised[static_cast<std::size_t>(T / 2)].data(), rows, L),
                            rtb::ConstMatrixView<Tok>(h.condition.data(), rows, h.condition.cols()), T / 2,
                            process.time(T / 2), 0};
  rtb::MatrixView<S> o(out.data(), rows, L * V);
  for (int i = 0; i < 5; ++i) net.inference(s, o, ctx);
  int calls = 0;
  const auto t0 = Clock::now();
  while (calls < 20 || (seconds_since(t0) < 1.0 && calls < 2000)) {
    net.inference(s, o, ctx);
    ++calls;
  }
  res.inference_ms = 1e3 * seconds_since(t0) / calls;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Compare TokenMlp and TokenConv as the infill prior at equal wall-clock"};
  app.add_option("--seed", o.seed, "seed of every random draw");
  app.add_option("--seconds", o.seconds, "prior-fitting budget per net (wall clock)");
  app.add_option("--threads", o.threads, "threads for fitting");
  app.add_option("--nets", o.nets, "comma-separated: mlp, conv");
  app.add_option("--channels", o.channels, "TokenConv channels");
  app.add_option("--blocks", o.blocks, "TokenConv residual blocks (0 = cover the row)");
  app.add_option("--kernel", o.kernel, "TokenConv kernel");
  app.add_option("--mlp-lr", o.mlp_lr, "TokenMlp peak learning rate (main.cpp: 2e-3)");
  app.add_option("--conv-lr", o.conv_lr, "TokenConv peak learning rate");
  app.add_option("--eval-windows", o.eval_windows, "held-out windows scored");
  app.add_option("--wordnet", o.wordnet, "WordNet data directory");
  app.add_flag("--condition", o.condition,
               "train the condition path too (it reads the true ending): how well each net can use it");
  app.add_flag("--smoke", o.smoke, "tiny configuration for tests");
  CLI11_PARSE(app, argc, argv);
  if (o.smoke) {
    o.seconds = std::min(o.seconds, 2.0);
    o.eval_windows = std::min<rtb::Index>(o.eval_windows, 256);
  }
  try {
    const infill::Layout lay;
    const infill::Corpus corpus = infill::load_corpus(o.wordnet, "", 0.1, o.seed);
    std::vector<char> generated(static_cast<std::size_t>(lay.length()), 0);
    for (int j = lay.middle_begin(); j < lay.length(); ++j) generated[static_cast<std::size_t>(j)] = 1;
    const rtb::Index T = 16;
    const Process process({.length = lay.length(), .vocab = infill::kVocab, .num_steps = T, .generated = generated});
    std::vector<rtb::Index> condition;  // the ending, in the condition row
    for (int j = 0; j < lay.ending; ++j) condition.push_back(lay.ending_begin() + j);
    const HeldOut held = make_held_out(corpus, lay, process, o.eval_windows, o.seed);
    std::printf(
        "corpus: %zu training, %zu held-out sentences; %lld held-out windows; budget %.0fs per net, %lld thread(s)\n",
        corpus.train.size(), corpus.held_out.size(), static_cast<long long>(o.eval_windows), o.seconds,
        static_cast<long long>(o.threads));

    auto data = [&](rtb::MatrixView<Tok> x, rtb::MatrixView<Tok> c, std::int64_t it) {  // main.cpp step 1's sampler
      const rtb::math::NoiseKey key{o.seed, rtb::math::Stream::Data, static_cast<std::uint64_t>(it)};
      for (rtb::Index r = 0; r < x.rows(); ++r) {
        const auto& s = corpus.train[static_cast<std::size_t>(rtb::math::uniform<double>(key, r, 0, 0) *
                                                              static_cast<double>(corpus.train.size()))];
        const int a = 1 + static_cast<int>(rtb::math::uniform<double>(key, r, 1, 0) * static_cast<double>(s.size()));
        infill::fill_row(lay, s, std::min<int>(a, static_cast<int>(s.size())), rtb::row_ptr(x, r), rtb::row_ptr(c, r));
      }
    };
    auto config = [&](double lr, std::int64_t iterations) {  // main.cpp step 1's configuration
      return rtb::PriorFitConfig{
          .batch_size = 256,
          .iterations = iterations,
          .learning_rate = lr,
          .final_learning_rate = 1e-4,
          .step_fraction = 2.0 / static_cast<double>(T),
          .frozen = o.condition ? std::vector<std::string>{} : std::vector<std::string>{"condition."},
          .threads = o.threads,
          .seed = o.seed};
    };
    // Calibrate seconds per iteration on a copy, size the cosine schedule to the budget, then fit
    // (stopping anyway at 1.1× the budget if the machine slows down).
    auto fit = [&](auto bare, double lr, Result& res) {
      rtb::Model net(std::move(bare));
      res.params = net.num_params();
      {
        auto probe = net;
        const auto t0 = Clock::now();
        Clock::time_point t1 = t0;
        rtb::fit_prior(process, probe, data, config(lr, 22), [&](const rtb::PriorFitStats& s) {
          if (s.iteration == 1) t1 = Clock::now();
        });
        const double per_it = seconds_since(t1) / 20.0;
        res.iterations = std::max<std::int64_t>(2, static_cast<std::int64_t>(o.seconds / per_it));
        std::printf("[%s] %.2f ms per iteration -> %lld iterations\n", res.name.c_str(), 1e3 * per_it,
                    static_cast<long long>(res.iterations));
      }
      const auto t0 = Clock::now();
      std::int64_t done = 0;
      rtb::fit_prior(process, net, data, config(lr, res.iterations), [&](const rtb::PriorFitStats& s) {
        done = s.iteration + 1;
        res.last_loss = s.loss;
        if (done % std::max<std::int64_t>(1, res.iterations / 6) == 0)
          std::printf("[%s] it %6lld  batch nll %.3f  %.1fs\n", res.name.c_str(), static_cast<long long>(done), s.loss,
                      seconds_since(t0));
        return seconds_since(t0) < 1.1 * o.seconds;
      });
      res.fit_seconds = seconds_since(t0);
      res.iterations = done;
      evaluate(net, process, held, res);
    };

    std::vector<Result> results;
    std::stringstream list(o.nets);
    for (std::string name; std::getline(list, name, ',');) {
      Result res;
      res.name = name;
      if (name == "mlp") {
        const rtb::TokenMlp<S> net({.length = lay.length(),
                                    .vocab = infill::kVocab,
                                    .embed = 16,
                                    .hidden = 256,
                                    .num_layers = 1,
                                    .harmonics = 16,
                                    .condition = condition,
                                    .seed = o.seed});
        const auto& op = net.options();
        const rtb::Index Lc = static_cast<rtb::Index>(condition.size());
        res.macs = (lay.length() + Lc) * op.embed * op.hidden + op.num_layers * op.hidden * op.hidden +
                   op.hidden * lay.length() * infill::kVocab;
        res.gelus = op.hidden * (op.num_layers + 1);
        fit(net, o.mlp_lr, res);
      } else if (name == "conv") {
        const rtb::TokenConv<S> net({.length = lay.length(),
                                     .vocab = infill::kVocab,
                                     .embed = 16,
                                     .channels = o.channels,
                                     .kernel = o.kernel,
                                     .num_blocks = o.blocks,
                                     .harmonics = 16,
                                     .condition = condition,
                                     .seed = o.seed});
        res.name = "conv(C=" + std::to_string(o.channels) + ",N=" + std::to_string(net.options().num_blocks) +
                   ",k=" + std::to_string(o.kernel) + ")";
        res.macs = net.macs_per_row();
        res.gelus = net.positions() * o.channels * (net.options().num_blocks + 1);
        fit(net, o.conv_lr, res);
      } else {
        throw rtb::InvalidArgumentError("--nets: unknown net '" + name + "'; use mlp or conv");
      }
      std::printf("[%s] held-out nll %.4f  elbo %.4f (middle %.4f) nats/char\n", res.name.c_str(), res.nll, res.elbo,
                  res.elbo_middle);
      results.push_back(std::move(res));
    }

    std::printf(
        "\n| net | params | GEMM FLOPs/row | GELUs/row | iterations (s) | last batch loss | held-out nll/char | "
        "held-out elbo nats/char (bits) | elbo middle | inference 128 rows "
        "|\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (const Result& r : results)
      std::printf("| %s | %lld | %.2fM | %lld | %lld (%.0fs) | %.3f | %.4f | %.4f (%.3f) | %.4f | %.2f ms |\n",
                  r.name.c_str(), static_cast<long long>(r.params), 2e-6 * static_cast<double>(r.macs),
                  static_cast<long long>(r.gelus), static_cast<long long>(r.iterations), r.fit_seconds, r.last_loss,
                  r.nll, r.elbo, r.elbo / std::log(2.0), r.elbo_middle, r.inference_ms);
    for (std::size_t i = 1; i < results.size(); ++i) {  // paired difference over the same windows and noise
      const auto& a = results[0].per_window;
      const auto& b = results[i].per_window;
      const double n = static_cast<double>(a.size()), g = static_cast<double>(process.generated_columns().size());
      double mean = 0, var = 0;
      for (std::size_t w = 0; w < a.size(); ++w) mean += (b[w] - a[w]) / n;
      for (std::size_t w = 0; w < a.size(); ++w) var += (b[w] - a[w] - mean) * (b[w] - a[w] - mean) / (n - 1);
      std::printf("elbo %s − %s: %+.4f ± %.4f nats/char (paired standard error)\n", results[i].name.c_str(),
                  results[0].name.c_str(), mean / g, std::sqrt(var / n) / g);
    }
  } catch (const rtb::Error& e) {
    std::fprintf(stderr, "denoiser_compare: %s\n", e.what());
    return 1;
  }
  return 0;
}
