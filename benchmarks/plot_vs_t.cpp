// SPDX-License-Identifier: Apache-2.0
// Draws step time and peak resident memory against T for each implementation, two log-scale
// panels side by side, with rtb's own PNG writer (no plotting dependency):
//
//   rtb_plot_vs_t in.csv out.png
//
// in.csv (written by compare.sh): a header line, then `series,T,step_seconds,peak_rss_mib` rows;
// rows of one series are joined in order of T. Text uses rtb/extras/draw.hpp's 5×7 capital font.

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <rtb/extras/draw.hpp>

namespace {

using rtb::io::Image;
using rtb::io::Rgb;

std::string tick_label(double v) {
  char buf[32];
  if (v >= 1)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

struct Point {
  double t, value;
};
using Series = std::map<std::string, std::vector<Point>>;

const std::array<Rgb, 4> kColours = {Rgb{200, 40, 40}, Rgb{40, 90, 200}, Rgb{30, 150, 60}, Rgb{150, 60, 170}};

/// One panel: x linear in T from 0 to the largest T, y in log10 over whole decades.
void panel(Image& img, int left, int top, int w, int h, const std::string& title, const Series& series) {
  const Rgb ink{30, 30, 30}, grid{215, 215, 215};
  double t_max = 0, lo = INFINITY, hi = 0;
  for (const auto& [name, pts] : series)
    for (const Point& p : pts) {
      t_max = std::max(t_max, p.t);
      lo = std::min(lo, p.value);
      hi = std::max(hi, p.value);
    }
  const double d_lo = std::floor(std::log10(lo)), d_hi = std::ceil(std::log10(hi)) + (hi == lo ? 1 : 0);
  auto px = [&](double t) { return left + w * t / t_max; };
  auto py = [&](double v) { return top + h - h * (std::log10(v) - d_lo) / (d_hi - d_lo); };
  for (double d = d_lo; d <= d_hi; d += 1) {
    for (int m = 1; m <= 9; ++m) {  // minor grid at 2..9 × 10^d
      const double v = m * std::pow(10.0, d);
      if (std::log10(v) > d_hi + 1e-9) break;
      rtb::io::draw_line(img, left, py(v), left + w, py(v), m == 1 ? Rgb{190, 190, 190} : grid, 1);
    }
    const std::string lab = tick_label(std::pow(10.0, d));
    rtb::io::draw_text(img, left - 8 - rtb::io::text_width(lab), static_cast<int>(py(std::pow(10.0, d))) - 7, lab, ink);
  }
  std::vector<double> ts;
  for (const auto& [name, pts] : series)
    for (const Point& p : pts) ts.push_back(p.t);
  std::sort(ts.begin(), ts.end());
  ts.erase(std::unique(ts.begin(), ts.end()), ts.end());
  for (double t : ts) {
    rtb::io::draw_line(img, px(t), top + h, px(t), top + h + 5, ink, 1);
    const std::string lab = tick_label(t);
    rtb::io::draw_text(img, static_cast<int>(px(t)) - rtb::io::text_width(lab) / 2, top + h + 10, lab, ink);
  }
  rtb::io::draw_line(img, left, top, left, top + h, ink, 2);
  rtb::io::draw_line(img, left, top + h, left + w, top + h, ink, 2);
  rtb::io::draw_text(img, left + w / 2 - rtb::io::text_width("T") / 2, top + h + 32, "T", ink);
  rtb::io::draw_text(img, left + w / 2 - rtb::io::text_width(title) / 2, top - 30, title, ink);
  std::size_t k = 0;
  for (const auto& [name, pts] : series) {
    const Rgb c = kColours[k % kColours.size()];
    for (std::size_t i = 0; i + 1 < pts.size(); ++i)
      rtb::io::draw_line(img, px(pts[i].t), py(pts[i].value), px(pts[i + 1].t), py(pts[i + 1].value), c, 3);
    for (const Point& p : pts) img.dot(px(p.t), py(p.value), 5, c);
    // legend, top-left inside the panel
    const int ly = top + 12 + static_cast<int>(k) * 22;
    rtb::io::draw_line(img, left + 14, ly + 7, left + 44, ly + 7, c, 3);
    rtb::io::draw_text(img, left + 52, ly, name, ink);
    ++k;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: rtb_plot_vs_t in.csv out.png\n");
    return 2;
  }
  try {
    std::ifstream in(argv[1]);
    if (!in) throw std::runtime_error(std::string("cannot read ") + argv[1]);
    Series time, memory;
    std::string row;
    std::getline(in, row);  // header
    while (std::getline(in, row)) {
      if (row.empty()) continue;
      std::stringstream ss(row);
      std::string name, t, step, rss;
      if (!std::getline(ss, name, ',') || !std::getline(ss, t, ',') || !std::getline(ss, step, ',') ||
          !std::getline(ss, rss, ','))
        throw std::runtime_error("bad row: " + row);
      time[name].push_back({std::stod(t), std::stod(step)});
      memory[name].push_back({std::stod(t), std::stod(rss)});
    }
    for (auto* s : {&time, &memory})
      for (auto& [name, pts] : *s)
        std::sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.t < b.t; });
    if (time.empty()) throw std::runtime_error("no data rows");
    Image img(1280, 560);
    panel(img, 110, 70, 480, 400, "STEP TIME (S), BATCH 500", time);
    panel(img, 750, 70, 480, 400, "PEAK RSS (MIB)", memory);
    img.write_png(argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rtb_plot_vs_t: %s\n", e.what());
    return 1;
  }
  return 0;
}
