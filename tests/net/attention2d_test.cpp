// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/net/attention2d.hpp>

#include "image_util.hpp"

namespace {

using rtb::Attention2d;
using rtb::ImageShape;
using rtb::Index;

/// The layer by its definition, in double, position by position (token-major, as diffusers
/// computes it after `view(B, C, N).transpose(1, 2)`).
template <class S>
std::vector<double> reference(const Attention2d& attn, const std::vector<S>& p, const std::vector<S>& x,
                              const ImageShape& s) {
  const Index C = s.channels, N = s.pixels(), d = C / attn.heads();
  const S* gn = p.data() + attn.group_norm().weight_offset();
  const auto xhat = rtb_test::reference_group_norm(gn, p.data() + attn.group_norm().bias_offset(), x.data(), s,
                                                   attn.group_norm().groups(), 1e-5);
  auto at = [&](const rtb::Linear& l, Index o, Index i) {
    return double(p[static_cast<std::size_t>(l.weight_offset() + o * C + i)]);
  };
  auto bias = [&](const rtb::Linear& l, Index o) { return double(p[static_cast<std::size_t>(l.bias_offset() + o)]); };
  std::vector<double> y(x.size());
  for (Index b = 0; b < s.batch; ++b) {
    // tokens t[n][c] = x̂[b, c, n]; q[n] = W_q·t[n] + b_q, …
    std::vector<std::vector<double>> q(N, std::vector<double>(C)), k = q, v = q, o = q;
    for (Index n = 0; n < N; ++n)
      for (Index c = 0; c < C; ++c) {
        double aq = bias(attn.to_q(), c), ak = bias(attn.to_k(), c), av = bias(attn.to_v(), c);
        for (Index i = 0; i < C; ++i) {
          const double t = xhat[static_cast<std::size_t>((b * C + i) * N + n)];
          aq += at(attn.to_q(), c, i) * t;
          ak += at(attn.to_k(), c, i) * t;
          av += at(attn.to_v(), c, i) * t;
        }
        q[n][c] = aq;
        k[n][c] = ak;
        v[n][c] = av;
      }
    for (Index h = 0; h < attn.heads(); ++h)
      for (Index n = 0; n < N; ++n) {
        std::vector<double> w(N);
        double top = -1e300, total = 0;
        for (Index m = 0; m < N; ++m) {
          double dot = 0;
          for (Index c = h * d; c < (h + 1) * d; ++c) dot += q[n][c] * k[m][c];
          w[m] = dot / std::sqrt(double(d));
          top = std::max(top, w[m]);
        }
        for (Index m = 0; m < N; ++m) total += (w[m] = std::exp(w[m] - top));
        for (Index c = h * d; c < (h + 1) * d; ++c) {
          double acc = 0;
          for (Index m = 0; m < N; ++m) acc += w[m] / total * v[m][c];
          o[n][c] = acc;
        }
      }
    for (Index n = 0; n < N; ++n)
      for (Index c = 0; c < C; ++c) {
        double acc = bias(attn.to_out(), c) + double(x[static_cast<std::size_t>((b * C + c) * N + n)]);
        for (Index i = 0; i < C; ++i) acc += at(attn.to_out(), c, i) * o[n][i];
        y[static_cast<std::size_t>((b * C + c) * N + n)] = acc;
      }
  }
  return y;
}

struct Case {
  Index channels, groups, heads, height, width;
};
const Case kCases[] = {{4, 2, 1, 2, 3}, {4, 1, 2, 3, 3}, {6, 3, 3, 1, 4}, {3, 3, 1, 1, 1}};

template <class S>
std::vector<S> params_for(const Attention2d& attn, const rtb::ParameterLayout& layout, std::uint64_t seed) {
  std::vector<S> p(static_cast<std::size_t>(layout.size()));
  attn.init_default(p.data(), seed, 0);
  // GroupNorm's affine away from (1, 0) so that its gradient shows; larger q, k so the softmax is not flat
  const auto& gn = attn.group_norm();
  const auto r = rtb_test::random_vector<S>(2 * gn.channels(), seed + 1, 0.3);
  for (Index c = 0; c < gn.channels(); ++c) {
    p[static_cast<std::size_t>(gn.weight_offset() + c)] += r[static_cast<std::size_t>(c)];
    p[static_cast<std::size_t>(gn.bias_offset() + c)] += r[static_cast<std::size_t>(gn.channels() + c)];
  }
  for (const rtb::Linear* l : {&attn.to_q(), &attn.to_k()})
    for (Index i = 0; i < l->in() * l->out(); ++i) p[static_cast<std::size_t>(l->weight_offset() + i)] *= S(3);
  return p;
}

}  // namespace

