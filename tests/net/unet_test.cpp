// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"

namespace {

using rtb::Index;
using S = double;

/// The tiny configuration of the issue: 8×8, 2 levels, 4 base channels, attention at the lower
/// level and in the middle, so every kind of op (shortcut convs, concat, up/down) is on the path.
rtb::UNet<S>::Options tiny() {
  return {.height = 8,
          .width = 8,
          .channels = 2,
          .channels_per_level = {4, 8},
          .blocks_per_level = 1,
          .attention_levels = {1},
          .mid_attention = true,
          .groups = 2,
          .seed = 3};
}

}  // namespace

TEST_CASE("UNet backward matches central differences for every parameter and the input") {
  rtb::Model<rtb::UNet<S>> model{rtb::UNet<S>(tiny())};
  const Index rows = 2, D = model.input_dim();
  CHECK(D == 2 * 8 * 8);
  rtb::RowMatrix<S> x(rows, D);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), rows, D), 5);
  const rtb::ConstMatrixView<S> xv(x.data(), rows, D);
  rtb_test::check_model_gradient<rtb::UNet<S>, S>(model, xv, 17.0, 9);

  // ∂L/∂x, L = Σ d_out ⊙ ε(x)
  rtb::RowMatrix<S> d_out(rows, D), out(rows, D);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(d_out.data(), rows, D), 11);
  auto ctx = model.make_context(rows);
  rtb::MatrixView<S> ov(out.data(), rows, D);
  model.forward(rtb_test::step_at(xv, 17.0), ov, ctx);
  std::vector<S> grad(static_cast<std::size_t>(model.num_params()));
  model.backward(ctx, rtb::ConstMatrixView<S>(d_out.data(), rows, D), std::span<S>(grad), rtb::GradientMode::Overwrite);
  const auto dx = ctx.input_gradient(D);
  const std::vector<S> analytic(dx.data(), dx.data() + dx.size());
  auto probe = model.make_context(rows);
  const std::vector<S> numeric =
      rtb_test::numeric_gradient(std::span<S>(x.data(), static_cast<std::size_t>(x.size())), [&] {
        model.inference(rtb_test::step_at(xv, 17.0), ov, probe);
        return (out.array() * d_out.array()).sum();
      });
  CHECK(rtb_test::relative_error(analytic, numeric) < rtb_test::Tolerances<S>::gradient);
}

