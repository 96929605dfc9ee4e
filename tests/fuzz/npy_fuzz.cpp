// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the .npy reader on arbitrary bytes. It must throw an rtb::IoError or return an
// array whose size matches its shape and that the writer's header reads back to the same values.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <rtb/io/npy_format.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rtb::NpyArray a;
  try {
    a = rtb::parse_npy(std::span<const unsigned char>(data, size), "fuzz.npy", {.max_bytes = std::uint64_t{1} << 26});
  } catch (const rtb::IoError&) {
    return 0;
  }
  std::size_t n = 1;
  for (std::size_t d : a.shape) n *= d;
  if (n != a.size()) std::abort();
  // Re-encode (row-major) and read again: the same shape and the same bits.
  std::string bytes = rtb::npy_header(a.dtype, a.shape, false);
  std::visit([&](const auto& v) { bytes.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(v[0])); },
             a.data);
  const rtb::NpyArray b = rtb::parse_npy({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()});
  if (b.shape != a.shape || b.dtype != a.dtype || b.data.index() != a.data.index()) std::abort();
  std::visit(
      [&](const auto& v) {
        const auto& w = std::get<std::decay_t<decltype(v)>>(b.data);
        if (v.size() && std::memcmp(v.data(), w.data(), v.size() * sizeof(v[0])) != 0) std::abort();
      },
      a.data);
  return 0;
}
