// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Bounds on allocations a user's input sizes: a workspace must fit the machine's physical
/// memory, checked (with overflow-safe arithmetic) before anything is allocated, so a batch or
/// a sample count of 10¹² is a MemoryLimitError naming the size and the limit, never
/// std::bad_alloc or an out-of-memory kill halfway through.

#include <cstdint>
#include <limits>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

#include "rtb/error.hpp"

namespace rtb::detail {

/// The machine's physical memory in bytes (1 TiB where it cannot be asked).
inline std::uint64_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
#endif
  return std::uint64_t{1} << 40;
}

/// Sums the bytes of a workspace, term by term, refusing overflow and anything over the limit.
class MemoryBudget {
 public:
  explicit MemoryBudget(const char* what) : what_(what), limit_(physical_memory_bytes()) {}
  /// Adds count × bytes_each (both from the user's input, so possibly absurd).
  MemoryBudget& add(std::uint64_t count, std::uint64_t bytes_each) {
    const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    if (bytes_each != 0 && count > max / bytes_each) overflow_ = true;
    else if (total_ > max - count * bytes_each) overflow_ = true;
    else total_ += count * bytes_each;
    return *this;
  }
  std::uint64_t bytes() const { return total_; }
  /// Throws MemoryLimitError if the total does not fit.
  void check(const char* sizes) const {
    if (overflow_ || total_ > limit_)
      throw MemoryLimitError(message(what_, ": ", sizes, " need ", overflow_ ? "more than 2^64" : std::to_string(total_),
                                     " bytes, more than this machine's ", limit_,
                                     " bytes of memory; use smaller sizes (the message's first numbers)"));
  }

 private:
  const char* what_;
  std::uint64_t limit_;
  std::uint64_t total_ = 0;
  bool overflow_ = false;
};

}  // namespace rtb::detail
