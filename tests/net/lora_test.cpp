// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <rtb/net/lora.hpp>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"

namespace {

using rtb::Index;
using S = double;
using Base = rtb::Mlp<S>;
using Adapted = rtb::Lora<Base>;
static_assert(rtb::Denoiser<Adapted>);
static_assert(rtb::WrapsFrozenBase<Adapted>);
static_assert(std::is_same_v<rtb::prior_net_t<Adapted>, Base>);

Base base_net(std::vector<Index> hidden = {8, 6}, Index condition_dim = 2) {
  return Base({.input_dim = 3,
               .hidden = std::move(hidden),
               .output_dim = 2,
               .time_harmonics = 2,
               .condition_dim = condition_dim,
               .seed = 4,
               .zero_init_last = false});
}

/// Random A and B (B nonzero, so every path of the backward carries signal).
void randomise(rtb::Model<Adapted>& m, std::uint64_t seed) {
  auto p = m.params();
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(p.data(), 1, static_cast<Index>(p.size())), seed, 0.5);
}

}  // namespace

TEST_CASE("Lora adapter gradients match central differences (all layers, some layers, a one-layer trunk)") {
  const Index rows = 5;
  rtb::RowMatrix<S> x(rows, 3), c(rows, 2);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), rows, 3), 1);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(c.data(), rows, 2), 2);
  const rtb::ConstMatrixView<S> xv(x.data(), rows, 3), cv(c.data(), rows, 2);
  struct Case {
    std::vector<Index> hidden;
    Adapted::Options options;
  };
  for (const Case& k : {Case{{8, 6}, {.rank = 2, .alpha = 3.0, .seed = 1}},
                        Case{{8, 6}, {.rank = 1, .targets = {"layers.1.weight", "layers.2"}, .seed = 2}},
                        Case{{8, 6}, {.rank = 2, .targets = {"layers.0"}, .seed = 3}},
                        Case{{7}, {.rank = 2, .alpha = 1.0, .seed = 4}}}) {
    CAPTURE(k.hidden.size());
    CAPTURE(k.options.targets.size());
    const rtb::Model<Base> base(base_net(k.hidden));
    rtb::Model<Adapted> model(Adapted(base.net(), k.options), base);
    randomise(model, 7 + k.options.seed);
    rtb_test::check_model_gradient<Adapted, S>(model, xv, 0.3, 5, cv);
  }
}

TEST_CASE("Lora with B = 0 is the base net bit for bit, and trains, counts and stores only A and B") {
  const auto shared = std::make_shared<const rtb::Model<Base>>(base_net());
  const rtb::Model<Base>& base = *shared;
  const rtb::Model<Adapted> lora(Adapted(base.net(), {.rank = 2, .seed = 9}), shared);
  // layers.0 [8, 3 + 2 + 4], layers.1 [6, 8], layers.2 [2, 6]
  CHECK(lora.num_params() == 2 * (9 + 8) + 2 * (8 + 6) + 2 * (6 + 2));
  CHECK(lora.net().modules() == std::vector<std::string>{"layers.0", "layers.1", "layers.2"});
  CHECK(lora.layout().find("layers.1.lora_A.weight")->shape == std::vector<Index>{2, 8});
  CHECK(lora.layout().find("layers.1.lora_B.weight")->shape == std::vector<Index>{6, 2});
  CHECK(lora.weights().frozen.data() == base.params().data());  // shared, not copied
  const Index rows = 6;
  rtb::RowMatrix<S> x(rows, 3), c(rows, 2), a(rows, 2), b(rows, 2), f(rows, 2);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), rows, 3), 3);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(c.data(), rows, 2), 4);
  const auto s =
      rtb_test::step_at(rtb::ConstMatrixView<S>(x.data(), rows, 3), 0.65, rtb::ConstMatrixView<S>(c.data(), rows, 2));
  auto cb = base.make_context(rows);
  auto cl = lora.make_context(rows);
  base.inference(s, rtb::MatrixView<S>(a.data(), rows, 2), cb);
  lora.inference(s, rtb::MatrixView<S>(b.data(), rows, 2), cl);
  lora.forward(s, rtb::MatrixView<S>(f.data(), rows, 2), cl);
  CHECK(std::memcmp(a.data(), b.data(), sizeof(S) * static_cast<std::size_t>(a.size())) == 0);
  CHECK(std::memcmp(a.data(), f.data(), sizeof(S) * static_cast<std::size_t>(a.size())) == 0);
  // with B = 0 only the B's get a gradient (∂/∂A = s·(dY·B)ᵀ·X = 0), sized to the adapters only
  rtb::RowMatrix<S> d_out = rtb::RowMatrix<S>::Ones(rows, 2);
  std::vector<S> grad(static_cast<std::size_t>(lora.num_params()), 5.0);
  lora.backward(cl, rtb::ConstMatrixView<S>(d_out.data(), rows, 2), std::span<S>(grad), rtb::GradientMode::Overwrite);
  for (const rtb::ParameterTensor& t : lora.layout().tensors()) {
    CAPTURE(t.name);
    double norm = 0;
    for (Index i = t.offset; i < t.offset + t.size; ++i) norm += std::fabs(grad[static_cast<std::size_t>(i)]);
    if (t.name.find("lora_A") != std::string::npos)
      CHECK(norm == 0.0);
    else if (t.name == "layers.2.lora_B.weight")
      CHECK(norm > 0.0);  // the last layer's B sees dY = d_out directly
  }
  // weights round-trip as .npy under the adapter names
  const std::string dir = (std::filesystem::temp_directory_path() / "rtb_lora_weights").string();
  std::filesystem::remove_all(dir);
  rtb::save_parameters(lora, dir);
  CHECK(std::filesystem::exists(dir + "/layers.0.lora_B.weight.npy"));
  CHECK(!std::filesystem::exists(dir + "/layers.0.weight.npy"));  // the base is not the wrapper's to store
  std::filesystem::remove_all(dir);
}

