// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The seam structs: what every per-step call of a process or a denoiser is told about the rows
/// it works on. They are structs, not positional arguments, so that a capability that needs one
/// more piece of context adds a field here instead of changing every model's signature.

#include <span>

#include "rtb/base.hpp"
#include "rtb/space.hpp"

namespace rtb {

/// A block of rows of a batch: their per-row conditions and where they sit in the batch.
template <class C, class Space = HostSpace>
struct Rows {
  View<const C, Space> condition{nullptr, 0, 0};  ///< [rows, condition_dim]; 0 columns when unconditional
  Index first_row = 0;                            ///< global index of the first row: keys counter-based noise
};

/// One step of a block of rows: the states x_t, their conditions, the step index t ∈ [0, T) and
/// the process's time(t), which is what a denoiser is conditioned on.
template <class V, class S = V, class C = V, class Space = HostSpace>
struct Step {
  View<const V, Space> x{nullptr, 0, 0};          ///< x_t, [rows, state_dim]
  View<const C, Space> condition{nullptr, 0, 0};  ///< [rows, condition_dim]; 0 columns when unconditional
  Index step = 0;                                 ///< t
  S time = S(0);                                  ///< process.time(t)
  Index first_row = 0;                            ///< global index of the first row

  Index rows() const { return x.rows(); }
  Rows<C, Space> block() const { return {condition, first_row}; }
};

/// The parameters a denoiser computes with. Nets hold no parameters of their own (a net is a
/// layout plus code); the trainer owns the buffers and hands them in. `params` are the net's own
/// tensors (its layout(), the ones that are trained); `frozen` are those of a frozen base net a
/// wrapper builds on (e.g. LoRA's base weights, shared with the prior), empty for plain nets.
template <class S>
struct Weights {
  std::span<const S> params;
  std::span<const S> frozen = {};
};

/// The element type of conditions: what a model declares as `Condition`, else its state type.
template <class T, class Fallback>
struct condition_of {
  using type = Fallback;
};
template <class T, class Fallback>
  requires requires { typename T::Condition; }
struct condition_of<T, Fallback> {
  using type = typename T::Condition;
};
template <class T>
using condition_of_t = typename condition_of<T, typename T::Value>::type;

/// The Step type a process (or a denoiser: same member names) is called with.
template <class M>
using step_of_t = Step<typename M::Value, typename M::Scalar, condition_of_t<M>, space_of_t<M>>;
template <class M>
using rows_of_t = Rows<condition_of_t<M>, space_of_t<M>>;

namespace detail {
/// A process's or a net's condition_dim() if it declares one, else 0 (it reads no conditions).
template <class M>
Index declared_condition_dim(const M& m) {
  if constexpr (requires { m.condition_dim(); })
    return m.condition_dim();
  else
    return 0;
}
}  // namespace detail

}  // namespace rtb
