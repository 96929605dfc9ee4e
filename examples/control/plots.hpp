// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The control example's pictures: normalised returns per data set and method with error bars
/// (one panel per task), and policies' trajectories in the point-mass task's plane.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <rtb/extras/draw.hpp>
#include <rtb/extras/png.hpp>

#include "envs.hpp"

namespace control {

struct ScoreBar {
  std::string task, data, method;
  double score = 0, se = 0;  ///< normalised (random 0, expert 100)
};

inline rtb::io::Rgb method_colour(std::size_t k) {
  static const rtb::io::Rgb c[] = {{120, 120, 120}, {214, 39, 40}, {31, 119, 180}, {44, 160, 44}, {148, 103, 189}};
  return c[k % 5];
}

inline void fill_rect(rtb::io::Image& img, int x, int y, int w, int h, rtb::io::Rgb c) {
  for (int yy = std::max(0, y); yy < std::min(img.height(), y + h); ++yy)
    for (int xx = std::max(0, x); xx < std::min(img.width(), x + w); ++xx) img.at(xx, yy) = c;
}

/// One panel per task; within it, a group of bars per data set, one bar per method, ±1 SE whiskers.
inline void score_chart(const std::string& path, const std::vector<ScoreBar>& bars, const std::vector<std::string>& methods) {
  using rtb::io::Rgb;
  std::vector<std::string> tasks, datas;
  for (const ScoreBar& b : bars) {
    if (std::find(tasks.begin(), tasks.end(), b.task) == tasks.end()) tasks.push_back(b.task);
    if (std::find(datas.begin(), datas.end(), b.data) == datas.end()) datas.push_back(b.data);
  }
  const int panel_h = 260, width = 200 + 150 * static_cast<int>(datas.size()), top = 30, bottom = 40, left = 60;
  rtb::io::Image img(width, panel_h * static_cast<int>(tasks.size()) + 30, {255, 255, 255});
  const double lo = -20, hi = 120;
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    const int y0 = static_cast<int>(t) * panel_h;
    const double plot_h = panel_h - top - bottom;
    auto ypix = [&](double v) { return y0 + top + plot_h * (hi - std::clamp(v, lo, hi)) / (hi - lo); };
    rtb::io::draw_text(img, left, y0 + 6, tasks[t], {0, 0, 0}, 2);
    for (double g : {0.0, 50.0, 100.0}) {
      rtb::io::draw_line(img, left, ypix(g), width - 10, ypix(g), {210, 210, 210}, 1);
      rtb::io::draw_text(img, 6, static_cast<int>(ypix(g)) - 6, std::to_string(static_cast<int>(g)), {90, 90, 90}, 1);
    }
    for (std::size_t d = 0; d < datas.size(); ++d) {
      const double gx = left + 20 + 150.0 * static_cast<double>(d);
      rtb::io::draw_text(img, static_cast<int>(gx), y0 + panel_h - bottom + 8, datas[d], {0, 0, 0}, 1);
      for (std::size_t m = 0; m < methods.size(); ++m) {
        auto it = std::find_if(bars.begin(), bars.end(), [&](const ScoreBar& b) {
          return b.task == tasks[t] && b.data == datas[d] && b.method == methods[m];
        });
        if (it == bars.end()) continue;
        const double x = gx + 24.0 * static_cast<double>(m), y = ypix(it->score), base = ypix(0);
        fill_rect(img, static_cast<int>(x), static_cast<int>(std::min(y, base)), 18,
                  std::max(1, static_cast<int>(std::fabs(base - y))), method_colour(m));
        rtb::io::draw_line(img, x + 9, ypix(it->score - it->se), x + 9, ypix(it->score + it->se), {0, 0, 0}, 1.5);
      }
    }
  }
  int lx = left;
  for (std::size_t m = 0; m < methods.size(); ++m) {
    const int ly = panel_h * static_cast<int>(tasks.size()) + 8;
    fill_rect(img, lx, ly, 12, 12, method_colour(m));
    rtb::io::draw_text(img, lx + 16, ly, methods[m], {0, 0, 0}, 1);
    lx += 24 + rtb::io::text_width(methods[m], 1) + 12;
  }
  img.write_png(path);
}

/// Point-mass trajectories (states' x, y) of each method in its own panel: obstacles grey, goal green.
inline void point_mass_trajectories(const std::string& path, const PointMass& env,
                                    const std::vector<std::pair<std::string, std::vector<rtb::RowMatrix<double>>>>& runs) {
  const int s = 300, pad = 20;
  rtb::io::Image img((s + pad) * static_cast<int>(runs.size()) + pad, s + 2 * pad + 20, {255, 255, 255});
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const double ox = pad + static_cast<double>(k) * (s + pad), oy = pad + 20;
    auto px = [&](double x) { return ox + x * s; };
    auto py = [&](double y) { return oy + (1 - y) * s; };
    rtb::io::draw_text(img, static_cast<int>(ox), 6, runs[k].first, {0, 0, 0}, 2);
    for (double e : {0.0, 1.0}) {
      rtb::io::draw_line(img, px(0), py(e), px(1), py(e), {0, 0, 0}, 1);
      rtb::io::draw_line(img, px(e), py(0), px(e), py(1), {0, 0, 0}, 1);
    }
    for (const auto& c : env.obstacles) img.dot(px(c.x), py(c.y), c.radius * s, {170, 170, 170});
    img.dot(px(env.goal_x), py(env.goal_y), env.goal_radius * s, {120, 200, 120});
    for (std::size_t e = 0; e < runs[k].second.size(); ++e) {
      const auto& tr = runs[k].second[e];
      for (rtb::Index t = 0; t + 1 < tr.rows(); ++t)
        rtb::io::draw_line(img, px(tr(t, 0)), py(tr(t, 1)), px(tr(t + 1, 0)), py(tr(t + 1, 1)), method_colour(k), 1.2);
    }
  }
  img.write_png(path);
}

}  // namespace control
