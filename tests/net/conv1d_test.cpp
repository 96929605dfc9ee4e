// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/net/conv1d.hpp>

#include "../test_util.hpp"

namespace {

struct Shape {
  rtb::Index in, out, kernel, dilation, length;
  bool bias;
};

/// y[r, p, o] by the definition: a direct loop over taps with zero padding.
template <class S>
rtb::RowMatrix<S> direct(const rtb::Conv1d& conv, const std::vector<S>& p, const rtb::RowMatrix<S>& x, rtb::Index L,
                         const S* extra) {
  const rtb::Index n = x.rows(), half = (conv.kernel() - 1) / 2;
  rtb::RowMatrix<S> y(n, conv.out());
  for (rtb::Index i = 0; i < n; ++i) {
    const rtb::Index r = i / L, pos = i % L;
    for (rtb::Index o = 0; o < conv.out(); ++o) {
      S acc = conv.has_bias() ? p[static_cast<std::size_t>(conv.bias_offset() + o)] : S(0);
      if (extra) acc += extra[o];
      for (rtb::Index c = 0; c < conv.in(); ++c)
        for (rtb::Index t = 0; t < conv.kernel(); ++t) {
          const rtb::Index q = pos + (t - half) * conv.dilation();
          if (q < 0 || q >= L) continue;
          acc += p[static_cast<std::size_t>(conv.weight_offset() + (o * conv.in() + c) * conv.kernel() + t)] *
                 x(r * L + q, c);
        }
      y(i, o) = acc;
    }
  }
  return y;
}

const Shape kShapes[] = {{3, 4, 3, 1, 7, true}, {2, 5, 3, 2, 9, true}, {4, 3, 5, 1, 6, false},
                         {3, 3, 3, 4, 5, true},  // dilation beyond the sequence: only the centre tap is in range
                         {1, 2, 1, 1, 4, true},  {5, 4, 5, 3, 11, true}};

}  // namespace

TEST_CASE_TEMPLATE("Conv1d forward equals the direct sum over taps, with zero padding", S, float, double) {
  for (const Shape& s : kShapes) {
    CAPTURE(s.kernel);
    CAPTURE(s.dilation);
    rtb::ParameterLayout layout;
    const rtb::Conv1d conv(layout, "c.", s.in, s.out, s.kernel, s.dilation, s.bias);
    std::vector<S> p(static_cast<std::size_t>(layout.size()));
    conv.init_default(p.data(), 4, 1);
    const rtb::Index rows = 3, n = rows * s.length;
    rtb::RowMatrix<S> x(n, s.in), y(n, s.out);
    rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), n, s.in), 9);
    std::vector<S> scratch(static_cast<std::size_t>(conv.scratch_floats(rows, s.length)));
    std::vector<S> extra(static_cast<std::size_t>(s.out));
    for (rtb::Index o = 0; o < s.out; ++o) extra[static_cast<std::size_t>(o)] = S(0.1) * static_cast<S>(o - 1);
    const double tol = std::is_same_v<S, float> ? 1e-5 : 1e-12;
    conv.forward(p.data(), rtb::ConstMatrixView<S>(x.data(), n, s.in), s.length, rtb::MatrixView<S>(y.data(), n, s.out),
                 scratch.data());
    CHECK((y - direct(conv, p, x, s.length, static_cast<const S*>(nullptr))).cwiseAbs().maxCoeff() <= tol);
    conv.forward(p.data(), rtb::ConstMatrixView<S>(x.data(), n, s.in), s.length, rtb::MatrixView<S>(y.data(), n, s.out),
                 scratch.data(), extra.data());
    const rtb::RowMatrix<S> once = direct(conv, p, x, s.length, extra.data());
    CHECK((y - once).cwiseAbs().maxCoeff() <= tol);
    conv.forward(p.data(), rtb::ConstMatrixView<S>(x.data(), n, s.in), s.length, rtb::MatrixView<S>(y.data(), n, s.out),
                 scratch.data(), extra.data(), true);  // accumulate: y = 2·once
    CHECK((y - S(2) * once).cwiseAbs().maxCoeff() <= 2 * tol);
  }
}

