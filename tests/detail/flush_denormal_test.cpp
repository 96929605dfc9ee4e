// SPDX-License-Identifier: Apache-2.0
// detail/flush_denormal.hpp: a guard flushes subnormals (FTZ/DAZ) for its scope and gives the
// caller's mode back, also on a throw; the outermost guard decides; user code inside runs in the
// caller's mode; the pool's workers compute in the caller's mode; rtb's nets flush in their entry
// points. The trainer's side is in train/hardening_test.cpp and train/trainer_test.cpp.

#include <doctest/doctest.h>

#include <atomic>
#include <cfenv>
#include <chrono>
#include <mutex>
#include <rtb/net/lora.hpp>
#include <rtb/rtb.hpp>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using rtb::Index;
using Control = rtb::detail::FloatControl;
using rtb::detail::ScopedFlushDenormal;

/// The thread in a chosen caller's mode for the scope: a rounding mode, flushing off or on, no
/// exception flags raised; the whole floating-point environment back after.
class CallerMode {
 public:
  explicit CallerMode(int rounding, bool flush = false) {
    std::fegetenv(&saved_);
    std::fesetround(rounding);
    const Control::Word w = Control::get() & ~Control::kFlags;
    Control::set(flush ? w | Control::kFlush : w & ~Control::kFlush);
  }
  ~CallerMode() { std::fesetenv(&saved_); }
  /// The control bits (the register less its flags): what a guard must give back.
  static Control::Word control() { return Control::get() & ~Control::kFlags; }

 private:
  std::fenv_t saved_;
};

/// 1e-30·1e-10 = 1e-40, subnormal in float: 0 with FTZ. `volatile` keeps it at run time.
float subnormal_product() {
  volatile float a = 1e-30f, b = 1e-10f;
  return a * b;
}

constexpr int kRoundings[] = {FE_TONEAREST, FE_TOWARDZERO, FE_UPWARD, FE_DOWNWARD};

}  // namespace

TEST_CASE("a guard flushes subnormals in its scope and gives back the caller's control bits, also on a throw") {
  if (!Control::supported) MESSAGE("no flush-to-zero mode on this target: the guard compiles to nothing");
  for (int rounding : kRoundings) {
    for (bool flush : {false, true}) {
      CAPTURE(rounding);
      CAPTURE(flush);
      const CallerMode mode(rounding, flush);
      const Control::Word before = CallerMode::control();
      if (Control::supported) CHECK((subnormal_product() == 0.0f) == flush);
      {
        const ScopedFlushDenormal guard;
        CHECK(ScopedFlushDenormal::active() == Control::supported);
        if (Control::supported) CHECK(subnormal_product() == 0.0f);
        CHECK((CallerMode::control() & ~Control::kFlush) == (before & ~Control::kFlush));  // only FTZ/DAZ change
      }
      CHECK(CallerMode::control() == before);
      try {
        const ScopedFlushDenormal guard;
        throw std::runtime_error("thrown inside");
      } catch (const std::runtime_error&) {
        CHECK(CallerMode::control() == before);
      }
    }
  }
}

TEST_CASE("the exception flags a guarded computation raises are kept, as feupdateenv keeps them") {
  const CallerMode mode(FE_TONEAREST);
  std::feclearexcept(FE_ALL_EXCEPT);
  {
    const ScopedFlushDenormal guard;
    volatile float one = 1.0f, three = 3.0f;
    volatile float third = one / three;  // inexact
    (void)third;
  }
  CHECK(std::fetestexcept(FE_INEXACT) != 0);
}

