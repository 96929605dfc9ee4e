// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/concepts/denoiser.hpp>
#include <rtb/net/token_conv.hpp>

#include "../test_util.hpp"

static_assert(rtb::Denoiser<rtb::TokenConv<float>>);
static_assert(rtb::Denoiser<rtb::TokenConv<double>>);

namespace {
using Tok = rtb::RowMatrix<std::int32_t>;
using Model = rtb::Model<rtb::TokenConv<double>>;

/// L = Σ d_out ⊙ net(x, c, t): backward against central differences over every trained
/// parameter, with a context sized for more rows than are used (buffers must not depend on the
/// batch size).
void check_gradient(Model net, const Tok& x, const Tok& c, double t, std::uint64_t seed) {
  const auto rows = x.rows();
  rtb::RowMatrix<double> d_out(rows, net.output_dim()), out(rows, net.output_dim());
  rtb_test::fill_normal<double>(rtb::MatrixView<double>(d_out.data(), rows, d_out.cols()), seed);
  auto ctx = net.make_context(rows + 3);
  const auto s = rtb_test::step_at(rtb::ConstMatrixView<std::int32_t>(x.data(), rows, x.cols()), t,
                                   rtb::ConstMatrixView<std::int32_t>(c.data(), rows, c.cols()));
  rtb::MatrixView<double> ov(out.data(), rows, out.cols());
  auto loss = [&] {
    net.inference(s, ov, ctx);
    return (out.array() * d_out.array()).sum();
  };
  net.forward(s, ov, ctx);
  const rtb::RowMatrix<double> kept = out;
  std::vector<double> analytic(static_cast<std::size_t>(net.num_params()), 7.0);
  net.backward(ctx, rtb::ConstMatrixView<double>(d_out.data(), rows, d_out.cols()), std::span<double>(analytic),
               rtb::GradientMode::Overwrite);
  const std::vector<double> numeric = rtb_test::numeric_gradient(net.params(), loss);
  loss();                                             // the last difference left `out` at a perturbed parameter
  CHECK((out - kept).cwiseAbs().maxCoeff() < 1e-12);  // inference and forward agree
  // every trained tensor receives gradient (none is silently cut off) and matches; buffers get none
  std::vector<double> a, n;
  for (const rtb::ParameterTensor& tensor : net.layout().tensors()) {
    double norm = 0;
    for (rtb::Index i = 0; i < tensor.size; ++i) {
      const auto k = static_cast<std::size_t>(tensor.offset + i);
      norm += std::fabs(analytic[k]);
      if (tensor.trainable) {
        a.push_back(analytic[k]);
        n.push_back(numeric[k]);
      }
    }
    CAPTURE(tensor.name);
    CHECK((tensor.trainable ? norm > 0 : norm == 0));
  }
  CHECK(rtb_test::relative_error(a, n) < rtb_test::Tolerances<double>::gradient);
  // Accumulate adds onto what is there
  std::vector<double> twice = analytic;
  net.forward(s, ov, ctx);
  net.backward(ctx, rtb::ConstMatrixView<double>(d_out.data(), rows, d_out.cols()), std::span<double>(twice),
               rtb::GradientMode::Accumulate);
  for (std::size_t i = 0; i < twice.size(); ++i) twice[i] -= 2 * analytic[i];
  CHECK(*std::max_element(twice.begin(), twice.end()) < 1e-12);
}

void give_condition_values(Model& net) {
  const auto* c = net.layout().find("condition.weight");
  REQUIRE(c != nullptr);
  for (rtb::Index i = 0; i < c->size; ++i) net.params()[static_cast<std::size_t>(c->offset + i)] = 0.2 * ((i % 7) - 3);
}
}  // namespace

