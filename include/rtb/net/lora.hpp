// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// LoRA (Hu et al. 2021) over a frozen denoiser: each chosen weight matrix W [out, in] of the base
/// becomes
///
///     W' = W + s·B·A,   A [r, in],  B [out, r],  s = α / r,
///
/// with A drawn as PEFT's kaiming_uniform(a = √5) (uniform ±1/√in) and B = 0, so a fresh adapter
/// is the base net exactly. Only A and B are trained, counted in num_params() and checkpointed;
/// the base's parameters arrive as Weights::frozen (WrapsFrozenBase: the trainer's prior is the
/// base itself, sharing them). Forward runs the base with the merged weights W' (kept in the
/// context: a copy of the weights, never of a gradient). Backward walks the base's layers with
/// W' and, at each adapted matrix, forms the adapter gradients from the layer's input X and
/// output gradient dY directly,
///
///     U = s·X·Aᵀ,  V = s·dY·B,   dB += dYᵀ·U,   dA += Vᵀ·X,
///
/// (the contractions of dW' = dYᵀ·X with Aᵀ and Bᵀ), so no full weight gradient is ever formed.
/// Walking the layers needs to know the net: `detail::LoraTraits<N>` does that per net; rtb has it
/// for Mlp (every Linear) and UNet (attention q, k, v by default; every conv kernel on request). Tensors are `<module>.lora_A.weight` and `<module>.lora_B.weight`,
/// module being the adapted weight's name without ".weight" (PEFT's names less its
/// `base_model.model.` prefix and `.default` adapter name).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/error.hpp"
#include "rtb/net/gelu.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/init.hpp"
#include "rtb/net/mlp.hpp"
#include "rtb/net/unet.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// A weight matrix of a net that Lora can adapt: its module name, where W lives in the net's
/// parameters, and its shape as a matrix [out, in] (a conv kernel would be [out, in·k·k]).
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
  static bool default_target(const UNet<S>&, const LoraTarget& t) { return t.module.find(".attentions.") != std::string::npos; }
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

template <Denoiser N>
class Lora {
  using Traits = detail::LoraTraits<N>;

 public:
  using Base = N;
  using Scalar = typename N::Scalar;
  using Value = typename N::Value;
  using Condition = condition_of_t<N>;
  using Space = space_of_t<N>;
  using S = Scalar;
  struct Context {
    typename N::Context base;
    Index max_rows = 0;
    AlignedVector<S> merged;   ///< W' = W + s·B·A over the whole base layout
    AlignedVector<S> scratch;  ///< the walk's buffers, then U and V (rows × r each), then s·B
  };

  struct Options {
    Index rank = 8;                        ///< r
    double alpha = 0;                      ///< s = α/r; 0 means α = r (s = 1)
    std::vector<std::string> targets = {};  ///< modules to adapt ("layers.1"); empty: the net's defaults
    std::uint64_t seed = 0;                ///< for A
  };

  explicit Lora(N base) : Lora(std::move(base), Options{}) {}
  /// Throws InvalidArgumentError for rank < 1, a rank above min(out, in) of a target, or a
  /// target the base does not have.
  Lora(N base, const Options& o) : base_(std::move(base)), o_(o) {
    if (o.rank < 1)
      throw InvalidArgumentError(detail::message("Lora: rank must be >= 1, got ", o.rank,
                                                 "; rank 0 adapts nothing (use the base net itself)"));
    const std::vector<LoraTarget> all = Traits::targets(base_);
    std::vector<const LoraTarget*> chosen;
    if (o.targets.empty())  // the net's default targets
      for (const LoraTarget& t : all)
        if (Traits::default_target(base_, t)) chosen.push_back(&t);
    for (const std::string& name : o.targets) {
      const std::string module = name.size() > 7 && name.ends_with(".weight") ? name.substr(0, name.size() - 7) : name;
      auto it = std::find_if(all.begin(), all.end(), [&](const LoraTarget& t) { return t.module == module; });
      if (it == all.end()) {
        std::string names;
        for (const LoraTarget& t : all) names += (names.empty() ? "" : ", ") + t.module;
        throw InvalidArgumentError(detail::message("Lora: the base net has no adaptable weight '", name,
                                                   "'; choose among its modules: ", names));
      }
      if (std::find(chosen.begin(), chosen.end(), &*it) == chosen.end()) chosen.push_back(&*it);
    }
    std::sort(chosen.begin(), chosen.end(), [](const LoraTarget* a, const LoraTarget* b) { return a < b; });
    wanted_.assign(all.size(), -1);
    for (const LoraTarget* t : chosen) {
      if (o.rank > std::min(t->out, t->in))
        throw InvalidArgumentError(detail::message("Lora: rank ", o.rank, " exceeds min(out, in) = ",
                                                   std::min(t->out, t->in), " of '", t->module, "' [", t->out, ", ",
                                                   t->in, "]; B·A would be no longer low-rank: use rank <= ",
                                                   std::min(t->out, t->in), " or leave that module out of targets"));
      wanted_[static_cast<std::size_t>(t - all.data())] = static_cast<int>(adapters_.size());
      Adapter a{*t, 0, 0};
      a.a = layout_.add(t->module + ".lora_A.weight", {o.rank, t->in});
      a.b = layout_.add(t->module + ".lora_B.weight", {t->out, o.rank});
      adapters_.push_back(a);
    }
    scale_ = o.alpha == 0 ? S(1) : static_cast<S>(o.alpha / static_cast<double>(o.rank));
  }

