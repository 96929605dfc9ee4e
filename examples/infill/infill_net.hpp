// SPDX-License-Identifier: Apache-2.0
#pragma once
// The infill example's denoiser: a TokenConv that can read the first characters of the true ending
// (from the row's condition) in the lookahead columns, as if the diffusion had already revealed them.
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
#include <span>
#include <vector>

#include <rtb/net/token_conv.hpp>

#include "text.hpp"

namespace infill {

template <class S>
class InfillNet {
 public:
  using Scalar = S;
  using Value = std::int32_t;
  using Inner = rtb::TokenConv<S>;
  struct Context {
    typename Inner::Context inner;
    rtb::AlignedVector<Value> x;  ///< the rows with the lookahead filled in
    std::size_t bytes() const { return inner.bytes() + x.size() * sizeof(Value); }
  };

  InfillNet(Inner net, Layout lay) : net_(std::move(net)), lay_(lay) {
    if (net_.input_dim() != lay_.length())
      throw rtb::ShapeError(rtb::detail::message("InfillNet: the network reads ", net_.input_dim(),
                                                 " columns, the layout has ", lay_.length()));
  }

  /// On: the lookahead columns read the ending's first characters (from the condition row).
  bool reads_ending = false;

  const Inner& inner() const { return net_; }
  rtb::Index input_dim() const { return net_.input_dim(); }
  rtb::Index output_dim() const { return net_.output_dim(); }
  rtb::Index condition_dim() const { return std::max<rtb::Index>(net_.condition_dim(), lay_.condition_length()); }
  rtb::Index num_params() const { return net_.num_params(); }
  const rtb::ParameterLayout& layout() const { return net_.layout(); }
  void initialize(std::span<S> params) const { net_.initialize(params); }

  Context make_context(rtb::Index max_rows) const {
    return {net_.make_context(max_rows), rtb::AlignedVector<Value>(static_cast<std::size_t>(max_rows * lay_.length()))};
  }
  void inference(const rtb::Weights<S>& w, const rtb::Step<Value, S>& s, rtb::MatrixView<S> out, Context& ctx) const {
    net_.inference(w, with_lookahead(s, ctx), out, ctx.inner);
  }
  void forward(const rtb::Weights<S>& w, const rtb::Step<Value, S>& s, rtb::MatrixView<S> out, Context& ctx) const {
    net_.forward(w, with_lookahead(s, ctx), out, ctx.inner);
  }
  void backward(const rtb::Weights<S>& w, Context& ctx, rtb::ConstMatrixView<S> d_out, std::span<S> grad,
                rtb::GradientMode mode) const {
    net_.backward(w, ctx.inner, d_out, grad, mode);
  }

 private:
  rtb::Step<Value, S> with_lookahead(const rtb::Step<Value, S>& s, Context& ctx) const {
    if (!reads_ending) return s;
    const rtb::Index L = lay_.length();
    if (s.x.cols() != L || static_cast<std::size_t>(s.x.rows() * L) > ctx.x.size())
      throw rtb::ShapeError(rtb::detail::message("InfillNet: ", s.x.rows(), "x", s.x.cols(), " input for a context of ",
                                                 ctx.x.size() / static_cast<std::size_t>(L), " rows of ", L));
    for (rtb::Index r = 0; r < s.x.rows(); ++r) {
      Value* row = ctx.x.data() + r * L;
      std::copy_n(rtb::row_ptr(s.x, r), L, row);
      const Value* ending = rtb::row_ptr(s.condition, r) + lay_.ending_begin();
      for (int j = 0; j < lay_.lookahead; ++j) row[lay_.lookahead_begin() + j] = ending[j];
    }
    return {rtb::ConstMatrixView<Value>(ctx.x.data(), s.x.rows(), L), s.condition, s.step, s.time, s.first_row};
  }

  Inner net_;
  Layout lay_;
};

}  // namespace infill
