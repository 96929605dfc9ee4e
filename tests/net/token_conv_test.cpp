// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/concepts/denoiser.hpp>
#include <rtb/net/token_conv.hpp>

#include "../test_util.hpp"

static_assert(rtb::Denoiser<rtb::TokenConv<float>>);
static_assert(rtb::Denoiser<rtb::TokenConv<double>>);

namespace {
using Tok = rtb::RowMatrix<std::int32_t>;

/// L = Σ d_out ⊙ net(x, t): backward against central differences over every parameter, with a
/// context sized for more rows than are used (buffers must not depend on the batch size).
void check_gradient(rtb::TokenConv<double> net, const Tok& x, double t, std::uint64_t seed) {
  const auto rows = x.rows();
  rtb::RowMatrix<double> d_out(rows, net.output_dim()), out(rows, net.output_dim());
  rtb_test::fill_normal<double>(rtb::MatrixView<double>(d_out.data(), rows, d_out.cols()), seed);
  auto ctx = net.make_context(rows + 3);
  const rtb::ConstMatrixView<std::int32_t> xv(x.data(), rows, x.cols());
  rtb::MatrixView<double> ov(out.data(), rows, out.cols());
  auto loss = [&] {
    net.inference(xv, t, ov, ctx);
    return (out.array() * d_out.array()).sum();
  };
  net.forward(xv, t, ov, ctx);
  const rtb::RowMatrix<double> kept = out;
  std::vector<double> analytic(static_cast<std::size_t>(net.num_params()), 7.0);
  net.backward(ctx, rtb::ConstMatrixView<double>(d_out.data(), rows, d_out.cols()), std::span<double>(analytic),
               rtb::GradientMode::Overwrite);
  const std::vector<double> numeric = rtb_test::numeric_gradient(net.params(), loss);
  CHECK(rtb_test::relative_error(analytic, numeric) < rtb_test::Tolerances<double>::gradient);
  loss();                                             // the last difference left `out` at a perturbed parameter
  CHECK((out - kept).cwiseAbs().maxCoeff() < 1e-12);  // inference and forward agree
  // every tensor receives gradient (none is silently cut off)
  for (const rtb::ParameterTensor& tensor : net.layout().tensors()) {
    double norm = 0;
    for (rtb::Index i = 0; i < tensor.size; ++i)
      norm += std::fabs(analytic[static_cast<std::size_t>(tensor.offset + i)]);
    CAPTURE(tensor.name);
    CHECK(norm > 0);
  }
  // Accumulate adds onto what is there
  std::vector<double> twice = analytic;
  net.forward(xv, t, ov, ctx);
  net.backward(ctx, rtb::ConstMatrixView<double>(d_out.data(), rows, d_out.cols()), std::span<double>(twice),
               rtb::GradientMode::Accumulate);
  for (std::size_t i = 0; i < twice.size(); ++i) twice[i] -= 2 * analytic[i];
  CHECK(*std::max_element(twice.begin(), twice.end()) < 1e-12);
}

void give_condition_values(rtb::TokenConv<double>& net) {
  const auto* c = net.layout().find("condition.weight");
  REQUIRE(c != nullptr);
  for (rtb::Index i = 0; i < c->size; ++i) net.params()[static_cast<std::size_t>(c->offset + i)] = 0.2 * ((i % 7) - 3);
}
}  // namespace

TEST_CASE("TokenConv backward matches finite differences: embedding, condition path, time, blocks, head") {
  rtb::TokenConv<double> net({.length = 6,
                              .vocab = 3,
                              .embed = 3,
                              .channels = 4,
                              .harmonics = 2,
                              .time_hidden = 5,
                              .condition = {4, 5},
                              .seed = 2,
                              .zero_init_last = false});
  CHECK(net.options().num_blocks == 3);  // reach 1 + 1 + 2 + 4 ≥ 5
  give_condition_values(net);
  Tok x(4, 6);
  x << 3, 0, 1, 2, 2, 1, 3, 3, 0, 1, 0, 0, 2, 1, 1, 3, 3, 2, 1, 3, 0, 0, 3, 1;  // token 3 = MASK; repeats
  check_gradient(net, x, 0.4, 5);

  SUBCASE("kernel 5, condition columns in the middle, explicit block count") {
    rtb::TokenConv<double> k5({.length = 7,
                               .vocab = 2,
                               .embed = 2,
                               .channels = 3,
                               .kernel = 5,
                               .num_blocks = 2,
                               .harmonics = 1,
                               .time_hidden = 3,
                               .condition = {0, 3},
                               .seed = 7,
                               .zero_init_last = false});
    give_condition_values(k5);
    Tok y(3, 7);
    y << 0, 1, 2, 2, 0, 1, 1, 2, 2, 2, 0, 1, 0, 0, 1, 0, 2, 1, 2, 2, 0;
    check_gradient(k5, y, 0.8, 6);
  }
  SUBCASE("condition injected at shifted positions") {
    rtb::TokenConv<double> shifted({.length = 6,
                                    .vocab = 3,
                                    .embed = 2,
                                    .channels = 3,
                                    .harmonics = 1,
                                    .time_hidden = 2,
                                    .condition = {4, 5},
                                    .condition_shift = 2,
                                    .seed = 4,
                                    .zero_init_last = false});
    give_condition_values(shifted);
    check_gradient(shifted, x, 0.3, 8);
    CHECK_THROWS_AS(rtb::TokenConv<double>({.length = 6, .vocab = 3, .condition = {1}, .condition_shift = 2}),
                    rtb::InvalidArgumentError);
  }
  SUBCASE("no condition columns") {
    rtb::TokenConv<double> plain({.length = 4,
                                  .vocab = 2,
                                  .embed = 2,
                                  .channels = 3,
                                  .harmonics = 1,
                                  .time_hidden = 2,
                                  .seed = 1,
                                  .zero_init_last = false});
    Tok y(2, 4);
    y << 0, 1, 2, 2, 2, 0, 1, 1;
    check_gradient(plain, y, 0.9, 6);
  }
}

