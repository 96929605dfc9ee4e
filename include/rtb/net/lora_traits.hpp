// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// How Lora (net/lora.hpp) walks a net: `detail::LoraTraits<N>` lists the weight matrices of N it
/// can adapt (`LoraTarget`s) and back-propagates through N with merged weights W' = W + s·B·A,
/// handing each adapted matrix's input X and output gradient dY (rows × in, rows × out) to the
/// adapter instead of forming any weight gradient. Specialised for Mlp (every Linear) and UNet
/// (attention q, k, v by default; every conv kernel, as [out, in·k·k], on request).

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "rtb/net/gelu.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/mlp.hpp"
#include "rtb/net/unet.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// A weight matrix of a net that Lora can adapt: its module name, where W lives in the net's
/// parameters, and its shape as a matrix [out, in] (a conv kernel is [out, in·k·k]).
struct LoraTarget {
  std::string module;
  Index weight_offset = 0, out = 0, in = 0;
};

namespace detail {

/// How Lora walks a net N: `targets(net)`, `scratch_floats(net, rows)` and
/// `backward(net, merged, ctx, d_out, scratch, wanted, adapter)`, which back-propagates d_out
/// through N with the merged weights and calls adapter(k, X, dY) for every target k with
/// wanted[k] ≥ 0 instead of forming any weight gradient.
template <class N>
struct LoraTraits;

template <class S>
struct LoraTraits<Mlp<S>> {
  /// layers.0 (over [x, c, φ(t)]), layers.1 … layers.L (hidden), layers.L+1 (output), in that order.
  static std::vector<LoraTarget> targets(const Mlp<S>& net) {
    std::vector<LoraTarget> t;
    auto add = [&](const Linear& l, Index i) {
      t.push_back({"layers." + std::to_string(i), l.weight_offset(), l.out(), l.in()});
    };
    add(net.first_layer(), 0);
    const auto& hidden = net.trunk().hidden();
    for (std::size_t l = 0; l < hidden.size(); ++l) add(hidden[l], static_cast<Index>(l) + 1);
    add(net.trunk().output(), static_cast<Index>(hidden.size()) + 1);
    return t;
  }

  static Index scratch_floats(const Mlp<S>& net, Index rows) {
    return rows * (2 * net.trunk().max_width() + net.trunk().first_width() + net.first_in());
  }
  /// Rows of the (X, dY) pairs handed to the adapter: the batch's.
  static Index adapter_rows(const Mlp<S>&, Index rows) { return rows; }
  /// What an empty Options::targets adapts: every Linear.
  static bool default_target(const Mlp<S>&, const LoraTarget&) { return true; }

