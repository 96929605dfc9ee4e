// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/net/resnet_block.hpp>

#include "image_util.hpp"

namespace {

using rtb::ImageShape;
using rtb::Index;
using rtb::ResnetBlock2d;

/// The block from the reference pieces (definitions in double), as diffusers' ResnetBlock2D.forward.
template <class S>
std::vector<double> reference(const ResnetBlock2d& blk, const std::vector<S>& p, const std::vector<S>& x,
                              const ImageShape& s, const std::vector<S>& temb) {
  auto silu = [](std::vector<double> v) {
    for (double& e : v) e = e / (1 + std::exp(-e));
    return v;
  };
  auto as_s = [](const std::vector<double>& v) { return std::vector<S>(v.begin(), v.end()); };
  auto tensor = [&](Index offset) { return p.data() + offset; };
  const Index C = blk.out();
  const auto a1 =
      as_s(silu(rtb_test::reference_group_norm(tensor(blk.norm1().weight_offset()), tensor(blk.norm1().bias_offset()),
                                               x.data(), s, blk.norm1().groups(), 1e-5)));
  std::vector<S> time(static_cast<std::size_t>(C), S(0));
  if (blk.temb_channels() > 0) {
    const auto t = silu(std::vector<double>(temb.begin(), temb.end()));
    const auto& l = blk.time_emb_proj();
    for (Index o = 0; o < C; ++o) {
      double acc = p[static_cast<std::size_t>(l.bias_offset() + o)];
      for (Index i = 0; i < l.in(); ++i)
        acc += p[static_cast<std::size_t>(l.weight_offset() + o * l.in() + i)] * t[static_cast<std::size_t>(i)];
      time[static_cast<std::size_t>(o)] = static_cast<S>(acc);
    }
  }
  const auto h1 = as_s(rtb_test::reference_conv2d(
      tensor(blk.conv1().weight_offset()), tensor(blk.conv1().bias_offset()), time.data(), a1.data(), s, C, 3, 1));
  const ImageShape mid = s.with_channels(C);
  const auto a2 =
      as_s(silu(rtb_test::reference_group_norm(tensor(blk.norm2().weight_offset()), tensor(blk.norm2().bias_offset()),
                                               h1.data(), mid, blk.norm2().groups(), 1e-5)));
  auto y = rtb_test::reference_conv2d(tensor(blk.conv2().weight_offset()), tensor(blk.conv2().bias_offset()),
                                      static_cast<const S*>(nullptr), a2.data(), mid, C, 3, 1);
  if (blk.has_shortcut()) {
    const auto sc = rtb_test::reference_conv2d(tensor(blk.conv_shortcut().weight_offset()),
                                               tensor(blk.conv_shortcut().bias_offset()),
                                               static_cast<const S*>(nullptr), x.data(), s, C, 1, 1);
    for (std::size_t i = 0; i < y.size(); ++i) y[i] += sc[i];
  } else {
    for (std::size_t i = 0; i < y.size(); ++i) y[i] += double(x[i]);
  }
  return y;
}

struct Case {
  Index in, out, temb, groups, height, width;
};
const Case kCases[] = {{4, 4, 3, 2, 3, 4}, {2, 4, 3, 2, 4, 3}, {4, 6, 0, 2, 2, 2}, {3, 3, 5, 1, 1, 2}};

template <class S>
std::vector<S> params_for(const ResnetBlock2d& blk, const rtb::ParameterLayout& layout, std::uint64_t seed) {
  std::vector<S> p(static_cast<std::size_t>(layout.size()));
  blk.init_default(p.data(), seed, 0);
  for (const rtb::GroupNorm* n : {&blk.norm1(), &blk.norm2()}) {  // affine away from (1, 0)
    const auto r = rtb_test::random_vector<S>(2 * n->channels(), seed + 1, 0.3);
    for (Index c = 0; c < n->channels(); ++c) {
      p[static_cast<std::size_t>(n->weight_offset() + c)] += r[static_cast<std::size_t>(c)];
      p[static_cast<std::size_t>(n->bias_offset() + c)] += r[static_cast<std::size_t>(n->channels() + c)];
    }
  }
  return p;
}

}  // namespace

TEST_CASE_TEMPLATE("ResnetBlock2d forward equals diffusers' ResnetBlock2D built from the reference layers", S, float,
                   double) {
  for (const Case& c : kCases) {
    CAPTURE(c.in);
    CAPTURE(c.out);
    rtb::ParameterLayout layout;
    const ResnetBlock2d blk(layout, "down_blocks.0.resnets.0.", c.in, c.out, c.temb, c.groups);
    const auto p = params_for<S>(blk, layout, 3);
    const ImageShape s{2, c.in, c.height, c.width};
    const auto x = rtb_test::random_vector<S>(s.size(), 4);
    const auto temb = rtb_test::random_vector<S>(std::max<Index>(c.temb, 1), 5);
    const ImageShape out = blk.output_shape(s);
    std::vector<S> y(static_cast<std::size_t>(out.size())), context(static_cast<std::size_t>(blk.context_floats(s))),
        scratch(static_cast<std::size_t>(blk.scratch_floats(s)));
    const auto want = reference(blk, p, x, s, temb);
    const double tol = std::is_same_v<S, float> ? 1e-5 : 1e-12;
    blk.forward(p.data(), x.data(), s, temb.data(), y.data(), static_cast<S*>(nullptr), scratch.data());
    CHECK(rtb_test::max_relative_difference(y, want) <= tol);
    blk.forward(p.data(), x.data(), s, temb.data(), y.data(), context.data(), scratch.data());
    CHECK(rtb_test::max_relative_difference(y, want) <= tol);
  }
}

