// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Project-wide basics that every header may include, device code among them: the host/device
/// qualifier, debug assertions, the index type and the gradient mode of backward passes. No Eigen
/// here (math/ is compiled by nvcc too); the views live in rtb/space.hpp.

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define RTB_HOST_DEVICE __host__ __device__
#else
#define RTB_HOST_DEVICE
#endif

#if defined(NDEBUG)
#define RTB_ASSERT(cond) ((void)0)
#else
#include <cassert>
#define RTB_ASSERT(cond) assert(cond)
#endif

namespace rtb {

/// Signed index, as Eigen uses.
using Index = std::ptrdiff_t;

/// Whether a backward pass overwrites the gradient buffer or adds into it.
enum class GradientMode { Overwrite, Accumulate };

}  // namespace rtb