TEST_CASE_TEMPLATE("Attention2d forward equals the definition, with context or scratch, and in place", S, float,
                   double) {
  for (const Case& c : kCases) {
    CAPTURE(c.heads);
    rtb::ParameterLayout layout;
    const Attention2d attn(layout, "mid_block.attentions.0.", c.channels, c.groups, c.heads);
    const auto p = params_for<S>(attn, layout, 3);
    const ImageShape s{2, c.channels, c.height, c.width};
    const auto x = rtb_test::random_vector<S>(s.size(), 4);
    std::vector<S> y(x.size()), context(static_cast<std::size_t>(attn.context_floats(s))),
        scratch(static_cast<std::size_t>(attn.scratch_floats(s)));
    const auto want = reference(attn, p, x, s);
    const double tol = std::is_same_v<S, float> ? 1e-5 : 1e-13;  // float: scores of order 10 enter exp
    attn.forward(p.data(), x.data(), s, y.data(), static_cast<S*>(nullptr), scratch.data());
    CHECK(rtb_test::max_relative_difference(y, want) <= tol);
    std::vector<S> y2(x.size());
    attn.forward(p.data(), x.data(), s, y2.data(), context.data(), static_cast<S*>(nullptr));
    CHECK(rtb_test::max_relative_difference(y2, want) <= tol);  // (not bitwise: Eigen's kernels depend on alignment)
    std::vector<S> inplace = x;
    attn.forward(p.data(), inplace.data(), s, inplace.data(), static_cast<S*>(nullptr), scratch.data());
    CHECK(rtb_test::max_relative_difference(inplace, want) <= tol);
  }
}

TEST_CASE("Attention2d backward matches central differences for every tensor and the input, in both modes") {
  using S = double;
  for (const Case& c : kCases) {
    CAPTURE(c.heads);
    CAPTURE(c.channels);
    rtb::ParameterLayout layout;
    const Attention2d attn(layout, "attn.", c.channels, c.groups, c.heads);
    auto p = params_for<S>(attn, layout, 5);
    const ImageShape s{2, c.channels, c.height, c.width};
    auto x = rtb_test::random_vector<S>(s.size(), 6);
    const auto dy = rtb_test::random_vector<S>(s.size(), 7);
    std::vector<S> y(x.size()), context(static_cast<std::size_t>(attn.context_floats(s))),
        scratch(static_cast<std::size_t>(attn.scratch_floats(s)));
    auto loss = [&] {
      attn.forward(p.data(), x.data(), s, y.data(), static_cast<S*>(nullptr), scratch.data());
      return rtb_test::inner(y, dy);
    };
    attn.forward(p.data(), x.data(), s, y.data(), context.data(), static_cast<S*>(nullptr));
    const std::vector<S> grad0(p.size(), 0.5), dx0 = rtb_test::random_vector<S>(s.size(), 8);
    std::vector<S> grad = grad0, dx = dx0;
    attn.backward(p.data(), x.data(), s, dy.data(), context.data(), grad.data(), dx.data(),
                  rtb::GradientMode::Accumulate, scratch.data());
    CHECK(rtb_test::relative_error(rtb_test::minus(grad, grad0), rtb_test::numeric_gradient(p, loss)) < 1e-7);
    const auto numeric_x = rtb_test::numeric_gradient(x, loss);
    CHECK(rtb_test::relative_error(rtb_test::minus(dx, dx0), numeric_x) < 1e-7);
    std::vector<S> grad2 = grad0, dx2 = dx0;
    attn.backward(p.data(), x.data(), s, dy.data(), context.data(), grad2.data(), dx2.data(),
                  rtb::GradientMode::Overwrite, scratch.data());
    CHECK(rtb_test::relative_error(dx2, numeric_x) < 1e-7);
    CHECK(rtb_test::relative_error(grad2, grad) < 1e-14);
    std::vector<S> grad3 = grad0;
    attn.backward(p.data(), x.data(), s, dy.data(), context.data(), grad3.data(), static_cast<S*>(nullptr),
                  rtb::GradientMode::Overwrite, scratch.data());
    CHECK(rtb_test::relative_error(grad3, grad) < 1e-14);
  }
}

