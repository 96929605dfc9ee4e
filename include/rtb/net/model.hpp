// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A denoiser together with its weights: what a user builds, fits, loads, saves and hands to the
/// trainer. A Denoiser is a layout plus code and holds no parameters; a Model owns one buffer of
/// them (in the net's memory space) and calls the net with it.
///
///     rtb::Model prior(rtb::PisMlp<float>({.dim = 2}));   // fresh weights from the net's initialiser
///     rtb::load_parameters(prior, "prior_weights/");
///     prior.inference(step, out, ctx);                   // = prior.net().inference(prior.weights(), …)
///
/// For a wrapper over a frozen base (`WrapsFrozenBase`: LoRA, a trained output scale), the Model
/// owns only the wrapper's tensors and shares the base Model, read-only: the base's parameters are
/// stored once, whether one or several wrappers (or the trainer's prior) use them.

#include <concepts>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "rtb/concepts/denoiser.hpp"
#include "rtb/detail/flush_denormal.hpp"
#include "rtb/error.hpp"

namespace rtb {

template <Denoiser N>
class Model;

namespace detail {
template <class N>
struct FrozenBaseOf {
  struct type {};  // plain nets have none
};
template <WrapsFrozenBase N>
struct FrozenBaseOf<N> {
  using type = std::shared_ptr<const Model<typename N::Base>>;
};
}  // namespace detail

/// The net a trainer's prior is: the base of a wrapper, else the net itself.
template <class N>
struct prior_net {
  using type = N;
};
template <WrapsFrozenBase N>
struct prior_net<N> {
  using type = typename N::Base;
};
template <class N>
using prior_net_t = typename prior_net<N>::type;

template <Denoiser N>
class Model {
 public:
  using Net = N;
  using Scalar = typename N::Scalar;
  using Value = typename N::Value;
  using Context = typename N::Context;
  using Space = space_of_t<N>;
  using Buffer = typename Space::template buffer<Scalar>;
  static constexpr bool wraps_frozen_base = WrapsFrozenBase<N>;

  /// The net with fresh weights from its initialiser (its options' seed).
  explicit Model(N net)
    requires(!WrapsFrozenBase<N>)
      : net_(std::move(net)) {
    init_fresh();
  }
  /// The net with the given weights (net.num_params() of them, in layout order).
  Model(N net, std::span<const Scalar> params)
    requires(!WrapsFrozenBase<N>)
      : net_(std::move(net)) {
    if (static_cast<Index>(params.size()) != net_.num_params())
      throw ShapeError(detail::message("Model: ", params.size(), " parameters for a net with ", net_.num_params(),
                                       "; pass one value per entry of net.layout()"));
    params_ = Buffer(params.size());
    Space::upload(std::span<Scalar>(params_), params);
  }
  /// A wrapper with fresh own tensors over `base`, which it shares read-only.
  template <class BaseModel>
    requires WrapsFrozenBase<N> && std::same_as<BaseModel, Model<typename N::Base>>
  Model(N net, std::shared_ptr<const BaseModel> base) : net_(std::move(net)), base_(std::move(base)) {
    if (!base_) throw InvalidArgumentError("Model: a wrapper needs its base model; got none");
    if (base_->num_params() != net_.base().num_params())
      throw ShapeError(detail::message("Model: the base model has ", base_->num_params(), " parameters, the wrapper's base net ",
                                       net_.base().num_params()));
    init_fresh();
  }
  template <class BaseModel>
    requires WrapsFrozenBase<N> && std::same_as<BaseModel, Model<typename N::Base>>
  Model(N net, const BaseModel& base) : Model(std::move(net), std::make_shared<const BaseModel>(base)) {}

  const N& net() const { return net_; }
  /// Mutable access to the net's run-time switches; its layout must not change.
  N& net() { return net_; }
  Index input_dim() const { return net_.input_dim(); }
  Index output_dim() const { return net_.output_dim(); }
  Index num_params() const { return net_.num_params(); }
  const ParameterLayout& layout() const { return net_.layout(); }
  std::span<Scalar> params() { return params_; }
  std::span<const Scalar> params() const { return params_; }
  /// The frozen base a wrapper shares (WrapsFrozenBase nets only).
  const auto& base() const
    requires WrapsFrozenBase<N>
  {
    return base_;
  }

  Weights<Scalar> weights() const {
    if constexpr (WrapsFrozenBase<N>)
      return {std::span<const Scalar>(params_), base_->params()};
    else
      return {std::span<const Scalar>(params_)};
  }

  Context make_context(Index max_rows) const { return net_.make_context(max_rows); }
  /// The net's entry points with these weights, subnormals flushed (detail/flush_denormal.hpp).
  void inference(const step_of_t<N>& s, View<Scalar, Space> out, Context& ctx) const {
    const detail::ScopedFlushDenormal flush;
    net_.inference(weights(), s, out, ctx);
  }
  void forward(const step_of_t<N>& s, View<Scalar, Space> out, Context& ctx) const {
    const detail::ScopedFlushDenormal flush;
    net_.forward(weights(), s, out, ctx);
  }
  void backward(Context& ctx, View<const Scalar, Space> d_out, std::span<Scalar> grad, GradientMode mode) const {
    const detail::ScopedFlushDenormal flush;
    net_.backward(weights(), ctx, d_out, grad, mode);
  }

 private:
  void init_fresh() {
    std::vector<Scalar> host(static_cast<std::size_t>(net_.num_params()), Scalar(0));
    net_.initialize(std::span<Scalar>(host));
    params_ = Buffer(host.size());
    Space::upload(std::span<Scalar>(params_), std::span<const Scalar>(host));
  }

  N net_;
  Buffer params_;
  [[no_unique_address]] typename detail::FrozenBaseOf<N>::type base_;
};

}  // namespace rtb
