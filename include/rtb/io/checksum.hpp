// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// CRC-32 (IEEE 802.3, the zlib/PNG polynomial 0xEDB88320) and Adler-32, for checkpoint integrity
/// and for writing PNG files without a compression library.

#include <array>
#include <cstddef>
#include <cstdint>

namespace rtb::io {

namespace detail {
inline const std::array<std::uint32_t, 256>& crc_table() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t n = 0; n < 256; ++n) {
      std::uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  return table;
}
}  // namespace detail

/// Continues a CRC-32 over more bytes: crc32(crc32(0, a), b) == crc32 of a then b.
inline std::uint32_t crc32(std::uint32_t crc, const void* data, std::size_t n) {
  const auto& t = detail::crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

/// Adler-32 as zlib streams use it.
inline std::uint32_t adler32(std::uint32_t adler, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t a = adler & 0xFFFFu, b = adler >> 16;
  for (std::size_t i = 0; i < n; ++i) {
    a = (a + p[i]) % 65521u;
    b = (b + a) % 65521u;
  }
  return (b << 16) | a;
}

}  // namespace rtb::io
