// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/net/image.hpp>
#include <vector>

TEST_CASE("ImageShape counts NCHW sizes and the door checks name the layer, the shape and the fix") {
  const rtb::ImageShape s{32, 64, 14, 12};
  CHECK(s.pixels() == 168);
  CHECK(s.image_size() == 64 * 168);
  CHECK(s.size() == 32 * 64 * 168);
  CHECK(s.with_channels(3) == rtb::ImageShape{32, 3, 14, 12});
  CHECK(rtb::detail::to_string(s) == "[32, 64, 14, 12]");
  CHECK_NOTHROW(rtb::detail::check_image("L", s, 64));
  CHECK_THROWS_WITH_AS(rtb::detail::check_image("Conv2d 'c.'", s, 32),
                       "Conv2d 'c.': input has 64 channels (shape [32, 64, 14, 12]) but the layer takes 32; feed it a "
                       "[B, 32, H, W] tensor or build the layer for 64 channels",
                       rtb::ShapeError);
  CHECK_THROWS_AS(rtb::detail::check_image("L", {0, 64, 14, 12}, 64), rtb::ShapeError);
  CHECK_THROWS_AS(rtb::detail::check_image("L", {1, 64, 14, 0}, 64), rtb::ShapeError);
  CHECK_NOTHROW(rtb::detail::check_even("L", s));
  CHECK_THROWS_WITH_AS(rtb::detail::check_even("L", {1, 1, 7, 8}), doctest::Contains("pad the input"), rtb::ShapeError);
  CHECK_THROWS_AS(rtb::detail::check_positive("L", "channels", 0), rtb::InvalidArgumentError);
}

TEST_CASE_TEMPLATE("the eight-lane sum and dot equal the plain ones, tails included", S, float, double) {
  for (rtb::Index n : {0, 1, 7, 8, 9, 31, 100}) {
    std::vector<S> a(static_cast<std::size_t>(n)), b(a.size());
    double sum = 0, dot = 0;
    for (rtb::Index i = 0; i < n; ++i) {
      a[static_cast<std::size_t>(i)] = static_cast<S>(0.25 * (i % 5) - 0.3);
      b[static_cast<std::size_t>(i)] = static_cast<S>(1.5 - 0.125 * (i % 7));
      sum += double(a[static_cast<std::size_t>(i)]);
      dot += double(a[static_cast<std::size_t>(i)]) * double(b[static_cast<std::size_t>(i)]);
    }
    CHECK(double(rtb::detail::sum(a.data(), n)) == doctest::Approx(sum).epsilon(1e-6));
    CHECK(double(rtb::detail::dot(a.data(), b.data(), n)) == doctest::Approx(dot).epsilon(1e-6));
  }
}

// Compiles under -Werror only if the lane loops give GCC no reason to warn when n is a constant
// (the pattern that tripped -Waggressive-loop-optimizations: a loop over planes of constant size).
TEST_CASE("the lane sums compile warning-free for constant sizes") {
  static float planes[32 * 784];
  for (int i = 0; i < 32 * 784; ++i) planes[i] = 1.0f;
  float total = 0;
  for (rtb::Index c = 0; c < 32; ++c) total += rtb::detail::sum(planes + c * 784, 784);
  CHECK(total == 32.0f * 784.0f);
}
