// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Flat parameter storage with named tensors. A network keeps all its parameters in one contiguous
/// buffer (so Adam, checkpoints and gradient reductions see one span) and layers keep offsets into
/// it, never pointers: copying a network copies its parameters and nothing dangles. Names follow
/// the PyTorch `state_dict` of the reference model, so weights move between the two as one .npy
/// file per tensor.

#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "rtb/config.hpp"
#include "rtb/error.hpp"

namespace rtb {

/// One named tensor inside a flat parameter buffer (row-major, PyTorch layout).
struct ParameterTensor {
  std::string name;
  std::vector<Index> shape;
  Index offset = 0;
  Index size = 0;
};

/// The list of tensors of a network, in storage order.
class ParameterLayout {
 public:
  /// Appends a tensor and returns its offset in the flat buffer.
  Index add(std::string name, std::vector<Index> shape) {
    const Index size = std::accumulate(shape.begin(), shape.end(), Index{1}, std::multiplies<>());
    tensors_.push_back(ParameterTensor{std::move(name), std::move(shape), size_, size});
    size_ += size;
    return tensors_.back().offset;
  }
  const std::vector<ParameterTensor>& tensors() const { return tensors_; }
  Index size() const { return size_; }
  const ParameterTensor* find(std::string_view name) const {
    for (const auto& t : tensors_)
      if (t.name == name) return &t;
    return nullptr;
  }

 private:
  std::vector<ParameterTensor> tensors_;
  Index size_ = 0;
};

}  // namespace rtb
