// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A minimal RGB canvas and PNG writer (stored, uncompressed deflate blocks: valid PNG, no zlib
/// needed), enough for scatter plots over density heat maps. Written atomically.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "rtb/error.hpp"
#include "rtb/io/atomic_file.hpp"
#include "rtb/io/checksum.hpp"

namespace rtb::io {

struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
};

/// Colour map for a value in [0, 1]: dark blue → teal → yellow (viridis-like, by hand).
inline Rgb colormap(double v) {
  v = std::clamp(v, 0.0, 1.0);
  const double stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  const double pos = v * 4.0;
  const int i = std::min(3, static_cast<int>(pos));
  const double f = pos - i;
  auto mix = [&](int c) { return static_cast<std::uint8_t>(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]) + 0.5); };
  return {mix(0), mix(1), mix(2)};
}

class Image {
 public:
  Image(int width, int height, Rgb fill = {255, 255, 255})
      : w_(width), h_(height), px_(static_cast<std::size_t>(width) * static_cast<std::size_t>(height), fill) {
    if (width <= 0 || height <= 0)
      throw InvalidArgumentError(rtb::detail::message("Image: size must be positive, got ", width, "x", height));
  }
  int width() const { return w_; }
  int height() const { return h_; }
  Rgb& at(int x, int y) { return px_[static_cast<std::size_t>(y) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(x)]; }
  const Rgb& at(int x, int y) const { return px_[static_cast<std::size_t>(y) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(x)]; }

  /// Alpha-blends a filled disc of `radius` pixels centred at (cx, cy).
  void dot(double cx, double cy, double radius, Rgb c, double alpha = 1.0) {
    const int x0 = static_cast<int>(std::floor(cx - radius)), x1 = static_cast<int>(std::ceil(cx + radius));
    const int y0 = static_cast<int>(std::floor(cy - radius)), y1 = static_cast<int>(std::ceil(cy + radius));
    for (int y = std::max(0, y0); y <= std::min(h_ - 1, y1); ++y)
      for (int x = std::max(0, x0); x <= std::min(w_ - 1, x1); ++x) {
        const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
        if (dx * dx + dy * dy > radius * radius) continue;
        Rgb& p = at(x, y);
        p.r = static_cast<std::uint8_t>(p.r + alpha * (c.r - p.r));
        p.g = static_cast<std::uint8_t>(p.g + alpha * (c.g - p.g));
        p.b = static_cast<std::uint8_t>(p.b + alpha * (c.b - p.b));
      }
  }

  /// Writes a PNG (8-bit RGB) to `path` atomically (io::write_file_atomically).
  void write_png(const std::string& path) const {
    std::vector<unsigned char> raw;  // filter byte 0 + RGB per row
    raw.reserve(static_cast<std::size_t>(h_) * (1 + 3 * static_cast<std::size_t>(w_)));
    for (int y = 0; y < h_; ++y) {
      raw.push_back(0);
      for (int x = 0; x < w_; ++x) {
        const Rgb& p = at(x, y);
        raw.insert(raw.end(), {p.r, p.g, p.b});
      }
    }
    std::vector<unsigned char> z = {0x78, 0x01};  // zlib header, no compression
    for (std::size_t off = 0; off < raw.size() || off == 0; off += 65535) {
      const std::size_t n = std::min<std::size_t>(65535, raw.size() - off);
      const bool last = off + n >= raw.size();
      z.push_back(last ? 1 : 0);
      z.insert(z.end(), {static_cast<unsigned char>(n & 0xFF), static_cast<unsigned char>(n >> 8),
                         static_cast<unsigned char>(~n & 0xFF), static_cast<unsigned char>((~n >> 8) & 0xFF)});
      z.insert(z.end(), raw.begin() + static_cast<std::ptrdiff_t>(off), raw.begin() + static_cast<std::ptrdiff_t>(off + n));
      if (last) break;
    }
    put32(z, adler32(1, raw.data(), raw.size()));

    std::vector<unsigned char> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    std::vector<unsigned char> ihdr;
    put32(ihdr, static_cast<std::uint32_t>(w_));
    put32(ihdr, static_cast<std::uint32_t>(h_));
    ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
    chunk(png, "IHDR", ihdr);
    chunk(png, "IDAT", z);
    chunk(png, "IEND", {});
    const std::span<const unsigned char> pieces[1] = {png};
    write_file_atomically(path, pieces, "write_png");
  }

 private:
  static void put32(std::vector<unsigned char>& v, std::uint32_t x) {
    v.insert(v.end(), {static_cast<unsigned char>(x >> 24), static_cast<unsigned char>(x >> 16),
                       static_cast<unsigned char>(x >> 8), static_cast<unsigned char>(x)});
  }
  static void chunk(std::vector<unsigned char>& png, const char* type, const std::vector<unsigned char>& data) {
    put32(png, static_cast<std::uint32_t>(data.size()));
    const std::size_t start = png.size();
    png.insert(png.end(), type, type + 4);
    png.insert(png.end(), data.begin(), data.end());
    put32(png, crc32(0, png.data() + start, png.size() - start));
  }

  int w_, h_;
  std::vector<Rgb> px_;
};

}  // namespace rtb::io