TEST_CASE("the outermost guard decides; user code inside runs in the caller's mode and its rtb calls decide afresh") {
  if (!Control::supported) return;
  const CallerMode mode(FE_UPWARD);
  const Control::Word before = CallerMode::control();
  {
    const ScopedFlushDenormal off(false);  // Config::flush_denormals = false
    CHECK(!ScopedFlushDenormal::active());
    {
      const ScopedFlushDenormal inner;  // a net's entry point inside the trainer
      CHECK(!ScopedFlushDenormal::active());
      CHECK(subnormal_product() != 0.0f);
    }
  }
  {
    const ScopedFlushDenormal on;
    {
      const ScopedFlushDenormal inner(false);  // inside a flushing call, a non-flushing one has no say
      CHECK(ScopedFlushDenormal::active());
    }
    CHECK(ScopedFlushDenormal::active());
    {
      const rtb::detail::ScopedCallerFloatMode user;  // a reward, a callback
      CHECK(CallerMode::control() == before);
      CHECK(subnormal_product() != 0.0f);
      {
        const ScopedFlushDenormal from_user;  // the reward evaluates an rtb net: it flushes, as from outside
        CHECK(ScopedFlushDenormal::active());
      }
      CHECK(CallerMode::control() == before);
    }
    CHECK(ScopedFlushDenormal::active());
  }
  CHECK(CallerMode::control() == before);
  // rewards and callbacks are called through these two, inside the trainer's guard
  {
    const ScopedFlushDenormal on;
    bool reward_flushed = true, callback_flushed = true;
    auto reward = rtb::make_reward([&](std::span<const float>) {
      reward_flushed = ScopedFlushDenormal::active();
      return 0.0f;
    });
    const float x[2] = {0, 0};
    float out[1];
    rtb::detail::call_log_reward(reward, rtb::ConstMatrixView<float>(x, 1, 2), rtb::ConstMatrixView<float>(nullptr, 1, 0),
                                 std::span<float>(out));
    int arg = 0;
    auto callback = [&](int&) { callback_flushed = ScopedFlushDenormal::active(); };
    rtb::detail::call_callbacks(std::tuple<int&>(arg), callback);
    CHECK(!reward_flushed);
    CHECK(!callback_flushed);
    CHECK(ScopedFlushDenormal::active());
  }
}

