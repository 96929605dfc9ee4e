// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Token embedding: a table [num_tokens, dim] (tensor `<prefix>weight`, PyTorch's nn.Embedding),
/// gathered column by column into a flat row, with the scatter-add backward.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "rtb/space.hpp"
#include "rtb/math/philox.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

class Embedding {
 public:
  Embedding() = default;
  Embedding(ParameterLayout& layout, const std::string& prefix, Index num_tokens, Index dim)
      : n_(num_tokens), d_(dim), w_(layout.add(prefix + "weight", {num_tokens, dim})) {}

  Index num_tokens() const { return n_; }
  Index dim() const { return d_; }

  /// N(0, 1) entries, as torch.nn.Embedding.
  template <class S>
  void init(S* params, std::uint64_t seed, std::uint32_t id) const {
    const math::NoiseKey key{seed, math::Stream::User, 0xE3BEu + id};
    for (Index i = 0; i < n_ * d_; ++i) params[w_ + i] = math::normal<S>(key, static_cast<std::uint64_t>(i), 0, 0);
  }

  /// out(r, c·dim + k) = table[tokens(r, columns[c]), k] for the listed columns.
  template <class S, class T>
  void gather(const S* params, ConstMatrixView<T> tokens, const std::vector<Index>& columns, MatrixView<S> out) const {
    for (Index r = 0; r < tokens.rows(); ++r) {
      S* o = row_ptr(out, r);
      for (std::size_t c = 0; c < columns.size(); ++c) {
        const S* e = params + w_ + static_cast<Index>(tokens(r, columns[c])) * d_;
        for (Index k = 0; k < d_; ++k) o[static_cast<Index>(c) * d_ + k] = e[k];
      }
    }
  }

  /// table[tokens(r, columns[c]), k] += d_out(r, c·dim + k).
  template <class S, class T>
  void scatter_add(ConstMatrixView<T> tokens, const std::vector<Index>& columns, ConstMatrixView<S> d_out, S* grad) const {
    for (Index r = 0; r < tokens.rows(); ++r) {
      const S* d = row_ptr(d_out, r);
      for (std::size_t c = 0; c < columns.size(); ++c) {
        S* g = grad + w_ + static_cast<Index>(tokens(r, columns[c])) * d_;
        for (Index k = 0; k < d_; ++k) g[k] += d[static_cast<Index>(c) * d_ + k];
      }
    }
  }

 private:
  Index n_ = 0, d_ = 0, w_ = 0;
};

}  // namespace rtb
