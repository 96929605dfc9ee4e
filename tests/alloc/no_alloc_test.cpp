// SPDX-License-Identifier: Apache-2.0
// step() allocates nothing once the trainer is built: every buffer is sized up front. Counts
// every call to the malloc family (interposed in this executable only).

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <utility>
#include <rtb/net/attention2d.hpp>
#include <rtb/net/resnet_block.hpp>
#include <rtb/net/timestep_embedding.hpp>
#include <rtb/rtb.hpp>

namespace {
std::atomic<long> g_allocations{0};
}

// Every heap allocation of the process goes through these (glibc lets a program interpose its
// malloc family): operator new, std::vector, and Eigen's GEMM packing buffers alike.
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);

void* malloc(std::size_t n) {
  ++g_allocations;
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t m) {
  ++g_allocations;
  return __libc_calloc(n, m);
}
void* realloc(void* p, std::size_t n) {
  ++g_allocations;
  return __libc_realloc(p, n);
}
void* memalign(std::size_t a, std::size_t n) {
  ++g_allocations;
  return __libc_memalign(a, n);
}
void* aligned_alloc(std::size_t a, std::size_t n) { return memalign(a, n); }
int posix_memalign(void** out, std::size_t a, std::size_t n) {
  *out = memalign(a, n);
  return *out ? 0 : 12;  // ENOMEM
}
void free(void* p) { __libc_free(p); }
}

TEST_CASE("no heap allocation inside step() after the first call") {
  using S = float;
  const rtb::GaussianProcess<S> process(2, 50, 5.0f, rtb::GaussianHead::MeanAndLogVariance);
  const rtb::Model prior(rtb::PisMlp<S>({.dim = 2, .seed = 1, .zero_init_last = false}));
  rtb::MixtureRatioReward<S> reward(rtb::GaussianMixture<S>::posterior9(), rtb::GaussianMixture<S>::grid25());
  for (const auto& [step_fraction, precision] :
       {std::pair{1.0, rtb::Precision::Float32}, std::pair{0.3, rtb::Precision::Float32},
        std::pair{1.0, rtb::Precision::BFloat16}}) {
    CAPTURE(step_fraction);
    CAPTURE(precision == rtb::Precision::BFloat16);
    rtb::RelativeTrajectoryBalance trainer(process, prior, reward,
                                           rtb::Config{.batch_size = 300,
                                                       .exploration = {.initial = 0.5, .hold_until = 3, .zero_at = 6},
                                                       .replay_fraction = 0.2,
                                                       .replay_capacity = 600,
                                                       .replay_priority = rtb::ReplayPriority::Rank,
                                                       .step_fraction = step_fraction,
                                                       .threads = 2,
                                                       .precision = precision});
    trainer.step();
    const long before = g_allocations.load();
    for (int k = 0; k < 8; ++k) trainer.step();  // on-policy, then with replayed rows once the buffer is warm
    CHECK(g_allocations.load() - before == 0);
    CHECK(trainer.replay_buffer().size() == 600);
    const long after = g_allocations.load();
    (void)trainer.sample(4, 1);  // sampling builds its own buffers: proves the counter counts
    CHECK(g_allocations.load() > after);
  }
}