  template <class Adapter>
  static void backward(const Mlp<S>& net, const S* merged, MlpContext<S>& ctx, ConstMatrixView<S> d_out, S* scratch,
                       std::span<const int> wanted, Adapter&& adapter) {
    const GeluTrunk& T = net.trunk();
    const auto& hidden = T.hidden();
    const Index rows = ctx.rows, L = static_cast<Index>(hidden.size()), W0 = T.first_width();
    auto width = [&](Index l) { return l < L ? hidden[static_cast<std::size_t>(l)].in() : T.output().in(); };
    auto weight = [merged](const Linear& l) { return ConstMatrixView<S>(merged + l.weight_offset(), l.out(), l.in()); };
    S* trunk = ctx.trunk.data();
    S* buf[2] = {scratch, scratch + rows * T.max_width()};
    S* d_h0 = buf[1] + rows * T.max_width();
    S* x0 = d_h0 + rows * W0;
    // The output layer, then the hidden ones, as GeluTrunk::backward but with dX = dY·W' only.
    S* d_a = L == 0 ? d_h0 : buf[0];
    {
      const ConstMatrixView<S> a(T.act(trunk, rows, L).data(), rows, width(L));
      if (wanted[static_cast<std::size_t>(L + 1)] >= 0) adapter(L + 1, a, d_out);
      gemm(MatrixView<S>(d_a, rows, width(L)), d_out, weight(T.output()), false);
    }
    for (Index l = L - 1; l >= 0; --l) {
      gelu_backward_inplace(d_a, T.deriv(trunk, rows, l + 1), rows * width(l + 1));
      S* d_prev = l == 0 ? d_h0 : buf[(L - l) % 2];
      const ConstMatrixView<S> a(T.act(trunk, rows, l).data(), rows, width(l)), dy(d_a, rows, width(l + 1));
      if (wanted[static_cast<std::size_t>(l + 1)] >= 0) adapter(l + 1, a, dy);
      gemm(MatrixView<S>(d_prev, rows, width(l)), dy, weight(hidden[static_cast<std::size_t>(l)]), false);
      d_a = d_prev;
    }
    gelu_backward_inplace(d_h0, T.deriv(trunk, rows, 0), rows * W0);
    if (wanted[0] < 0) return;
    // The first layer's input, [x, c, φ(t)] row by row (φ is the same for every row).
    const Index D = net.input_dim(), Dc = net.condition_dim(), F2 = net.first_in() - D - Dc, in = net.first_in();
    for (Index r = 0; r < rows; ++r) {
      S* row = x0 + r * in;
      std::copy_n(ctx.x + r * D, D, row);
      if (Dc > 0) std::copy_n(ctx.condition_values + r * ctx.condition_stride, Dc, row + D);
      std::copy_n(ctx.time.data(), F2, row + D + Dc);
    }
    adapter(0, ConstMatrixView<S>(x0, rows, in), ConstMatrixView<S>(d_h0, rows, W0));
  }
};

/// UNet::backward_frozen's hook for Lora: maps each layer's matrix to its target index k (the
/// order of LoraTraits<UNet>::targets) and hands (X, dY) on.
template <class S, class Give>
struct UnetLoraHook {
  Give& give;
  const UNet<S>& net;
  Index n_attn, n_conv;
  template <class X, class D>
  void attention(Index i, int m, const X& xhat, const D& dm) {
    give(3 * i + m, xhat, dm);
  }
  template <class X, class D>
  void conv(Index i, const X& col, const D& dy) {
    give(3 * n_attn + i, col, dy);
  }
  template <class X, class D>
  void resnet(Index i, int which, const X& col, const D& dy) {
    Index k = 3 * n_attn + n_conv;
    for (Index j = 0; j < i; ++j) k += net.resnets()[static_cast<std::size_t>(j)].has_shortcut() ? 3 : 2;
    give(k + which, col, dy);
  }
};

/// UNet: the q, k, v projections of every attention layer ([C, C] each; the default targets,
/// those the paper adapts, with r = 32), then every conv kernel as [out, in·k·k]: convs() in order,
/// then conv1, conv2 (and conv_shortcut) of each of resnets(). The adapter sees one image at a
/// time with positions as rows: X = x̂ᵀ or colᵀ (N × in), dY = dMᵀ or dyᵀ (N × out).
template <class S>
struct LoraTraits<UNet<S>> {
  static std::vector<LoraTarget> targets(const UNet<S>& net) {
    std::vector<LoraTarget> t;
    auto add = [&](Index offset, Index out, Index in) {
      for (const ParameterTensor& tensor : net.layout().tensors())
        if (tensor.offset == offset) t.push_back({tensor.name.substr(0, tensor.name.size() - 7), offset, out, in});
    };
    auto add_conv = [&](const Conv2d& c) { add(c.weight_offset(), c.out(), c.in() * c.kernel() * c.kernel()); };
    for (const Attention2d& a : net.attentions())
      for (const Linear* l : {&a.to_q(), &a.to_k(), &a.to_v()}) add(l->weight_offset(), l->out(), l->in());
    for (const Conv2d& c : net.convs()) add_conv(c);
    for (const ResnetBlock2d& r : net.resnets()) {
      add_conv(r.conv1());
      add_conv(r.conv2());
      if (r.has_shortcut()) add_conv(r.conv_shortcut());
    }
    return t;
  }
  static bool default_target(const UNet<S>&, const LoraTarget& t) {
    return t.module.find(".attentions.") != std::string::npos;
  }
  static Index scratch_floats(const UNet<S>&, Index) { return 0; }
  static Index adapter_rows(const UNet<S>& net, Index) {
    const auto& o = net.options();
    return o.height * o.width;  // the largest map (attention runs at most at full resolution)
  }

  template <class Adapter>
  static void backward(const UNet<S>& net, const S* merged, UnetContext<S>& ctx, ConstMatrixView<S> d_out, S*,
                       std::span<const int> wanted, Adapter&& adapter) {
    const Index n_attn = static_cast<Index>(net.attentions().size()), n_conv = static_cast<Index>(net.convs().size());
    auto give = [&](Index k, const auto& x, const auto& dy) {
      if (wanted[static_cast<std::size_t>(k)] >= 0) adapter(k, x.transpose(), dy.transpose());
    };
    UnetLoraHook<S, decltype(give)> hook{give, net, n_attn, n_conv};
    net.backward_frozen(merged, ctx, d_out, hook);
  }
};

}  // namespace detail

}  // namespace rtb
