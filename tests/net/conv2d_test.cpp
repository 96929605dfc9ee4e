// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <algorithm>
#include <rtb/net/conv2d.hpp>

#include "image_util.hpp"

// Its own namespace: rtb_sanitized_tests is a unity build, and other files reuse these helper names.
namespace conv2d_test {

namespace {

using rtb::Conv2d;
using rtb::ImageShape;
using rtb::Index;

struct Case {
  Index in, out, kernel, stride, height, width;
  bool bias;
};

const Case kCases[] = {
    {3, 4, 3, 1, 5, 6, true},  {2, 3, 3, 2, 6, 4, true},  {4, 5, 1, 1, 3, 5, true},
    {3, 2, 1, 2, 4, 6, false}, {2, 2, 3, 1, 1, 1, true},  // a 1×1 map: only the centre tap is in range
    {5, 3, 3, 2, 2, 2, true},  {1, 6, 5, 1, 4, 3, false}, {6, 5, 3, 1, 2, 7, false},
};

}  // namespace

TEST_CASE_TEMPLATE("Conv2d forward equals the definition: zero padding, strides, extra and accumulate", S, float,
                   double) {
  for (const Case& c : kCases) {
    CAPTURE(c.kernel);
    CAPTURE(c.stride);
    CAPTURE(c.height);
    rtb::ParameterLayout layout;
    Conv2d conv(layout, "conv.", c.in, c.out, c.kernel, c.stride, c.bias);
    std::vector<S> p(static_cast<std::size_t>(layout.size()));
    conv.init_default(p.data(), 3, 1);
    const ImageShape in{2, c.in, c.height, c.width};
    const ImageShape out = conv.output_shape(in);
    CHECK(out == ImageShape{2, c.out, (c.height - 1) / c.stride + 1, (c.width - 1) / c.stride + 1});
    const auto x = rtb_test::random_vector<S>(in.size(), 5);
    const auto extra = rtb_test::random_vector<S>(c.out, 6);
    std::vector<S> y(static_cast<std::size_t>(out.size()), S(7));
    std::vector<S> scratch(static_cast<std::size_t>(conv.scratch_floats(in)));
    const S* bias = c.bias ? p.data() + conv.bias_offset() : nullptr;
    const double tol = std::is_same_v<S, float> ? 1e-5 : 1e-13;

    conv.forward(p.data(), x.data(), in, y.data(), scratch.data());
    const auto plain = rtb_test::reference_conv2d(p.data() + conv.weight_offset(), bias, static_cast<const S*>(nullptr),
                                                  x.data(), in, c.out, c.kernel, c.stride);
    CHECK(rtb_test::max_relative_difference(y, plain) <= tol);

    conv.forward(p.data(), x.data(), in, y.data(), scratch.data(), extra.data());
    auto with_extra = rtb_test::reference_conv2d(p.data() + conv.weight_offset(), bias, extra.data(), x.data(), in,
                                                 c.out, c.kernel, c.stride);
    CHECK(rtb_test::max_relative_difference(y, with_extra) <= tol);

    conv.forward(p.data(), x.data(), in, y.data(), scratch.data(), extra.data(), true);  // y = 2·with_extra
    for (double& v : with_extra) v *= 2;
    CHECK(rtb_test::max_relative_difference(y, with_extra) <= 2 * tol);
  }
}

TEST_CASE("Conv2d backward matches central differences for weight, bias and input, in both input modes") {
  using S = double;
  for (const Case& c : kCases) {
    CAPTURE(c.kernel);
    CAPTURE(c.stride);
    CAPTURE(c.height);
    rtb::ParameterLayout layout;
    Conv2d conv(layout, "conv.", c.in, c.out, c.kernel, c.stride, c.bias);
    std::vector<S> p(static_cast<std::size_t>(layout.size()));
    conv.init_default(p.data(), 4, 2);
    const ImageShape in{2, c.in, c.height, c.width};
    const ImageShape out = conv.output_shape(in);
    auto x = rtb_test::random_vector<S>(in.size(), 7);
    const auto dy = rtb_test::random_vector<S>(out.size(), 8);
    const auto extra = rtb_test::random_vector<S>(c.out, 9);
    std::vector<S> y(static_cast<std::size_t>(out.size()));
    std::vector<S> scratch(static_cast<std::size_t>(conv.scratch_floats(in)));
    auto loss = [&] {
      conv.forward(p.data(), x.data(), in, y.data(), scratch.data(), extra.data());
      return rtb_test::inner(y, dy);
    };
    const std::vector<S> grad0(p.size(), 0.25), dx0 = rtb_test::random_vector<S>(in.size(), 10);
    std::vector<S> grad = grad0, dx = dx0;
    conv.backward(p.data(), x.data(), in, dy.data(), grad.data(), dx.data(), rtb::GradientMode::Accumulate,
                  scratch.data());
    CHECK(rtb_test::relative_error(rtb_test::minus(grad, grad0), rtb_test::numeric_gradient(p, loss)) < 1e-8);
    const auto numeric_x = rtb_test::numeric_gradient(x, loss);
    CHECK(rtb_test::relative_error(rtb_test::minus(dx, dx0), numeric_x) < 1e-8);

    std::vector<S> grad2 = grad0, dx2 = dx0;  // Overwrite replaces dx; the parameter gradient still adds
    conv.backward(p.data(), x.data(), in, dy.data(), grad2.data(), dx2.data(), rtb::GradientMode::Overwrite,
                  scratch.data());
    CHECK(rtb_test::relative_error(dx2, numeric_x) < 1e-8);
    CHECK(rtb_test::relative_error(grad2, grad) < 1e-14);
    std::vector<S> grad3 = grad0;  // no input gradient
    conv.backward(p.data(), x.data(), in, dy.data(), grad3.data(), static_cast<S*>(nullptr),
                  rtb::GradientMode::Overwrite, scratch.data());
    CHECK(rtb_test::relative_error(grad3, grad) < 1e-14);
  }
}

TEST_CASE("Conv2d registers PyTorch-named tensors, sizes its scratch and initialises like torch.nn.Conv2d") {
  rtb::ParameterLayout layout;
  const Conv2d conv(layout, "down_blocks.0.resnets.0.conv1.", 8, 4, 3, 2);
  REQUIRE(layout.tensors().size() == 2);
  CHECK(layout.tensors()[0].name == "down_blocks.0.resnets.0.conv1.weight");
  CHECK(layout.tensors()[0].shape == std::vector<Index>{4, 8, 3, 3});
  CHECK(layout.tensors()[1].name == "down_blocks.0.resnets.0.conv1.bias");
  CHECK(layout.tensors()[1].shape == std::vector<Index>{4});
  const ImageShape in{32, 8, 28, 28};
  CHECK(conv.output_shape(in) == ImageShape{32, 4, 14, 14});
  CHECK(conv.scratch_floats(in) == 8 * 9 * 14 * 14);
  CHECK(conv.macs(in) == 14 * 14 * 4 * 8 * 9);
  std::vector<float> p(static_cast<std::size_t>(layout.size()));
  conv.init_default(p.data(), 1, 0);
  const float bound = 1.0f / std::sqrt(72.0f);
  const auto [lo, hi] = std::minmax_element(p.begin(), p.end());
  CHECK(*lo >= -bound);
  CHECK(*hi <= bound);
  CHECK(*hi - *lo > 1.6f * bound);
  rtb::ParameterLayout plain;
  const Conv2d shortcut(plain, "conv_shortcut.", 32, 64, 1, 1, false);
  CHECK(plain.tensors().size() == 1);
  CHECK(shortcut.scratch_floats({2, 32, 7, 7}) == 0);  // a 1×1 projection is one GEMM on x itself
}

TEST_CASE("Conv2d rejects bad kernels, strides, channel counts and odd maps to downsample, saying how to fix them") {
  rtb::ParameterLayout layout;
  CHECK_THROWS_WITH_AS(Conv2d(layout, "c.", 4, 4, 2), doctest::Contains("kernel must be odd"),
                       rtb::InvalidArgumentError);
  CHECK_THROWS_WITH_AS(Conv2d(layout, "c.", 4, 4, 3, 3), doctest::Contains("stride must be 1 or 2, got 3"),
                       rtb::InvalidArgumentError);
  CHECK_THROWS_AS(Conv2d(layout, "c.", 0, 4), rtb::InvalidArgumentError);
  CHECK(layout.size() == 0);  // nothing registered by a constructor that threw
  const Conv2d down(layout, "down.", 4, 4, 3, 2);
  CHECK_THROWS_WITH_AS(down.output_shape({2, 3, 8, 8}),
                       doctest::Contains("Conv2d 'down.': input has 3 channels (shape [2, 3, 8, 8]) but the layer "
                                         "takes 4"),
                       rtb::ShapeError);
  CHECK_THROWS_WITH_AS(down.output_shape({2, 4, 7, 8}), doctest::Contains("cannot downsample a 7x8 map"),
                       rtb::ShapeError);
  CHECK_THROWS_AS(down.output_shape({0, 4, 8, 8}), rtb::ShapeError);
  std::vector<float> p(static_cast<std::size_t>(layout.size())), x(4 * 7 * 7), y(4 * 4 * 4), s(1000);
  CHECK_THROWS_AS(down.forward(p.data(), x.data(), ImageShape{1, 4, 7, 7}, y.data(), s.data()), rtb::ShapeError);
}

// The frozen path LoRA walks (net/lora.hpp): with grad = null the input gradient is the same bits,
// and the hook's (col, dy) per image rebuild exactly the weight gradient grad would have held.
TEST_CASE("Conv2d backward with grad = null gives the same dx, and its hook hands over what dW is made of") {
  using S = double;
  for (auto [k, s] : {std::pair<rtb::Index, rtb::Index>{3, 1}, {3, 2}, {1, 1}}) {
    CAPTURE(k);
    CAPTURE(s);
    rtb::ParameterLayout layout;
    const rtb::Conv2d conv(layout, "c.", 3, 5, k, s);
    const rtb::ImageShape in{2, 3, 6, 6};
    const rtb::ImageShape out = conv.output_shape(in);
    const auto p = rtb_test::random_vector<S>(layout.size(), 1);
    const auto x = rtb_test::random_vector<S>(in.size(), 2), dy = rtb_test::random_vector<S>(out.size(), 3);
    std::vector<S> grad(p.size(), 0.0), dx(x.size()), dx_frozen(x.size()), scratch(static_cast<std::size_t>(conv.scratch_floats(in)));
    conv.backward(p.data(), x.data(), in, dy.data(), grad.data(), dx.data(), rtb::GradientMode::Overwrite, scratch.data());
    std::vector<S> dw(static_cast<std::size_t>(5 * 3 * k * k), 0.0);
    int images = 0;
    conv.backward(p.data(), x.data(), in, dy.data(), static_cast<S*>(nullptr), dx_frozen.data(),
                  rtb::GradientMode::Overwrite, scratch.data(), [&](const auto& col, const auto& d) {
                    CHECK(col.rows() == 3 * k * k);
                    CHECK(col.cols() == out.pixels());
                    CHECK(d.rows() == 5);
                    rtb::detail::gemm(rtb::MatrixView<S>(dw.data(), 5, 3 * k * k), d, col.transpose(), true);
                    ++images;
                  });
    CHECK(images == 2);
    CHECK(dx == dx_frozen);
    CHECK(std::equal(dw.begin(), dw.end(), grad.begin() + conv.weight_offset()));
  }
}

}  // namespace conv2d_test
