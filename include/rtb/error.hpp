// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Typed errors. Every public entry point checks its input and throws one of these with a
/// message that names the argument, what was expected, what came, and how to fix it.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace rtb {

/// Base of every error rtb throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// An argument has the wrong shape (rows, columns, tensor dimensions).
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A batch with no rows where at least one is needed.
class EmptyBatchError : public ShapeError {
 public:
  using ShapeError::ShapeError;
};

/// A value that must be finite is NaN or infinite (rewards, gradients, parameters).
class NonFiniteError : public Error {
 public:
  using Error::Error;
};

/// log r(x) = -inf (r = 0) under the throwing policy; see Config::on_zero_reward.
class ZeroRewardError : public NonFiniteError {
 public:
  using NonFiniteError::NonFiniteError;
};

/// A scalar argument outside its domain (non-positive variance, zero steps, bad fraction).
class InvalidArgumentError : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be opened, read or written, or whose contents do not match.
class IoError : public Error {
 public:
  using Error::Error;
};

/// A checkpoint that is truncated, corrupted, of another version or of another model.
class CheckpointError : public IoError {
 public:
  using IoError::IoError;
};

/// A file declares more data than the reader's limit allows (the limit and how to raise it are
/// named in the message); nothing was allocated.
class SizeLimitError : public IoError {
 public:
  using IoError::IoError;
};

/// A size from the user's input (batch, replay capacity, sample count, block rows) would need more
/// memory than the machine has; the message names the size and the limit. Nothing was allocated.
class MemoryLimitError : public Error {
 public:
  using Error::Error;
};

namespace detail {

/// Builds a message from streamable pieces: `message("x has ", n, " rows")`.
template <class... Parts>
std::string message(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

}  // namespace detail
}  // namespace rtb
