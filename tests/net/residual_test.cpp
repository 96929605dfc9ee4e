// SPDX-License-Identifier: Apache-2.0
// Residual: base(frozen) + residual(trained). A fresh one (zero last layer) is the base bit for
// bit; with random residual weights the output is the sum of the two nets run apart, the
// gradients of the residual's tensors match central differences, and the trainer's prior is the
// base, shared rather than copied.

#include <doctest/doctest.h>

#include <memory>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"

namespace {

using rtb::Index;
using S = double;
using Base = rtb::Mlp<S>;
using Net = rtb::Residual<Base, rtb::Mlp<S>>;
static_assert(rtb::Denoiser<Net>);
static_assert(rtb::WrapsFrozenBase<Net>);
static_assert(std::is_same_v<rtb::prior_net_t<Net>, Base>);

Base mlp(Index condition_dim, std::uint64_t seed, bool zero_last) {
  return Base({.input_dim = 3, .hidden = {8, 6}, .output_dim = 3, .time_harmonics = 2, .condition_dim = condition_dim,
               .seed = seed, .zero_init_last = zero_last});
}

struct Batch {
  rtb::RowMatrix<S> x{5, 3}, c{5, 2};
  Batch() {
    rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), 5, 3), 1);
    rtb_test::fill_normal<S>(rtb::MatrixView<S>(c.data(), 5, 2), 2);
  }
  rtb::ConstMatrixView<S> xv() const { return {x.data(), 5, 3}; }
  rtb::ConstMatrixView<S> cv() const { return {c.data(), 5, 2}; }
};

rtb::RowMatrix<S> run(const auto& model, const Batch& b, double t) {
  rtb::RowMatrix<S> out(5, 3);
  auto ctx = model.make_context(5);
  model.inference(rtb_test::step_at<S, double, S>(b.xv(), t, b.cv()), rtb::MatrixView<S>(out.data(), 5, 3), ctx);
  return out;
}

}  // namespace

TEST_CASE("Residual: fresh it is the base bit for bit; trained it is base + residual run apart") {
  const auto base = std::make_shared<const rtb::Model<Base>>(mlp(2, 4, false));
  rtb::Model<Net> fresh(Net(base->net(), mlp(1, 9, true)), base);
  CHECK(fresh.num_params() == mlp(1, 9, true).num_params());  // only the residual's tensors
  CHECK(fresh.net().condition_dim() == 2);                    // the wider of the two nets'
  CHECK(fresh.base().get() == base.get());                     // shared, not copied
  const Batch b;
  for (double t : {0.1, 0.7}) CHECK((run(fresh, b, t) - run(*base, b, t)).cwiseAbs().maxCoeff() == 0.0);

  const rtb::Model<rtb::Mlp<S>> res(mlp(1, 9, false));
  rtb::Model<Net> trained(Net(base->net(), res.net()), base);
  std::copy(res.params().begin(), res.params().end(), trained.params().begin());
  const rtb::RowMatrix<S> sum = run(*base, b, 0.3) + run(res, b, 0.3);
  CHECK((run(trained, b, 0.3) - sum).cwiseAbs().maxCoeff() < 1e-14);
}

TEST_CASE("Residual gradients match central differences") {
  const auto base = std::make_shared<const rtb::Model<Base>>(mlp(2, 4, false));
  rtb::Model<Net> model(Net(base->net(), mlp(2, 9, false)), base);
  const Batch b;
  rtb_test::check_model_gradient<Net, S>(model, b.xv(), 0.4, 3, b.cv());
}

TEST_CASE("Residual rejects mismatched widths and missing base weights with typed errors") {
  const Base wide({.input_dim = 3, .hidden = {4}, .output_dim = 2, .time_harmonics = 0});
  CHECK_THROWS_AS(Net(mlp(0, 1, false), wide), rtb::ShapeError);
  const Net net(mlp(0, 1, false), mlp(0, 2, false));
  const rtb::Model<rtb::Mlp<S>> res(mlp(0, 2, false));
  auto ctx = net.make_context(5);
  const Batch b;
  rtb::RowMatrix<S> out(5, 3);
  CHECK_THROWS_AS(net.inference(rtb::Weights<S>{res.params()}, rtb_test::step_at<S, double, S>(b.xv(), 0.2, b.cv()),
                                rtb::MatrixView<S>(out.data(), 5, 3), ctx),
                  rtb::InvalidArgumentError);
}
