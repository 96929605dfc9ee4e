// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The header of a .npy file: the strict parser of its Python dict literal and the writer of
/// exactly what numpy 1.24 writes. The rules are listed in rtb/io/npy_format.hpp.

#include <bit>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rtb/error.hpp"

namespace rtb {

/// The element types rtb reads and writes.
enum class NpyDtype { Float32, Float64, Int32, Int64 };

inline constexpr std::uint64_t kNpyMaxHeaderBytes = std::uint64_t{1} << 20;  ///< numpy writes < 1 KiB

namespace detail {

inline std::size_t npy_item_size(NpyDtype d) {
  return d == NpyDtype::Float32 || d == NpyDtype::Int32 ? 4 : 8;
}
inline const char* npy_dtype_name(NpyDtype d) {
  switch (d) {
    case NpyDtype::Float32:
      return "float32";
    case NpyDtype::Float64:
      return "float64";
    case NpyDtype::Int32:
      return "int32";
    default:
      return "int64";
  }
}

inline std::string shape_string(std::span<const std::size_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// The header dict of a .npy file, parsed strictly (see the file comment).
struct NpyHeader {
  NpyDtype dtype = NpyDtype::Float64;
  bool big_endian = false, fortran_order = false;
  std::vector<std::size_t> shape;
};

class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& where) : s_(text), where_(where) {}