TEST_CASE("Attention2d is named like diffusers' Attention and checks heads, groups and channels") {
  rtb::ParameterLayout layout;
  const Attention2d attn(layout, "down_blocks.1.attentions.0.", 64, 32, 8);
  std::vector<std::string> names;
  for (const auto& t : layout.tensors()) names.push_back(t.name);
  const std::string pre = "down_blocks.1.attentions.0.";
  CHECK(names == std::vector<std::string>{pre + "group_norm.weight", pre + "group_norm.bias", pre + "to_q.weight",
                                          pre + "to_q.bias", pre + "to_k.weight", pre + "to_k.bias",
                                          pre + "to_v.weight", pre + "to_v.bias", pre + "to_out.0.weight",
                                          pre + "to_out.0.bias"});
  CHECK(layout.tensors()[2].shape == std::vector<Index>{64, 64});
  const ImageShape s{4, 64, 7, 7};
  CHECK(attn.scratch_floats(s) == 2 * 32 + 5 * 64 * 49 + 8 * 49 * 49);
  CHECK(attn.context_floats(s) == 4 * attn.scratch_floats(s));
  CHECK_THROWS_WITH_AS(Attention2d(layout, "a.", 64, 32, 6), doctest::Contains("6 heads do not divide 64 channels"),
                       rtb::ShapeError);
  CHECK_THROWS_WITH_AS(Attention2d(layout, "a.", 48, 32), doctest::Contains("32 groups do not divide 48"),
                       rtb::ShapeError);
  CHECK_THROWS_WITH_AS(attn.output_shape({4, 32, 7, 7}), doctest::Contains("input has 32 channels"), rtb::ShapeError);
}

// The frozen path LoRA walks: grad = null leaves dx's bits alone, and the hook's (x̂, dM) per image
// and projection rebuild exactly the q, k, v weight gradients.
TEST_CASE("Attention2d backward with grad = null gives the same dx, and its hook hands over what dW_q,k,v are made of") {
  using S = double;
  rtb::ParameterLayout layout;
  const rtb::Attention2d attn(layout, "a.", 4, 2, 2);
  const rtb::ImageShape shape{2, 4, 3, 3};
  const auto p = rtb_test::random_vector<S>(layout.size(), 1);
  const auto x = rtb_test::random_vector<S>(shape.size(), 2), dy = rtb_test::random_vector<S>(shape.size(), 3);
  std::vector<S> y(x.size()), ctx(static_cast<std::size_t>(attn.context_floats(shape))),
      scratch(static_cast<std::size_t>(attn.scratch_floats(shape))), grad(p.size(), 0.0), dx(x.size()), dx_frozen(x.size());
  attn.forward(p.data(), x.data(), shape, y.data(), ctx.data(), static_cast<S*>(nullptr));
  attn.backward(p.data(), x.data(), shape, dy.data(), ctx.data(), grad.data(), dx.data(), rtb::GradientMode::Overwrite,
                scratch.data());
  std::vector<S> dw(3 * 16, 0.0);
  int calls = 0;
  attn.backward(p.data(), x.data(), shape, dy.data(), ctx.data(), static_cast<S*>(nullptr), dx_frozen.data(),
                rtb::GradientMode::Overwrite, scratch.data(), [&](int m, const auto& xhat, const auto& dm) {
                  rtb::detail::gemm(rtb::MatrixView<S>(dw.data() + 16 * m, 4, 4), dm, xhat.transpose(), true);
                  ++calls;
                });
  CHECK(calls == 2 * 3);
  CHECK(dx == dx_frozen);
  const rtb::Linear* proj[3] = {&attn.to_q(), &attn.to_k(), &attn.to_v()};
  for (int m = 0; m < 3; ++m)
    CHECK(std::equal(dw.begin() + 16 * m, dw.begin() + 16 * (m + 1), grad.begin() + proj[m]->weight_offset()));
}
