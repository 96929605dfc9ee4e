// SPDX-License-Identifier: Apache-2.0
// The checkpoint container on its own: the version 1 format, concurrent savers, crafted lengths
// with valid checksums, paths that are not files, newer versions and the size limit.

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include <rtb/train/checkpoint.hpp>

namespace fs = std::filesystem;

namespace {

std::string temp_path(const char* name) {
  return (fs::temp_directory_path() / name).string();
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

template <class T>
std::string le(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
}
/// A checkpoint body (magic onwards) with its CRC-32 appended: valid as far as the checksum goes.
std::string with_crc(const std::string& body) {
  return body + le(rtb::io::crc32(0, body.data(), body.size()));
}
std::string header(std::uint32_t version, std::uint32_t sections) {
  return std::string("RTBCKPT\0", 8) + le(version) + le(sections);
}
std::string section(const std::string& name, std::uint32_t elem, std::uint64_t len, const std::string& bytes) {
  return le(static_cast<std::uint32_t>(name.size())) + name + le(elem) + le(len) + bytes;
}

/// The CheckpointError message reading `bytes` gives ("" when it reads).
std::string read_error(const std::string& bytes) {
  try {
    (void)rtb::CheckpointReader::from_bytes(std::vector<unsigned char>(bytes.begin(), bytes.end()), "c.ckpt");
  } catch (const rtb::CheckpointError& e) {
    return e.what();
  }
  return "";
}

rtb::CheckpointWriter small_writer(double fill, std::size_t n) {
  rtb::CheckpointWriter w;
  const std::vector<double> values(n, fill);
  w.add("values", std::span<const double>(values));
  w.add_scalar<std::int64_t>("iteration", 7);
  return w;
}

}  // namespace

TEST_CASE("checkpoint: the version 1 format is unchanged and reads back") {
  const std::string path = temp_path("rtb_ckpt_v1.ckpt");
  const std::string v1 = with_crc(header(1, 2) + section("values", 8, 16, le(1.5) + le(1.5)) +
                                  section("iteration", 8, 8, le(std::int64_t{7})));
  small_writer(1.5, 2).commit(path);
  CHECK(slurp(path) == v1);  // what version 1 wrote, byte for byte
  rtb::CheckpointReader r(path);
  CHECK(r.array<double>("values", 2) == std::vector<double>{1.5, 1.5});
  CHECK(r.scalar<std::int64_t>("iteration") == 7);
  CHECK_THROWS_WITH_AS(r.array<float>("values"), doctest::Contains("holds 8-byte values, expected 4"),
                       rtb::CheckpointError);
  CHECK_THROWS_WITH_AS(r.array<double>("values", 3), doctest::Contains("has 2 values but this model needs 3"),
                       rtb::CheckpointError);
  rtb::CheckpointWriter dup;
  dup.add_scalar("a", 1);
  CHECK_THROWS_AS(dup.add_scalar("a", 2), rtb::InvalidArgumentError);
  fs::remove(path);
}

TEST_CASE("checkpoint: two savers on one path always leave one whole checkpoint") {
  const std::string path = temp_path("rtb_ckpt_race.ckpt");
  const rtb::CheckpointWriter a = small_writer(1.0, 1 << 18), b = small_writer(2.0, 1 << 18);
  for (int round = 0; round < 30; ++round) {
    std::latch go(2);
    auto save = [&](const rtb::CheckpointWriter& w) {
      go.arrive_and_wait();
      for (int k = 0; k < 3; ++k) w.commit(path);
    };
    std::thread ta(save, std::cref(a)), tb(save, std::cref(b));
    ta.join();
    tb.join();
    CAPTURE(round);
    rtb::CheckpointReader r(path);  // the shared ".tmp" made 3 loads in 200 fail
    const double first = r.array<double>("values")[0];
    CHECK((first == 1.0 || first == 2.0));
  }
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
    CHECK(e.path().filename().string().rfind("rtb_ckpt_race.ckpt.rtb-", 0) != 0);  // no temporary left
  fs::remove(path);
}

TEST_CASE("checkpoint: crafted lengths with a valid checksum fail at once instead of wrapping an offset") {
  // The 37-byte file: 2^32 − 1 sections, the first one's length 2^64 − 33 so that pos + len wraps to 0.
  const std::uint64_t wrap = ~std::uint64_t{0} - 32;
  for (std::uint32_t count : {0xFFFFFFFFu, 1u}) {
    const std::string crafted = with_crc(header(1, count) + section("x", 8, wrap, ""));
    REQUIRE(crafted.size() == 37);
    const auto t0 = std::chrono::steady_clock::now();
    const std::string e = read_error(crafted);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));  // it spun for 4 minutes
    CAPTURE(e);
    CHECK((e.find("declares 4294967295 sections") != std::string::npos ||
           e.find("section 'x' needs 18446744073709551583 bytes at offset 33 but only 0 remain") != std::string::npos));
  }
  CHECK(read_error(with_crc(header(1, 1) + le(0xFFFFFFF0u) + std::string(12, '\0'))).find("a section name needs") !=
        std::string::npos);
  CHECK(read_error(with_crc(header(1, 2) + section("a", 4, 4, "1234") + section("a", 4, 4, "5678")))
            .find("two sections named 'a'") != std::string::npos);
  CHECK(read_error(with_crc(header(1, 1) + section("a", 0, 4, "1234"))).find("4 bytes of 0-byte values") !=
        std::string::npos);
  CHECK(read_error(with_crc(header(1, 1) + section("a", 8, 4, "1234"))).find("4 bytes of 8-byte values") !=
        std::string::npos);
  CHECK(read_error(with_crc(header(1, 1) + section("a", 4, 4, "1234") + "zz")).find("2 bytes after its last section") !=
        std::string::npos);
  CHECK(read_error(with_crc(header(1, 0))) == "");
}

