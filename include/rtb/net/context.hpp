// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The per-thread buffers of an MLP denoiser: what forward keeps for backward, and scratch.
/// Sized once by `make_context(max_rows)`; forward, inference and backward never allocate.

#include <cstdint>
#include <vector>

#include "rtb/config.hpp"

namespace rtb {

template <class S>
struct MlpContext {
  Index max_rows = 0;
  Index rows = 0;              ///< rows of the last forward
  const S* x = nullptr;        ///< input of the last forward (must stay alive until backward)
  const std::int32_t* tokens = nullptr;  ///< the same, for token denoisers
  S t = 0;                     ///< conditioning time of the last forward
  std::vector<S> trunk;        ///< activations and GELU derivatives of the trunk
  std::vector<S> scratch;      ///< backward ping-pong buffers
  std::vector<S> d_h0;         ///< ∂/∂(first pre-activation)
  std::vector<S> time;         ///< the time path's features, activations and gradients

  /// Bytes held by this context.
  std::size_t bytes() const {
    return sizeof(S) * (trunk.capacity() + scratch.capacity() + d_h0.capacity() + time.capacity());
  }
};

}  // namespace rtb
