// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/net/group_norm.hpp>

#include "image_util.hpp"

// Its own namespace: rtb_sanitized_tests is a unity build, and other files reuse these helper names.
namespace group_norm_test {

namespace {

using rtb::GroupNorm;
using rtb::ImageShape;
using rtb::Index;

struct Case {
  Index groups;
  ImageShape shape;
};
const Case kCases[] = {{2, {2, 4, 3, 5}}, {1, {3, 3, 2, 2}}, {3, {1, 3, 4, 1}}, {3, {2, 6, 1, 1}}, {4, {2, 8, 3, 3}}};

/// γ and β away from 1 and 0 so that both show in every check.
template <class S>
std::vector<S> affine_params(const rtb::ParameterLayout& layout, std::uint64_t seed) {
  auto p = rtb_test::random_vector<S>(layout.size(), seed, 0.5);
  for (Index c = 0; c < layout.tensors()[0].size; ++c) p[static_cast<std::size_t>(c)] += S(1);
  return p;
}

}  // namespace

TEST_CASE_TEMPLATE("GroupNorm forward equals the definition, keeps mean and 1/std, and runs in place", S, float,
                   double) {
  for (const Case& c : kCases) {
    CAPTURE(c.groups);
    rtb::ParameterLayout layout;
    const GroupNorm norm(layout, "norm.", c.groups, c.shape.channels);
    const auto p = affine_params<S>(layout, 3);
    auto x = rtb_test::random_vector<S>(c.shape.size(), 4, 2.0);
    for (S& v : x) v += S(3);  // a mean far from zero
    std::vector<S> y(x.size()), stats(static_cast<std::size_t>(norm.context_floats(c.shape)));
    norm.forward(p.data(), x.data(), c.shape, y.data(), stats.data());
    const auto want =
        rtb_test::reference_group_norm(p.data(), p.data() + c.shape.channels, x.data(), c.shape, c.groups, 1e-5);
    const double tol = std::is_same_v<S, float> ? 2e-6 : 1e-13;
    CHECK(rtb_test::max_relative_difference(y, want) <= tol);
    const Index n = c.shape.channels / c.groups * c.shape.pixels();
    double mean0 = 0, var0 = 0;  // image 0, group 0
    for (Index i = 0; i < n; ++i) mean0 += double(x[static_cast<std::size_t>(i)]) / double(n);
    for (Index i = 0; i < n; ++i) var0 += std::pow(double(x[static_cast<std::size_t>(i)]) - mean0, 2) / double(n);
    CHECK(double(stats[0]) == doctest::Approx(mean0).epsilon(tol));
    CHECK(double(stats[1]) == doctest::Approx(1 / std::sqrt(var0 + 1e-5)).epsilon(tol));
    std::vector<S> inplace = x;
    norm.forward(p.data(), inplace.data(), c.shape, inplace.data());
    CHECK(inplace == y);
  }
}

TEST_CASE("GroupNorm backward matches central differences for weight, bias and input, in both input modes") {
  using S = double;
  for (const Case& c : kCases) {
    CAPTURE(c.groups);
    rtb::ParameterLayout layout;
    const GroupNorm norm(layout, "norm.", c.groups, c.shape.channels);
    auto p = affine_params<S>(layout, 5);
    auto x = rtb_test::random_vector<S>(c.shape.size(), 6, 1.5);
    const auto dy = rtb_test::random_vector<S>(c.shape.size(), 7);
    std::vector<S> y(x.size()), stats(static_cast<std::size_t>(norm.context_floats(c.shape)));
    auto loss = [&] {
      norm.forward(p.data(), x.data(), c.shape, y.data());
      return rtb_test::inner(y, dy);
    };
    norm.forward(p.data(), x.data(), c.shape, y.data(), stats.data());
    const std::vector<S> grad0(p.size(), -0.5), dx0 = rtb_test::random_vector<S>(c.shape.size(), 8);
    std::vector<S> grad = grad0, dx = dx0;
    norm.backward(p.data(), x.data(), c.shape, dy.data(), stats.data(), grad.data(), dx.data(),
                  rtb::GradientMode::Accumulate);
    CHECK(rtb_test::relative_error(rtb_test::minus(grad, grad0), rtb_test::numeric_gradient(p, loss)) < 1e-8);
    const auto numeric_x = rtb_test::numeric_gradient(x, loss);
    CHECK(rtb_test::relative_error(rtb_test::minus(dx, dx0), numeric_x) < 1e-8);
    std::vector<S> grad2 = grad0, dx2 = dy;  // Overwrite, in place on dy
    norm.backward(p.data(), x.data(), c.shape, dx2.data(), stats.data(), grad2.data(), dx2.data(),
                  rtb::GradientMode::Overwrite);
    CHECK(rtb_test::relative_error(dx2, numeric_x) < 1e-8);
    CHECK(rtb_test::relative_error(grad2, grad) < 1e-14);
    std::vector<S> grad3 = grad0;
    norm.backward(p.data(), x.data(), c.shape, dy.data(), stats.data(), grad3.data(), static_cast<S*>(nullptr),
                  rtb::GradientMode::Overwrite);
    CHECK(rtb_test::relative_error(grad3, grad) < 1e-14);
  }
}

TEST_CASE("GroupNorm is named like torch.nn.GroupNorm, starts as the identity affine map, and checks its shapes") {
  rtb::ParameterLayout layout;
  const GroupNorm norm(layout, "mid_block.resnets.0.norm1.", 8, 32);
  REQUIRE(layout.tensors().size() == 2);
  CHECK(layout.tensors()[0].name == "mid_block.resnets.0.norm1.weight");
  CHECK(layout.tensors()[1].name == "mid_block.resnets.0.norm1.bias");
  CHECK(layout.tensors()[1].shape == std::vector<Index>{32});
  CHECK(norm.context_floats({5, 32, 7, 7}) == 2 * 5 * 8);
  std::vector<float> p(static_cast<std::size_t>(layout.size()), 9.0f);
  norm.init_default(p.data());
  CHECK(p[0] == 1.0f);
  CHECK(p[63] == 0.0f);
  CHECK_THROWS_WITH_AS(GroupNorm(layout, "n.", 32, 48), doctest::Contains("32 groups do not divide 48 channels"),
                       rtb::ShapeError);
  CHECK_THROWS_WITH_AS(GroupNorm(layout, "n.", 32, 48), doctest::Contains("24 is the largest below 32"),
                       rtb::ShapeError);
  CHECK_THROWS_AS(GroupNorm(layout, "n.", 0, 48), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(GroupNorm(layout, "n.", 4, 8, 0.0), rtb::InvalidArgumentError);
  CHECK(layout.size() == 64);
  std::vector<float> x(2 * 16 * 4), y(x.size());
  CHECK_THROWS_WITH_AS(norm.forward(p.data(), x.data(), ImageShape{2, 16, 2, 2}, y.data()),
                       doctest::Contains("input has 16 channels"), rtb::ShapeError);
}

}  // namespace group_norm_test