// Counts operator new only: Eigen's GEMM takes its packing buffers from malloc (not counted here)
// once they exceed EIGEN_STACK_ALLOCATION_LIMIT, which both nets' products do at 128 rows.
TEST_CASE("token denoisers: forward, backward and inference allocate nothing at the infill example's sizes") {
  const rtb::Index L = 32, Lc = 12, V = 33, rows = 128;
  std::vector<rtb::Index> condition;
  for (rtb::Index j = 0; j < Lc; ++j) condition.push_back(j);
  rtb::RowMatrix<std::int32_t> x(rows, L), c(rows, Lc);
  for (rtb::Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<std::int32_t>((i * 7) % (V + 1));
  for (rtb::Index i = 0; i < c.size(); ++i) c.data()[i] = static_cast<std::int32_t>((i * 5) % V);
  rtb::RowMatrix<float> out(rows, L * V), d_out = rtb::RowMatrix<float>::Constant(rows, L * V, 0.01f);
  auto check = [&](const auto& net) {
    const rtb::Model model(net);
    std::vector<float> grad(static_cast<std::size_t>(model.num_params()));
    auto ctx = model.make_context(rows);
    const rtb::Step<std::int32_t, float> s{rtb::ConstMatrixView<std::int32_t>(x.data(), rows, L),
                                           rtb::ConstMatrixView<std::int32_t>(c.data(), rows, Lc), 3, 0.5f, 0};
    rtb::MatrixView<float> ov(out.data(), rows, L * V);
    const long before = g_allocations.load();
    model.forward(s, ov, ctx);
    model.backward(ctx, rtb::ConstMatrixView<float>(d_out.data(), rows, L * V), std::span<float>(grad),
                   rtb::GradientMode::Overwrite);
    model.inference(s, ov, ctx);
    CHECK(g_allocations.load() - before == 0);
  };
  check(rtb::TokenConv<float>({.length = L, .vocab = V, .channels = 32, .condition = condition, .seed = 1}));
  check(rtb::TokenMlp<float>({.length = L, .vocab = V, .condition = condition, .seed = 1}));
}

// The UNet's layers at a CPU MNIST UNet's sizes (batch 8, 14×14, 32→64 channels, 32 groups):
// forward with context, backward and inference forward of a ResNet block (with its shortcut and
// time projection) and of self-attention, plus the timestep embedding, call no malloc.
TEST_CASE("2-D layers: ResnetBlock2d, Attention2d and TimestepEmbedding allocate nothing once sized") {
  using S = float;
  const rtb::Index temb_dim = 128;
  rtb::ParameterLayout layout;
  const rtb::TimestepEmbedding time(layout, "time_embedding.", 32, temb_dim);
  const rtb::ResnetBlock2d block(layout, "down_blocks.1.resnets.0.", 32, 64, temb_dim, 32);
  const rtb::Attention2d attn(layout, "down_blocks.1.attentions.0.", 64, 32);
  std::vector<S> p(static_cast<std::size_t>(layout.size())), grad(p.size());
  time.init_default(p.data(), 1, 0);
  block.init_default(p.data(), 1, 2);
  attn.init_default(p.data(), 1, 6);
  const rtb::ImageShape in{8, 32, 14, 14}, mid = block.output_shape(in);
  std::vector<S> x(static_cast<std::size_t>(in.size()), 0.1f), h(static_cast<std::size_t>(mid.size())),
      y(h.size()), dy(h.size(), 0.01f), dh(h.size()), dx(x.size()), temb(temb_dim), d_temb(temb_dim);
  std::vector<S> time_ctx(static_cast<std::size_t>(time.context_floats())),
      time_scratch(static_cast<std::size_t>(time.scratch_floats()));
  std::vector<S> block_ctx(static_cast<std::size_t>(block.context_floats(in))),
      block_scratch(static_cast<std::size_t>(block.scratch_floats(in)));
  std::vector<S> attn_ctx(static_cast<std::size_t>(attn.context_floats(mid))),
      attn_scratch(static_cast<std::size_t>(attn.scratch_floats(mid)));
  const long before = g_allocations.load();
  time.forward(p.data(), 990, temb.data(), time_ctx.data());
  block.forward(p.data(), x.data(), in, temb.data(), h.data(), block_ctx.data(), block_scratch.data());
  attn.forward(p.data(), h.data(), mid, y.data(), attn_ctx.data(), static_cast<S*>(nullptr));
  attn.backward(p.data(), h.data(), mid, dy.data(), attn_ctx.data(), grad.data(), dh.data(),
                rtb::GradientMode::Overwrite, attn_scratch.data());
  std::fill(d_temb.begin(), d_temb.end(), 0.0f);
  block.backward(p.data(), x.data(), in, dh.data(), block_ctx.data(), grad.data(), dx.data(),
                 rtb::GradientMode::Overwrite, d_temb.data(), block_scratch.data());
  time.backward(p.data(), d_temb.data(), time_ctx.data(), grad.data(), time_scratch.data());
  block.forward(p.data(), x.data(), in, temb.data(), h.data(), static_cast<S*>(nullptr), block_scratch.data());
  attn.forward(p.data(), h.data(), mid, y.data(), static_cast<S*>(nullptr), attn_scratch.data());
  CHECK(g_allocations.load() - before == 0);
  CHECK(std::isfinite(dx[0]));
}

/// A float model's forward with context, backward and inference on `rows` rows of `x_value` at
/// step 3 and `time`, once its context is made: no malloc, and a finite gradient.
template <class M>
void check_model_steady_state(const M& model, rtb::Index rows, float x_value, float time) {
  using S = float;
  const rtb::Index in = model.input_dim(), out_dim = model.output_dim();
  rtb::RowMatrix<S> x = rtb::RowMatrix<S>::Constant(rows, in, x_value), out(rows, out_dim),
                    d_out = rtb::RowMatrix<S>::Constant(rows, out_dim, 0.01f);
  std::vector<S> grad(static_cast<std::size_t>(model.num_params()));
  auto ctx = model.make_context(rows);
  const rtb::Step<S> s{rtb::ConstMatrixView<S>(x.data(), rows, in), rtb::ConstMatrixView<S>(nullptr, rows, 0), 3, time, 0};
  rtb::MatrixView<S> ov(out.data(), rows, out_dim);
  const long before = g_allocations.load();
  model.forward(s, ov, ctx);
  model.backward(ctx, rtb::ConstMatrixView<S>(d_out.data(), rows, out_dim), std::span<S>(grad),
                 rtb::GradientMode::Overwrite);
  model.inference(s, ov, ctx);
  CHECK(g_allocations.load() - before == 0);
  CHECK(std::isfinite(grad[0]));
}

// The whole UNet at a CPU MNIST-like size (batch 8, 16×16, 32→64 channels, attention at the lower
// level and in the middle): forward with context, backward and inference call no malloc.
TEST_CASE("UNet: forward, backward and inference allocate nothing once the context is made") {
  using S = float;
  const rtb::Model model(rtb::UNet<S>({.height = 16, .width = 16, .channels = 1, .channels_per_level = {32, 64},
                                       .attention_levels = {1}, .groups = 32, .seed = 1}));
  check_model_steady_state(model, 8, 0.1f, 420.0f);
  const rtb::ScopedPrecision bf16(rtb::Precision::BFloat16);  // the bfloat16 products pack on the stack
  check_model_steady_state(model, 8, 0.1f, 420.0f);
}

// LoRA over an Mlp at the 2-D example's sizes: merging the adapters into the context's copy of
// the weights, forward, the adapter-only backward and inference call no malloc.
TEST_CASE("Lora<Mlp>: forward, backward and inference allocate nothing once the context is made") {
  using S = float;
  using Base = rtb::Mlp<S>;
  const auto base = std::make_shared<const rtb::Model<Base>>(
      Base({.input_dim = 2, .hidden = {64, 64}, .output_dim = 4, .seed = 1, .zero_init_last = false}));
  rtb::Model<rtb::Lora<Base>> model(rtb::Lora<Base>(base->net(), {.rank = 4, .alpha = 8.0}), base);
  for (S& v : model.params()) v = 0.01f;  // B nonzero too
  check_model_steady_state(model, 300, 0.3f, 0.4f);
}

// LoRA over the UNet above (attention q, k, v and two convs): merge, forward, the frozen walk with
// the adapters' hooks, and inference call no malloc.
TEST_CASE("Lora<UNet>: forward, adapter backward and inference allocate nothing once the context is made") {
  using S = float;
  using U = rtb::UNet<S>;
  const auto base = std::make_shared<const rtb::Model<U>>(
      U({.height = 16, .width = 16, .channels = 1, .channels_per_level = {32, 64}, .attention_levels = {1},
         .groups = 32, .seed = 1}));
  const std::vector<std::string> targets = {"mid_block.attentions.0.to_q", "mid_block.attentions.0.to_k",
                                            "mid_block.attentions.0.to_v", "conv_in", "up_blocks.1.resnets.0.conv1"};
  rtb::Model<rtb::Lora<U>> model(rtb::Lora<U>(base->net(), {.rank = 4, .targets = targets}), base);
  for (S& v : model.params()) v = 0.01f;
  check_model_steady_state(model, 4, 0.1f, 420.0f);
}
