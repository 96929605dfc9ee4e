// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/net/timestep_embedding.hpp>

#include "image_util.hpp"

using rtb::Index;

TEST_CASE("the sinusoid is diffusers' get_timestep_embedding: cos first with flip_sin_to_cos, sin first without") {
  double e[5];
  // dim 4, τ = 1, shift 0: frequencies 1 and exp(−ln 10⁴·1/2) = 10⁻², flipped to [cos, sin]
  rtb::sinusoidal_timestep_embedding<double>(1, 4, e);
  CHECK(e[0] == doctest::Approx(std::cos(1.0)).epsilon(1e-15));
  CHECK(e[1] == doctest::Approx(std::cos(0.01)).epsilon(1e-15));
  CHECK(e[2] == doctest::Approx(std::sin(1.0)).epsilon(1e-15));
  CHECK(e[3] == doctest::Approx(std::sin(0.01)).epsilon(1e-15));
  // get_timestep_embedding's own defaults (no flip, shift 1): frequencies 1 and 10⁻⁴, [sin, cos], odd dim padded
  e[4] = 9;
  rtb::sinusoidal_timestep_embedding<double>(3, 5, e, false, 1.0);
  CHECK(e[0] == doctest::Approx(std::sin(3.0)).epsilon(1e-15));
  CHECK(e[1] == doctest::Approx(std::sin(3e-4)).epsilon(1e-12));
  CHECK(e[2] == doctest::Approx(std::cos(3.0)).epsilon(1e-15));
  CHECK(e[3] == doctest::Approx(std::cos(3e-4)).epsilon(1e-15));
  CHECK(e[4] == 0.0);
  // UNet2DModel with block_out_channels[0] = 32 at τ = 990: f_i = 10000^(−i/16)
  float f[32];
  rtb::sinusoidal_timestep_embedding<float>(990, 32, f);
  for (Index i = 0; i < 16; ++i) {
    const double a = 990.0 * std::pow(10000.0, -double(i) / 16.0);
    CHECK(std::fabs(f[i] - std::cos(a)) < 2e-4);  // float32 rounding of f_i, times 990
    CHECK(std::fabs(f[16 + i] - std::sin(a)) < 2e-4);
  }
  CHECK(f[0] == std::cos(990.0f));  // f_0 = 1 exactly: the angle is exact
}

TEST_CASE("TimestepEmbedding: Linear, SiLU, Linear on the sinusoid; backward matches central differences") {
  rtb::ParameterLayout layout;
  const rtb::TimestepEmbedding emb(layout, "time_embedding.", 6, 5);
  std::vector<double> p(static_cast<std::size_t>(layout.size()));
  emb.init_default(p.data(), 3, 0);
  std::vector<double> temb(5), context(static_cast<std::size_t>(emb.context_floats())),
      scratch(static_cast<std::size_t>(emb.scratch_floats()));
  const Index tau = 37;
  emb.forward(p.data(), tau, temb.data(), context.data());
  // by hand: e, h = SiLU(W₁e + b₁), temb = W₂h + b₂
  double e[6];
  rtb::sinusoidal_timestep_embedding<double>(tau, 6, e);
  const auto& l1 = emb.linear_1();
  const auto& l2 = emb.linear_2();
  std::vector<double> h(5);
  for (Index o = 0; o < 5; ++o) {
    double a = p[static_cast<std::size_t>(l1.bias_offset() + o)];
    for (Index i = 0; i < 6; ++i) a += p[static_cast<std::size_t>(l1.weight_offset() + o * 6 + i)] * e[i];
    h[static_cast<std::size_t>(o)] = a / (1 + std::exp(-a));
  }
  for (Index o = 0; o < 5; ++o) {
    double a = p[static_cast<std::size_t>(l2.bias_offset() + o)];
    for (Index i = 0; i < 5; ++i)
      a += p[static_cast<std::size_t>(l2.weight_offset() + o * 5 + i)] * h[static_cast<std::size_t>(i)];
    CHECK(temb[static_cast<std::size_t>(o)] == doctest::Approx(a).epsilon(1e-13));
  }
  const auto d_temb = rtb_test::random_vector<double>(5, 4);
  const std::vector<double> grad0(p.size(), 0.125);
  std::vector<double> grad = grad0;
  emb.backward(p.data(), d_temb.data(), context.data(), grad.data(), scratch.data());
  const auto numeric = rtb_test::numeric_gradient(p, [&] {
    std::vector<double> ctx(context.size()), out(5);
    emb.forward(p.data(), tau, out.data(), ctx.data());
    return rtb_test::inner(out, d_temb);
  });
  CHECK(rtb_test::relative_error(rtb_test::minus(grad, grad0), numeric) < 1e-8);
}

TEST_CASE("TimestepEmbedding is named like diffusers' time_embedding and rejects unusable widths") {
  rtb::ParameterLayout layout;
  const rtb::TimestepEmbedding emb(layout, "time_embedding.", 32, 128);
  REQUIRE(layout.tensors().size() == 4);
  CHECK(layout.tensors()[0].name == "time_embedding.linear_1.weight");
  CHECK(layout.tensors()[0].shape == std::vector<Index>{128, 32});
  CHECK(layout.tensors()[3].name == "time_embedding.linear_2.bias");
  CHECK(emb.out() == 128);
  CHECK_THROWS_WITH_AS(rtb::TimestepEmbedding(layout, "t.", 1, 4), doctest::Contains("at least 2 channels"),
                       rtb::InvalidArgumentError);
  CHECK_THROWS_WITH_AS(rtb::TimestepEmbedding(layout, "t.", 2, 4, true, 1.0),
                       doctest::Contains("downscale_freq_shift 1 must be below channels/2 = 1"),
                       rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::TimestepEmbedding(layout, "t.", 8, 0), rtb::InvalidArgumentError);
}