TEST_CASE("the pool's workers run a call's tasks in the caller's mode, and take the next caller's afresh") {
  rtb::detail::ThreadPool pool(2);
  struct Seen {
    std::thread::id thread;
    Control::Word control;  // all of the mode (x87's, which glibc's fegetround reads, is not SSE's)
  };
  std::vector<Seen> seen(16);
  std::atomic<int> arrived{0};
  auto task = [&](Index i, Index) {
    if (i < 2) {  // tasks 0 and 1 wait for each other: both threads take part
      arrived.fetch_add(1);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (arrived.load() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    }
    seen[static_cast<std::size_t>(i)] = {std::this_thread::get_id(), CallerMode::control()};
  };
  auto check = [&](Control::Word control) {
    std::set<std::thread::id> threads;
    for (const Seen& s : seen) {
      threads.insert(s.thread);
      CHECK(s.control == control);
    }
    CHECK(threads.size() == 2);
  };
  for (int rounding : {FE_UPWARD, FE_TOWARDZERO}) {
    const CallerMode mode(rounding);
    const Control::Word before = CallerMode::control();
    {
      const ScopedFlushDenormal guard;
      arrived = 0;
      pool.parallel_for(static_cast<Index>(seen.size()), task);
      check(before | Control::kFlush);
    }
    arrived = 0;
    pool.parallel_for(static_cast<Index>(seen.size()), task);  // unguarded: the workers flushed last time, not now
    check(before);
    {
      const ScopedFlushDenormal off(false);  // and inner guards on the workers defer to the caller's choice
      arrived = 0;
      pool.parallel_for(static_cast<Index>(seen.size()), [&](Index i, Index w) {
        const ScopedFlushDenormal inner;
        task(i, w);
      });
      check(before);
    }
    {
      const ScopedFlushDenormal guard;
      CHECK_THROWS_AS(pool.parallel_for(4, [](Index i, Index) {
        if (i == 3) throw std::runtime_error("task 3");
      }),
                      std::runtime_error);
    }
    CHECK(CallerMode::control() == before);
  }
}

namespace {

using S = float;
using Net = rtb::Mlp<S>;

/// Weights 1 and biases 0 with no time features: an input of 1e-39 stays subnormal through every
/// layer (GELU(v) ≈ v/2 near 0), so the output is exactly 0 when flushed and tiny but not 0 when not.
rtb::Model<Net> subnormal_model() {
  Net net({.input_dim = 2, .hidden = {4, 4}, .output_dim = 2, .time_harmonics = 0, .seed = 1, .zero_init_last = false});
  std::vector<S> p(static_cast<std::size_t>(net.num_params()), S(0));
  for (const rtb::ParameterTensor& t : net.layout().tensors())
    if (t.name.ends_with("weight")) std::fill_n(p.begin() + t.offset, t.size, S(1));
  return rtb::Model<Net>(net, p);
}

/// A user's denoiser: records whether it ran flushed, throws on request.
struct Recording {
  using Scalar = S;
  using Value = S;
  struct Context {};
  rtb::ParameterLayout layout_ = [] {
    rtb::ParameterLayout l;
    l.add("a", {1});
    return l;
  }();
  bool* flushed;
  bool throws = false;
  Index input_dim() const { return 1; }
  Index output_dim() const { return 1; }
  Index num_params() const { return 1; }
  const rtb::ParameterLayout& layout() const { return layout_; }
  void initialize(std::span<S> p) const { p[0] = 1; }
  Context make_context(Index) const { return {}; }
  void inference(const rtb::Weights<S>&, const rtb::Step<S>&, rtb::MatrixView<S> out, Context&) const {
    *flushed = ScopedFlushDenormal::active();
    if (throws) throw rtb::ShapeError("Recording: asked to throw");
    out.setZero();
  }
  void forward(const rtb::Weights<S>& w, const rtb::Step<S>& s, rtb::MatrixView<S> out, Context& c) const {
    inference(w, s, out, c);
  }
  void backward(const rtb::Weights<S>&, Context&, rtb::ConstMatrixView<S>, std::span<S>, rtb::GradientMode) const {
    *flushed = ScopedFlushDenormal::active();
    if (throws) throw rtb::ShapeError("Recording: asked to throw");
  }
};
static_assert(rtb::Denoiser<Recording>);

}  // namespace

TEST_CASE("rtb's nets and Model flush in their entry points and restore the caller's mode, also when they throw") {
  const CallerMode mode(FE_TOWARDZERO);
  const Control::Word before = CallerMode::control();
  const rtb::Model<Net> model = subnormal_model();
  rtb::RowMatrix<S> x = rtb::RowMatrix<S>::Constant(3, 2, 1e-39f), out(3, 2);
  const rtb::Step<S> step{rtb::ConstMatrixView<S>(x.data(), 3, 2)};
  auto ctx = model.make_context(3);
  auto flushed_output = [&](auto&& call) {
    out.setConstant(-1);
    call();
    CHECK(CallerMode::control() == before);
    return (out.array() == 0).all();
  };
  const rtb::MatrixView<S> o(out.data(), 3, 2);
  if (Control::supported) {
    CHECK(flushed_output([&] { model.inference(step, o, ctx); }));
    CHECK(flushed_output([&] { model.forward(step, o, ctx); }));
    CHECK(flushed_output([&] { model.net().inference(model.weights(), step, o, ctx); }));
    CHECK(flushed_output([&] { model.net().forward(model.weights(), step, o, ctx); }));
    CHECK(!flushed_output([&] {  // the same call in the caller's mode: the subnormals are there to flush
      const ScopedFlushDenormal off(false);
      model.inference(step, o, ctx);
    }));
  }
  std::vector<S> grad(static_cast<std::size_t>(model.num_params()));
  const rtb::RowMatrix<S> d_out = rtb::RowMatrix<S>::Constant(3, 2, 1e-20f);
  model.forward(step, o, ctx);
  model.backward(ctx, rtb::ConstMatrixView<S>(d_out.data(), 3, 2), std::span<S>(grad), rtb::GradientMode::Overwrite);
  CHECK(CallerMode::control() == before);

  // Lora's own entry points; its forward throws on a frozen base of the wrong size
  using Adapted = rtb::Lora<Net>;
  const rtb::Model<Adapted> adapted(Adapted(model.net(), {.rank = 1}), model);
  auto actx = adapted.make_context(3);
  if (Control::supported) CHECK(flushed_output([&] { adapted.net().forward(adapted.weights(), step, o, actx); }));
  const std::vector<S> too_few(3, S(0));
  CHECK_THROWS_AS(adapted.net().forward(rtb::Weights<S>{adapted.params(), too_few}, step, o, actx), rtb::InvalidArgumentError);
  CHECK(CallerMode::control() == before);
  CHECK_THROWS_AS(adapted.net().inference(rtb::Weights<S>{adapted.params(), too_few}, step, o, actx), rtb::InvalidArgumentError);
  CHECK(CallerMode::control() == before);

  // a user's net through Model: run flushed, the caller's mode back after a throw
  bool flushed = false;
  rtb::Model<Recording> user(Recording{.flushed = &flushed});
  Recording::Context rctx;
  const S one[1] = {1};
  S one_out[1];
  const rtb::Step<S> one_step{rtb::ConstMatrixView<S>(one, 1, 1)};
  user.forward(one_step, rtb::MatrixView<S>(one_out, 1, 1), rctx);
  CHECK(flushed == Control::supported);
  user.net().throws = true;
  flushed = false;
  CHECK_THROWS_AS(user.forward(one_step, rtb::MatrixView<S>(one_out, 1, 1), rctx), rtb::ShapeError);
  CHECK(flushed == Control::supported);
  CHECK(CallerMode::control() == before);
  S g[1];
  CHECK_THROWS_AS(user.backward(rctx, rtb::ConstMatrixView<S>(one, 1, 1), std::span<S>(g), rtb::GradientMode::Overwrite),
                  rtb::ShapeError);
  CHECK(CallerMode::control() == before);
}
