// SPDX-License-Identifier: Apache-2.0
// Bad input through the trainer's public API: no crash, no hang, no silent garbage. Each case is
// one of the defects found by trying (issue "Hardening"), and fails without its fix.

#include <doctest/doctest.h>

#include <atomic>
#include <cfenv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <rtb/rtb.hpp>
#include <set>
#include <stdexcept>
#include <thread>

#include "../test_util.hpp"

// Its own namespace: rtb_sanitized_tests is a unity build, and other files reuse these helper names.
namespace hardening_test {

namespace {

using S = float;
using Process = rtb::GaussianProcess<S>;
using Net = rtb::PisMlp<S>;

struct Boom : std::runtime_error {
  Boom() : std::runtime_error("boom") {}
};

/// What the forwards of a Flaky saw of the floating-point mode, over all threads.
struct ModeRecord {
  std::atomic<long> calls{0}, flushed{0}, other_mode{0};
  rtb::detail::FloatControl::Word mode = 0;  ///< the control bits expected besides FTZ/DAZ (rounding, masks)
  std::mutex mutex;
  std::set<std::thread::id> threads;
};

/// A PisMlp whose forward throws on its n-th call (counting across copies and threads), and
/// records the floating-point mode it runs in.
struct Flaky {
  using Scalar = S;
  using Value = S;
  using Context = Net::Context;
  Net net;
  std::shared_ptr<std::atomic<long>> countdown = std::make_shared<std::atomic<long>>(-1);
  std::shared_ptr<ModeRecord> mode = std::make_shared<ModeRecord>();

