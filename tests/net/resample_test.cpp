// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/net/resample.hpp>

#include "image_util.hpp"

namespace {

using rtb::GradientMode;
using rtb::ImageShape;
using rtb::Index;

template <class S>
S at(const std::vector<S>& v, const ImageShape& s, Index b, Index c, Index i, Index j) {
  return v[static_cast<std::size_t>(((b * s.channels + c) * s.height + i) * s.width + j)];
}

/// Checks `backward` (dy ↦ dx, given the mode) against central differences of ⟨dy, forward(x)⟩,
/// in both modes: Overwrite gives the gradient, Accumulate adds it to what dx held.
template <class Forward, class Backward>
void check_backward(const ImageShape& in, Index out_size, Forward forward, Backward backward) {
  auto x = rtb_test::random_vector<double>(in.size(), 1);
  const auto dy = rtb_test::random_vector<double>(out_size, 2);
  std::vector<double> y(static_cast<std::size_t>(out_size));
  const auto numeric = rtb_test::numeric_gradient(x, [&] {
    forward(x.data(), y.data());
    return rtb_test::inner(y, dy);
  });
  std::vector<double> dx(x.size(), 123.0);
  backward(dy.data(), dx.data(), GradientMode::Overwrite);
  CHECK(rtb_test::relative_error(dx, numeric) < 1e-9);
  const auto dx0 = rtb_test::random_vector<double>(in.size(), 3);
  std::vector<double> acc = dx0;
  backward(dy.data(), acc.data(), GradientMode::Accumulate);
  CHECK(rtb_test::relative_error(rtb_test::minus(acc, dx0), numeric) < 1e-9);
}

}  // namespace

TEST_CASE_TEMPLATE("nearest 2x upsampling copies each pixel into a 2x2 block; pooling averages one", S, float, double) {
  const ImageShape in{2, 3, 3, 4};
  const auto x = rtb_test::random_vector<S>(in.size(), 4);
  const ImageShape up = rtb::upsampled_shape(in);
  CHECK(up == ImageShape{2, 3, 6, 8});
  std::vector<S> y(static_cast<std::size_t>(up.size()));
  rtb::upsample_nearest2x(x.data(), in, y.data());
  for (Index b = 0; b < 2; ++b)
    for (Index c = 0; c < 3; ++c)
      for (Index i = 0; i < 6; ++i)
        for (Index j = 0; j < 8; ++j) CHECK(at(y, up, b, c, i, j) == at(x, in, b, c, i / 2, j / 2));
  std::vector<S> back(x.size());
  rtb::avg_pool2x2(y.data(), up, back.data());  // pooling undoes upsampling exactly
  CHECK(back == x);
  const ImageShape down = rtb::pooled_shape({2, 3, 6, 8});
  std::vector<S> pooled(static_cast<std::size_t>(down.size()));
  const auto z = rtb_test::random_vector<S>(up.size(), 5);
  rtb::avg_pool2x2(z.data(), up, pooled.data());
  for (Index b = 0; b < 2; ++b)
    for (Index c = 0; c < 3; ++c)
      for (Index i = 0; i < 3; ++i)
        for (Index j = 0; j < 4; ++j) {
          const double mean =
              (double(at(z, up, b, c, 2 * i, 2 * j)) + double(at(z, up, b, c, 2 * i, 2 * j + 1)) +
               double(at(z, up, b, c, 2 * i + 1, 2 * j)) + double(at(z, up, b, c, 2 * i + 1, 2 * j + 1))) /
              4;
          CHECK(double(at(pooled, down, b, c, i, j)) == doctest::Approx(mean).epsilon(1e-6));
        }
}

TEST_CASE("upsampling, pooling and concatenation backwards match central differences in both modes") {
  const ImageShape in{2, 3, 2, 3};
  check_backward(
      in, rtb::upsampled_shape(in).size(), [&](const double* x, double* y) { rtb::upsample_nearest2x(x, in, y); },
      [&](const double* dy, double* dx, GradientMode m) { rtb::upsample_nearest2x_backward(dy, in, dx, m); });
  const ImageShape even{2, 2, 4, 6};
  check_backward(
      even, rtb::pooled_shape(even).size(), [&](const double* x, double* y) { rtb::avg_pool2x2(x, even, y); },
      [&](const double* dy, double* dx, GradientMode m) { rtb::avg_pool2x2_backward(dy, even, dx, m); });
  // concatenation, seen as a function of the first part and then of the second
  const ImageShape first{2, 3, 2, 2}, second{2, 1, 2, 2};
  const auto x1 = rtb_test::random_vector<double>(first.size(), 6),
             x2 = rtb_test::random_vector<double>(second.size(), 7);
  const Index n = rtb::concat_shape(first, second).size();
  check_backward(
      first, n, [&](const double* x, double* y) { rtb::concat_channels(x, first, x2.data(), second, y); },
      [&](const double* dy, double* dx, GradientMode m) {
        rtb::split_channels(dy, first, second, dx, static_cast<double*>(nullptr), m);
      });
  check_backward(
      second, n, [&](const double* x, double* y) { rtb::concat_channels(x1.data(), first, x, second, y); },
      [&](const double* dy, double* dx, GradientMode m) {
        rtb::split_channels(dy, first, second, static_cast<double*>(nullptr), dx, m);
      });
  std::vector<double> y(static_cast<std::size_t>(n));
  rtb::concat_channels(x1.data(), first, x2.data(), second, y.data());
  CHECK(y[11] == x1[11]);  // image 0: 12 values of the first part, then 4 of the second
  CHECK(y[12] == x2[0]);
  CHECK(y[16] == x1[12]);
}

TEST_CASE("resampling rejects odd maps to pool, mismatched parts to concatenate and empty shapes") {
  CHECK_THROWS_WITH_AS(rtb::pooled_shape({2, 4, 7, 7}), doctest::Contains("cannot downsample a 7x7 map"),
                       rtb::ShapeError);
  std::vector<float> x(2 * 4 * 7 * 7), y(x.size());
  CHECK_THROWS_AS(rtb::avg_pool2x2(x.data(), ImageShape{2, 4, 7, 6}, y.data()), rtb::ShapeError);
  CHECK_THROWS_WITH_AS(rtb::concat_shape({2, 4, 8, 8}, {2, 4, 7, 7}),
                       doctest::Contains("differ in batch, height or width"), rtb::ShapeError);
  CHECK_THROWS_AS(rtb::concat_shape({2, 4, 8, 8}, {1, 4, 8, 8}), rtb::ShapeError);
  CHECK_THROWS_WITH_AS(rtb::upsampled_shape({2, 0, 8, 8}), doctest::Contains("is empty"), rtb::ShapeError);
  CHECK(rtb::concat_shape({2, 4, 8, 8}, {2, 6, 8, 8}) == ImageShape{2, 10, 8, 8});
}
