// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <rtb/io/checksum.hpp>
#include <rtb/extras/png.hpp>

namespace fs = std::filesystem;

TEST_CASE("PNG files have a valid signature and chunk CRCs and zlib checksum") {
  const fs::path path = fs::temp_directory_path() / "rtb_png_test.png";
  rtb::io::Image img(300, 250, {10, 20, 30});  // > 64 KiB of pixels: several stored blocks
  img.dot(150, 125, 20, {255, 0, 0});
  img.write_png(path.string());
  std::ifstream f(path, std::ios::binary);
  std::vector<unsigned char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(b.size() > 8 + 25 + 12);
  CHECK(std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0);
  auto be32 = [&](std::size_t i) {
    return (std::uint32_t(b[i]) << 24) | (std::uint32_t(b[i + 1]) << 16) | (std::uint32_t(b[i + 2]) << 8) | b[i + 3];
  };
  std::size_t pos = 8;
  std::vector<unsigned char> idat;
  int chunks = 0;
  while (pos < b.size()) {
    const std::uint32_t len = be32(pos);
    CHECK(rtb::io::crc32(0, b.data() + pos + 4, len + 4) == be32(pos + 8 + len));
    if (std::memcmp(b.data() + pos + 4, "IHDR", 4) == 0) {
      CHECK(be32(pos + 8) == 300);
      CHECK(be32(pos + 12) == 250);
    }
    if (std::memcmp(b.data() + pos + 4, "IDAT", 4) == 0) idat.assign(b.begin() + pos + 8, b.begin() + pos + 8 + len);
    pos += 12 + len;
    ++chunks;
  }
  CHECK(chunks == 3);
  // inflate the stored blocks by hand and check the pixels and the Adler-32
  std::vector<unsigned char> raw;
  std::size_t p = 2;
  for (bool last = false; !last;) {
    last = idat[p] & 1;
    const std::size_t n = idat[p + 1] | (idat[p + 2] << 8);
    raw.insert(raw.end(), idat.begin() + p + 5, idat.begin() + p + 5 + n);
    p += 5 + n;
  }
  CHECK(raw.size() == 250 * (1 + 3 * 300));
  CHECK(raw[1] == 10);
  CHECK(raw[125 * 901 + 1 + 150 * 3] == 255);  // the red dot's centre
  const std::uint32_t adler = (std::uint32_t(idat[p]) << 24) | (std::uint32_t(idat[p + 1]) << 16) |
                              (std::uint32_t(idat[p + 2]) << 8) | idat[p + 3];
  CHECK(rtb::io::adler32(1, raw.data(), raw.size()) == adler);
  fs::remove(path);
}

TEST_CASE("CRC-32 and Adler-32 match their published check values") {
  CHECK(rtb::io::crc32(0, "123456789", 9) == 0xCBF43926u);
  CHECK(rtb::io::adler32(1, "Wikipedia", 9) == 0x11E60398u);
}