  rtb::Index input_dim() const { return net.input_dim(); }
  rtb::Index output_dim() const { return net.output_dim(); }
  rtb::Index num_params() const { return net.num_params(); }
  const rtb::ParameterLayout& layout() const { return net.layout(); }
  void initialize(std::span<S> p) const { net.initialize(p); }
  Context make_context(rtb::Index rows) const { return net.make_context(rows); }
  void inference(const rtb::Weights<S>& w, const rtb::Step<S>& s, rtb::MatrixView<S> out, Context& c) const {
    tick();
    net.inference(w, s, out, c);
  }
  void forward(const rtb::Weights<S>& w, const rtb::Step<S>& s, rtb::MatrixView<S> out, Context& c) const {
    tick();
    net.forward(w, s, out, c);
  }
  void backward(const rtb::Weights<S>& w, Context& c, rtb::ConstMatrixView<S> d, std::span<S> g,
                rtb::GradientMode m) const {
    net.backward(w, c, d, g, m);
  }
  void tick() const {
    ++mode->calls;
    if (rtb::detail::ScopedFlushDenormal::active()) ++mode->flushed;
    using Control = rtb::detail::FloatControl;
    if ((Control::get() & ~(Control::kFlags | Control::kFlush)) != mode->mode) ++mode->other_mode;
    {
      const std::lock_guard lock(mode->mutex);
      mode->threads.insert(std::this_thread::get_id());
    }
    if (countdown->fetch_sub(1) == 0) throw Boom();
  }
};
static_assert(rtb::Denoiser<Flaky>);

Net small_net() { return Net({.dim = 2, .hidden = 16, .harmonics = 8, .seed = 3, .zero_init_last = false}); }
std::atomic<bool> reward_flushed{false};
auto square_reward() {
  return rtb::make_reward([](std::span<const S> x) {
    reward_flushed = rtb::detail::ScopedFlushDenormal::active();
    return -x[0] * x[0];
  });
}
rtb::Config config(rtb::Index threads) {
  return rtb::Config{.batch_size = 32, .replay_fraction = 0.25, .replay_capacity = 64, .threads = threads,
                     .block_rows = 8, .seed = 5};
}
const Process kProcess(2, 6, 2.0f, rtb::GaussianHead::MeanAndLogVariance);

template <class T>
std::vector<S> params_of(const T& t) {
  return std::vector<S>(t.posterior().params().begin(), t.posterior().params().end());
}

}  // namespace

TEST_CASE("an exception in a parallel region reaches the caller and leaves the trainer as it was") {
  for (rtb::Index threads : {1, 2}) {
    for (long at : {3L, 30L, 60L}) {  // during scoring (the first 24 forwards), and during back-propagation
      CAPTURE(threads);
      CAPTURE(at);
      Flaky net{small_net()};
      auto countdown = net.countdown;
      rtb::RelativeTrajectoryBalance trainer(kProcess, net, square_reward(), config(threads));
      trainer.train(3);  // the replay buffer fills: later steps have stored rows too
      const auto before = params_of(trainer);
      const double log_z = trainer.learned_log_z();
      const auto adam_steps = trainer.optimizer().steps();
      const auto replayed = trainer.replay_buffer().size();
      countdown->store(at);
      CHECK_THROWS_AS(trainer.step(), Boom);
      CHECK(params_of(trainer) == before);
      CHECK(trainer.learned_log_z() == log_z);
      CHECK(trainer.iteration() == 3);
      CHECK(trainer.optimizer().steps() == adam_steps);
      CHECK(trainer.replay_buffer().size() == replayed);
      countdown->store(-1);
      CHECK(trainer.step().iteration == 3);  // and it goes on
      countdown->store(5);
      CHECK_THROWS_AS(trainer.sample(40, 1), Boom);
    }
  }
}

TEST_CASE("an exception in the reward leaves the trainer as it was") {
  for (rtb::Index threads : {1, 2}) {
    bool fail = false;
    rtb::RelativeTrajectoryBalance trainer(kProcess, small_net(), rtb::make_reward([&](std::span<const S> x) {
                                             if (fail) throw Boom();
                                             return -x[0] * x[0];
                                           }),
                                           config(threads));
    trainer.train(2);
    const auto before = params_of(trainer);
    fail = true;
    CHECK_THROWS_AS(trainer.step(), Boom);
    CHECK(params_of(trainer) == before);
    CHECK(trainer.iteration() == 2);
  }
}

TEST_CASE("sizes a user's input can make absurd are typed errors naming the size and the limit") {
  auto reward = rtb::make_reward([](std::span<const S>) { return 0.0f; });
  CHECK_THROWS_WITH_AS(rtb::RelativeTrajectoryBalance(kProcess, small_net(), reward, rtb::Config{.batch_size = 1'000'000'000'000}),
                       doctest::Contains("batch_size 1000000000000"), rtb::MemoryLimitError);
  CHECK_THROWS_AS(rtb::RelativeTrajectoryBalance(kProcess, small_net(), reward,
                                                 rtb::Config{.replay_fraction = 0.5, .replay_capacity = 1'000'000'000'000}),
                  rtb::MemoryLimitError);
  // block rows beyond the batch are only the batch: no allocation follows them
  rtb::RelativeTrajectoryBalance wide(kProcess, small_net(), reward,
                                      rtb::Config{.batch_size = 8, .threads = 1, .block_rows = 1'000'000'000'000});
  CHECK(std::isfinite(wide.step().loss));
  CHECK_THROWS_AS(wide.sample(1'000'000'000'000, 1), rtb::MemoryLimitError);
  CHECK_THROWS_AS(rtb::sample_end_states(kProcess, wide.prior(), 1'000'000'000'000, 1), rtb::MemoryLimitError);
  CHECK_THROWS_WITH_AS(rtb::RelativeTrajectoryBalance(kProcess, small_net(), reward, rtb::Config{.threads = 100000}),
                       doctest::Contains("threads must be in [0, 1024]"), rtb::InvalidArgumentError);
  rtb::Model model(small_net());
  CHECK_THROWS_AS(rtb::fit_prior(kProcess, model, [](rtb::MatrixView<S> x, std::int64_t) { x.setZero(); },
                                 rtb::PriorFitConfig{.batch_size = 1'000'000'000'000, .iterations = 1}),
                  rtb::MemoryLimitError);
}

TEST_CASE("non-finite settings are rejected before any work") {
  auto reward = rtb::make_reward([](std::span<const S>) { return 0.0f; });
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  auto rejects = [&](rtb::Config c) {
    CHECK_THROWS_AS(rtb::RelativeTrajectoryBalance(kProcess, small_net(), reward, c), rtb::InvalidArgumentError);
  };
  rejects({.loss_cutoff = nan});
  rejects({.max_grad_norm = nan});
  rejects({.learning_rate = inf});
  rejects({.learning_rate = 1e300});  // finite in double, infinite in float
  rejects({.log_z_learning_rate = nan});
  rejects({.kl_weight = nan});
  rejects({.decay = {.start = 0, .end = 10, .final_ratio = nan}});
  rejects({.exploration = {.initial = nan}});
  rejects({.exploration = {.initial = -0.5}});
  rtb::Model model(small_net());
  CHECK_THROWS_AS(rtb::fit_prior(kProcess, model, [](rtb::MatrixView<S> x, std::int64_t) { x.setZero(); },
                                 rtb::PriorFitConfig{.learning_rate = nan}),
                  rtb::InvalidArgumentError);
}

TEST_CASE("a reward too large for the scalar type is an error, not a loss of inf") {
  rtb::RelativeTrajectoryBalance trainer(kProcess, small_net(), rtb::make_reward([](std::span<const S>) { return 1e30f; }),
                                         rtb::Config{.batch_size = 8, .threads = 1});
  const auto before = params_of(trainer);
  CHECK_THROWS_WITH_AS(trainer.step(), doctest::Contains("reward's scale"), rtb::NonFiniteError);
  CHECK(params_of(trainer) == before);
  CHECK_THROWS_AS(trainer.set_learned_log_z(std::numeric_limits<S>::quiet_NaN()), rtb::InvalidArgumentError);
}

TEST_CASE("a checkpoint with a non-finite log Z or a negative second moment is rejected") {
  const std::string path = (std::filesystem::temp_directory_path() / "rtb_hardening.ckpt").string();
  auto reward = rtb::make_reward([](std::span<const S> x) { return -x[0] * x[0]; });
  rtb::RelativeTrajectoryBalance a(kProcess, small_net(), reward, config(1));
  a.train(2);
  a.optimizer().second_moment()[3] = -1.0f;
  a.save(path);
  rtb::RelativeTrajectoryBalance b(kProcess, small_net(), reward, config(1));
  const auto before = params_of(b);
  CHECK_THROWS_WITH_AS(b.load(path), doctest::Contains("adam.v"), rtb::CheckpointError);
  a.optimizer().second_moment()[3] = 0.0f;
  a.log_z_optimizer().first_moment()[0] = std::numeric_limits<S>::quiet_NaN();
  a.save(path);
  CHECK_THROWS_WITH_AS(b.load(path), doctest::Contains("log_z_adam.m"), rtb::CheckpointError);
  CHECK(params_of(b) == before);
  std::filesystem::remove(path);
}

TEST_CASE("masked data and conditions with bad tokens are typed errors, not out-of-bounds reads") {
  using MP = rtb::MaskedCategoricalProcess<S>;
  const MP process({.length = 4, .vocab = 3, .num_steps = 3, .generated = {0, 1, 1, 1}});
  rtb::Model net(rtb::TokenMlp<S>({.length = 4, .vocab = 3, .hidden = 8, .seed = 1}));
  for (std::int32_t bad : {-100000, 3, 6}) {  // negative, MASK, V + 3
    CAPTURE(bad);
    CHECK_THROWS_AS(rtb::fit_prior(process, net,
                                   [&](rtb::MatrixView<std::int32_t> x, rtb::MatrixView<std::int32_t> c, std::int64_t) {
                                     x.setZero();
                                     c.setZero();
                                     x(1, 2) = bad;
                                   },
                                   rtb::PriorFitConfig{.batch_size = 4, .iterations = 1}),
                    rtb::InvalidArgumentError);
  }
  // a condition (the fixed column's value) with a bad token, and too few condition rows
  auto zero = rtb::make_reward([](std::span<const std::int32_t>) { return 0.0f; });
  rtb::RelativeTrajectoryBalance trainer(process, net, zero, rtb::Config{.batch_size = 32, .threads = 2, .block_rows = 8});
  rtb::RowMatrix<std::int32_t> c = rtb::RowMatrix<std::int32_t>::Zero(32, 1);
  c(5, 0) = -100000;
  CHECK_THROWS_AS(trainer.step(rtb::ConstMatrixView<std::int32_t>(c.data(), 32, 1)), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(trainer.step(rtb::ConstMatrixView<std::int32_t>(c.data(), 4, 1)), rtb::ShapeError);
  c(5, 0) = 1;
  CHECK(std::isfinite(trainer.step(rtb::ConstMatrixView<std::int32_t>(c.data(), 32, 1)).loss));
}

TEST_CASE("the trainer computes with subnormals flushed on every thread and gives the caller's mode back, also on a throw") {
  using Control = rtb::detail::FloatControl;
  std::fenv_t saved;
  std::fegetenv(&saved);
  for (bool flush : {true, false}) {
    for (rtb::Index threads : {1, 2}) {
      CAPTURE(flush);
      CAPTURE(threads);
      // the caller's own mode: rounding toward zero, FTZ/DAZ off
      std::fesetround(FE_TOWARDZERO);
      Control::set(Control::get() & ~Control::kFlush);
      const Control::Word before = Control::get() & ~Control::kFlags;
      auto same_mode = [&] { return (Control::get() & ~Control::kFlags) == before; };
      Flaky net{small_net()};
      net.mode->mode = before;
      auto cfg = config(threads);
      cfg.flush_denormals = flush;
      rtb::RelativeTrajectoryBalance trainer(kProcess, net, square_reward(), cfg);
      reward_flushed = true;
      trainer.train(2);
      CHECK(same_mode());
      CHECK(!reward_flushed);  // the reward is the user's code: the user's mode
      const ModeRecord& seen = *net.mode;
      CHECK(seen.calls.load() > 0);
      CHECK(seen.flushed.load() == (flush && Control::supported ? seen.calls.load() : 0));  // every forward, every thread
      CHECK(seen.other_mode.load() == 0);  // the workers compute in the caller's rounding mode
      WARN(seen.threads.size() == static_cast<std::size_t>(threads));  // likely, not certain: the pool test makes sure
      trainer.sample(16, 1);
      trainer.evaluate(16, 2);
      CHECK(same_mode());
      CHECK(seen.flushed.load() == (flush && Control::supported ? seen.calls.load() : 0));
      net.countdown->store(threads == 1 ? 5 : 40);  // a forward throws (during back-propagation, on a worker maybe)
      CHECK_THROWS_AS(trainer.step(), Boom);
      CHECK(same_mode());
      net.countdown->store(3);
      CHECK_THROWS_AS(trainer.sample(40, 1), Boom);
      CHECK(same_mode());
      CHECK_THROWS_AS(trainer.sample(0, 1), rtb::EmptyBatchError);
      CHECK(same_mode());
    }
  }
  std::fesetenv(&saved);
}

}  // namespace hardening_test
