// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Deterministic parameter initialisation shared by the layers: PyTorch's default uniform
/// ±1/√fan_in, drawn from counter-based Philox so a net's initial weights depend only on its seed.

#include <cstdint>

#include "rtb/base.hpp"
#include "rtb/math/philox.hpp"

namespace rtb::detail {

/// p[i] = bound·(2u − 1) for n entries, u from the stream (seed, User, `tag`) at (i, 2·layer + part).
template <class S>
void fill_uniform(S* p, Index n, S bound, std::uint64_t seed, std::uint32_t tag, std::uint32_t layer_id,
                  std::uint32_t part) {
  const math::NoiseKey key{seed, math::Stream::User, tag};
  for (Index i = 0; i < n; ++i)
    p[i] = bound * (S(2) * math::uniform<S>(key, static_cast<std::uint64_t>(i), layer_id * 2 + part, 0) - S(1));
}

}  // namespace rtb::detail