TEST_CASE("Conv1d backward matches central differences for weight, bias and input; dx accumulates") {
  for (const Shape& s : kShapes) {
    CAPTURE(s.kernel);
    CAPTURE(s.dilation);
    rtb::ParameterLayout layout;
    const rtb::Conv1d conv(layout, "c.", s.in, s.out, s.kernel, s.dilation, s.bias);
    std::vector<double> p(static_cast<std::size_t>(layout.size()));
    conv.init_default(p.data(), 5, 2);
    const rtb::Index rows = 2, n = rows * s.length;
    rtb::RowMatrix<double> x(n, s.in), y(n, s.out), dy(n, s.out), dx0(n, s.in);
    rtb_test::fill_normal<double>(rtb::MatrixView<double>(x.data(), n, s.in), 1);
    rtb_test::fill_normal<double>(rtb::MatrixView<double>(dy.data(), n, s.out), 2);
    rtb_test::fill_normal<double>(rtb::MatrixView<double>(dx0.data(), n, s.in), 3);
    std::vector<double> scratch(static_cast<std::size_t>(conv.scratch_floats(rows, s.length)));
    const double extra[8] = {0.3, -0.1, 0.2, 0.0, 0.5, -0.4, 0.1, 0.2};
    auto loss = [&] {
      conv.forward(p.data(), rtb::ConstMatrixView<double>(x.data(), n, s.in), s.length,
                   rtb::MatrixView<double>(y.data(), n, s.out), scratch.data(), extra);
      return (y.array() * dy.array()).sum();
    };
    std::vector<double> grad(p.size(), 0.5);  // accumulates onto what is there
    rtb::RowMatrix<double> dx = dx0;
    conv.backward(p.data(), rtb::ConstMatrixView<double>(x.data(), n, s.in), s.length,
                  rtb::ConstMatrixView<double>(dy.data(), n, s.out), grad.data(), dx.data(), scratch.data());
    for (double& g : grad) g -= 0.5;
    CHECK(rtb_test::relative_error(grad, rtb_test::numeric_gradient(p, loss)) < 1e-8);
    std::vector<double> xs(x.data(), x.data() + x.size());
    auto loss_x = [&] {
      std::copy(xs.begin(), xs.end(), x.data());
      return loss();
    };
    const std::vector<double> numeric_x = rtb_test::numeric_gradient(xs, loss_x);
    const rtb::RowMatrix<double> added = dx - dx0;
    CHECK(rtb_test::relative_error(std::vector<double>(added.data(), added.data() + added.size()), numeric_x) < 1e-8);
    // without dx, the parameter gradient is the same
    std::copy(xs.begin(), xs.end(), x.data());  // the last difference left x perturbed
    std::vector<double> grad2(p.size(), 0.0);
    conv.backward(p.data(), rtb::ConstMatrixView<double>(x.data(), n, s.in), s.length,
                  rtb::ConstMatrixView<double>(dy.data(), n, s.out), grad2.data(), static_cast<double*>(nullptr),
                  scratch.data());
    CHECK(rtb_test::relative_error(grad2, grad) < 1e-12);
  }
}

TEST_CASE("Conv1d registers PyTorch-named tensors and initialises like torch.nn.Conv1d") {
  rtb::ParameterLayout layout;
  const rtb::Conv1d conv(layout, "blocks.0.", 8, 4, 3, 2);
  REQUIRE(layout.tensors().size() == 2);
  CHECK(layout.tensors()[0].name == "blocks.0.weight");
  CHECK(layout.tensors()[0].shape == std::vector<rtb::Index>{4, 8, 3});
  CHECK(layout.tensors()[1].name == "blocks.0.bias");
  CHECK(layout.tensors()[1].shape == std::vector<rtb::Index>{4});
  CHECK(conv.reach() == 2);
  CHECK(conv.macs(10) == 10 * 4 * 8 * 3);
  std::vector<float> p(static_cast<std::size_t>(layout.size()));
  conv.init_default(p.data(), 1, 0);
  const float bound = 1.0f / std::sqrt(24.0f);
  float lo = 1, hi = -1;
  for (float v : p) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi - lo > 1.6f * bound);
  rtb::ParameterLayout plain;
  const rtb::Conv1d nobias(plain, "condition.", 2, 3, 1, 1, false);
  CHECK(plain.tensors().size() == 1);
  CHECK_FALSE(nobias.has_bias());
}
