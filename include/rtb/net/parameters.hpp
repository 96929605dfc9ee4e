// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Named tensors in one flat parameter buffer. A network's parameters live in one contiguous
/// buffer (so Adam, checkpoints and gradient reductions see one span) owned by whoever runs the
/// net (an rtb::Model, the trainer); layers keep offsets into it, never pointers. Names follow the
/// PyTorch `state_dict` of the reference model, so weights move between the two as one .npy file
/// per tensor. A tensor is either trained or a *buffer* (PyTorch's register_buffer: stored,
/// loaded and saved with the weights, never given a gradient), e.g. fixed Fourier frequencies.

#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "rtb/base.hpp"
#include "rtb/error.hpp"

namespace rtb {

/// One named tensor inside a flat parameter buffer (row-major, PyTorch layout).
struct ParameterTensor {
  std::string name;
  std::vector<Index> shape;
  Index offset = 0;
  Index size = 0;
  bool trainable = true;  ///< false for buffers: their gradient is always 0
};

/// The list of tensors of a network, in storage order.
class ParameterLayout {
 public:
  /// Appends a tensor and returns its offset in the flat buffer.
  Index add(std::string name, std::vector<Index> shape) { return append(std::move(name), std::move(shape), true); }
  /// Appends a buffer (never trained) and returns its offset.
  Index add_buffer(std::string name, std::vector<Index> shape) {
    return append(std::move(name), std::move(shape), false);
  }
  const std::vector<ParameterTensor>& tensors() const { return tensors_; }
  Index size() const { return size_; }
  const ParameterTensor* find(std::string_view name) const {
    for (const auto& t : tensors_)
      if (t.name == name) return &t;
    return nullptr;
  }

 private:
  Index append(std::string name, std::vector<Index> shape, bool trainable) {
    const Index size = std::accumulate(shape.begin(), shape.end(), Index{1}, std::multiplies<>());
    tensors_.push_back(ParameterTensor{std::move(name), std::move(shape), size_, size, trainable});
    size_ += size;
    return tensors_.back().offset;
  }

  std::vector<ParameterTensor> tensors_;
  Index size_ = 0;
};

}  // namespace rtb