TEST_CASE("Lora rejects rank 0, a rank above a matrix's smaller side, and unknown targets") {
  const Base base = base_net();
  auto message_of = [&](const Adapted::Options& o) {
    try {
      Adapted(base, o);
    } catch (const rtb::InvalidArgumentError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(message_of({.rank = 0}).find("rank must be >= 1") != std::string::npos);
  CHECK(message_of({.rank = -2}).find("rank must be >= 1") != std::string::npos);
  const std::string big = message_of({.rank = 3});  // layers.2 is [2, 6]
  CHECK(big.find("'layers.2' [2, 6]") != std::string::npos);
  CHECK(big.find("rank <= 2") != std::string::npos);
  CHECK(message_of({.rank = 3, .targets = {"layers.0", "layers.1"}}) == "no error");
  CHECK(message_of({.rank = 7, .targets = {"layers.1"}}).find("min(out, in) = 6") != std::string::npos);
  CHECK(message_of({.rank = 6, .targets = {"layers.1"}}) == "no error");
  const std::string unknown = message_of({.rank = 1, .targets = {"layers.9"}});
  CHECK(unknown.find("layers.9") != std::string::npos);
  CHECK(unknown.find("layers.0, layers.1, layers.2") != std::string::npos);
}

TEST_CASE(
    "Lora<UNet>: attention q, k, v by default, conv kernels on request; zero B is the base bit for bit; adapter "
    "gradients match central differences") {
  using U = rtb::UNet<S>;
  using LU = rtb::Lora<U>;
  static_assert(rtb::WrapsFrozenBase<LU>);
  const auto base = std::make_shared<const rtb::Model<U>>(U({.height = 8,
                                                             .width = 8,
                                                             .channels = 1,
                                                             .channels_per_level = {4, 8},
                                                             .attention_levels = {1},
                                                             .groups = 2,
                                                             .seed = 6}));
  // attentions: down_blocks.1 (one), mid_block, up_blocks.0 (two), each [8, 8] q, k, v
  const LU all(base->net(), {.rank = 2});
  CHECK(all.modules().size() == 12);
  CHECK(all.modules().front() == "down_blocks.1.attentions.0.to_q");
  CHECK(all.num_params() == 12 * 2 * (8 + 8));
  CHECK_THROWS_AS(LU(base->net(), {.rank = 9}), rtb::InvalidArgumentError);
  CHECK_THROWS_AS(LU(base->net(), {.rank = 2, .targets = {"conv_out"}}), rtb::InvalidArgumentError);  // [1, 4·9]
  CHECK_THROWS_AS(LU(base->net(), {.rank = 1, .targets = {"time_embedding.linear_1"}}), rtb::InvalidArgumentError);

  const Index rows = 2, D = 64;
  rtb::RowMatrix<S> x(rows, D), a(rows, D), b(rows, D);
  rtb_test::fill_normal<S>(rtb::MatrixView<S>(x.data(), rows, D), 8);
  const rtb::ConstMatrixView<S> xv(x.data(), rows, D);
  {
    const rtb::Model<LU> fresh(all, base);
    auto cb = base->make_context(rows);
    auto cl = fresh.make_context(rows);
    base->inference(rtb_test::step_at(xv, 40.0), rtb::MatrixView<S>(a.data(), rows, D), cb);
    fresh.forward(rtb_test::step_at(xv, 40.0), rtb::MatrixView<S>(b.data(), rows, D), cl);
    CHECK(std::memcmp(a.data(), b.data(), sizeof(S) * static_cast<std::size_t>(a.size())) == 0);
  }
  for (const LU::Options& o :
       {LU::Options{.rank = 2, .alpha = 3.0, .seed = 1},
        LU::Options{.rank = 1, .targets = {"mid_block.attentions.0.to_k", "up_blocks.0.attentions.1.to_v"}},
        // kernels as [out, in·k·k]: conv_in, a stride-2 and an upsampler conv, conv_out, and
        // a resnet's conv1, conv2 and 1×1 shortcut, with an attention projection among them
        LU::Options{.rank = 1,
        .alpha = 2.0,
        .targets = {"conv_in", "down_blocks.0.downsamplers.0.conv", "up_blocks.0.upsamplers.0.conv", "conv_out",
                    "up_blocks.1.resnets.0.conv1", "up_blocks.1.resnets.0.conv2", "up_blocks.1.resnets.0.conv_shortcut",
                    "mid_block.resnets.1.conv1", "down_blocks.1.attentions.0.to_q"},
        .seed = 3}}) {
    CAPTURE(o.targets.size());
    rtb::Model<LU> model(LU(base->net(), o), base);
    auto p = model.params();
    rtb_test::fill_normal<S>(rtb::MatrixView<S>(p.data(), 1, static_cast<Index>(p.size())), 12, 0.5);
    rtb_test::check_model_gradient<LU, S>(model, xv, 40.0, 13);
  }
}
