// SPDX-License-Identifier: Apache-2.0
// Text and lines on an Image (rtb/extras/draw.hpp), checked pixel by pixel.

#include <doctest/doctest.h>

#include <rtb/extras/draw.hpp>

namespace {

int inked(const rtb::io::Image& img, int x0, int y0, int x1, int y1) {  // pixels not white in [x0,x1)×[y0,y1)
  int n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) {
      const auto& p = img.at(x, y);
      n += !(p.r == 255 && p.g == 255 && p.b == 255);
    }
  return n;
}

}  // namespace

TEST_CASE("draw_text: glyph cells become scale×scale blocks inside the text's box, unknown characters draw nothing") {
  rtb::io::Image img(60, 30, {255, 255, 255});
  rtb::io::draw_text(img, 5, 5, "l-", {0, 0, 0}, 2);  // 'L': 11 cells, '-': 5 cells
  CHECK(rtb::io::text_width("l-", 2) == 24);
  CHECK(inked(img, 0, 0, 60, 30) == (11 + 5) * 4);
  CHECK(inked(img, 5, 5, 5 + 24, 5 + 14) == (11 + 5) * 4);
  CHECK(img.at(5, 5).r == 0);           // top-left cell of 'L'
  CHECK(img.at(5 + 8, 5).r == 255);     // 'L' has no ink top-right
  CHECK(img.at(5 + 12, 5 + 6).r == 0);  // the bar of '-' (row 3, scale 2)

  rtb::io::Image blank(20, 20, {255, 255, 255});
  rtb::io::draw_text(blank, 0, 0, "~~", {0, 0, 0});
  rtb::io::draw_text(blank, 15, 15, "88888", {0, 0, 0});  // clipped at the border, no out-of-range write
  CHECK(inked(blank, 0, 0, 12, 14) == 0);
  CHECK(inked(blank, 15, 15, 20, 20) > 0);
}

TEST_CASE("draw_line: a horizontal line inks exactly its span, width pixels thick") {
  rtb::io::Image img(40, 20, {255, 255, 255});
  rtb::io::draw_line(img, 5.5, 10.5, 30.5, 10.5, {10, 20, 30}, 3);
  CHECK(img.at(5, 10).r == 10);
  CHECK(img.at(30, 10).r == 10);
  CHECK(img.at(18, 9).r == 10);
  CHECK(img.at(18, 11).r == 10);
  CHECK(inked(img, 0, 0, 40, 8) == 0);
  CHECK(inked(img, 0, 13, 40, 20) == 0);
  CHECK(inked(img, 0, 0, 3, 20) == 0);
  CHECK(inked(img, 33, 0, 40, 20) == 0);
}
