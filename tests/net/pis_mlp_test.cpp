// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/concepts/denoiser.hpp>
#include <rtb/net/pis_mlp.hpp>

#include "../test_util.hpp"

static_assert(rtb::Denoiser<rtb::PisMlp<float>>);
static_assert(rtb::Denoiser<rtb::PisMlp<double>>);

TEST_CASE("PisMlp backward matches finite differences for every parameter") {
  rtb::PisMlp<double> net({.dim = 3, .hidden = 8, .harmonics = 5, .num_layers = 2, .seed = 4, .zero_init_last = false});
  for (double t : {0.0, 0.37, 0.99}) {
    CAPTURE(t);
    rtb_test::check_denoiser_gradient(net, 5, t, 11);
  }
  rtb::PisMlp<double> shallow({.dim = 2, .hidden = 6, .harmonics = 3, .num_layers = 0, .zero_init_last = false});
  rtb_test::check_denoiser_gradient(shallow, 4, 0.5, 12);
}

TEST_CASE("PisMlp has the reference architecture and names and a zero-initialised head") {
  rtb::PisMlp<float> net;  // D = 2, H = 64, F = 64, two hidden layers
  const auto& t = net.layout().tensors();
  std::vector<std::string> names;
  for (const auto& e : t) names.push_back(e.name);
  const std::vector<std::string> expected = {
      "t_model.timestep_phase",    "t_model.t_model.0.weight",   "t_model.t_model.0.bias",
      "t_model.t_model.2.weight",  "t_model.t_model.2.bias",     "s_model.x_model.weight",
      "s_model.x_model.bias",      "joint_model.model.1.0.weight", "joint_model.model.1.0.bias",
      "joint_model.model.2.0.weight", "joint_model.model.2.0.bias", "joint_model.model.3.weight",
      "joint_model.model.3.bias"};
  std::vector<std::string> trained;
  for (const auto& e : t)
    if (e.trainable) trained.push_back(e.name);
  CHECK(trained == expected);
  // the reference's fixed frequencies are a buffer, stored with the weights: linspace(0.1, 100, 64)
  const auto* pe = net.layout().find("t_model.pe");
  REQUIRE(pe != nullptr);
  CHECK(!pe->trainable);
  CHECK(pe->shape == std::vector<rtb::Index>{1, 64});
  rtb::Model model(net);
  CHECK(model.params()[static_cast<std::size_t>(pe->offset)] == 0.1f);
  CHECK(model.params()[static_cast<std::size_t>(pe->offset + 63)] == 100.0f);
  CHECK(net.layout().find("t_model.t_model.0.weight")->shape == std::vector<rtb::Index>{64, 128});
  CHECK(net.layout().find("joint_model.model.3.weight")->shape == std::vector<rtb::Index>{4, 64});
  CHECK(net.num_params() ==
        2 * 64 + (128 * 64 + 64) + (64 * 64 + 64) + (2 * 64 + 64) + 2 * (64 * 64 + 64) + (64 * 4 + 4));
  // zero-initialised last layer: a fresh net outputs exactly 0 (zero drift)
  rtb::RowMatrix<float> x(3, 2), out(3, 4);
  rtb_test::fill_normal<float>(rtb::MatrixView<float>(x.data(), 3, 2), 1);
  auto ctx = model.make_context(3);
  model.inference(rtb_test::step_at(rtb::ConstMatrixView<float>(x.data(), 3, 2), 0.3f),
                  rtb::MatrixView<float>(out.data(), 3, 4), ctx);
  CHECK(out.cwiseAbs().maxCoeff() == 0.0f);
  // without the reference's log-variance head the output is the mean alone
  CHECK(rtb::PisMlp<float>({.log_variance_head = false}).output_dim() == 2);
}

TEST_CASE("inference and forward give identical outputs and Accumulate adds where Overwrite replaces") {
  rtb::Model net(rtb::PisMlp<float>({.hidden = 16, .harmonics = 8, .seed = 2, .zero_init_last = false}));
  rtb::RowMatrix<float> x(7, 2), a(7, 4), b(7, 4), d(7, 4);
  rtb_test::fill_normal<float>(rtb::MatrixView<float>(x.data(), 7, 2), 3, 3.0);
  rtb_test::fill_normal<float>(rtb::MatrixView<float>(d.data(), 7, 4), 4);
  auto c1 = net.make_context(8), c2 = net.make_context(8);
  const auto s = rtb_test::step_at(rtb::ConstMatrixView<float>(x.data(), 7, 2), 0.6f);
  net.inference(s, rtb::MatrixView<float>(a.data(), 7, 4), c1);
  net.forward(s, rtb::MatrixView<float>(b.data(), 7, 4), c2);
  CHECK((a - b).cwiseAbs().maxCoeff() == 0.0f);
  std::vector<float> g1(static_cast<std::size_t>(net.num_params()), 5.0f), g2 = g1;
  net.backward(c2, rtb::ConstMatrixView<float>(d.data(), 7, 4), std::span<float>(g1), rtb::GradientMode::Overwrite);
  net.backward(c2, rtb::ConstMatrixView<float>(d.data(), 7, 4), std::span<float>(g2), rtb::GradientMode::Accumulate);
  for (std::size_t i = 0; i < g1.size(); ++i) CHECK(g2[i] == doctest::Approx(g1[i] + 5.0f).epsilon(1e-5));
}

TEST_CASE("PisMlp rejects impossible sizes") {
  CHECK_THROWS_AS(rtb::PisMlp<float>({.dim = 0}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::PisMlp<float>({.hidden = -1}), rtb::InvalidArgumentError);
}
