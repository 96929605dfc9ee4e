// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The shape of a batch of images stored as one flat row-major [B, C, H, W] buffer (NCHW, as
/// PyTorch keeps them): element (b, c, i, j) lives at ((b·C + c)·H + i)·W + j, so one image is
/// a contiguous C × (H·W) matrix and one channel of it a contiguous H × W plane. The 2-D layers
/// take a raw pointer plus this shape and check it at the door (the layer knows its channels).
/// Also the plane reductions they share (fixed-order, eight-lane sums that the compiler
/// vectorises without -ffast-math and that give the same bits for any thread count).

#include <string>
#include <string_view>
#include <type_traits>

#include "rtb/space.hpp"
#include "rtb/error.hpp"

namespace rtb {

/// [batch, channels, height, width] of a flat NCHW buffer.
struct ImageShape {
  Index batch = 0, channels = 0, height = 0, width = 0;

  /// H·W, the positions of one channel plane.
  Index pixels() const { return height * width; }
  /// C·H·W, the floats of one image.
  Index image_size() const { return channels * height * width; }
  /// B·C·H·W, the floats of the whole buffer.
  Index size() const { return batch * channels * height * width; }
  /// The same batch and spatial size with another channel count.
  ImageShape with_channels(Index c) const { return {batch, c, height, width}; }
  bool operator==(const ImageShape&) const = default;
};

namespace detail {

/// The default of the layers' backward hooks (Conv2d, ResnetBlock2d, Attention2d), through which
/// a LoRA adapter receives a weight matrix's input and output gradient: nothing.
struct NoProjectionHook {
  template <class... A>
  void operator()(A&&...) const {}
};
template <class Hook>
inline constexpr bool is_hooked = !std::is_same_v<std::remove_cvref_t<Hook>, NoProjectionHook>;

inline std::string to_string(const ImageShape& s) {
  return message("[", s.batch, ", ", s.channels, ", ", s.height, ", ", s.width, "]");
}

/// Throws ShapeError unless `s` is a non-empty image batch of `channels` channels. (`who` is a
/// string_view so that a literal name costs no allocation on the hot path: the checks run on
/// every call.)
inline void check_image(std::string_view who, const ImageShape& s, Index channels) {
  if (s.batch <= 0 || s.channels <= 0 || s.height <= 0 || s.width <= 0)
    throw ShapeError(
        message(who, ": input shape ", to_string(s), " is empty; pass a [B, C, H, W] batch with every size >= 1"));
  if (s.channels != channels)
    throw ShapeError(message(who, ": input has ", s.channels, " channels (shape ", to_string(s),
                             ") but the layer takes ", channels, "; feed it a [B, ", channels,
                             ", H, W] tensor or build the layer for ", s.channels, " channels"));
}

/// Throws ShapeError unless H and W are even, so that a 2× downsample maps back onto them.
inline void check_even(std::string_view who, const ImageShape& s) {
  if (s.height % 2 != 0 || s.width % 2 != 0)
    throw ShapeError(message(who, ": cannot downsample a ", s.height, "x", s.width, " map (shape ", to_string(s),
                             ") by 2: height and width must be even so that 2x upsampling restores them; pad the "
                             "input (e.g. 28x28 MNIST to 32x32) or stop downsampling at this resolution"));
}

/// Σ_{i<n} term(i) in eight interleaved partial sums, combined in a fixed order. (The main loop
/// runs to n − n mod 8 rather than while i + 8 ≤ n: with the latter GCC 12 warns, for a constant
/// n, of undefined behaviour in the tail loop, which -Werror turns into an error.)
template <class S, class Term>
S lane_sum(Index n, Term term) {
  S lane[8] = {};
  const Index full = n - n % 8;
  for (Index i = 0; i < full; i += 8)
    for (int k = 0; k < 8; ++k) lane[k] += term(i + k);
  S s = 0;
  for (Index i = full; i < n; ++i) s += term(i);
  for (int k = 0; k < 8; ++k) s += lane[k];
  return s;
}

/// Σ_i p[i].
template <class S>
S sum(const S* p, Index n) {
  return lane_sum<S>(n, [p](Index i) { return p[i]; });
}

/// Σ_i a[i]·b[i].
template <class S>
S dot(const S* a, const S* b, Index n) {
  return lane_sum<S>(n, [a, b](Index i) { return a[i] * b[i]; });
}

/// Throws InvalidArgumentError unless n > 0.
inline void check_positive(std::string_view who, const char* what, Index n) {
  if (n <= 0) throw InvalidArgumentError(message(who, ": ", what, " must be positive, got ", n));
}

}  // namespace detail
}  // namespace rtb
