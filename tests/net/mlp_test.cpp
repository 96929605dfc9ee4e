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

TEST_CASE("Mlp names its layers layers.<i> and rejects empty or negative sizes") {
  rtb::Mlp<float> net({.input_dim = 2, .hidden = {32, 16}, .output_dim = 4, .time_harmonics = 4});
  CHECK(net.layout().find("layers.0.weight")->shape == std::vector<rtb::Index>{32, 2 + 8});
  CHECK(net.layout().find("layers.1.weight")->shape == std::vector<rtb::Index>{16, 32});
  CHECK(net.layout().find("layers.2.weight")->shape == std::vector<rtb::Index>{4, 16});
  CHECK_THROWS_AS(rtb::Mlp<float>({.hidden = {}}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::Mlp<float>({.hidden = {8, 0}}), rtb::InvalidArgumentError);
}