TEST_CASE("checkpoint: every truncation and a newer or zero version are CheckpointErrors that say what to do") {
  const std::string good = with_crc(header(1, 1) + section("values", 8, 16, le(1.0) + le(2.0)));
  for (std::size_t cut = 0; cut < good.size(); ++cut) {
    CAPTURE(cut);
    CHECK(read_error(good.substr(0, cut)) != "");
  }
  CHECK(read_error(good.substr(0, 12)).find("not an rtb checkpoint: it has 12 bytes") != std::string::npos);
  const std::string newer = read_error(with_crc(header(2, 0)));
  CHECK(newer.find("written by a newer rtb") != std::string::npos);
  CHECK(newer.find("upgrade rtb to read it") != std::string::npos);
  CHECK(read_error(with_crc(header(0, 0))).find("version 0") != std::string::npos);
}

TEST_CASE("checkpoint: a directory, a FIFO, a missing file and an over-large file are CheckpointErrors") {
  const std::string dir = temp_path("rtb_ckpt_dir.ckpt");
  fs::create_directories(dir);
  CHECK_THROWS_WITH_AS(rtb::CheckpointReader{dir}, doctest::Contains("is a directory"), rtb::CheckpointError);
  CHECK_THROWS_WITH_AS(small_writer(1.0, 4).commit(dir), doctest::Contains("it is a directory"), rtb::IoError);
  fs::remove_all(dir);
  CHECK_THROWS_WITH_AS(rtb::CheckpointReader{dir}, doctest::Contains("no such file"), rtb::CheckpointError);
  const std::string fifo = temp_path("rtb_ckpt_fifo.ckpt");
  fs::remove(fifo);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(rtb::CheckpointReader{fifo}, doctest::Contains("not a regular file"),
                       rtb::CheckpointError);  // not a hang
  fs::remove(fifo);
  const std::string path = temp_path("rtb_ckpt_big.ckpt");
  small_writer(1.0, 4).commit(path);
  CHECK_THROWS_WITH_AS(rtb::CheckpointReader(path, 20), doctest::Contains("over the limit of 20 bytes"),
                       rtb::CheckpointError);
  CHECK_NOTHROW(rtb::CheckpointReader(path, fs::file_size(path)));
  fs::remove(path);
  CHECK_THROWS_WITH_AS(small_writer(1.0, 4).commit(temp_path("rtb_no_such_dir/x.ckpt")),
                       doctest::Contains("cannot create a temporary file"), rtb::IoError);
}
