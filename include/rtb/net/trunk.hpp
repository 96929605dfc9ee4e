// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The shared body of rtb's MLP denoisers: given the first pre-activation h₀ (rows × w₀),
///
///     a₀ = GELU(h₀),  a_{l+1} = GELU(a_l·W_lᵀ + b_l),  out = a_L·W_outᵀ + b_out,
///
/// with forward that keeps (a_l, GELU'(h_l)) in a context and a backward that returns ∂/∂h₀.

#include <cstdint>
#include <string>
#include <vector>

#include "rtb/space.hpp"
#include "rtb/net/context.hpp"
#include "rtb/net/gelu.hpp"
#include "rtb/net/linear.hpp"

namespace rtb::detail {

class GeluTrunk {
 public:
  GeluTrunk() = default;
  /// `widths` = [w₀, …, w_L] hidden widths; one Linear between consecutive widths, named
  /// `<names[l]>`, then the output Linear named `<out_name>`.
  GeluTrunk(ParameterLayout& layout, const std::vector<Index>& widths, const std::vector<std::string>& names,
            const std::string& out_name, Index out_dim)
      : widths_(widths) {
    RTB_ASSERT(names.size() + 1 == widths.size());
    for (std::size_t l = 0; l + 1 < widths.size(); ++l)
      hidden_.emplace_back(layout, names[l], widths[l], widths[l + 1]);
    out_ = Linear(layout, out_name, widths.back(), out_dim);
    offsets_.push_back(0);
    for (Index w : widths_) offsets_.push_back(offsets_.back() + w);
  }

  const std::vector<Linear>& hidden() const { return hidden_; }

  /// PyTorch-default hidden layers (ids hidden_id, hidden_id + 1, …) and an output layer that is
  /// zero (the reference's zero-initialised head: a fresh denoiser outputs exactly 0) or default.
  template <class S>
  void init(S* params, std::uint64_t seed, std::uint32_t hidden_id, std::uint32_t output_id, bool zero_last) const {
    for (std::size_t l = 0; l < hidden_.size(); ++l)
      hidden_[l].init_default(params, seed, hidden_id + static_cast<std::uint32_t>(l));
    if (zero_last)
      out_.init_constant(params, S(0));
    else
      out_.init_default(params, seed, output_id);
  }
  const Linear& output() const { return out_; }
  Index first_width() const { return widths_.front(); }
  Index max_width() const {
    Index m = 0;
    for (Index w : widths_) m = w > m ? w : m;
    return m;
  }
  /// Floats per row of a context: activations and derivatives of every layer.
  Index context_floats_per_row() const { return 2 * offsets_.back(); }

  /// A context whose trunk buffers (activations and derivatives, backward scratch, ∂/∂h₀) hold
  /// `max_rows` rows; the denoiser sizes `time` for its own input path.
  template <class S>
  MlpContext<S> make_context(Index max_rows) const {
    MlpContext<S> c;
    c.max_rows = max_rows;
    c.trunk.assign(static_cast<std::size_t>(max_rows * context_floats_per_row()), S(0));
    c.scratch.assign(static_cast<std::size_t>(2 * max_rows * max_width()), S(0));
    c.d_h0.assign(static_cast<std::size_t>(max_rows * first_width()), S(0));
    return c;
  }

  /// Activation buffer of layer l inside a context of `rows` rows.
  template <class S>
  MatrixView<S> act(S* ctx, Index rows, Index l) const {
    return MatrixView<S>(ctx + rows * offsets_[l], rows, widths_[l]);
  }
  template <class S>
  S* deriv(S* ctx, Index rows, Index l) const {
    return ctx + rows * (offsets_.back() + offsets_[l]);
  }

  /// The caller has written h₀ into act(ctx, rows, 0). Runs the trunk, keeping derivatives if
  /// `keep` is set, and writes `out`.
  template <class S>
  void forward(const S* params, S* ctx, Index rows, MatrixView<S> out, bool keep) const {
    for (std::size_t l = 0; l <= hidden_.size(); ++l) {
      MatrixView<S> a = act(ctx, rows, static_cast<Index>(l));
      gelu_inplace(a.data(), keep ? deriv(ctx, rows, static_cast<Index>(l)) : static_cast<S*>(nullptr),
                   a.size());
      if (l < hidden_.size())
        hidden_[l].forward(params, ConstMatrixView<S>(a.data(), rows, a.cols()),
                           act(ctx, rows, static_cast<Index>(l + 1)));
    }
    const MatrixView<S> last = act(ctx, rows, static_cast<Index>(hidden_.size()));
    out_.forward(params, ConstMatrixView<S>(last.data(), rows, last.cols()), out);
  }

  /// Back-propagates d_out; accumulates parameter gradients into `grad` and leaves ∂/∂h₀ in
  /// `d_h0` (rows × w₀). `scratch` holds 2 · rows · max_width() floats.
  template <class S>
  void backward(const S* params, S* ctx, Index rows, ConstMatrixView<S> d_out, S* grad, S* scratch,
                MatrixView<S> d_h0) const {
    const Index L = static_cast<Index>(hidden_.size());
    S* buf[2] = {scratch, scratch + rows * max_width()};
    S* d_a = L == 0 ? d_h0.data() : buf[0];  // ∂/∂a_l, then ∂/∂h_l in place
    {
      const MatrixView<S> a = act(ctx, rows, L);
      MatrixView<S> d_a_view(d_a, rows, widths_[L]);
      out_.backward(params, ConstMatrixView<S>(a.data(), rows, a.cols()), d_out, grad, &d_a_view);
    }
    for (Index l = L - 1; l >= 0; --l) {
      gelu_backward_inplace(d_a, deriv(ctx, rows, l + 1), rows * widths_[l + 1]);
      S* d_prev = l == 0 ? d_h0.data() : buf[(L - l) % 2];
      MatrixView<S> d_prev_view(d_prev, rows, widths_[l]);
      const MatrixView<S> a = act(ctx, rows, l);
      hidden_[l].backward(params, ConstMatrixView<S>(a.data(), rows, a.cols()),
                          ConstMatrixView<S>(d_a, rows, widths_[l + 1]), grad, &d_prev_view);
      d_a = d_prev;
    }
    gelu_backward_inplace(d_h0.data(), deriv(ctx, rows, 0), d_h0.size());
  }

 private:
  std::vector<Index> widths_;
  std::vector<Index> offsets_;
  std::vector<Linear> hidden_;
  Linear out_;
};

}  // namespace rtb::detail
