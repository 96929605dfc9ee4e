// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the checkpoint reader on arbitrary bytes. The first byte picks the mode: odd
// appends the right CRC-32 to the rest (so the fuzzer explores the section parser behind the
// checksum), even reads the rest as it is. It must throw a CheckpointError or read.

#include <cstdint>
#include <string>
#include <vector>

#include <rtb/train/checkpoint.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::vector<unsigned char> bytes(data + 1, data + size);
  if (data[0] & 1) {
    const std::uint32_t crc = rtb::io::crc32(0, bytes.data(), bytes.size());
    const auto* p = reinterpret_cast<const unsigned char*>(&crc);
    bytes.insert(bytes.end(), p, p + 4);
  }
  try {
    const rtb::CheckpointReader r = rtb::CheckpointReader::from_bytes(std::move(bytes), "fuzz.ckpt");
    for (const char* name : {"meta", "posterior", "iteration", "x"}) {
      if (!r.has(name)) continue;
      try {
        (void)r.array<double>(name);
      } catch (const rtb::CheckpointError&) {
      }
      try {
        (void)r.array<char>(name);
      } catch (const rtb::CheckpointError&) {
      }
    }
  } catch (const rtb::CheckpointError&) {
  }
  return 0;
}