  const N& base() const { return base_; }
  const Options& options() const { return o_; }
  Index input_dim() const { return base_.input_dim(); }
  Index output_dim() const { return base_.output_dim(); }
  Index num_params() const { return layout_.size(); }
  const ParameterLayout& layout() const { return layout_; }
  /// The modules adapted, in layout order.
  std::vector<std::string> modules() const {
    std::vector<std::string> m;
    for (const Adapter& a : adapters_) m.push_back(a.target.module);
    return m;
  }

  /// A uniform in ±1/√in (PEFT's default), B = 0: the wrapped net starts as the base exactly.
  void initialize(std::span<S> p) const {
    RTB_ASSERT(static_cast<Index>(p.size()) == num_params());
    for (std::size_t k = 0; k < adapters_.size(); ++k) {
      const Adapter& a = adapters_[k];
      const S bound = S(1) / std::sqrt(static_cast<S>(a.target.in));
      detail::fill_uniform(p.data() + a.a, o_.rank * a.target.in, bound, o_.seed, kInitTag, static_cast<std::uint32_t>(k), 0);
      std::fill_n(p.data() + a.b, a.target.out * o_.rank, S(0));
    }
  }

  Context make_context(Index max_rows) const {
    Context c{base_.make_context(max_rows), max_rows, {}, {}};
    c.merged.assign(static_cast<std::size_t>(base_.num_params()), S(0));
    Index b_floats = 0;
    for (const Adapter& a : adapters_) b_floats = std::max(b_floats, a.target.out * o_.rank);
    c.scratch.assign(static_cast<std::size_t>(Traits::scratch_floats(base_, max_rows) +
                                              2 * Traits::adapter_rows(base_, max_rows) * o_.rank + b_floats),
                     S(0));
    return c;
  }

  void inference(const Weights<S>& w, const step_of_t<N>& s, View<S, Space> out, Context& c) const {
    merge(w, c);
    base_.inference(Weights<S>{std::span<const S>(c.merged)}, s, out, c.base);
  }
  void forward(const Weights<S>& w, const step_of_t<N>& s, View<S, Space> out, Context& c) const {
    merge(w, c);
    base_.forward(Weights<S>{std::span<const S>(c.merged)}, s, out, c.base);
  }
  /// grad (+)= ∂L/∂(A, B) of every adapter for the last forward; nothing of the base's.
  void backward(const Weights<S>& w, Context& c, View<const S, Space> d_out, std::span<S> grad, GradientMode mode) const {
    RTB_ASSERT(static_cast<Index>(grad.size()) == num_params());
    if (mode == GradientMode::Overwrite) std::fill(grad.begin(), grad.end(), S(0));
    const Index r = o_.rank;
    S* u = c.scratch.data() + Traits::scratch_floats(base_, c.max_rows);
    S* v = u + Traits::adapter_rows(base_, c.max_rows) * r;
    const S* p = w.params.data();
    Traits::backward(base_, c.merged.data(), c.base, d_out, c.scratch.data(), std::span<const int>(wanted_),
                     [&](Index k, const auto& x, const auto& dy) {  // X rows × in, dY rows × out
                       const Adapter& a = adapters_[static_cast<std::size_t>(wanted_[static_cast<std::size_t>(k)])];
                       const Index in = a.target.in, out = a.target.out, rows = x.rows();
                       RTB_ASSERT(rows <= Traits::adapter_rows(base_, c.max_rows));
                       MatrixView<S> uv(u, rows, r), vv(v, rows, r);
                       detail::gemm(uv, x, ConstMatrixView<S>(p + a.a, r, in).transpose(), false);
                       detail::gemm(vv, dy, ConstMatrixView<S>(p + a.b, out, r), false);
                       if (scale_ != S(1)) {
                         uv *= scale_;
                         vv *= scale_;
                       }
                       detail::gemm(MatrixView<S>(grad.data() + a.b, out, r), dy.transpose(), const_view(uv), true);
                       detail::gemm(MatrixView<S>(grad.data() + a.a, r, in), const_view(vv).transpose(), x, true);
                     });
  }

 private:
  struct Adapter {
    LoraTarget target;
    Index a = 0, b = 0;  ///< offsets of lora_A and lora_B in this layout
  };

  /// merged = frozen, then W' += (s·B)·A for every adapter.
  void merge(const Weights<S>& w, Context& c) const {
    if (static_cast<Index>(w.frozen.size()) != base_.num_params())
      throw InvalidArgumentError(detail::message("Lora: the frozen base weights hold ", w.frozen.size(),
                                                 " values for a base net of ", base_.num_params(),
                                                 "; build the model as rtb::Model(Lora(...), base_model)"));
    std::copy(w.frozen.begin(), w.frozen.end(), c.merged.begin());
    S* sb = c.scratch.data() + Traits::scratch_floats(base_, c.max_rows) +
            2 * Traits::adapter_rows(base_, c.max_rows) * o_.rank;
    for (const Adapter& a : adapters_) {
      const Index in = a.target.in, out = a.target.out, r = o_.rank;
      const S* b = w.params.data() + a.b;
      if (scale_ != S(1)) {
        for (Index i = 0; i < out * r; ++i) sb[i] = scale_ * b[i];
        b = sb;
      }
      detail::gemm(MatrixView<S>(c.merged.data() + a.target.weight_offset, out, in), ConstMatrixView<S>(b, out, r),
                   ConstMatrixView<S>(w.params.data() + a.a, r, in), true);
    }
  }

  static constexpr std::uint32_t kInitTag = 0x10BAu;

  N base_;
  Options o_;
  ParameterLayout layout_;
  std::vector<Adapter> adapters_;
  std::vector<int> wanted_;  ///< per target of Traits::targets: its adapter, or −1
  S scale_ = S(1);
};

}  // namespace rtb