TEST_CASE("ResnetBlock2d backward matches central differences for every tensor, the input and temb") {
  using S = double;
  for (const Case& c : kCases) {
    CAPTURE(c.in);
    CAPTURE(c.out);
    rtb::ParameterLayout layout;
    const ResnetBlock2d blk(layout, "blk.", c.in, c.out, c.temb, c.groups);
    auto p = params_for<S>(blk, layout, 6);
    const ImageShape s{2, c.in, c.height, c.width};
    auto x = rtb_test::random_vector<S>(s.size(), 7);
    auto temb = rtb_test::random_vector<S>(c.temb, 8);
    const ImageShape out = blk.output_shape(s);
    const auto dy = rtb_test::random_vector<S>(out.size(), 9);
    std::vector<S> y(dy.size()), context(static_cast<std::size_t>(blk.context_floats(s))),
        scratch(static_cast<std::size_t>(blk.scratch_floats(s)));
    auto loss = [&] {
      blk.forward(p.data(), x.data(), s, temb.data(), y.data(), static_cast<S*>(nullptr), scratch.data());
      return rtb_test::inner(y, dy);
    };
    blk.forward(p.data(), x.data(), s, temb.data(), y.data(), context.data(), scratch.data());
    const std::vector<S> grad0(p.size(), 0.5), dx0 = rtb_test::random_vector<S>(s.size(), 10),
                                               dt0 = rtb_test::random_vector<S>(c.temb, 11);
    std::vector<S> grad = grad0, dx = dx0, dt = dt0;
    blk.backward(p.data(), x.data(), s, dy.data(), context.data(), grad.data(), dx.data(),
                 rtb::GradientMode::Accumulate, dt.data(), scratch.data());
    CHECK(rtb_test::relative_error(rtb_test::minus(grad, grad0), rtb_test::numeric_gradient(p, loss)) < 1e-7);
    const auto numeric_x = rtb_test::numeric_gradient(x, loss);
    CHECK(rtb_test::relative_error(rtb_test::minus(dx, dx0), numeric_x) < 1e-7);
    if (c.temb > 0)
      CHECK(rtb_test::relative_error(rtb_test::minus(dt, dt0), rtb_test::numeric_gradient(temb, loss)) < 1e-7);
    std::vector<S> grad2 = grad0, dx2 = dx0;
    blk.backward(p.data(), x.data(), s, dy.data(), context.data(), grad2.data(), dx2.data(),
                 rtb::GradientMode::Overwrite, static_cast<S*>(nullptr), scratch.data());
    CHECK(rtb_test::relative_error(dx2, numeric_x) < 1e-7);
    CHECK(rtb_test::relative_error(grad2, grad) < 1e-13);
    std::vector<S> grad3 = grad0;
    blk.backward(p.data(), x.data(), s, dy.data(), context.data(), grad3.data(), static_cast<S*>(nullptr),
                 rtb::GradientMode::Overwrite, static_cast<S*>(nullptr), scratch.data());
    CHECK(rtb_test::relative_error(grad3, grad) < 1e-13);
  }
}

TEST_CASE("ResnetBlock2d is named like diffusers' ResnetBlock2D and checks its channels") {
  rtb::ParameterLayout layout;
  const ResnetBlock2d blk(layout, "up_blocks.0.resnets.1.", 96, 64, 128, 32);
  std::vector<std::string> names;
  for (const auto& t : layout.tensors()) names.push_back(t.name.substr(std::string("up_blocks.0.resnets.1.").size()));
  CHECK(names == std::vector<std::string>{"norm1.weight", "norm1.bias", "conv1.weight", "conv1.bias",
                                          "time_emb_proj.weight", "time_emb_proj.bias", "norm2.weight", "norm2.bias",
                                          "conv2.weight", "conv2.bias", "conv_shortcut.weight", "conv_shortcut.bias"});
  CHECK(layout.find("up_blocks.0.resnets.1.conv_shortcut.weight")->shape == std::vector<Index>{64, 96, 1, 1});
  CHECK(layout.find("up_blocks.0.resnets.1.time_emb_proj.weight")->shape == std::vector<Index>{64, 128});
  rtb::ParameterLayout same;
  CHECK_FALSE(ResnetBlock2d(same, "r.", 32, 32, 128, 8).has_shortcut());
  CHECK(same.find("r.conv_shortcut.weight") == nullptr);
  CHECK_THROWS_WITH_AS(ResnetBlock2d(same, "r.", 48, 64, 128, 32),
                       doctest::Contains("GroupNorm 'r.norm1.': 32 groups do not divide 48 channels"), rtb::ShapeError);
  CHECK_THROWS_WITH_AS(ResnetBlock2d(same, "r.", 32, 48, 128, 32), doctest::Contains("'r.norm2.'"), rtb::ShapeError);
  CHECK_THROWS_AS(blk.output_shape({2, 64, 8, 8}), rtb::ShapeError);
  std::vector<float> p(static_cast<std::size_t>(layout.size())), x(2 * 96 * 4), y(2 * 64 * 4);
  std::vector<float> scratch(static_cast<std::size_t>(blk.scratch_floats({2, 96, 2, 2})));
  CHECK_THROWS_WITH_AS(blk.forward(p.data(), x.data(), ImageShape{2, 96, 2, 2}, static_cast<const float*>(nullptr),
                                   y.data(), static_cast<float*>(nullptr), scratch.data()),
                       doctest::Contains("temb is null"), rtb::InvalidArgumentError);
}
