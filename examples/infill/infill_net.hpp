// SPDX-License-Identifier: Apache-2.0
#pragma once
// The infill example's denoiser: a TokenConv that can read the first characters of the true ending
// in the lookahead columns, as if the diffusion had already revealed them.
//
// The prior is fitted generating the middle and the lookahead (the characters right after it), so
// a revealed lookahead is something it knows how to use: with the lookahead fixed to the true
// ending it is the masked model's native infiller (the `prior_both_ends` baseline). RTB's
// posterior starts from exactly that (`reads_ending = true`, the prior's weights), rather than
// from the prior itself: the posterior only has to correct the native infiller towards
// p_prior(middle | beginning)·r, instead of learning from the reward alone how an ending shapes a
// middle. The fixed point of RTB does not depend on where the posterior starts; the prior the
// residual divides by is the unchanged prior (`reads_ending = false`: lookahead stays MASK).

#include <cstdint>
#include <vector>

#include <rtb/net/token_conv.hpp>

#include "text.hpp"

namespace infill {

template <class S>
class InfillNet {
 public:
  using Scalar = S;
  using Input = std::int32_t;
  using Inner = rtb::TokenConv<S>;
  struct Context {
    typename Inner::Context inner;
    std::vector<Input> x;  ///< the rows with the lookahead filled in
    std::size_t bytes() const { return inner.bytes() + x.size() * sizeof(Input); }
  };

  InfillNet(Inner net, Layout lay) : net_(std::move(net)), lay_(lay) {
    if (net_.input_dim() != lay_.length())
      throw rtb::ShapeError(rtb::detail::message("InfillNet: the network reads ", net_.input_dim(),
                                                 " columns, the layout has ", lay_.length()));
  }

  /// On: the lookahead columns read the ending's first characters (the condition columns).
  bool reads_ending = false;

  const Inner& inner() const { return net_; }
  rtb::Index input_dim() const { return net_.input_dim(); }
  rtb::Index output_dim() const { return net_.output_dim(); }
  rtb::Index num_params() const { return net_.num_params(); }
  const rtb::ParameterLayout& layout() const { return net_.layout(); }
  std::span<S> params() { return net_.params(); }
  std::span<const S> params() const { return net_.params(); }

  Context make_context(rtb::Index max_rows) const {
    return {net_.make_context(max_rows), std::vector<Input>(static_cast<std::size_t>(max_rows * lay_.length()))};
  }
  void inference(rtb::ConstMatrixView<Input> x, S t, rtb::MatrixView<S> out, Context& ctx) const {
    net_.inference(view(x, ctx), t, out, ctx.inner);
  }
  void forward(rtb::ConstMatrixView<Input> x, S t, rtb::MatrixView<S> out, Context& ctx) const {
    net_.forward(view(x, ctx), t, out, ctx.inner);
  }
  void backward(Context& ctx, rtb::ConstMatrixView<S> d_out, std::span<S> grad, rtb::GradientMode mode) const {
    net_.backward(ctx.inner, d_out, grad, mode);
  }

 private:
  rtb::ConstMatrixView<Input> view(rtb::ConstMatrixView<Input> x, Context& ctx) const {
    if (!reads_ending) return x;
    const rtb::Index L = lay_.length();
    if (x.cols() != L || static_cast<std::size_t>(x.rows() * L) > ctx.x.size())
      throw rtb::ShapeError(rtb::detail::message("InfillNet: ", x.rows(), "x", x.cols(), " input for a context of ",
                                                 ctx.x.size() / static_cast<std::size_t>(L), " rows of ", L));
    for (rtb::Index r = 0; r < x.rows(); ++r) {
      Input* row = ctx.x.data() + r * L;
      const Input* src = rtb::row_ptr(x, r);
      std::copy_n(src, L, row);
      for (int j = 0; j < lay_.lookahead; ++j) row[lay_.lookahead_begin() + j] = src[lay_.condition_begin() + j];
    }
    return rtb::ConstMatrixView<Input>(ctx.x.data(), x.rows(), L);
  }

  Inner net_;
  Layout lay_;
};

}  // namespace infill
