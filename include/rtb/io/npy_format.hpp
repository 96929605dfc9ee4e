// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// numpy's .npy format, read and written by rtb itself (no xtensor, no numpy). The rules the
/// reader enforces, each with a typed error (docs/errors.md lists them):
///
///     "\x93NUMPY"  u8 major  u8 minor  header length (u16 LE for 1.0, u32 LE for 2.0 and 3.0)
///     header: a Python dict literal  {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }
///             padded with spaces and ended by '\n' (any length: numpy pads to 64-byte multiples
///             and leaves room to grow the shape, so 128-byte and longer headers are normal)
///     data:   prod(shape) elements, row-major (C) or column-major (Fortran), nothing after them
///
///  - version 1.0, 2.0 or 3.0; the header is non-empty, within the file and at most
///    kNpyMaxHeaderBytes; it holds exactly the keys descr, fortran_order and shape, in any order;
///  - descr is float32, float64, int32 or int64 in either byte order ('<f4', '>f8', '<i8', …);
///  - shape is a tuple of non-negative integers ((), (n,), (n, m), …, at most 64 of them) whose
///    byte size does not overflow 64 bits;
///  - the file holds exactly that many data bytes after the header: a truncated file and one with
///    trailing bytes are errors, found from the file's size before anything is allocated;
///  - the data is at most NpyReadOptions::max_bytes (SizeLimitError otherwise).
/// Fortran-order data is transposed on reading: NpyArray::data is always row-major. Big-endian
/// data is byte-swapped. The writer produces what numpy 1.24's `numpy.save` writes, byte for byte,
/// through io::write_file_atomically.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "rtb/error.hpp"
#include "rtb/io/atomic_file.hpp"
#include "rtb/io/npy_header.hpp"

namespace rtb {

inline constexpr std::uint64_t kNpyDefaultMaxBytes = std::uint64_t{1} << 32;  ///< 4 GiB of data

struct NpyReadOptions {
  std::uint64_t max_bytes = kNpyDefaultMaxBytes;  ///< largest data section read (SizeLimitError above)
};

/// One array as read from a .npy file. `data` is row-major whatever the file's order.
struct NpyArray {
  std::vector<std::size_t> shape;
  NpyDtype dtype = NpyDtype::Float64;
  bool fortran_order = false;  ///< how the file stored it
  std::variant<std::vector<float>, std::vector<double>, std::vector<std::int32_t>, std::vector<std::int64_t>> data;

