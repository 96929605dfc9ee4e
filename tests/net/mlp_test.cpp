// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/concepts/denoiser.hpp>
#include <rtb/net/mlp.hpp>

#include "../test_util.hpp"

static_assert(rtb::Denoiser<rtb::Mlp<float>>);

TEST_CASE("Mlp backward matches finite differences (time features and uneven widths)") {
  rtb::Mlp<double> net({.input_dim = 3, .hidden = {7, 5, 6}, .output_dim = 4, .time_harmonics = 3, .seed = 9,
                        .zero_init_last = false});
  for (double t : {0.0, 0.25, 0.8}) {
    CAPTURE(t);
    rtb_test::check_denoiser_gradient(net, 6, t, 21);
  }
  rtb::Mlp<double> plain({.input_dim = 5, .hidden = {8}, .output_dim = 2, .time_harmonics = 0, .zero_init_last = false});
  rtb_test::check_denoiser_gradient(plain, 3, 0.5, 22);
}

TEST_CASE("Mlp with a per-row condition: finite differences, and the condition changes the output") {
  rtb::Model net(rtb::Mlp<double>({.input_dim = 2, .hidden = {6, 5}, .output_dim = 3, .time_harmonics = 2,
                                   .condition_dim = 3, .seed = 4, .zero_init_last = false}));
  rtb::RowMatrix<double> x(5, 2), c(5, 4);  // conditions may carry columns the net does not read
  rtb_test::fill_normal<double>(rtb::MatrixView<double>(x.data(), 5, 2), 7);
  rtb_test::fill_normal<double>(rtb::MatrixView<double>(c.data(), 5, 4), 8);
  rtb_test::check_model_gradient<rtb::Mlp<double>, double>(net, rtb::ConstMatrixView<double>(x.data(), 5, 2), 0.3, 9,
                                                           rtb::ConstMatrixView<double>(c.data(), 5, 4));
  CHECK(net.layout().find("layers.0.weight")->shape == std::vector<rtb::Index>{6, 2 + 3 + 4});
  rtb::RowMatrix<double> a(5, 3), b(5, 3);
  auto ctx = net.make_context(5);
  net.inference(rtb_test::step_at(rtb::ConstMatrixView<double>(x.data(), 5, 2), 0.3, rtb::ConstMatrixView<double>(c.data(), 5, 4)),
                rtb::MatrixView<double>(a.data(), 5, 3), ctx);
  c(2, 1) += 1.0;
  net.inference(rtb_test::step_at(rtb::ConstMatrixView<double>(x.data(), 5, 2), 0.3, rtb::ConstMatrixView<double>(c.data(), 5, 4)),
                rtb::MatrixView<double>(b.data(), 5, 3), ctx);
  CHECK((a.row(2) - b.row(2)).cwiseAbs().maxCoeff() > 1e-6);  // the row whose condition changed
  CHECK((a.row(1) - b.row(1)).cwiseAbs().maxCoeff() == 0.0);  // and only that row
  c(2, 3) += 1.0;  // a column the net does not read
  rtb::RowMatrix<double> b2(5, 3);
  net.inference(rtb_test::step_at(rtb::ConstMatrixView<double>(x.data(), 5, 2), 0.3, rtb::ConstMatrixView<double>(c.data(), 5, 4)),
                rtb::MatrixView<double>(b2.data(), 5, 3), ctx);
  CHECK((b - b2).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("Mlp names its layers layers.<i> and rejects empty or negative sizes") {
  rtb::Mlp<float> net({.input_dim = 2, .hidden = {32, 16}, .output_dim = 4, .time_harmonics = 4});
  CHECK(net.layout().find("layers.0.weight")->shape == std::vector<rtb::Index>{32, 2 + 8});
  CHECK(net.layout().find("layers.1.weight")->shape == std::vector<rtb::Index>{16, 32});
  CHECK(net.layout().find("layers.2.weight")->shape == std::vector<rtb::Index>{4, 16});
  CHECK_THROWS_AS(rtb::Mlp<float>({.hidden = {}}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::Mlp<float>({.hidden = {8, 0}}), rtb::InvalidArgumentError);
}