TEST_CASE("UNet: diffusers' tensor names, its parameter count, macs by hand, and forward equals inference") {
  const rtb::UNet<S> net(tiny());
  const rtb::ParameterLayout& l = net.layout();
  for (const char* name : {"conv_in.weight", "time_embedding.linear_1.weight", "time_embedding.linear_2.bias",
                           "down_blocks.0.resnets.0.norm1.weight", "down_blocks.0.resnets.0.time_emb_proj.weight",
                           "down_blocks.0.downsamplers.0.conv.weight", "down_blocks.1.resnets.0.conv_shortcut.weight",
                           "down_blocks.1.attentions.0.to_q.weight", "down_blocks.1.attentions.0.group_norm.bias",
                           "mid_block.resnets.0.conv1.weight", "mid_block.attentions.0.to_out.0.weight",
                           "mid_block.resnets.1.conv2.bias", "up_blocks.0.resnets.1.conv_shortcut.weight",
                           "up_blocks.0.attentions.1.to_v.bias", "up_blocks.0.upsamplers.0.conv.weight",
                           "up_blocks.1.resnets.1.conv1.weight", "conv_norm_out.weight", "conv_out.bias"}) {
    CAPTURE(name);
    CHECK(l.find(name) != nullptr);
  }
  CHECK(l.find("down_blocks.1.downsamplers.0.conv.weight") == nullptr);  // the last level does not downsample
  CHECK(l.find("up_blocks.1.upsamplers.0.conv.weight") == nullptr);
  CHECK(l.find("conv_in.weight")->shape == std::vector<Index>{4, 2, 3, 3});
  CHECK(l.find("up_blocks.0.resnets.0.conv1.weight")->shape == std::vector<Index>{8, 16, 3, 3});  // [h; skip]
  CHECK(l.find("up_blocks.0.resnets.1.conv1.weight")->shape ==
        std::vector<Index>{8, 12, 3, 3});  // + the downsampler's 4
  CHECK(l.find("up_blocks.1.resnets.0.conv1.weight")->shape == std::vector<Index>{4, 12, 3, 3});  // 8 up + 4 skip
  CHECK(l.find("up_blocks.1.resnets.1.conv1.weight")->shape == std::vector<Index>{4, 8, 3, 3});   // 4 + conv_in's 4

  // One level, no attention: every conv's macs by hand (8×8 = 64 positions, 3×3 = 9 taps).
  const rtb::UNet<S> flat(
      {.height = 8, .width = 8, .channels = 1, .channels_per_level = {4}, .mid_attention = false, .groups = 2});
  const Index conv_in = 64 * 4 * 1 * 9, res44 = 2 * 64 * 4 * 4 * 9, up = 64 * 4 * 8 * 9 + 64 * 4 * 4 * 9 + 64 * 4 * 8,
              conv_out = 64 * 1 * 4 * 9;
  CHECK(flat.macs_per_row() == conv_in + res44 + 2 * res44 + 2 * up + conv_out);
  // and its parameters by hand (diffusers' UNet2DModel of the same configuration has as many):
  // conv_in 40, time MLP 4→16→16 352, three 4→4 resnets 380 each (norms 16, convs 2·148, temb
  // projection 68), two up resnets 8→4 568 each (norms 24, convs 292 + 148, projection 68,
  // 1×1 shortcut 36), conv_norm_out 8, conv_out 37.
  CHECK(flat.num_params() == 40 + 352 + 3 * 380 + 2 * 568 + 8 + 37);

  rtb::Model<rtb::UNet<S>> model(net);
  const Index rows = 3, D = model.input_dim();
  rtb::RowMatrix<S> x(rows, D), a(rows, D), b(rows, D);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), rows, D), 2);
  auto ctx = model.make_context(4);  // fewer rows than the context holds
  const auto s = rtb_test::step_at(rtb::ConstMatrixView<S>(x.data(), rows, D), 250.0);
  model.forward(s, rtb::MatrixView<S>(a.data(), rows, D), ctx);
  model.inference(s, rtb::MatrixView<S>(b.data(), rows, D), ctx);
  CHECK(a == b);
  CHECK(a.allFinite());
  // another timestep gives another output (the embedding reaches every block)
  model.inference(rtb_test::step_at(rtb::ConstMatrixView<S>(x.data(), rows, D), 251.0),
                  rtb::MatrixView<S>(b.data(), rows, D), ctx);
  CHECK(a != b);
}

TEST_CASE("UNet weights round-trip through .npy files under diffusers' names; a wrong shape is refused") {
  const rtb::Model<rtb::UNet<float>> model(
      rtb::UNet<float>({.height = 8, .width = 8, .channels = 1, .channels_per_level = {4, 8}, .groups = 4, .seed = 1}));
  const std::string dir = (std::filesystem::temp_directory_path() / "rtb_unet_weights").string();
  std::filesystem::remove_all(dir);
  rtb::save_parameters(model, dir);
  CHECK(std::filesystem::exists(dir + "/mid_block.attentions.0.to_k.weight.npy"));
  rtb::Model<rtb::UNet<float>> loaded(
      rtb::UNet<float>({.height = 8, .width = 8, .channels = 1, .channels_per_level = {4, 8}, .groups = 4, .seed = 2}));
  rtb::load_parameters(loaded, dir);
  CHECK(std::equal(model.params().begin(), model.params().end(), loaded.params().begin()));
  // a file of another architecture's shape: refused, naming the tensor, nothing changed
  const std::vector<float> wrong(4 * 2 * 9, 0.5f);
  rtb::write_npy(dir + "/conv_in.weight.npy", {4, 2, 3, 3}, std::span<const float>(wrong));
  rtb::Model<rtb::UNet<float>> fresh(
      rtb::UNet<float>({.height = 8, .width = 8, .channels = 1, .channels_per_level = {4, 8}, .groups = 4, .seed = 2}));
  const std::vector<float> before(fresh.params().begin(), fresh.params().end());
  try {
    rtb::load_parameters(fresh, dir);
    FAIL("a [4, 2, 3, 3] conv_in for a 1-channel net must be refused");
  } catch (const rtb::ShapeError& e) {
    CHECK(std::string(e.what()).find("conv_in.weight") != std::string::npos);
  }
  CHECK(std::equal(before.begin(), before.end(), fresh.params().begin()));
  std::filesystem::remove_all(dir);
}