TEST_CASE("a fresh TokenConv ignores condition columns exactly; its receptive field covers the row") {
  const rtb::Index L = 11;
  rtb::TokenConv<float> net(
      {.length = L, .vocab = 3, .channels = 8, .condition = {9, 10}, .seed = 3, .zero_init_last = false});
  CHECK(net.receptive_reach() >= L - 1);
  Tok a(1, L), b(1, L), c(1, L);
  a << 0, 1, 3, 2, 3, 3, 1, 0, 2, 2, 1;
  b = a;
  b(0, 9) = 0;
  b(0, 10) = 2;  // differs only in the condition columns
  c = a;
  c(0, 8) = 1;  // differs in the last non-condition column
  rtb::RowMatrix<float> oa(1, L * 3), ob(1, L * 3), oc(1, L * 3);
  auto ctx = net.make_context(1);
  auto run = [&](const Tok& x, rtb::RowMatrix<float>& o) {
    net.inference(rtb::ConstMatrixView<std::int32_t>(x.data(), 1, L), 0.5f, rtb::MatrixView<float>(o.data(), 1, L * 3),
                  ctx);
  };
  run(a, oa);
  run(b, ob);
  run(c, oc);
  CHECK((oa - ob).cwiseAbs().maxCoeff() == 0.0f);
  CHECK(std::fabs(oa(0, 0) - oc(0, 0)) > 0.0f);  // position 0 sees position 8 (reach covers the row)
  CHECK(net.layout().find("embedding.weight")->shape == std::vector<rtb::Index>{4, 16});
  CHECK(net.layout().find("input.weight")->shape == std::vector<rtb::Index>{8, 16, 3});
  CHECK(net.layout().find("condition.weight")->shape == std::vector<rtb::Index>{8, 16});
  CHECK(net.layout().find("blocks.3.weight")->shape == std::vector<rtb::Index>{8, 8, 3});
  CHECK(net.layout().find("blocks.4.weight") == nullptr);  // 1 + (1 + 2 + 4 + 8) ≥ 10
  CHECK(net.layout().find("output.weight")->shape == std::vector<rtb::Index>{3, 8});
  CHECK(net.macs_per_row() == L * 8 * 16 * 3 + 2 * 16 * 8 + 4 * L * 8 * 8 * 3 + L * 8 * 3);

  rtb::TokenConv<float> fresh({.length = 4, .vocab = 3, .channels = 4, .seed = 1});  // zero_init_last
  rtb::RowMatrix<float> o(1, 12);
  auto c1 = fresh.make_context(1);
  Tok x(1, 4);
  x << 0, 1, 2, 3;
  fresh.inference(rtb::ConstMatrixView<std::int32_t>(x.data(), 1, 4), 0.2f, rtb::MatrixView<float>(o.data(), 1, 12),
                  c1);
  CHECK(o.cwiseAbs().maxCoeff() == 0.0f);

  CHECK_THROWS_AS(rtb::TokenConv<float>({.length = 3, .vocab = 2, .condition = {5}}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::TokenConv<float>({.length = 3, .vocab = 2, .kernel = 4}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::TokenConv<float>({.length = 3, .vocab = 2, .kernel = 1}), rtb::InvalidArgumentError);
  CHECK(rtb::TokenConv<float>({.length = 3, .vocab = 2, .kernel = 1, .num_blocks = 2}).receptive_reach() == 0);
}