  NpyHeader parse() {
    NpyHeader h;
    bool seen[3] = {false, false, false};
    expect('{', "the header dict to start with '{'");
    for (;;) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = quoted("a quoted key");
      skip_ws();
      expect(':', "':' after the key");
      skip_ws();
      int which = key == "descr" ? 0 : key == "fortran_order" ? 1 : key == "shape" ? 2 : -1;
      if (which < 0) fail("has an unknown key '" + key + "'; a .npy header holds only descr, fortran_order and shape");
      if (seen[which]) fail("has the key '" + key + "' twice");
      seen[which] = true;
      if (which == 0) descr(quoted("descr as a dtype string such as '<f8' (structured dtypes are not supported)"), h);
      if (which == 1) h.fortran_order = boolean();
      if (which == 2) h.shape = tuple();
      skip_ws();
      if (peek() == ',')
        ++pos_;
      else if (peek() != '}')
        fail("lacks ',' or '}' after the value of '" + key + "'");
    }
    ++pos_;
    for (; pos_ < s_.size(); ++pos_)
      if (!is_ws(s_[pos_])) fail("has text after its dict; only spaces and a newline may follow '}'");
    const char* names[3] = {"descr", "fortran_order", "shape"};
    for (int k = 0; k < 3; ++k)
      if (!seen[k]) fail(std::string("lacks the key '") + names[k] + "'");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw IoError(rtb::detail::message(where_, ": its header ", why, " (header: \"", printable(),
                                       "\"); re-export it with numpy.save"));
  }
  std::string printable() const {
    std::string out;
    for (char c : s_.substr(0, 160)) out += (c >= 32 && c < 127) ? c : '?';
    return s_.size() > 160 ? out + "..." : out;
  }
  static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
  void skip_ws() {
    while (pos_ < s_.size() && is_ws(s_[pos_])) ++pos_;
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void expect(char c, const char* what) {
    skip_ws();
    if (peek() != c) fail(std::string("does not have ") + what);
    ++pos_;
  }
  std::string quoted(const char* what) {
    const char q = peek();
    if (q != '\'' && q != '"') fail(std::string("does not have ") + what);
    const std::size_t end = s_.find(q, pos_ + 1);
    if (end == std::string_view::npos) fail("has an unterminated string");
    std::string out(s_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return out;
  }
  bool boolean() {
    const bool is_true = s_.substr(pos_, 4) == "True";
    if (!is_true && s_.substr(pos_, 5) != "False") fail("has a fortran_order that is neither True nor False");
    pos_ += is_true ? 4 : 5;
    return is_true;
  }
  std::vector<std::size_t> tuple() {
    std::vector<std::size_t> shape;
    expect('(', "a shape tuple such as (3, 4)");
    bool comma = false;
    for (;;) {
      skip_ws();
      if (peek() == ')') break;
      if (!shape.empty() && !comma) fail("has a shape whose numbers are not separated by ','");
      if (peek() < '0' || peek() > '9') fail("has a shape entry that is not a non-negative integer");
      std::uint64_t v = 0;
      for (; peek() >= '0' && peek() <= '9'; ++pos_) {
        const auto digit = static_cast<std::uint64_t>(peek() - '0');
        if (v > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) fail("has a shape entry over 2^64");
        v = v * 10 + digit;
      }
      if (peek() == 'L' || peek() == 'l') ++pos_;  // Python 2 longs
      if (v > std::numeric_limits<std::size_t>::max()) fail("has a shape entry larger than this machine's size_t");
      shape.push_back(static_cast<std::size_t>(v));
      if (shape.size() > 64) fail("has more than 64 dimensions");
      skip_ws();
      comma = peek() == ',';
      if (comma) ++pos_;
    }
    if (shape.size() == 1 && !comma) fail("has a shape '(n)' that is not a tuple; numpy writes '(n,)'");
    ++pos_;
    return shape;
  }
  void descr(const std::string& d, NpyHeader& h) {
    const bool ok_order = !d.empty() && (d[0] == '<' || d[0] == '>' || d[0] == '=');
    const std::string t = ok_order ? d.substr(1) : d;
    if (ok_order && t == "f4")
      h.dtype = NpyDtype::Float32;
    else if (ok_order && t == "f8")
      h.dtype = NpyDtype::Float64;
    else if (ok_order && t == "i4")
      h.dtype = NpyDtype::Int32;
    else if (ok_order && t == "i8")
      h.dtype = NpyDtype::Int64;
    else
      throw IoError(
          rtb::detail::message(where_, " has dtype '", d,
                               "'; rtb reads float32 '<f4', float64 '<f8', int32 '<i4' "
                               "and int64 '<i8' (either byte order): convert it with a.astype(numpy.float64)"));
    h.big_endian = d[0] == '>' || (d[0] == '=' && std::endian::native == std::endian::big);
  }

  std::string_view s_;
  const std::string& where_;
  std::size_t pos_ = 0;
};

}  // namespace detail

/// The header numpy 1.24 writes for this array: the dict with keys sorted, 21 − digits spaces of
/// room to grow the leading (C) or trailing (Fortran) axis, then spaces and '\n' up to a 64-byte
/// multiple; version 1.0 unless the length needs 2.0.
inline std::string npy_header(NpyDtype dtype, std::span<const std::size_t> shape, bool fortran_order) {
  const char order = std::endian::native == std::endian::little ? '<' : '>';
  const char* type = dtype == NpyDtype::Float32   ? "f4"
                     : dtype == NpyDtype::Float64 ? "f8"
                     : dtype == NpyDtype::Int32   ? "i4"
                                                  : "i8";
  std::string tuple = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) tuple += (i ? ", " : "") + std::to_string(shape[i]);
  tuple += shape.size() == 1 ? ",)" : ")";
  std::string dict =
      rtb::detail::message("{'descr': '", order, type, "', 'fortran_order': ", fortran_order ? "True" : "False",
                           ", 'shape': ", tuple, ", }");
  if (!shape.empty()) {
    const std::size_t digits = std::to_string(shape[fortran_order ? shape.size() - 1 : 0]).size();
    dict.append(digits < 21 ? 21 - digits : 0, ' ');
  }
  const std::size_t hlen = dict.size() + 1;
  for (std::size_t len_bytes : {2, 4}) {
    const std::size_t pad = 64 - (8 + len_bytes + hlen) % 64;
    const std::size_t n = hlen + pad;
    if (len_bytes == 2 && n > 0xFFFF) continue;
    std::string out("\x93NUMPY", 6);
    out += static_cast<char>(len_bytes == 2 ? 1 : 2);
    out += '\0';
    for (std::size_t b = 0; b < len_bytes; ++b) out += static_cast<char>((n >> (8 * b)) & 0xFF);
    return out + dict + std::string(pad, ' ') + '\n';
  }
  return {};  // unreachable: a u32 length always fits a header of at most 64 dimensions
}

}  // namespace rtb
