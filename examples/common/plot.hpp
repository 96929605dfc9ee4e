// SPDX-License-Identifier: Apache-2.0
#pragma once
// Scatter plots of 2-D samples over a heat map of a log-density, written as PNG.

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <rtb/io/png.hpp>
#include <rtb/config.hpp>

namespace examples {

/// Paints `log_f` over [-lim, lim]² as a heat map (clipped `range` below its maximum), draws
/// contour bands, then `x` as dots. Returns nothing; writes `path`.
template <class S>
void scatter_over_density(const std::string& path, rtb::ConstMatrixView<S> x, const std::function<double(double, double)>& log_f,
                          double lim = 14.0, int size = 560, double range = 12.0) {
  rtb::io::Image img(size, size);
  const auto to_world = [&](int p) { return -lim + (p + 0.5) * 2.0 * lim / size; };
  std::vector<double> v(static_cast<std::size_t>(size) * static_cast<std::size_t>(size));
  double top = -1e300;
  for (int py = 0; py < size; ++py)
    for (int px = 0; px < size; ++px) {
      const double lv = log_f(to_world(px), -to_world(py));
      v[static_cast<std::size_t>(py) * size + px] = lv;
      top = std::max(top, lv);
    }
  for (int py = 0; py < size; ++py)
    for (int px = 0; px < size; ++px) {
      const double lv = v[static_cast<std::size_t>(py) * size + px];
      const double t = std::clamp((lv - (top - range)) / range, 0.0, 1.0);
      rtb::io::Rgb c = rtb::io::colormap(0.15 + 0.85 * t);
      // lighten for readability, darken every contour band of 2 nats
      const double band = std::fmod(std::max(0.0, lv - (top - range)), 2.0);
      const double light = band < 0.12 && t > 0 ? 0.45 : 0.72;
      c.r = static_cast<std::uint8_t>(255 - light * (255 - c.r));
      c.g = static_cast<std::uint8_t>(255 - light * (255 - c.g));
      c.b = static_cast<std::uint8_t>(255 - light * (255 - c.b));
      img.at(px, py) = c;
    }
  const double scale = size / (2.0 * lim);
  for (rtb::Index i = 0; i < x.rows(); ++i)
    img.dot((static_cast<double>(x(i, 0)) + lim) * scale, (lim - static_cast<double>(x(i, 1))) * scale, 1.6,
            {200, 30, 30}, 0.8);
  img.write_png(path);
}

}  // namespace examples

namespace examples {

/// A line chart of one or more series against their index, each scaled to its own range, written
/// as a PNG with a light grid. Colours cycle through a fixed palette.
inline void line_chart(const std::string& path, const std::vector<std::vector<double>>& series, int width = 720,
                       int height = 360) {
  rtb::io::Image img(width, height, {255, 255, 255});
  const int pad = 20;
  for (int g = 0; g <= 4; ++g) {  // grid
    const int y = pad + g * (height - 2 * pad) / 4;
    for (int x = pad; x < width - pad; ++x) img.at(x, y) = {225, 225, 225};
  }
  const rtb::io::Rgb palette[4] = {{200, 30, 30}, {30, 90, 200}, {40, 150, 60}, {150, 60, 160}};
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    if (s.size() < 2) continue;
    const auto [lo_it, hi_it] = std::minmax_element(s.begin(), s.end());
    const double lo = *lo_it, hi = *hi_it > *lo_it ? *hi_it : *lo_it + 1;
    for (std::size_t i = 0; i < s.size(); ++i) {
      const double x = pad + static_cast<double>(i) * (width - 2 * pad) / static_cast<double>(s.size() - 1);
      const double y = height - pad - (s[i] - lo) / (hi - lo) * (height - 2 * pad);
      img.dot(x, y, 1.8, palette[k % 4]);
    }
  }
  img.write_png(path);
}

}  // namespace examples