TEST_CASE("TokenConv backward matches finite differences: embedding, condition path, time, blocks, head") {
  Model net(rtb::TokenConv<double>({.length = 4,
                                    .vocab = 3,
                                    .embed = 3,
                                    .channels = 4,
                                    .harmonics = 2,
                                    .time_hidden = 5,
                                    .condition = {0, 1},
                                    .seed = 2,
                                    .zero_init_last = false}));
  CHECK(net.net().positions() == 6);
  CHECK(net.net().options().num_blocks == 3);  // reach 1 + 1 + 2 + 4 ≥ 5
  give_condition_values(net);
  Tok x(4, 4), c(4, 2);
  x << 3, 0, 1, 2, 1, 3, 3, 0, 0, 0, 2, 1, 3, 2, 1, 3;  // token 3 = MASK; repeats
  c << 2, 1, 1, 0, 1, 3, 0, 1;
  check_gradient(net, x, c, 0.4, 5);

  SUBCASE("kernel 5, conditions read out of order, explicit block count") {
    Model k5(rtb::TokenConv<double>({.length = 5,
                                     .vocab = 2,
                                     .embed = 2,
                                     .channels = 3,
                                     .kernel = 5,
                                     .num_blocks = 2,
                                     .harmonics = 1,
                                     .time_hidden = 3,
                                     .condition = {2, 0},
                                     .seed = 7,
                                     .zero_init_last = false}));
    give_condition_values(k5);
    Tok y(3, 5), cy(3, 3);
    y << 0, 1, 2, 0, 1, 2, 2, 0, 1, 0, 1, 0, 2, 1, 2;
    cy << 2, 9, 0, 1, 9, 1, 0, 9, 2;  // column 1 is not read (any value)
    check_gradient(k5, y, cy, 0.8, 6);
  }
  SUBCASE("conditions injected at shifted positions") {
    Model shifted(rtb::TokenConv<double>({.length = 4,
                                          .vocab = 3,
                                          .embed = 2,
                                          .channels = 3,
                                          .harmonics = 1,
                                          .time_hidden = 2,
                                          .condition = {0, 1},
                                          .condition_shift = 2,
                                          .seed = 4,
                                          .zero_init_last = false}));
    give_condition_values(shifted);
    check_gradient(shifted, x, c, 0.3, 8);
    CHECK_THROWS_AS(rtb::TokenConv<double>({.length = 6, .vocab = 3, .condition = {1}, .condition_shift = 8}),
                    rtb::InvalidArgumentError);
  }
  SUBCASE("no conditions") {
    Model plain(rtb::TokenConv<double>({.length = 4,
                                        .vocab = 2,
                                        .embed = 2,
                                        .channels = 3,
                                        .harmonics = 1,
                                        .time_hidden = 2,
                                        .seed = 1,
                                        .zero_init_last = false}));
    Tok y(2, 4), none(2, 0);
    y << 0, 1, 2, 2, 2, 0, 1, 1;
    check_gradient(plain, y, none, 0.9, 6);
  }
}

TEST_CASE("a fresh TokenConv ignores conditions exactly; its receptive field covers every position") {
  const rtb::Index L = 9;
  rtb::Model net(rtb::TokenConv<float>(
      {.length = L, .vocab = 3, .channels = 8, .condition = {0, 1}, .seed = 3, .zero_init_last = false}));
  CHECK(net.net().receptive_reach() >= net.net().positions() - 1);
  Tok a(1, L), c(1, L), ca(1, 2), cb(1, 2);
  a << 0, 1, 3, 2, 3, 3, 1, 0, 2;
  ca << 2, 1;
  cb << 0, 2;  // another condition
  c = a;
  c(0, 8) = 1;  // differs in the last state column
  rtb::RowMatrix<float> oa(1, L * 3), ob(1, L * 3), oc(1, L * 3);
  auto ctx = net.make_context(1);
  auto run = [&](const Tok& x, const Tok& cond, rtb::RowMatrix<float>& o) {
    net.inference(rtb_test::step_at(rtb::ConstMatrixView<std::int32_t>(x.data(), 1, L), 0.5f,
                                    rtb::ConstMatrixView<std::int32_t>(cond.data(), 1, 2)),
                  rtb::MatrixView<float>(o.data(), 1, L * 3), ctx);
  };
  run(a, ca, oa);
  run(a, cb, ob);
  run(c, ca, oc);
  CHECK((oa - ob).cwiseAbs().maxCoeff() == 0.0f);
  CHECK(std::fabs(oa(0, 0) - oc(0, 0)) > 0.0f);  // position 0 sees position 8 (reach covers the row)
  CHECK(net.layout().find("embedding.weight")->shape == std::vector<rtb::Index>{4, 16});
  CHECK(net.layout().find("input.weight")->shape == std::vector<rtb::Index>{8, 16, 3});
  CHECK(net.layout().find("condition.weight")->shape == std::vector<rtb::Index>{8, 16});
  CHECK(net.layout().find("blocks.3.weight")->shape == std::vector<rtb::Index>{8, 8, 3});
  CHECK(net.layout().find("blocks.4.weight") == nullptr);  // 1 + (1 + 2 + 4 + 8) ≥ 10
  CHECK(net.layout().find("output.weight")->shape == std::vector<rtb::Index>{3, 8});
  const rtb::Index P = 11;  // 9 state positions and 2 condition slots
  CHECK(net.net().macs_per_row() == P * 8 * 16 * 3 + 2 * 16 * 8 + 4 * P * 8 * 8 * 3 + P * 8 * 3);

  rtb::Model fresh(rtb::TokenConv<float>({.length = 4, .vocab = 3, .channels = 4, .seed = 1}));  // zero_init_last
  rtb::RowMatrix<float> o(1, 12);
  auto c1 = fresh.make_context(1);
  Tok x(1, 4);
  x << 0, 1, 2, 3;
  fresh.inference(rtb_test::step_at(rtb::ConstMatrixView<std::int32_t>(x.data(), 1, 4), 0.2f),
                  rtb::MatrixView<float>(o.data(), 1, 12), c1);
  CHECK(o.cwiseAbs().maxCoeff() == 0.0f);

  CHECK_THROWS_AS(rtb::TokenConv<float>({.length = 3, .vocab = 2, .condition = {1, 1}}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::TokenConv<float>({.length = 3, .vocab = 2, .kernel = 4}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::TokenConv<float>({.length = 3, .vocab = 2, .kernel = 1}), rtb::InvalidArgumentError);
  CHECK(rtb::TokenConv<float>({.length = 3, .vocab = 2, .kernel = 1, .num_blocks = 2}).receptive_reach() == 0);
}
