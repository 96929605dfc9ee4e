// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <rtb/io/npy.hpp>
#include <rtb/extras/png.hpp>
#include <rtb/net/model.hpp>
#include <rtb/net/pis_mlp.hpp>

namespace fs = std::filesystem;

TEST_CASE("weights round-trip through one .npy file per PyTorch-named tensor") {
  const fs::path dir = fs::temp_directory_path() / "rtb_npy_test";
  fs::remove_all(dir);
  rtb::Model a(rtb::PisMlp<float>({.hidden = 16, .harmonics = 8, .seed = 1, .zero_init_last = false}));
  rtb::Model b(rtb::PisMlp<float>({.hidden = 16, .harmonics = 8, .seed = 2, .zero_init_last = false}));
  rtb::save_parameters(a, dir.string());
  CHECK(fs::exists(dir / "t_model.timestep_phase.npy"));
  CHECK(fs::exists(dir / "joint_model.model.3.weight.npy"));
  rtb::load_parameters(b, dir.string());
  CHECK(std::equal(a.params().begin(), a.params().end(), b.params().begin()));
  // float64 files (numpy's default) load too
  rtb::Model d(rtb::PisMlp<double>({.hidden = 16, .harmonics = 8, .seed = 3}));
  rtb::save_parameters(d, dir.string());
  rtb::load_parameters(b, dir.string());
  for (std::size_t i = 0; i < b.params().size(); ++i) CHECK(b.params()[i] == static_cast<float>(d.params()[i]));
  fs::remove_all(dir);
}

TEST_CASE("missing or wrong-shaped or corrupt weight files are typed errors and nothing is half-loaded") {
  const fs::path dir = fs::temp_directory_path() / "rtb_npy_bad";
  fs::remove_all(dir);
  rtb::Model a(rtb::PisMlp<float>({.hidden = 16, .harmonics = 8, .seed = 1}));
  rtb::Model wide(rtb::PisMlp<float>({.hidden = 32, .harmonics = 8, .seed = 1}));
  rtb::save_parameters(a, dir.string());
  const std::vector<float> before(wide.params().begin(), wide.params().end());
  CHECK_THROWS_WITH_AS(rtb::load_parameters(wide, dir.string()), doctest::Contains("has shape [16, 16]"), rtb::ShapeError);
  CHECK(std::equal(before.begin(), before.end(), wide.params().begin()));
  fs::remove(dir / "s_model.x_model.bias.npy");
  CHECK_THROWS_WITH_AS(rtb::load_parameters(a, dir.string()), doctest::Contains("missing weight file"), rtb::IoError);
  {
    std::ofstream f(dir / "s_model.x_model.bias.npy");
    f << "garbage";
  }
  CHECK_THROWS_WITH_AS(rtb::load_parameters(a, dir.string()), doctest::Contains("not a float32/float64 .npy"), rtb::IoError);
  fs::remove_all(dir);
}

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
