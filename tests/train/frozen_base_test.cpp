// SPDX-License-Identifier: Apache-2.0
// Parameters outside the nets: a wrapper shares a frozen base and trains only tensors of its own
// (the LoRA case), shown with the smallest such wrapper, a trainable per-output scale over a frozen
// Mlp: out = s ⊙ base(x, t).

#include <doctest/doctest.h>

#include <cmath>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"

namespace {

template <rtb::Denoiser N>
struct OutputScale {
  using Base = N;
  using Scalar = typename N::Scalar;
  using Value = typename N::Value;
  using S = Scalar;
  struct Context {
    typename N::Context base;
    rtb::RowMatrix<S> out;  ///< the base's output of the last forward (backward needs it)
    rtb::Index rows = 0;
  };

  explicit OutputScale(N base) : base_(std::move(base)) { layout_.add("scale", {base_.output_dim()}); }

  const N& base() const { return base_; }
  rtb::Index input_dim() const { return base_.input_dim(); }
  rtb::Index output_dim() const { return base_.output_dim(); }
  rtb::Index num_params() const { return layout_.size(); }
  const rtb::ParameterLayout& layout() const { return layout_; }
  void initialize(std::span<S> p) const { std::fill(p.begin(), p.end(), S(1)); }  // starts as the base exactly
  Context make_context(rtb::Index rows) const { return {base_.make_context(rows), rtb::RowMatrix<S>(rows, output_dim())}; }

  void inference(const rtb::Weights<S>& w, const rtb::step_of_t<N>& s, rtb::MatrixView<S> out, Context& c) const {
    const rtb::Index n = s.rows();
    rtb::MatrixView<S> base_out(c.out.data(), n, output_dim());
    base_.inference(rtb::Weights<S>{w.frozen}, s, base_out, c.base);  // frozen: never a context for backward
    for (rtb::Index r = 0; r < n; ++r)
      for (rtb::Index j = 0; j < output_dim(); ++j) out(r, j) = w.params[static_cast<std::size_t>(j)] * base_out(r, j);
    c.rows = n;
  }
  void forward(const rtb::Weights<S>& w, const rtb::step_of_t<N>& s, rtb::MatrixView<S> out, Context& c) const {
    inference(w, s, out, c);
  }
  /// ∂L/∂s_j = Σ_r d_out(r, j)·base(x_r)_j: the scale's gradient only, nothing of the base's.
  void backward(const rtb::Weights<S>&, Context& c, rtb::ConstMatrixView<S> d_out, std::span<S> grad,
                rtb::GradientMode mode) const {
    if (mode == rtb::GradientMode::Overwrite) std::fill(grad.begin(), grad.end(), S(0));
    for (rtb::Index r = 0; r < c.rows; ++r)
      for (rtb::Index j = 0; j < output_dim(); ++j) grad[static_cast<std::size_t>(j)] += d_out(r, j) * c.out(r, j);
  }

 private:
  N base_;
  rtb::ParameterLayout layout_;
};

using S = double;
using Base = rtb::Mlp<S>;
using Scaled = OutputScale<Base>;
static_assert(rtb::Denoiser<Scaled>);
static_assert(rtb::WrapsFrozenBase<Scaled>);
static_assert(!rtb::WrapsFrozenBase<Base>);
static_assert(std::is_same_v<rtb::prior_net_t<Scaled>, Base>);

Base base_net() {
  return Base({.input_dim = 2, .hidden = {16, 16}, .output_dim = 2, .time_harmonics = 3, .seed = 4,
               .zero_init_last = false});  // a nonzero drift, so the scale matters
}

}  // namespace

TEST_CASE("a wrapper model shares its frozen base and owns only its own tensors") {
  const rtb::Model<Base> prior(base_net());
  const rtb::Model<Scaled> post(Scaled(prior.net()), prior);
  CHECK(post.num_params() == 2);  // only the scale is trained, counted, checkpointed
  CHECK(post.weights().frozen.size() == static_cast<std::size_t>(prior.num_params()));
  // starts as the base exactly
  rtb::RowMatrix<S> x(5, 2), a(5, 2), b(5, 2);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), 5, 2), 3);
  auto cp = prior.make_context(5);
  auto cq = post.make_context(5);
  const auto s = rtb_test::step_at(rtb::ConstMatrixView<S>(x.data(), 5, 2), 0.4);
  prior.inference(s, rtb::MatrixView<S>(a.data(), 5, 2), cp);
  post.inference(s, rtb::MatrixView<S>(b.data(), 5, 2), cq);
  CHECK(a == b);
  // the scale's gradient against finite differences
  rtb::Model<Scaled> probe = post;
  probe.params()[0] = 0.8;
  probe.params()[1] = -1.3;
  rtb_test::check_model_gradient<Scaled, S>(probe, rtb::ConstMatrixView<S>(x.data(), 5, 2), 0.7, 11);
}

TEST_CASE("RTB through a wrapper: the prior is the shared base, only the wrapper's tensors move") {
  // With log r ≡ 0 the target is the prior itself, so in the family s ⊙ base the optimum is s = 1
  // exactly; start the posterior away from it and RTB must bring it back, with log Z → 0.
  const rtb::GaussianProcess<S> process(2, 10, 1.0);
  auto base = std::make_shared<const rtb::Model<Base>>(base_net());
  rtb::Model<Scaled> post(Scaled(base->net()), base);
  post.params()[0] = 0.6;
  post.params()[1] = 1.5;
  const std::vector<S> base_before(base->params().begin(), base->params().end());
  rtb::RelativeTrajectoryBalance trainer(process, post, rtb::make_reward([](std::span<const S>) { return 0.0; }),
                                         rtb::Config{.batch_size = 128,
                                                     .learning_rate = 2e-2,
                                                     .decay = {.start = 200, .end = 400, .final_ratio = 0.1},
                                                     .exploration = rtb::ExplorationSchedule::none(),
                                                     .threads = 2,
                                                     .seed = 7});
  CHECK(trainer.prior().params().data() == base->params().data());  // shared, not copied
  CHECK(trainer.posterior().weights().frozen.data() == base->params().data());
  CHECK(trainer.optimizer().size() == 2);
  trainer.train(400);
  CHECK(trainer.posterior().params()[0] == doctest::Approx(1.0).epsilon(0.02));
  CHECK(trainer.posterior().params()[1] == doctest::Approx(1.0).epsilon(0.02));
  CHECK(std::fabs(trainer.learned_log_z()) < 0.02);
  CHECK(std::equal(base_before.begin(), base_before.end(), base->params().begin()));  // the base never moved
  // a checkpoint holds the wrapper's two values, and resumes
  const std::string path = (std::filesystem::temp_directory_path() / "rtb_wrapper_test.ckpt").string();
  trainer.save(path);
  rtb::RelativeTrajectoryBalance resumed(process, rtb::Model<Scaled>(Scaled(base->net()), base),
                                         rtb::make_reward([](std::span<const S>) { return 0.0; }), trainer.config());
  resumed.load(path);
  CHECK(resumed.posterior().params()[0] == trainer.posterior().params()[0]);
  CHECK(resumed.iteration() == 400);
  std::filesystem::remove(path);
}
