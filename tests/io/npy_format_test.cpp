// SPDX-License-Identifier: Apache-2.0
// The .npy reader and writer against files made by a generator of our own that follows numpy
// 1.24's numpy/lib/format.py (_write_array_header and _wrap_header), and against bad files.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <rtb/io/npy_format.hpp>

namespace fs = std::filesystem;

namespace {

/// What numpy.save (numpy 1.24) writes, given the knobs numpy has and a few it does not:
/// `version` forces 1.0, 2.0 or 3.0 (numpy.lib.format.write_array(…, version=)); `extra` adds
/// spaces before the padding and `align` replaces numpy's 64 (16 was numpy < 1.14's), so that
/// every header length can be made.
struct NumpyFile {
  std::string descr = "<f8";  // '<f4', '>f8', '<i8', …
  bool fortran = false;
  std::vector<std::size_t> shape;
  int version = 0;  // 0: the oldest that fits, as numpy chooses
  std::size_t extra = 0, align = 64;
};

std::string py_repr_tuple(const std::vector<std::size_t>& s) {
  std::string r = "(";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

/// `values` are row-major; the file gets them in its own order and byte order.
std::string numpy_bytes(const NumpyFile& f, const std::vector<double>& values) {
  std::map<std::string, std::string> d = {{"descr", "'" + f.descr + "'"},
                                          {"fortran_order", f.fortran ? "True" : "False"},
                                          {"shape", py_repr_tuple(f.shape)}};
  std::string header = "{";
  for (const auto& [k, v] : d) header += "'" + k + "': " + v + ", ";  // sorted, as numpy does
  header += "}";
  if (!f.shape.empty()) {
    const std::size_t digits = std::to_string(f.shape[f.fortran ? f.shape.size() - 1 : 0]).size();
    header += std::string(21 - digits, ' ');  // GROWTH_AXIS_MAX_DIGITS
  }
  header += std::string(f.extra, ' ');
  const std::size_t hlen = header.size() + 1;
  int version = f.version;
  std::size_t len_bytes = 0, pad = 0;
  for (int v : {1, 2}) {
    if (version != 0 && version != v && !(version == 3 && v == 2)) continue;
    len_bytes = v == 1 ? 2 : 4;
    pad = f.align - (8 + len_bytes + hlen) % f.align;
    if (v == 1 && hlen + pad > 65535) continue;
    if (version == 0) version = v;
    break;
  }
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  const std::size_t n = hlen + pad;
  for (std::size_t b = 0; b < len_bytes; ++b) out += static_cast<char>((n >> (8 * b)) & 0xFF);
  out += header + std::string(pad, ' ') + "\n";
  // data, in the file's element order
  const std::size_t rank = f.shape.size();
  std::vector<std::size_t> order(values.size());
  for (std::size_t c = 0; c < values.size(); ++c) {
    std::size_t rest = c, fortran_offset = 0, stride = 1;
    std::vector<std::size_t> idx(rank);
    for (std::size_t k = rank; k-- > 0;) idx[k] = rest % f.shape[k], rest /= f.shape[k];
    for (std::size_t k = 0; k < rank; ++k) fortran_offset += idx[k] * stride, stride *= f.shape[k];
    order[f.fortran ? fortran_offset : c] = c;
  }
  const bool big = f.descr[0] == '>';
  const std::string type = f.descr.substr(1);
  for (std::size_t c : order) {
    unsigned char b[8];
    std::size_t size = 8;
    if (type == "f4") {
      const float x = static_cast<float>(values[c]);
      std::memcpy(b, &x, size = 4);
    } else if (type == "f8") {
      std::memcpy(b, &values[c], 8);
    } else if (type == "i4") {
      const auto x = static_cast<std::int32_t>(values[c]);
      std::memcpy(b, &x, size = 4);
    } else {
      const auto x = static_cast<std::int64_t>(values[c]);
      std::memcpy(b, &x, 8);
    }
    for (std::size_t i = 0; i < size; ++i) out += static_cast<char>(b[big ? size - 1 - i : i]);
  }
  return out;
}

std::vector<double> ramp(std::size_t n) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<double>(i) * 0.5 - 3.0;  // exact in float32
  return v;
}

std::size_t count(const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}

fs::path scratch(const char* name) {
  return fs::temp_directory_path() / name;
}

void put(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
std::string get(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// The message of the IoError reading `bytes` throws ("" when it reads without error).
std::string read_error(const std::string& bytes) {
  try {
    (void)rtb::parse_npy({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()}, "f.npy");
  } catch (const rtb::IoError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE(
    "npy: every file numpy 1.24 writes for f4/f8/i4/i8 in C and Fortran order reads back and is rewritten byte for "
    "byte") {
  const std::vector<std::vector<std::size_t>> shapes = {{},      {0},       {5},       {3, 4},
                                                        {1, 64}, {2, 3, 4}, {4, 0, 3}, {2, 1, 3, 2}};
  const fs::path path = scratch("rtb_npy_numpy.npy"), again = scratch("rtb_npy_again.npy");
  for (const char* descr : {"<f4", "<f8", "<i4", "<i8"})
    for (bool fortran : {false, true})
      for (const auto& shape : shapes) {
        CAPTURE(descr);
        CAPTURE(fortran);
        CAPTURE(py_repr_tuple(shape));
        const std::vector<double> values = ramp(count(shape));
        const NumpyFile nf{descr, fortran, shape};
        const std::string bytes = numpy_bytes(nf, values);
        put(path, bytes);
        const rtb::NpyArray a = rtb::read_npy(path);
        CHECK(a.shape == shape);
        CHECK(a.fortran_order == fortran);
        CHECK(a.size() == values.size());
        const std::vector<double> got = a.to_vector<double>();
        for (std::size_t i = 0; i < values.size(); ++i)
          CHECK(got[i] == (descr[1] == 'i' ? static_cast<double>(static_cast<std::int64_t>(values[i])) : values[i]));
        std::visit([&](const auto& v) { rtb::write_npy(again, shape, v, fortran); }, a.data);
        CHECK(get(again) == bytes);  // the writer is numpy's, byte for byte
      }
  fs::remove(path);
  fs::remove(again);
}

TEST_CASE("npy: headers of any length, version 2.0 and 3.0, big-endian data, 16-byte alignment all read") {
  const std::vector<std::size_t> shape = {3, 4};
  const std::vector<double> values = ramp(12);
  for (int version : {1, 2, 3})
    for (std::size_t extra = 0; extra < 200; ++extra) {
      const std::string bytes = numpy_bytes({"<f8", false, shape, version, extra, 1}, values);  // align 1: any length
      CAPTURE(version);
      CAPTURE(extra);
      REQUIRE(read_error(bytes) == "");
      CHECK(rtb::parse_npy({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()}).to_vector<double>() ==
            values);
    }
  for (std::size_t extra : {64u, 1000u, 70000u}) {  // 70000: a header only version 2.0 can hold
    const std::string bytes = numpy_bytes({"<f4", true, shape, 0, extra}, values);
    CAPTURE(extra);
    CHECK(static_cast<unsigned char>(bytes[6]) == (extra > 65000 ? 2 : 1));
    CHECK(read_error(bytes) == "");
  }
  for (const char* descr : {">f8", ">f4", ">i4", ">i8"}) {
    const std::string bytes = numpy_bytes({descr, true, shape}, values);
    const std::vector<double> got =
        rtb::parse_npy({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()}).to_vector<double>();
    CAPTURE(descr);
    for (std::size_t i = 0; i < values.size(); ++i)
      CHECK(got[i] == (descr[1] == 'i' ? static_cast<double>(static_cast<std::int64_t>(values[i])) : values[i]));
  }
  CHECK(read_error(numpy_bytes({"<f8", false, shape, 1, 0, 16}, values)) == "");
  // a header of 128 bytes and more is what numpy writes for large shapes
  const std::string big = numpy_bytes({"<f8", false, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0}}, {});
  CHECK(big.size() >= 128 + 64);
  CHECK(read_error(big) == "");
}

TEST_CASE("npy: every truncation of a file is an error, and the error says truncated") {
  const std::string bytes = numpy_bytes({"<f8", false, {3, 4}}, ramp(12));
  REQUIRE(bytes.size() == 128 + 96);
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    CAPTURE(cut);
    const std::string e = read_error(bytes.substr(0, cut));
    REQUIRE(e != "");
    if (cut >= 10) CHECK(e.find("truncated") != std::string::npos);
  }
  // the header cut short: an IoError about truncation, never a ShapeError with leftover bytes
  CHECK_THROWS_WITH_AS(rtb::parse_npy({reinterpret_cast<const unsigned char*>(bytes.data()), 60}),
                       doctest::Contains("its header should be 118 bytes but only 50 follow"), rtb::IoError);
}

TEST_CASE("npy: a zero-length header, a huge declared shape and an overflowing shape fail at once") {
  CHECK(read_error(std::string("\x93NUMPY\x01\x00\x00\x00", 10)).find("empty header") != std::string::npos);
  std::string huge = numpy_bytes({"<f8", false, {1000000000, 500}}, {});
  huge.resize(192, '\0');
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(read_error(huge).find("4000000000000 bytes of data, but only 64 bytes follow") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));  // it cost 19 s and 3.75 GB
  const std::string overflow = numpy_bytes({"<f8", false, {std::size_t{1} << 62, std::size_t{1} << 62}}, {});
  CHECK(read_error(overflow).find("overflows 64 bits") != std::string::npos);
}

TEST_CASE("npy: a file over the size limit is a SizeLimitError naming the size and the limit") {
  const std::string bytes = numpy_bytes({"<f8", false, {3, 4}}, ramp(12));
  const rtb::NpyReadOptions small{.max_bytes = 95};
  CHECK_THROWS_WITH_AS(
      rtb::parse_npy({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()}, "f.npy", small),
      doctest::Contains("holds 96 bytes of data (shape [3, 4]), over the limit of 95 bytes"), rtb::SizeLimitError);
  CHECK(rtb::parse_npy({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()}, "f.npy", {.max_bytes = 96})
            .size() == 12);
}

TEST_CASE("npy: bad headers and bad files are IoErrors that say what was wrong") {
  const std::vector<double> v = ramp(12);
  const std::string good = numpy_bytes({"<f8", false, {3, 4}}, v);
  auto with_header = [&](std::string dict) {  // a version 1.0 file with this header text and 96 data bytes
    dict += "\n";
    std::string out = "\x93NUMPY\x01";
    out += '\0';
    out += static_cast<char>(dict.size() & 0xFF);
    out += static_cast<char>(dict.size() >> 8);
    return out + dict + good.substr(128);
  };
  CHECK(read_error(with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }")) == "");
  CHECK(read_error(with_header("{\"shape\": (3,4), \"descr\": \"<f8\", \"fortran_order\": False}")) == "");
  const std::vector<std::pair<std::string, const char*>> cases = {
      {"{'descr': '<c16', 'fortran_order': False, 'shape': (3, 4), }", "has dtype '<c16'"},
      {"{'descr': [('x', '<f8')], 'fortran_order': False, 'shape': (3, 4), }", "structured dtypes are not supported"},
      {"{'descr': '|f8', 'fortran_order': False, 'shape': (3, 4), }", "has dtype '|f8'"},
      {"{'descr': '<f8', 'fortran_order': maybe, 'shape': (3, 4), }", "neither True nor False"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (12), }", "not a tuple"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (-3, 4), }", "not a non-negative integer"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3 4), }", "not separated by ','"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999, 4), }", "over 2^64"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': [3, 4], }", "a shape tuple"},
      {"{'descr': '<f8', 'fortran_order': False, }", "lacks the key 'shape'"},
      {"{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", "the key 'descr' twice"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), 'extra': 1, }", "unknown key 'extra'"},
      {"{'descr': '<f8' 'fortran_order': False, 'shape': (3, 4), }", "lacks ',' or '}'"},
      {"{'descr': '<f8, 'fortran_order': False, 'shape': (3, 4), }", "has dtype '<f8, '"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), } junk", "text after its dict"},
      {"descr: <f8", "start with '{'"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 5), }", "bytes of data, but only 96 bytes follow"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 3), }", "24 bytes after the 72 bytes of data"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), ", "a quoted key"},
  };
  for (const auto& [header, needle] : cases) {
    CAPTURE(header);
    CHECK(read_error(with_header(header)).find(needle) != std::string::npos);
  }
  std::string v4 = good;
  v4[6] = 4;
  CHECK(read_error(v4).find("format version 4.0") != std::string::npos);
  CHECK(read_error("garbage").find("is not a .npy file") != std::string::npos);
  CHECK(read_error("").find("is not a .npy file") != std::string::npos);
  const fs::path dir = scratch("rtb_npy_dir.npy");
  fs::create_directories(dir);
  CHECK_THROWS_WITH_AS(rtb::read_npy(dir), doctest::Contains("not a regular file"), rtb::IoError);
  fs::remove_all(dir);
  CHECK_THROWS_WITH_AS(rtb::read_npy(dir), doctest::Contains("does not exist"), rtb::IoError);
}

TEST_CASE("npy: the writer checks the shape against the data and leaves no temporary behind") {
  const fs::path path = scratch("rtb_npy_write.npy");
  const std::vector<double> v = ramp(12);
  CHECK_THROWS_WITH_AS(rtb::write_npy(path, {3, 5}, v),
                       doctest::Contains("shape [3, 5] holds 15 values but the data has 12"), rtb::ShapeError);
  rtb::write_npy(path, {3, 4}, v, true);
  const rtb::NpyArray a = rtb::read_npy(path);
  CHECK(a.fortran_order);
  CHECK(a.to_vector<double>() == v);  // transposed back to row-major on reading
  for (const auto& e : fs::directory_iterator(path.parent_path()))
    CHECK(e.path().filename().string().rfind("rtb_npy_write.npy.rtb-", 0) != 0);
  fs::remove(path);
}
