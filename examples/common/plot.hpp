// SPDX-License-Identifier: Apache-2.0
#pragma once
// Scatter plots of 2-D samples over a heat map of a log-density, and training curves, written as PNG.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <rtb/space.hpp>
#include <rtb/extras/draw.hpp>
#include <rtb/extras/png.hpp>

namespace examples {

/// Paints `log_f` over [-lim, lim]² as a heat map (clipped `range` below its maximum), draws
/// contour bands, then `x` as dots. Returns nothing; writes `path`.
template <class S>
void scatter_over_density(const std::string& path, rtb::ConstMatrixView<S> x,
                          const std::function<double(double, double)>& log_f, double lim = 14.0, int size = 560,
                          double range = 12.0) {
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

/// One panel of a training chart: a title and one value per iteration.
struct ChartSeries {
  std::string title;
  std::vector<double> values;
};

/// Training curves, one panel per series stacked vertically: the raw values as faint dots, their
/// moving average (a window of 1/25 of the run) as a line, the y range labelled at both ends and
/// the x axis counting entries from 0 to n. Writes a PNG to `path`.
inline void line_chart(const std::string& path, const std::vector<ChartSeries>& series, const std::string& x_label,
                       int width = 760, int panel_height = 240) {
  const int left = 90, right = 20, top = 40, bottom = 46;
  const int panel = panel_height + top + bottom;
  rtb::io::Image img(width, panel * static_cast<int>(series.size()), {255, 255, 255});
  const rtb::io::Rgb ink{40, 40, 40}, grid{225, 225, 225};
  const rtb::io::Rgb palette[4] = {{200, 30, 30}, {30, 90, 200}, {40, 150, 60}, {150, 60, 160}};
  auto label = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v);
    return std::string(buf);
  };
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k].values;
    const int y0 = static_cast<int>(k) * panel + top, w = width - left - right, h = panel_height;
    const rtb::io::Rgb colour = palette[k % 4];
    rtb::io::draw_text(img, left + w / 2 - rtb::io::text_width(series[k].title) / 2, y0 - 28, series[k].title, ink);
    for (int g = 0; g <= 4; ++g) rtb::io::draw_line(img, left, y0 + g * h / 4, left + w, y0 + g * h / 4, grid, 1);
    rtb::io::draw_line(img, left, y0, left, y0 + h, ink, 2);
    rtb::io::draw_line(img, left, y0 + h, left + w, y0 + h, ink, 2);
    rtb::io::draw_text(img, left + w / 2 - rtb::io::text_width(x_label) / 2, y0 + h + 26, x_label, ink);
    if (s.size() < 2) continue;
    const auto [lo_it, hi_it] = std::minmax_element(s.begin(), s.end());
    const double lo = *lo_it, hi = *hi_it > *lo_it ? *hi_it : *lo_it + 1;
    auto px = [&](double i) { return left + i * w / static_cast<double>(s.size() - 1); };
    auto py = [&](double v) { return y0 + h - (v - lo) / (hi - lo) * h; };
    rtb::io::draw_text(img, left - 8 - rtb::io::text_width(label(hi)), y0 - 6, label(hi), ink);
    rtb::io::draw_text(img, left - 8 - rtb::io::text_width(label(lo)), y0 + h - 8, label(lo), ink);
    rtb::io::draw_text(img, left - 4, y0 + h + 8, "0", ink);
    const std::string n = std::to_string(s.size());
    rtb::io::draw_text(img, left + w - rtb::io::text_width(n), y0 + h + 8, n, ink);
    for (std::size_t i = 0; i < s.size(); ++i) img.dot(px(static_cast<double>(i)), py(s[i]), 1.5, colour, 0.25);
    const std::size_t win = std::max<std::size_t>(1, s.size() / 25);
    double sum = 0, prev_x = 0, prev_y = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      sum += s[i];
      if (i >= win) sum -= s[i - win];
      if (i + 1 < win) continue;
      const double x = px(static_cast<double>(i) - 0.5 * static_cast<double>(win - 1));
      const double y = py(sum / static_cast<double>(win));
      if (i + 1 > win) rtb::io::draw_line(img, prev_x, prev_y, x, y, colour, 3);
      prev_x = x;
      prev_y = y;
    }
  }
  img.write_png(path);
}

}  // namespace examples