  /// Number of elements (the product of `shape`; 1 for a 0-d array).
  std::size_t size() const {
    return std::visit([](const auto& v) { return v.size(); }, data);
  }
  /// The elements converted to T, row-major.
  template <class T>
  std::vector<T> to_vector() const {
    return std::visit([](const auto& v) { return std::vector<T>(v.begin(), v.end()); }, data);
  }
};

namespace detail {

template <class T>
struct npy_dtype_of;
template <>
struct npy_dtype_of<float> : std::integral_constant<NpyDtype, NpyDtype::Float32> {};
template <>
struct npy_dtype_of<double> : std::integral_constant<NpyDtype, NpyDtype::Float64> {};
template <>
struct npy_dtype_of<std::int32_t> : std::integral_constant<NpyDtype, NpyDtype::Int32> {};
template <>
struct npy_dtype_of<std::int64_t> : std::integral_constant<NpyDtype, NpyDtype::Int64> {};

/// prod(shape) · item, or false when it overflows 64 bits.
inline bool npy_byte_size(std::span<const std::size_t> shape, std::size_t item, std::uint64_t& elements,
                          std::uint64_t& bytes) {
  elements = 1;
  for (std::size_t d : shape)
    if (d != 0 && elements > std::numeric_limits<std::uint64_t>::max() / d)
      return false;
    else
      elements *= d;
  if (elements > std::numeric_limits<std::uint64_t>::max() / item) return false;
  bytes = elements * item;
  return true;
}

/// Moves between row-major (C) and column-major (Fortran) element order of one shape.
template <class T>
void npy_reorder(const T* src, T* dst, std::span<const std::size_t> shape, bool to_row_major) {
  const std::size_t n = shape.size();
  std::uint64_t count = 1;
  for (std::size_t d : shape) count *= d;
  if (count == 0) return;
  std::vector<std::size_t> idx(n, 0), fstride(n, 1);
  for (std::size_t k = 1; k < n; ++k) fstride[k] = fstride[k - 1] * shape[k - 1];
  std::size_t f = 0;  // the Fortran offset of the row-major index c
  for (std::size_t c = 0; c < count; ++c) {
    if (to_row_major)
      dst[c] = src[f];
    else
      dst[f] = src[c];
    for (std::size_t k = n; k-- > 0;) {  // next row-major index: the last axis runs fastest
      if (++idx[k] < shape[k]) {
        f += fstride[k];
        break;
      }
      f -= (shape[k] - 1) * fstride[k];
      idx[k] = 0;
    }
  }
}

/// A byte source: the whole of a regular file, or a buffer in memory (for parse_npy and fuzzing).
struct NpyMemorySource {
  std::span<const unsigned char> bytes;
  std::size_t pos = 0;
  std::uint64_t size() const { return bytes.size(); }
  bool read(void* dst, std::size_t n) {
    if (n > bytes.size() - pos) return false;
    if (n) std::memcpy(dst, bytes.data() + pos, n);
    pos += n;
    return true;
  }
};
struct NpyFileSource {
  std::ifstream in;
  std::uint64_t bytes = 0;
  std::uint64_t size() const { return bytes; }
  bool read(void* dst, std::size_t n) {
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    return static_cast<std::size_t>(in.gcount()) == n;
  }
};

inline std::uint32_t le_u32(const unsigned char* p, int n) {
  std::uint32_t v = 0;
  for (int i = n; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

template <class T>
void npy_fill(NpyArray& a, const NpyHeader& h, std::uint64_t elements, auto& src, const std::string& where) {
  std::vector<T> raw(static_cast<std::size_t>(elements));
  if (!src.read(raw.data(), raw.size() * sizeof(T)))
    throw IoError(
        rtb::detail::message(where, " became shorter while it was read; read it again once its writer is done"));
  if (h.big_endian != (std::endian::native == std::endian::big))
    for (T& v : raw) {
      unsigned char b[sizeof(T)];
      std::memcpy(b, &v, sizeof(T));
      std::reverse(b, b + sizeof(T));
      std::memcpy(&v, b, sizeof(T));
    }
  if (h.fortran_order && h.shape.size() > 1) {
    std::vector<T> c(raw.size());
    npy_reorder(raw.data(), c.data(), h.shape, true);
    raw.swap(c);
  }
  a.data = std::move(raw);
}

/// The reader proper, over any source; every length is checked against what is left.
template <class Source>
NpyArray read_npy_from(Source& src, const std::string& where, const NpyReadOptions& opt) {
  const std::uint64_t total = src.size();
  unsigned char pre[12] = {};
  const bool has_magic = total >= 6 && src.read(pre, 6) && std::memcmp(pre, "\x93NUMPY", 6) == 0;
  if (!has_magic)
    throw IoError(rtb::detail::message(where, " is not a .npy file (it does not start with \"\\x93NUMPY\"; ", total,
                                       " bytes); write it with numpy.save or rtb::write_npy"));
  if (total < 10 || !src.read(pre + 6, 4))
    throw IoError(rtb::detail::message(where, " is truncated inside its 10-byte preamble (", total,
                                       " bytes); restore it from a copy or re-export it"));
  const int major = pre[6], minor = pre[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    throw IoError(rtb::detail::message(where, " has .npy format version ", major, ".", minor,
                                       "; rtb reads versions 1.0, 2.0 and 3.0: re-save it with numpy.save"));
  std::uint64_t preamble = 10, header_len = le_u32(pre + 8, 2);
  if (major > 1) {
    if (total < 12 || !src.read(pre + 10, 2))
      throw IoError(rtb::detail::message(where, " is truncated inside its 12-byte preamble (", total,
                                         " bytes); restore it from a copy or re-export it"));
    preamble = 12;
    header_len = le_u32(pre + 8, 4);
  }
  if (header_len == 0)
    throw IoError(rtb::detail::message(where, " has an empty header (length 0); re-export it with numpy.save"));
  if (header_len > total - preamble)
    throw IoError(rtb::detail::message(where, " is truncated: its header should be ", header_len, " bytes but only ",
                                       total - preamble,
                                       " follow the preamble; restore it from a copy or re-export it"));
  if (header_len > kNpyMaxHeaderBytes)
    throw SizeLimitError(
        rtb::detail::message(where, " has a header of ", header_len, " bytes, over the limit of ", kNpyMaxHeaderBytes,
                             " (numpy writes under 1 KiB for a plain array); it is not a plain .npy array"));
  std::string text(static_cast<std::size_t>(header_len), '\0');
  if (!src.read(text.data(), text.size()))
    throw IoError(
        rtb::detail::message(where, " became shorter while it was read; read it again once its writer is done"));
  const NpyHeader h = NpyHeaderParser(text, where).parse();
  std::uint64_t elements = 0, bytes = 0;
  if (!npy_byte_size(h.shape, npy_item_size(h.dtype), elements, bytes))
    throw IoError(rtb::detail::message(where, " declares shape ", shape_string(h.shape),
                                       " whose size overflows 64 bits; the header is corrupted"));
  const std::uint64_t left = total - preamble - header_len;
  if (bytes > left)
    throw IoError(rtb::detail::message(where, " is truncated: its header declares shape ", shape_string(h.shape),
                                       " of ", npy_dtype_name(h.dtype), ", ", bytes, " bytes of data, but only ", left,
                                       " bytes follow the header; restore it from a copy or re-export it"));
  if (bytes < left)
    throw IoError(rtb::detail::message(where, " has ", left - bytes, " bytes after the ", bytes,
                                       " bytes of data its header (shape ", shape_string(h.shape), " of ",
                                       npy_dtype_name(h.dtype),
                                       ") declares; it is not one .npy array (several numpy.save calls on one file?)"));
  if (bytes > opt.max_bytes)
    throw SizeLimitError(rtb::detail::message(where, " holds ", bytes, " bytes of data (shape ", shape_string(h.shape),
                                              "), over the limit of ", opt.max_bytes,
                                              " bytes; raise NpyReadOptions::max_bytes to read it"));
  NpyArray a;
  a.shape = h.shape;
  a.dtype = h.dtype;
  a.fortran_order = h.fortran_order;
  switch (h.dtype) {
    case NpyDtype::Float32:
      npy_fill<float>(a, h, elements, src, where);
      break;
    case NpyDtype::Float64:
      npy_fill<double>(a, h, elements, src, where);
      break;
    case NpyDtype::Int32:
      npy_fill<std::int32_t>(a, h, elements, src, where);
      break;
    case NpyDtype::Int64:
      npy_fill<std::int64_t>(a, h, elements, src, where);
      break;
  }
  return a;
}

}  // namespace detail

/// Parses a whole .npy file held in memory; `name` starts the error messages.
inline NpyArray parse_npy(std::span<const unsigned char> bytes, const std::string& name = "npy buffer",
                          const NpyReadOptions& opt = {}) {
  detail::NpyMemorySource src{bytes};
  return detail::read_npy_from(src, name, opt);
}

/// Reads the .npy file at `path` (see the file comment for the rules; throws IoError,
/// SizeLimitError). The file's size is checked against its header before anything is allocated.
inline NpyArray read_npy(const std::filesystem::path& path, const NpyReadOptions& opt = {}) {
  const std::string where = "read_npy: " + path.string();
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) throw IoError(rtb::detail::message(where, " does not exist; check the path"));
  if (!std::filesystem::is_regular_file(st))
    throw IoError(rtb::detail::message(where, " is not a regular file (a directory or a device); pass a .npy file"));
  detail::NpyFileSource src;
  src.bytes = std::filesystem::file_size(path, ec);
  src.in.open(path, std::ios::binary);
  if (ec || !src.in) throw IoError(rtb::detail::message(where, " cannot be opened for reading; check its permissions"));
  return detail::read_npy_from(src, where, opt);
}

/// Writes `data` (row-major, prod(shape) elements) to `path` as numpy 1.24 would, atomically;
/// `fortran_order` stores it column-major. Throws ShapeError when the sizes disagree, IoError.
template <class T>
void write_npy(const std::filesystem::path& path, const std::vector<std::size_t>& shape, std::span<const T> data,
               bool fortran_order = false) {
  constexpr NpyDtype dtype = detail::npy_dtype_of<std::remove_cv_t<T>>::value;
  std::uint64_t elements = 0, bytes = 0;
  if (!detail::npy_byte_size(shape, sizeof(T), elements, bytes) || elements != data.size())
    throw ShapeError(rtb::detail::message("write_npy: ", path.string(), ": shape ", detail::shape_string(shape),
                                          " holds ", elements, " values but the data has ", data.size(),
                                          "; pass the data's shape"));
  const std::string header = npy_header(dtype, shape, fortran_order);
  std::vector<T> reordered;
  const T* body = data.data();
  if (fortran_order && shape.size() > 1) {
    reordered.resize(data.size());
    detail::npy_reorder(data.data(), reordered.data(), shape, false);
    body = reordered.data();
  }
  const std::span<const unsigned char> pieces[2] = {
      {reinterpret_cast<const unsigned char*>(header.data()), header.size()},
      {reinterpret_cast<const unsigned char*>(body), static_cast<std::size_t>(bytes)}};
  io::write_file_atomically(path, pieces, "write_npy");
}
template <class T>
void write_npy(const std::filesystem::path& path, const std::vector<std::size_t>& shape, const std::vector<T>& data,
               bool fortran_order = false) {
  write_npy(path, shape, std::span<const T>(data), fortran_order);
}

}  // namespace rtb
