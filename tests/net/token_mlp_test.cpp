// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/concepts/denoiser.hpp>
#include <rtb/net/token_mlp.hpp>

#include "../test_util.hpp"

static_assert(rtb::Denoiser<rtb::TokenMlp<float>>);

namespace {
using Tok = rtb::RowMatrix<std::int32_t>;

template <class Net>
void check_token_gradient(Net net, const Tok& x, double t, std::uint64_t seed) {
  const auto rows = x.rows();
  rtb::RowMatrix<double> d_out(rows, net.output_dim()), out(rows, net.output_dim());
  rtb_test::fill_normal<double>(rtb::MatrixView<double>(d_out.data(), rows, d_out.cols()), seed);
  auto ctx = net.make_context(rows);
  const rtb::ConstMatrixView<std::int32_t> xv(x.data(), rows, x.cols());
  rtb::MatrixView<double> ov(out.data(), rows, out.cols());
  auto loss = [&] {
    net.inference(xv, t, ov, ctx);
    return (out.array() * d_out.array()).sum();
  };
  net.forward(xv, t, ov, ctx);
  std::vector<double> analytic(static_cast<std::size_t>(net.num_params()));
  net.backward(ctx, rtb::ConstMatrixView<double>(d_out.data(), rows, d_out.cols()), std::span<double>(analytic),
               rtb::GradientMode::Overwrite);
  CHECK(rtb_test::relative_error(analytic, rtb_test::numeric_gradient(net.params(), loss)) < 1e-6);
}
}  // namespace

TEST_CASE("TokenMlp backward matches finite differences: embedding, condition path, time, trunk, head") {
  rtb::TokenMlp<double> net({.length = 5, .vocab = 3, .embed = 3, .hidden = 6, .num_layers = 1, .harmonics = 2,
                             .condition = {3, 4}, .seed = 2, .zero_init_last = false});
  // give the zero-initialised condition projection values so its gradient path is exercised
  const auto* c = net.layout().find("condition.weight");
  REQUIRE(c != nullptr);
  for (rtb::Index i = 0; i < c->size; ++i) net.params()[static_cast<std::size_t>(c->offset + i)] = 0.1 * ((i % 7) - 3);
  Tok x(4, 5);
  x << 3, 0, 1, 2, 2, 1, 3, 3, 0, 1, 0, 0, 2, 1, 1, 2, 1, 3, 0, 0;  // token 3 = MASK; repeated tokens
  check_token_gradient(net, x, 0.4, 5);
  rtb::TokenMlp<double> plain({.length = 3, .vocab = 2, .embed = 2, .hidden = 5, .num_layers = 0, .harmonics = 1,
                               .seed = 1, .zero_init_last = false});
  Tok y(2, 3);
  y << 0, 1, 2, 2, 2, 0;
  check_token_gradient(plain, y, 0.9, 6);
}

TEST_CASE("the condition path starts at zero so a fresh net ignores condition columns exactly") {
  rtb::TokenMlp<float> net({.length = 4, .vocab = 3, .hidden = 16, .condition = {3}, .seed = 3, .zero_init_last = false});
  Tok a(1, 4), b(1, 4);
  a << 0, 1, 3, 2;
  b << 0, 1, 3, 0;  // differs only in the condition column
  rtb::RowMatrix<float> oa(1, 12), ob(1, 12);
  auto ctx = net.make_context(1);
  net.inference(rtb::ConstMatrixView<std::int32_t>(a.data(), 1, 4), 0.5f, rtb::MatrixView<float>(oa.data(), 1, 12), ctx);
  net.inference(rtb::ConstMatrixView<std::int32_t>(b.data(), 1, 4), 0.5f, rtb::MatrixView<float>(ob.data(), 1, 12), ctx);
  CHECK((oa - ob).cwiseAbs().maxCoeff() == 0.0f);
  CHECK(net.layout().find("embedding.weight")->shape == std::vector<rtb::Index>{4, 16});
  CHECK(net.layout().find("output.weight")->shape == std::vector<rtb::Index>{12, 16});
  CHECK_THROWS_AS(rtb::TokenMlp<float>({.length = 3, .vocab = 2, .condition = {5}}), rtb::InvalidArgumentError);
}
