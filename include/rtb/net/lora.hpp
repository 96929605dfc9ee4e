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
/// Walking the layers needs to know the net: `detail::LoraTraits<N>` (net/lora_traits.hpp) does that per net; rtb has
/// it for Mlp (every Linear) and UNet (attention q, k, v by default; every conv kernel on request). Tensors are
/// `<module>.lora_A.weight` and `<module>.lora_B.weight`, module being the adapted weight's name without ".weight"
/// (PEFT's names less its `base_model.model.` prefix and `.default` adapter name).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/detail/flush_denormal.hpp"
#include "rtb/error.hpp"
#include "rtb/net/gemm.hpp"
#include "rtb/net/init.hpp"
#include "rtb/net/lora_traits.hpp"
#include "rtb/space.hpp"

namespace rtb {

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
    Index rank = 8;                         ///< r
    double alpha = 0;                       ///< s = α/r; 0 means α = r (s = 1)
    std::vector<std::string> targets = {};  ///< modules to adapt ("layers.1"); empty: the net's defaults
    std::uint64_t seed = 0;                 ///< for A
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
        throw InvalidArgumentError(detail::message(
            "Lora: rank ", o.rank, " exceeds min(out, in) = ", std::min(t->out, t->in), " of '", t->module, "' [",
            t->out, ", ", t->in, "]; B·A would be no longer low-rank: use rank <= ", std::min(t->out, t->in),
            " or leave that module out of targets"));
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
      detail::fill_uniform(p.data() + a.a, o_.rank * a.target.in, bound, o_.seed, kInitTag,
                           static_cast<std::uint32_t>(k), 0);
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

  /// Subnormals flushed in each entry point (detail/flush_denormal.hpp).
  void inference(const Weights<S>& w, const step_of_t<N>& s, View<S, Space> out, Context& c) const {
    const detail::ScopedFlushDenormal flush;
    merge(w, c);
    base_.inference(Weights<S>{std::span<const S>(c.merged)}, s, out, c.base);
  }
  void forward(const Weights<S>& w, const step_of_t<N>& s, View<S, Space> out, Context& c) const {
    const detail::ScopedFlushDenormal flush;
    merge(w, c);
    base_.forward(Weights<S>{std::span<const S>(c.merged)}, s, out, c.base);
  }
  /// grad (+)= ∂L/∂(A, B) of every adapter for the last forward; nothing of the base's.
  void backward(const Weights<S>& w, Context& c, View<const S, Space> d_out, std::span<S> grad,
                GradientMode mode) const {
    RTB_ASSERT(static_cast<Index>(grad.size()) == num_params());
    const detail::ScopedFlushDenormal flush;
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
