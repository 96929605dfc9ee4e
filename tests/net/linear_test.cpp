// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/net/linear.hpp>

#include "../test_util.hpp"

using M = rtb::RowMatrix<double>;

TEST_CASE("Linear forward is x·Wᵀ + b (+ extra) and backward matches finite differences") {
  for (rtb::Index in : {2, 3, 7, 16}) {  // thin fused path and GEMM path
    CAPTURE(in);
    rtb::ParameterLayout layout;
    rtb::Linear lin(layout, "l.", in, 5);
    std::vector<double> p(static_cast<std::size_t>(layout.size()));
    lin.init_default(p.data(), 3, 0);
    M x(6, in), y(6, 5), dy(6, 5), dx(6, in);
    rtb_test::fill_normal<double>(rtb::MatrixView<double>(x.data(), 6, in), 1);
    rtb_test::fill_normal<double>(rtb::MatrixView<double>(dy.data(), 6, 5), 2);
    const double extra[5] = {0.1, -0.2, 0.3, 0.0, 1.0};
    lin.forward(p.data(), rtb::ConstMatrixView<double>(x.data(), 6, in), rtb::MatrixView<double>(y.data(), 6, 5), extra);
    const Eigen::Map<const M> W(p.data() + lin.weight_offset(), 5, in);
    for (int r = 0; r < 6; ++r)
      for (int o = 0; o < 5; ++o) {
        const double expected = x.row(r).dot(W.row(o)) + p[static_cast<std::size_t>(lin.bias_offset() + o)] + extra[o];
        CHECK(y(r, o) == doctest::Approx(expected).epsilon(1e-12));
      }
    std::vector<double> grad(p.size(), 0.0);
    rtb::MatrixView<double> dxv(dx.data(), 6, in);
    lin.backward(p.data(), rtb::ConstMatrixView<double>(x.data(), 6, in), rtb::ConstMatrixView<double>(dy.data(), 6, 5),
                 grad.data(), &dxv);
    auto loss = [&] {
      lin.forward(p.data(), rtb::ConstMatrixView<double>(x.data(), 6, in), rtb::MatrixView<double>(y.data(), 6, 5));
      return (y.array() * dy.array()).sum();
    };
    CHECK(rtb_test::relative_error(grad, rtb_test::numeric_gradient(p, loss)) < 1e-7);
    std::vector<double> xflat(x.data(), x.data() + x.size());
    auto loss_x = [&] {
      const M xs = Eigen::Map<M>(xflat.data(), 6, in);
      lin.forward(p.data(), rtb::ConstMatrixView<double>(xs.data(), 6, in), rtb::MatrixView<double>(y.data(), 6, 5));
      return (y.array() * dy.array()).sum();
    };
    std::vector<double> dxa(dx.data(), dx.data() + dx.size());
    CHECK(rtb_test::relative_error(dxa, rtb_test::numeric_gradient(xflat, loss_x)) < 1e-7);
  }
}

TEST_CASE("Linear registers PyTorch-named tensors and initialises like torch.nn.Linear") {
  rtb::ParameterLayout layout;
  rtb::Linear lin(layout, "fc.", 16, 4);
  REQUIRE(layout.tensors().size() == 2);
  CHECK(layout.tensors()[0].name == "fc.weight");
  CHECK(layout.tensors()[0].shape == std::vector<rtb::Index>{4, 16});
  CHECK(layout.tensors()[1].name == "fc.bias");
  std::vector<float> p(static_cast<std::size_t>(layout.size()));
  lin.init_default(p.data(), 1, 0);
  float lo = 1, hi = -1;
  for (float v : p) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  CHECK(lo >= -0.25f);  // bound 1/sqrt(16)
  CHECK(hi <= 0.25f);
  CHECK(hi - lo > 0.4f);
  lin.init_constant(p.data(), 0.5f);
  CHECK(p[0] == 0.0f);
  CHECK(p[64] == 0.5f);
}
