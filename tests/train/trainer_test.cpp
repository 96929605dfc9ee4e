// SPDX-License-Identifier: Apache-2.0
// The trainer's contract: determinism, checkpoints and resume, typed errors, the frozen prior.

#include <doctest/doctest.h>

#include <cfenv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <rtb/rtb.hpp>

// Its own namespace: rtb_sanitized_tests is a unity build, and other files reuse these helper names.
namespace trainer_test {

namespace {

using S = float;
using Process = rtb::GaussianProcess<S>;
using Net = rtb::PisMlp<S>;

Net small_net(std::uint64_t seed = 3) {
  return Net({.dim = 2, .hidden = 16, .harmonics = 8, .seed = seed, .zero_init_last = false, .log_variance_head = false});
}

auto bowl_reward() {
  return rtb::make_reward([](std::span<const S> x) { return -0.5f * (x[0] * x[0] + (x[1] - 1) * (x[1] - 1)); });
}

rtb::Config small_config(rtb::Index threads = 1) {
  return rtb::Config{.batch_size = 40,
                     .exploration = {.initial = 0.3, .hold_until = 2, .zero_at = 6},
                     .replay_fraction = 0.25,
                     .replay_capacity = 100,
                     .threads = threads,
                     .block_rows = 16,
                     .seed = 11};
}

std::string temp_path(const char* name) { return (std::filesystem::temp_directory_path() / name).string(); }

template <class T>
bool same_params(const T& a, const T& b) {
  const auto pa = a.posterior().params(), pb = b.posterior().params();
  return std::equal(pa.begin(), pa.end(), pb.begin()) && a.learned_log_z() == b.learned_log_z();
}

}  // namespace

TEST_CASE("same seed gives the same numbers and 1 and 2 threads give identical results") {
  const Process p(2, 10, 2.0f);
  rtb::RelativeTrajectoryBalance a(p, small_net(), bowl_reward(), small_config(1));
  rtb::RelativeTrajectoryBalance b(p, small_net(), bowl_reward(), small_config(2));
  auto cfg_other = small_config(1);
  cfg_other.seed = 12;
  rtb::RelativeTrajectoryBalance c(p, small_net(), bowl_reward(), cfg_other);
  for (int k = 0; k < 8; ++k) {
    const auto sa = a.step(), sb = b.step();
    c.step();
    CHECK(sa.loss == sb.loss);
  }
  CHECK(same_params(a, b));
  CHECK(!same_params(a, c));
  const auto xa = a.sample(50, 3), xb = b.sample(50, 3);
  CHECK(xa == xb);
}

TEST_CASE("Precision::BFloat16: 1 and 2 threads give identical results, and they differ from float") {
  // The pool's workers take the caller's precision with its float mode: were a worker to run its
  // blocks in float, the 2-thread run would differ from the 1-thread one.
  const Process p(2, 10, 2.0f);
  auto cfg1 = small_config(1), cfg2 = small_config(2);
  cfg1.precision = cfg2.precision = rtb::Precision::BFloat16;
  rtb::RelativeTrajectoryBalance a(p, small_net(), bowl_reward(), cfg1);
  rtb::RelativeTrajectoryBalance b(p, small_net(), bowl_reward(), cfg2);
  rtb::RelativeTrajectoryBalance f(p, small_net(), bowl_reward(), small_config(2));
  for (int k = 0; k < 8; ++k) {
    const auto sa = a.step(), sb = b.step(), sf = f.step();
    CHECK(sa.loss == sb.loss);
    CHECK(std::fabs(sa.loss - sf.loss) < 0.05 * std::fabs(sf.loss) + 1e-3);  // rounding, not another run
  }
  CHECK(same_params(a, b));
  CHECK(!same_params(a, f));
  CHECK(a.sample(50, 3) == b.sample(50, 3));
  CHECK(rtb::detail::float_mode_state().precision == rtb::Precision::Float32);  // the caller's own again
}

TEST_CASE("the posterior starts as an exact copy of the prior which never changes") {
  const Process p(2, 10, 2.0f);
  const rtb::Model prior(small_net());
  rtb::RelativeTrajectoryBalance t(p, prior, bowl_reward(), small_config());
  CHECK(std::equal(prior.params().begin(), prior.params().end(), t.posterior().params().begin()));
  const auto s0 = t.step();
  CHECK(s0.mean_log_ratio == 0.0);  // p_φ = p_θ on the first batch
  t.train(3);
  CHECK(std::equal(prior.params().begin(), prior.params().end(), t.prior().params().begin()));
  CHECK(!std::equal(prior.params().begin(), prior.params().end(), t.posterior().params().begin()));
}

TEST_CASE("checkpoint round trip and resuming equals an uninterrupted run bit for bit") {
  const Process p(2, 10, 2.0f);
  const std::string path = temp_path("rtb_resume_test.ckpt");
  rtb::RelativeTrajectoryBalance straight(p, small_net(), bowl_reward(), small_config());
  straight.train(12);

  rtb::RelativeTrajectoryBalance first(p, small_net(), bowl_reward(), small_config());
  first.train(5);
  first.save(path);
  CHECK(!std::filesystem::exists(path + ".tmp"));  // written through a temporary and renamed
  rtb::RelativeTrajectoryBalance resumed(p, small_net(), bowl_reward(), small_config());
  resumed.load(path);
  CHECK(resumed.iteration() == 5);
  CHECK(same_params(first, resumed));
  CHECK(resumed.replay_buffer().size() == first.replay_buffer().size());
  resumed.train(7);
  CHECK(same_params(straight, resumed));
  std::filesystem::remove(path);
}

TEST_CASE("corrupted and truncated and mismatched checkpoints are rejected with a clear error") {
  const Process p(2, 10, 2.0f);
  const std::string path = temp_path("rtb_corrupt_test.ckpt");
  rtb::RelativeTrajectoryBalance t(p, small_net(), bowl_reward(), small_config());
  t.train(2);
  t.save(path);
  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  auto write = [&](const std::string& b) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
  };
  rtb::RelativeTrajectoryBalance target(p, small_net(), bowl_reward(), small_config());
  const std::vector<S> before(target.posterior().params().begin(), target.posterior().params().end());
  auto expect_error = [&](const char* needle) {
    try {
      target.load(path);
      FAIL("load should have thrown");
    } catch (const rtb::CheckpointError& e) {
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
    CHECK(std::equal(before.begin(), before.end(), target.posterior().params().begin()));  // untouched
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] = static_cast<char>(flipped[bytes.size() / 2] ^ 0x5A);
  write(flipped);
  expect_error("checksum mismatch");
  write(bytes.substr(0, bytes.size() - 100));
  expect_error("checksum mismatch");
  write(bytes.substr(0, 10));
  expect_error("not an rtb checkpoint");
  write("not a checkpoint at all, just text");
  expect_error("not an rtb checkpoint");
  std::filesystem::remove(path);
  expect_error("cannot open");
  // a checkpoint of another architecture
  write(bytes);
  rtb::RelativeTrajectoryBalance other(p, Net({.dim = 2, .hidden = 8, .harmonics = 8, .log_variance_head = false}), bowl_reward(), small_config());
  CHECK_THROWS_WITH_AS(other.load(path), doctest::Contains("parameters"), rtb::CheckpointError);
  std::filesystem::remove(path);
}

TEST_CASE("a NaN reward names the sample and -inf throws or is skipped by policy and +inf throws") {
  const Process p(2, 5, 1.0f);
  int calls = 0;
  auto nan_at_3 = rtb::make_reward([&](rtb::ConstMatrixView<S> x, std::span<S> out) {
    for (rtb::Index i = 0; i < x.rows(); ++i) out[i] = 0.0f;
    out[3] = std::numeric_limits<S>::quiet_NaN();
    ++calls;
  });
  rtb::RelativeTrajectoryBalance t(p, small_net(), nan_at_3, rtb::Config{.batch_size = 8, .threads = 1});
  const std::vector<S> before(t.posterior().params().begin(), t.posterior().params().end());
  CHECK_THROWS_WITH_AS(t.step(), doctest::Contains("sample 3 of 8 is NaN"), rtb::NonFiniteError);
  CHECK(std::equal(before.begin(), before.end(), t.posterior().params().begin()));

  auto zero_on_left = rtb::make_reward([](std::span<const S> x) {
    return x[0] < 0 ? -std::numeric_limits<S>::infinity() : -x[0];
  });
  rtb::RelativeTrajectoryBalance thrower(p, small_net(), zero_on_left, rtb::Config{.batch_size = 16, .threads = 1});
  CHECK_THROWS_WITH_AS(thrower.step(), doctest::Contains("ZeroRewardPolicy::Skip"), rtb::ZeroRewardError);
  rtb::RelativeTrajectoryBalance skipper(p, small_net(), zero_on_left,
                                         rtb::Config{.batch_size = 16, .on_zero_reward = rtb::ZeroRewardPolicy::Skip, .threads = 1});
  const auto s = skipper.step();
  CHECK(s.skipped > 0);
  CHECK(s.skipped < 16);
  CHECK(std::isfinite(s.loss));
  CHECK(skipper.skipped_total() == s.skipped);
  for (S v : skipper.posterior().params()) REQUIRE(std::isfinite(v));

  auto plus_inf = rtb::make_reward([](std::span<const S>) { return std::numeric_limits<S>::infinity(); });
  rtb::RelativeTrajectoryBalance inf(p, small_net(), plus_inf, rtb::Config{.batch_size = 4, .threads = 1});
  CHECK_THROWS_WITH_AS(inf.step(), doctest::Contains("+inf"), rtb::NonFiniteError);
}

TEST_CASE("bad configurations are rejected before any work") {
  const Process p(2, 5, 1.0f);
  CHECK_THROWS_AS(rtb::RelativeTrajectoryBalance(p, small_net(), bowl_reward(), rtb::Config{.batch_size = 0}),
                  rtb::EmptyBatchError);
  CHECK_THROWS_AS(rtb::RelativeTrajectoryBalance(p, small_net(), bowl_reward(), rtb::Config{.step_fraction = 0}),
                  rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::RelativeTrajectoryBalance(p, small_net(), bowl_reward(), rtb::Config{.replay_fraction = 1.0}),
                  rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::RelativeTrajectoryBalance(p, small_net(), bowl_reward(), rtb::Config{.learning_rate = -1}),
                  rtb::InvalidArgumentError);
  const Process p3(3, 5, 1.0f);  // 3-D process, 2-D net
  CHECK_THROWS_WITH_AS(rtb::RelativeTrajectoryBalance(p3, small_net(), bowl_reward(), rtb::Config{}),
                       doctest::Contains("state_dim 3"), rtb::ShapeError);
  using RL = rtb::RelativeTrajectoryBalance<Process, Net, decltype(bowl_reward()), rtb::ReinforceKL>;
  CHECK_THROWS_AS(RL(p, small_net(), bowl_reward(), rtb::Config{.replay_fraction = 0.5}), rtb::InvalidArgumentError);
  rtb::RelativeTrajectoryBalance t(p, small_net(), bowl_reward(), rtb::Config{.batch_size = 4});
  CHECK_THROWS_AS(t.sample(0, 1), rtb::EmptyBatchError);
}

TEST_CASE("log Z uses gradient descent by default and Adam on request") {
  const Process p(2, 5, 1.0f);
  rtb::RelativeTrajectoryBalance sgd(p, small_net(), bowl_reward(),
                                     rtb::Config{.batch_size = 8, .log_z_learning_rate = 0.5, .threads = 1});
  const auto s = sgd.step();  // log Z ← 0 − 0.5·mean δ
  CHECK(sgd.learned_log_z() == doctest::Approx(-0.5 * s.mean_delta).epsilon(1e-5));
  rtb::RelativeTrajectoryBalance adam(p, small_net(), bowl_reward(),
                                      rtb::Config{.batch_size = 8, .log_z_learning_rate = 0.5,
                                                  .log_z_optimizer = rtb::LogZOptimizer::Adam, .threads = 1});
  const auto a = adam.step();  // Adam's first step is lr·sign(g)
  CHECK(adam.learned_log_z() == doctest::Approx(a.mean_delta > 0 ? -0.5 : 0.5).epsilon(1e-5));
}

TEST_CASE("REINFORCE+KL trains on-policy and lowers its loss on a simple reward") {
  const Process p(2, 10, 1.0f);
  rtb::RelativeTrajectoryBalance<Process, Net, decltype(bowl_reward()), rtb::ReinforceKL> rl(
      p, small_net(), bowl_reward(), rtb::Config{.batch_size = 128, .learning_rate = 3e-3, .kl_weight = 0.01, .threads = 2});
  const double before = rl.evaluate(2000, 1).mean_log_r;
  rl.train(150);
  const auto e = rl.evaluate(2000, 1);
  CHECK(e.mean_log_r > before + 0.2);  // moved towards the reward's mode
  CHECK(e.mean_log_ratio > 0.0);       // and away from the prior
}

TEST_CASE("the step in phases: compute_gradient changes nothing, apply_gradient completes the step") {
  const Process p(2, 10, 2.0f);
  rtb::RelativeTrajectoryBalance a(p, small_net(), bowl_reward(), small_config(2));
  rtb::RelativeTrajectoryBalance b(p, small_net(), bowl_reward(), small_config(2));
  CHECK_THROWS_AS([&] {
    rtb::StepStats st;
    b.apply_gradient(st);
  }(), rtb::InvalidArgumentError);
  for (int k = 0; k < 6; ++k) {
    const auto sa = a.step();
    const std::vector<S> before(b.posterior().params().begin(), b.posterior().params().end());
    auto sb = b.compute_gradient();
    CHECK(std::equal(before.begin(), before.end(), b.posterior().params().begin()));
    CHECK(b.iteration() == k);
    double norm2 = 0;
    for (S g : b.gradient()) norm2 += static_cast<double>(g) * g;
    CHECK(std::sqrt(norm2) == doctest::Approx(sb.grad_norm));
    b.apply_gradient(sb);
    CHECK(sa.loss == sb.loss);
    CHECK(sa.learned_log_z == sb.learned_log_z);
  }
  CHECK(same_params(a, b));
}

namespace {
/// Replica 0 of two that hold the same rows: every sum over replicas is twice the local one.
struct SameRowsTwice {
  void all_sum(std::span<double> v) const {
    for (double& x : v) x *= 2;
  }
  template <class T>
  void all_sum_gradient(std::span<T> g) const {
    for (T& x : g) x *= 2;
  }
  rtb::Index row_offset(rtb::Index) const { return 0; }
  rtb::Index replicas() const { return 2; }
};
}  // namespace

TEST_CASE("a data-parallel reduction drops in: objectives normalise by the global count it reports") {
  // Two replicas with identical rows form one batch of 2B rows with the same statistics: the loss,
  // log Z and update must be exactly one process's (halving by 2n and doubling by the all-reduce
  // are exact in binary floating point).
  const Process p(2, 10, 2.0f);
  rtb::RelativeTrajectoryBalance one(p, small_net(), bowl_reward(), small_config(2));
  rtb::RelativeTrajectoryBalance<Process, Net, decltype(bowl_reward()), rtb::RelativeTB, SameRowsTwice> two(
      p, small_net(), bowl_reward(), small_config(2));
  for (int k = 0; k < 6; ++k) {
    const auto s1 = one.step(), s2 = two.step();
    CHECK(s1.loss == s2.loss);
    CHECK(s1.mean_log_r == s2.mean_log_r);
  }
  CHECK(one.learned_log_z() == two.learned_log_z());
  CHECK(std::equal(one.posterior().params().begin(), one.posterior().params().end(),
                   two.posterior().params().begin()));
}

TEST_CASE("gradient memory is one buffer per thread, not one per block") {
  const Process p(2, 10, 2.0f);
  const Net paper_size({.dim = 2, .log_variance_head = false});  // the paper's widths: 25 018 parameters
  auto workspace = [&](rtb::Index batch) {
    rtb::RelativeTrajectoryBalance t(p, paper_size, bowl_reward(),
                                     rtb::Config{.batch_size = batch, .threads = 2, .block_rows = 16});
    return t.workspace_bytes();
  };
  const std::size_t small = workspace(256), large = workspace(512);  // 16 and 32 blocks
  const std::size_t per_block_gradient = sizeof(S) * static_cast<std::size_t>(paper_size.num_params());
  // 16 more blocks add per-row arrays only (a few KiB), not 16 more gradient buffers
  CHECK(large - small < 2 * per_block_gradient);
  MESSAGE("workspace 256 rows: ", small, " B, 512 rows: ", large, " B; one gradient: ", per_block_gradient, " B");
}

TEST_CASE("flushing subnormals changes no result: a fitted prior, and RTB on it, with and without FTZ/DAZ") {
  // A prior fitted to two far modes has large pre-activations, and its GELU derivatives and their
  // products reach the subnormal range (checked below through MXCSR's denormal-operand flag, so the
  // comparison is not vacuous). The fit and the fine-tuning run once with Config::flush_denormals
  // and once without, in one thread; the claim of docs/algorithm.md ("Floating-point mode") is that
  // the flushed values are far below anything they are added to, so every parameter and log Z
  // come out the same bit for bit.
  using Control = rtb::detail::FloatControl;
  const Process p(2, 10, 1.0f);
  bool data_flushed = false;
  auto two_modes = [&](rtb::MatrixView<S> x, std::int64_t it) {
    data_flushed = data_flushed || rtb::detail::ScopedFlushDenormal::active();  // the user's code: the user's mode
    for (rtb::Index i = 0; i < x.rows(); ++i) {
      const S side = (i + it) % 2 ? 1.0f : -1.0f;
      x(i, 0) = 3 * side + 0.1f * std::sin(static_cast<S>(i * 7 + it));
      x(i, 1) = -3 * side + 0.1f * std::cos(static_cast<S>(i * 3 + it));
    }
  };
  auto denormal_flag_after = [](auto&& run) {  // whether an operation met a subnormal operand (x86)
    std::feclearexcept(FE_ALL_EXCEPT);
    run();
#if defined(RTB_FLOAT_CONTROL_X86)
    return (Control::get() & 0x2u) != 0;  // MXCSR.DE
#else
    return true;
#endif
  };
  auto fit = [&](bool flush) {
    rtb::Model<Net> prior(small_net());
    rtb::fit_prior(p, prior, two_modes,
                   rtb::PriorFitConfig{.batch_size = 64, .iterations = 200, .learning_rate = 1e-2, .threads = 1,
                                       .block_rows = 16, .flush_denormals = flush});
    return prior;
  };
  rtb::Model<Net> flushed = fit(true), unflushed(small_net());
  CHECK(denormal_flag_after([&] { unflushed = fit(false); }));
  CHECK(std::equal(flushed.params().begin(), flushed.params().end(), unflushed.params().begin()));
  CHECK(!data_flushed);
  const Control::Word before = Control::get() & ~Control::kFlags;
  CHECK_THROWS_AS(rtb::fit_prior(p, unflushed, two_modes, rtb::PriorFitConfig{.iterations = -1}), rtb::InvalidArgumentError);
  CHECK((Control::get() & ~Control::kFlags) == before);

  auto config = [](bool flush) {
    return rtb::Config{.batch_size = 40, .threads = 1, .block_rows = 16, .seed = 11, .flush_denormals = flush};
  };
  rtb::RelativeTrajectoryBalance a(p, flushed, bowl_reward(), config(true)), b(p, flushed, bowl_reward(), config(false));
  a.train(20);
  CHECK(denormal_flag_after([&] { b.train(20); }));
  CHECK(same_params(a, b));
  CHECK(a.sample(50, 3) == b.sample(50, 3));
}

}  // namespace trainer_test
