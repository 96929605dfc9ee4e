// SPDX-License-Identifier: Apache-2.0
// Bringing a PyTorch prior's training state: Adam's moments by parameter name, its step, a log Z;
// and the prior's own stored time-embedding frequencies.

#include <doctest/doctest.h>

#include <filesystem>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"

namespace fs = std::filesystem;

namespace {
using S = float;
using Net = rtb::PisMlp<S>;

/// Writes, for every trained tensor, exp_avg = offset + i·1e-3 and exp_avg_sq = the same squared,
/// as the export snippet of rtb/io/optimizer_state.hpp does from a torch optimiser.
void export_adam(const rtb::ParameterLayout& layout, const fs::path& dir, double step) {
  for (const rtb::ParameterTensor& t : layout.tensors()) {
    if (!t.trainable) continue;
    std::vector<double> m(static_cast<std::size_t>(t.size)), v(m.size());
    for (std::size_t i = 0; i < m.size(); ++i) {
      m[i] = 1e-3 * static_cast<double>(t.offset + static_cast<rtb::Index>(i));
      v[i] = m[i] * m[i];
    }
    const std::vector<std::size_t> shape(t.shape.begin(), t.shape.end());
    rtb::write_npy(dir / "exp_avg" / (t.name + ".npy"), shape, m);
    rtb::write_npy(dir / "exp_avg_sq" / (t.name + ".npy"), shape, v);
  }
  rtb::write_npy(dir / "step.npy", {}, std::vector<double>{step});
}
}  // namespace

TEST_CASE("Adam's moments and step and a log Z load from a PyTorch-style export") {
  const fs::path dir = fs::temp_directory_path() / "rtb_adam_export";
  fs::remove_all(dir);
  fs::create_directories(dir / "exp_avg");
  fs::create_directories(dir / "exp_avg_sq");
  const rtb::Model prior(Net({.hidden = 8, .harmonics = 4, .seed = 1}));
  export_adam(prior.layout(), dir, 10000);
  rtb::write_npy(dir / "log_z.npy", {}, std::vector<double>{0.25});
  const rtb::GaussianProcess<S> process(2, 10, 5.0f, rtb::GaussianHead::MeanAndLogVariance);
  rtb::RelativeTrajectoryBalance trainer(process, prior, rtb::make_reward([](std::span<const S>) { return 0.0f; }),
                                         rtb::Config{.batch_size = 8, .threads = 1});
  rtb::load_adam_state(trainer.optimizer(), trainer.posterior().layout(), dir.string());
  trainer.set_learned_log_z(rtb::load_npy_scalar<S>(dir / "log_z.npy"));
  CHECK(trainer.optimizer().steps() == 10000);
  CHECK(trainer.learned_log_z() == 0.25f);
  const auto* w = prior.layout().find("s_model.x_model.weight");
  const auto* pe = prior.layout().find("t_model.pe");
  const auto m = trainer.optimizer().first_moment(), v = trainer.optimizer().second_moment();
  CHECK(m[static_cast<std::size_t>(w->offset + 3)] == static_cast<S>(1e-3 * static_cast<double>(w->offset + 3)));
  CHECK(v[static_cast<std::size_t>(w->offset + 3)] == static_cast<S>(std::pow(1e-3 * static_cast<double>(w->offset + 3), 2)));
  CHECK(m[static_cast<std::size_t>(pe->offset)] == 0.0f);  // a buffer has no moments
  // the next step continues Adam from those moments: the bias correction is step 10001's
  trainer.step();
  CHECK(trainer.optimizer().steps() == 10001);

  // bad exports are typed errors and change nothing
  rtb::write_npy(dir / "exp_avg_sq" / "s_model.x_model.weight.npy", {8, 2}, std::vector<double>(16, -1.0));
  CHECK_THROWS_WITH_AS(rtb::load_adam_state(trainer.optimizer(), trainer.posterior().layout(), dir.string()),
                       doctest::Contains(">= 0"), rtb::NonFiniteError);
  CHECK(trainer.optimizer().steps() == 10001);
  export_adam(prior.layout(), dir, 10000);
  fs::remove(dir / "exp_avg" / "s_model.x_model.bias.npy");
  CHECK_THROWS_WITH_AS(rtb::load_adam_state(trainer.optimizer(), trainer.posterior().layout(), dir.string()),
                       doctest::Contains("missing"), rtb::IoError);
  rtb::write_npy(dir / "log_z.npy", {2}, std::vector<double>{0.1, 0.2});
  CHECK_THROWS_AS(rtb::load_npy_scalar<S>(dir / "log_z.npy"), rtb::ShapeError);
  fs::remove_all(dir);
}

TEST_CASE("a prior trained with other frequencies loads with its own; without the file it keeps the computed ones") {
  const fs::path dir = fs::temp_directory_path() / "rtb_pe_export";
  fs::remove_all(dir);
  rtb::Model trained(Net({.hidden = 8, .harmonics = 4, .seed = 1, .zero_init_last = false}));
  const auto* pe = trained.layout().find("t_model.pe");
  for (rtb::Index k = 0; k < pe->size; ++k) trained.params()[static_cast<std::size_t>(pe->offset + k)] = 2.0f + k;
  rtb::save_parameters(trained, dir.string());
  rtb::Model fresh(Net({.hidden = 8, .harmonics = 4, .seed = 2, .zero_init_last = false}));
  rtb::load_parameters(fresh, dir.string());
  CHECK(std::equal(trained.params().begin(), trained.params().end(), fresh.params().begin()));
  rtb::RowMatrix<S> x(3, 2), a(3, 4), b(3, 4);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), 3, 2), 4);
  auto ca = trained.make_context(3), cb = fresh.make_context(3);
  const auto s = rtb_test::step_at(rtb::ConstMatrixView<S>(x.data(), 3, 2), 0.3f);
  trained.inference(s, rtb::MatrixView<S>(a.data(), 3, 4), ca);
  fresh.inference(s, rtb::MatrixView<S>(b.data(), 3, 4), cb);
  CHECK(a == b);
  fs::remove(dir / "t_model.pe.npy");  // an export of parameters only
  rtb::Model other(Net({.hidden = 8, .harmonics = 4, .seed = 3, .zero_init_last = false}));
  rtb::load_parameters(other, dir.string());
  CHECK(other.params()[static_cast<std::size_t>(pe->offset + 3)] == 100.0f);  // linspace(0.1, 100, 4)'s last
  fs::remove_all(dir);
}

TEST_CASE("samples have one type and one writer") {
  const rtb::GaussianProcess<S> process(2, 5, 1.0f);
  rtb::RelativeTrajectoryBalance trainer(process, rtb::Mlp<S>({.hidden = {8}, .output_dim = 2}),
                                         rtb::make_reward([](std::span<const S>) { return 0.0f; }),
                                         rtb::Config{.batch_size = 8, .threads = 1});
  const rtb::Samples<S> x = trainer.sample(6, 1);
  const rtb::Samples<S> e = trainer.evaluate(6, 1).samples;
  const rtb::Samples<S> y = rtb::sample_end_states(trainer.process(), trainer.posterior(), 6, 1);
  CHECK(x == e);  // the same rollout keyed by the same seed: the same numbers in the same type
  CHECK(x == y);
  const fs::path path = fs::temp_directory_path() / "rtb_samples.npy";
  rtb::save_npy(path, x);
  CHECK(rtb::load_npy_matrix<S>(path) == x);
  fs::remove(path);
}