TEST_CASE("UNet rejects bad options and bad inputs with typed errors that say how to fix them") {
  auto message_of = [](auto&& f) {
    try {
      f();
    } catch (const rtb::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  using O = rtb::UNet<float>::Options;
  // a group count that does not divide a level's channels
  CHECK_THROWS_AS(rtb::UNet<float>(O{.channels_per_level = {32, 48}, .groups = 32}), rtb::ShapeError);
  CHECK(message_of([] {
          rtb::UNet<float>(O{.channels_per_level = {32, 48}, .groups = 32});
        }).find("channels_per_level[1]") != std::string::npos);
  // sizes that cannot be downsampled L − 1 times
  CHECK_THROWS_AS(rtb::UNet<float>(O{.height = 28, .width = 28, .channels_per_level = {32, 32, 32, 32}}),
                  rtb::ShapeError);
  CHECK(message_of([] {
          rtb::UNet<float>(O{.height = 28, .width = 28, .channels_per_level = {32, 32, 32, 32}});
        }).find("32x32") != std::string::npos);
  CHECK_NOTHROW(rtb::UNet<float>(O{.height = 28, .width = 28, .channels_per_level = {32, 32, 32}}));  // 28 → 14 → 7
  CHECK_THROWS_AS(rtb::UNet<float>(O{.height = 7, .width = 8, .channels_per_level = {32, 64}}), rtb::ShapeError);
  CHECK_THROWS_AS(rtb::UNet<float>(O{.channels_per_level = {}}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::UNet<float>(O{.channels = 0}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::UNet<float>(O{.blocks_per_level = 0}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::UNet<float>(O{.attention_levels = {2}}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(rtb::UNet<float>(O{.attention_levels = {1}, .attention_head_dim = 24}), rtb::ShapeError);

  // wrong row width (another channel count or image size), rows beyond the context, a non-integer τ
  const rtb::Model<rtb::UNet<float>> model(
      rtb::UNet<float>({.height = 8, .width = 8, .channels = 1, .channels_per_level = {4, 8}, .groups = 4}));
  auto ctx = model.make_context(2);
  rtb::RowMatrix<float> x = rtb::RowMatrix<float>::Zero(2, 3 * 64), out(2, 3 * 64);
  auto step = [&](Index rows, Index cols, float t) {
    return rtb_test::step_at(rtb::ConstMatrixView<float>(x.data(), rows, cols), t);
  };
  CHECK_THROWS_AS(model.inference(step(2, 3 * 64, 5.0f), rtb::MatrixView<float>(out.data(), 2, 3 * 64), ctx),
                  rtb::ShapeError);
  CHECK(message_of([&] {
          model.inference(step(2, 3 * 64, 5.0f), rtb::MatrixView<float>(out.data(), 2, 3 * 64), ctx);
        }).find("[1, 8, 8]") != std::string::npos);
  CHECK_THROWS_AS(model.inference(step(2, 64, 5.0f), rtb::MatrixView<float>(out.data(), 2, 65), ctx), rtb::ShapeError);
  rtb::RowMatrix<float> big = rtb::RowMatrix<float>::Zero(3, 64), big_out(3, 64);
  CHECK_THROWS_AS(model.forward(rtb_test::step_at(rtb::ConstMatrixView<float>(big.data(), 3, 64), 5.0f),
                                rtb::MatrixView<float>(big_out.data(), 3, 64), ctx),
                  rtb::ShapeError);
  CHECK_THROWS_AS(model.inference(step(2, 64, 0.5f), rtb::MatrixView<float>(out.data(), 2, 64), ctx),
                  rtb::InvalidArgumentError);
  CHECK_NOTHROW(model.inference(step(2, 64, 999.0f), rtb::MatrixView<float>(out.data(), 2, 64), ctx));
}
