// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/concepts/denoiser.hpp>
#include <rtb/net/token_mlp.hpp>

#include "../test_util.hpp"

static_assert(rtb::Denoiser<rtb::TokenMlp<float>>);

namespace {
using Tok = rtb::RowMatrix<std::int32_t>;

template <class Net>
void check_token_gradient(rtb::Model<Net>& net, const Tok& x, const Tok& c, double t, std::uint64_t seed) {
  rtb_test::check_model_gradient<Net, std::int32_t>(net, rtb::ConstMatrixView<std::int32_t>(x.data(), x.rows(), x.cols()),
                                                    t, seed, rtb::ConstMatrixView<std::int32_t>(c.data(), c.rows(), c.cols()));
}
}  // namespace

TEST_CASE("TokenMlp backward matches finite differences: embedding, condition path, time, trunk, head") {
  rtb::Model net(rtb::TokenMlp<double>({.length = 5, .vocab = 3, .embed = 3, .hidden = 6, .num_layers = 1,
                                         .harmonics = 2, .condition = {1, 0}, .seed = 2, .zero_init_last = false}));
  // give the zero-initialised condition projection values so its gradient path is exercised
  const auto* c = net.layout().find("condition.weight");
  REQUIRE(c != nullptr);
  for (rtb::Index i = 0; i < c->size; ++i) net.params()[static_cast<std::size_t>(c->offset + i)] = 0.1 * ((i % 7) - 3);
  Tok x(4, 5), cond(4, 2);
  x << 3, 0, 1, 2, 2, 1, 3, 3, 0, 1, 0, 0, 2, 1, 1, 2, 1, 3, 0, 0;  // token 3 = MASK; repeated tokens
  cond << 2, 0, 1, 1, 0, 2, 2, 2;
  check_token_gradient(net, x, cond, 0.4, 5);
  rtb::Model plain(rtb::TokenMlp<double>({.length = 3, .vocab = 2, .embed = 2, .hidden = 5, .num_layers = 0,
                                           .harmonics = 1, .seed = 1, .zero_init_last = false}));
  Tok y(2, 3), none(2, 0);
  y << 0, 1, 2, 2, 2, 0;
  check_token_gradient(plain, y, none, 0.9, 6);
}

TEST_CASE("the condition path starts at zero so a fresh net ignores conditions exactly") {
  rtb::Model net(rtb::TokenMlp<float>({.length = 3, .vocab = 3, .hidden = 16, .condition = {0}, .seed = 3,
                                        .zero_init_last = false}));
  CHECK(net.net().condition_dim() == 1);
  Tok x(1, 3), a(1, 1), b(1, 1);
  x << 0, 1, 3;
  a << 2;
  b << 0;  // differs only in the condition
  rtb::RowMatrix<float> oa(1, 9), ob(1, 9);
  auto ctx = net.make_context(1);
  const rtb::ConstMatrixView<std::int32_t> xv(x.data(), 1, 3);
  net.inference(rtb_test::step_at(xv, 0.5f, rtb::ConstMatrixView<std::int32_t>(a.data(), 1, 1)),
                rtb::MatrixView<float>(oa.data(), 1, 9), ctx);
  net.inference(rtb_test::step_at(xv, 0.5f, rtb::ConstMatrixView<std::int32_t>(b.data(), 1, 1)),
                rtb::MatrixView<float>(ob.data(), 1, 9), ctx);
  CHECK((oa - ob).cwiseAbs().maxCoeff() == 0.0f);
  CHECK(net.layout().find("embedding.weight")->shape == std::vector<rtb::Index>{4, 16});
  CHECK(net.layout().find("output.weight")->shape == std::vector<rtb::Index>{9, 16});
  CHECK_THROWS_AS(rtb::TokenMlp<float>({.length = 3, .vocab = 2, .condition = {1, 1}}), rtb::InvalidArgumentError);
}
