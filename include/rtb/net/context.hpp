// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The per-thread buffers of rtb's MLP denoisers (Mlp, PisMlp, TokenMlp): what forward keeps for
/// backward, and scratch. Sized once by `make_context(max_rows)`; forward, inference and backward
/// never allocate.

#include <cstdint>
#include <vector>

#include "rtb/space.hpp"

namespace rtb {

template <class S>
struct MlpContext {
  Index max_rows = 0;
  Index rows = 0;              ///< rows of the last forward
  const S* x = nullptr;        ///< input of the last forward (must stay alive until backward)
  const std::int32_t* tokens = nullptr;  ///< the same, for token denoisers
  const std::int32_t* condition = nullptr;  ///< condition tokens of the last forward (TokenMlp)
  const S* condition_values = nullptr;      ///< condition values of the last forward (Mlp)
  Index condition_stride = 0;               ///< columns of the condition rows those point into
  AlignedVector<S> trunk;      ///< activations and GELU derivatives of the trunk
  AlignedVector<S> scratch;    ///< backward ping-pong buffers
  AlignedVector<S> d_h0;       ///< ∂/∂(first pre-activation)
  AlignedVector<S> time;       ///< the time path's features, activations and gradients

  /// Bytes held by this context.
  std::size_t bytes() const {
    return sizeof(S) * (trunk.capacity() + scratch.capacity() + d_h0.capacity() + time.capacity());
  }
};

}  // namespace rtb
