// SPDX-License-Identifier: Apache-2.0
// The bfloat16 product (Precision::BFloat16): rounding of the operands against hand-derived bit
// patterns, every layout and edge shape of every engine the machine has against a double reference on the
// rounded operands (products of bfloat16 values are exact in float, so only the float sums
// differ: a bound of (k + 2)·2⁻²⁴·Σ|a||b| per element), and the dispatch from detail::gemm.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <rtb/net/gemm.hpp>
#include <rtb/net/linear.hpp>

#include "../test_util.hpp"

namespace gemm_bf16_test {

using rtb::Index;
using rtb::detail::Bf16Engine;
using rtb::detail::StridedF32;

float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<Bf16Engine> engines() {
  std::vector<Bf16Engine> e{Bf16Engine::Emulated};
  if (rtb::detail::cpu_has_avx512bf16()) e.push_back(Bf16Engine::Avx512Bf16);
  if (rtb::detail::cpu_has_amx_bf16()) e.push_back(Bf16Engine::Amx);
  return e;
}

TEST_CASE("to_bf16_bits rounds to nearest even, flushes subnormals and keeps NaN and infinity") {
  using rtb::detail::to_bf16_bits;
  CHECK(to_bf16_bits(1.0f) == 0x3F80);
  CHECK(to_bf16_bits(bits_to_float(0x3F808000u)) == 0x3F80);  // 1 + 2⁻⁸: a tie, down to even
  CHECK(to_bf16_bits(bits_to_float(0x3F818000u)) == 0x3F82);  // 1 + 3·2⁻⁸: a tie, up to even
  CHECK(to_bf16_bits(bits_to_float(0x3F808001u)) == 0x3F81);  // just above the tie
  CHECK(to_bf16_bits(-2.0f) == 0xC000);
  CHECK(to_bf16_bits(1e-40f) == 0x0000);   // subnormal → +0
  CHECK(to_bf16_bits(-1e-40f) == 0x8000);  // → −0
  CHECK(to_bf16_bits(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(to_bf16_bits(std::numeric_limits<float>::max()) == 0x7F80);  // rounds up past the largest bf16
  CHECK(std::isnan(rtb::detail::from_bf16_bits(to_bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isnan(rtb::detail::from_bf16_bits(to_bf16_bits(bits_to_float(0x7F800001u)))));  // signalling: not inf
}

TEST_CASE("every engine rounds each operand as to_bf16_bits does (k = 1 products are exact)") {
  // A is a column of awkward values, B a row of ones and powers of two: C(i, j) = bf16(a_i)·b_j.
  std::vector<float> a = {1.0f, bits_to_float(0x3F808000u), bits_to_float(0x3F818000u), bits_to_float(0x3F808001u),
                          -3.14159f, 1e-40f, -1e-40f, 1.17549435e-38f, 65504.0f, 1e30f, -7.0e-20f, 0.1f,
                          0.2f, 0.3f, 123456.789f, -0.0f, 2.5e-38f};
  for (Index i = 0; i < 40; ++i) a.push_back(std::ldexp(1.0f + 0.013f * static_cast<float>(i), static_cast<int>(i % 9) - 4));
  const Index rows = static_cast<Index>(a.size());
  const Index n = 19;
  std::vector<float> b(n);
  for (Index j = 0; j < n; ++j) b[static_cast<std::size_t>(j)] = std::ldexp(1.0f, static_cast<int>(j % 5));  // ≥ 1: no product is subnormal
  for (Bf16Engine e : engines()) {
    CAPTURE(rtb::detail::bf16_engine_name(e));
    std::vector<float> c(static_cast<std::size_t>(rows * n), -1.0f);
    rtb::detail::gemm_bf16(c.data(), n, 1, {a.data(), 1, 1}, {b.data(), n, 1}, rows, 1, n, false, e);
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < n; ++j) {
        const float expect = rtb::detail::round_to_bf16(a[static_cast<std::size_t>(i)]) * b[static_cast<std::size_t>(j)];
        CHECK(c[static_cast<std::size_t>(i * n + j)] == expect);
      }
  }
}

struct Layout {
  bool a_row, b_row, c_row;
};

TEST_CASE("gemm_bf16 matches the double product of the rounded operands in every layout and shape") {
  const Index shapes[][3] = {{128, 64, 64}, {128, 2, 64}, {128, 64, 2}, {1, 1, 1},    {5, 3, 7},    {7, 17, 33},
                             {13, 31, 16},  {6, 128, 64}, {200, 130, 200}, {64, 257, 31}, {193, 5, 193}, {3, 64, 128},
                             {40, 64, 48},  {24, 96, 80}};
  const Layout layouts[] = {{true, false, true}, {true, true, true},  {false, true, true},  {false, false, true},
                            {true, false, false}, {false, true, false}};
  std::uint64_t seed = 1;
  for (const auto& sh : shapes)
    for (const Layout& lay : layouts)
      for (bool accumulate : {false, true}) {
        const Index m = sh[0], k = sh[1], n = sh[2];
        CAPTURE(m);
        CAPTURE(k);
        CAPTURE(n);
        CAPTURE(lay.a_row);
        CAPTURE(lay.b_row);
        CAPTURE(lay.c_row);
        CAPTURE(accumulate);
        // Operands in buffers with padded leading dimensions, so strides ≠ extents are exercised.
        const Index lda = (lay.a_row ? k : m) + 3, ldb = (lay.b_row ? n : k) + 5, ldc = (lay.c_row ? n : m) + 1;
        std::vector<float> a(static_cast<std::size_t>((lay.a_row ? m : k) * lda)), b(static_cast<std::size_t>((lay.b_row ? k : n) * ldb)),
            c0(static_cast<std::size_t>((lay.c_row ? m : n) * ldc));
        rtb_test::fill_normal<float>(rtb::MatrixView<float>(a.data(), 1, static_cast<Index>(a.size())), seed++);
        rtb_test::fill_normal<float>(rtb::MatrixView<float>(b.data(), 1, static_cast<Index>(b.size())), seed++);
        rtb_test::fill_normal<float>(rtb::MatrixView<float>(c0.data(), 1, static_cast<Index>(c0.size())), seed++);
        const StridedF32 av{a.data(), lay.a_row ? lda : 1, lay.a_row ? 1 : lda};
        const StridedF32 bv{b.data(), lay.b_row ? ldb : 1, lay.b_row ? 1 : ldb};
        const Index c_rs = lay.c_row ? ldc : 1, c_cs = lay.c_row ? 1 : ldc;
        for (Bf16Engine e : engines()) {
          CAPTURE(rtb::detail::bf16_engine_name(e));
          std::vector<float> c = c0;
          rtb::detail::gemm_bf16(c.data(), c_rs, c_cs, av, bv, m, k, n, accumulate, e);
          Index bad = 0;
          for (Index i = 0; i < m; ++i)
            for (Index j = 0; j < n; ++j) {
              double ref = 0, mag = 0;
              for (Index p = 0; p < k; ++p) {
                const double t = double(rtb::detail::round_to_bf16(av(i, p))) * double(rtb::detail::round_to_bf16(bv(p, j)));
                ref += t;
                mag += std::fabs(t);
              }
              const double before = c0[static_cast<std::size_t>(i * c_rs + j * c_cs)];
              if (accumulate) {
                ref += before;
                mag += std::fabs(before);
              }
              const double got = c[static_cast<std::size_t>(i * c_rs + j * c_cs)];
              if (!(std::fabs(got - ref) <= double(k + 2) * 0x1p-24 * mag)) ++bad;
            }
          CHECK(bad == 0);
          // Outside the m×n window (the padding) nothing was written.
          Index touched = 0;
          for (std::size_t idx = 0; idx < c.size(); ++idx) {
            const Index r = static_cast<Index>(idx) / ldc, q = static_cast<Index>(idx) % ldc;
            const bool inside = lay.c_row ? (r < m && q < n) : (r < n && q < m);
            if (!inside && c[idx] != c0[idx]) ++touched;
          }
          CHECK(touched == 0);
          std::vector<float> again = c0;  // deterministic
          rtb::detail::gemm_bf16(again.data(), c_rs, c_cs, av, bv, m, k, n, accumulate, e);
          CHECK(std::memcmp(again.data(), c.data(), c.size() * sizeof(float)) == 0);
        }
      }
}

TEST_CASE("detail::gemm follows the thread's Precision: float by default, gemm_bf16 under BFloat16") {
  const Index m = 130, k = 64, n = 40;
  rtb::RowMatrix<float> x(m, k), w(n, k), y(m, n), y_bf(m, n), y_ref(m, n);
  rtb_test::fill_normal<float>(rtb::MatrixView<float>(x.data(), m, k), 3);
  rtb_test::fill_normal<float>(rtb::MatrixView<float>(w.data(), n, k), 4);
  const rtb::ConstMatrixView<float> xv(x.data(), m, k), wv(w.data(), n, k);
  rtb::detail::gemm(rtb::MatrixView<float>(y.data(), m, n), xv, wv.transpose(), false);
  y_ref.noalias() = x * w.transpose();
  CHECK((y - y_ref).cwiseAbs().maxCoeff() <= 1e-4f);  // float: Eigen's product (blocked the same)
  {
    const rtb::ScopedPrecision bf16(rtb::Precision::BFloat16);
    CHECK(rtb::detail::float_mode_state().precision == rtb::Precision::BFloat16);
    rtb::detail::gemm(rtb::MatrixView<float>(y_bf.data(), m, n), xv, wv.transpose(), false);
    {
      const rtb::ScopedPrecision inner(rtb::Precision::Float32);  // the outermost decides
      CHECK(rtb::detail::float_mode_state().precision == rtb::Precision::BFloat16);
    }
  }
  CHECK(rtb::detail::float_mode_state().precision == rtb::Precision::Float32);  // restored
  std::vector<float> direct(static_cast<std::size_t>(m * n));
  rtb::detail::gemm_bf16(direct.data(), n, 1, {x.data(), k, 1}, {w.data(), 1, k}, m, k, n, false);
  CHECK(std::memcmp(direct.data(), y_bf.data(), direct.size() * sizeof(float)) == 0);
  // bfloat16 operands: relative error of the order of 2⁻⁸ against float, not 2⁻²⁴.
  const float err = (y_bf - y_ref).cwiseAbs().maxCoeff(), scale = y_ref.cwiseAbs().maxCoeff();
  CHECK(err > 1e-5f * scale);
  CHECK(err < 2e-2f * scale);
  // Double products ignore the precision.
  rtb::RowMatrix<double> xd = x.cast<double>(), wd = w.cast<double>(), yd(m, n);
  {
    const rtb::ScopedPrecision bf16(rtb::Precision::BFloat16);
    rtb::detail::gemm(rtb::MatrixView<double>(yd.data(), m, n), rtb::ConstMatrixView<double>(xd.data(), m, k),
                      rtb::ConstMatrixView<double>(wd.data(), n, k).transpose(), false);
  }
  CHECK((yd - xd * wd.transpose()).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("a Linear layer's backward in BFloat16 stays within bfloat16 rounding of the float one") {
  const Index rows = 128, in = 64, out = 48;
  rtb::ParameterLayout layout;
  rtb::Linear lin(layout, "l.", in, out);
  std::vector<float> p(static_cast<std::size_t>(layout.size()));
  lin.init_default(p.data(), 3, 0);
  rtb::RowMatrix<float> x(rows, in), dy(rows, out), dx(rows, in), dx_bf(rows, in);
  rtb_test::fill_normal<float>(rtb::MatrixView<float>(x.data(), rows, in), 5);
  rtb_test::fill_normal<float>(rtb::MatrixView<float>(dy.data(), rows, out), 6);
  std::vector<float> g(p.size(), 0.0f), g_bf(p.size(), 0.0f);
  rtb::MatrixView<float> dxv(dx.data(), rows, in), dxv_bf(dx_bf.data(), rows, in);
  lin.backward(p.data(), rtb::ConstMatrixView<float>(x.data(), rows, in), rtb::ConstMatrixView<float>(dy.data(), rows, out),
               g.data(), &dxv);
  {
    const rtb::ScopedPrecision bf16(rtb::Precision::BFloat16);
    lin.backward(p.data(), rtb::ConstMatrixView<float>(x.data(), rows, in),
                 rtb::ConstMatrixView<float>(dy.data(), rows, out), g_bf.data(), &dxv_bf);
  }
  double num = 0, den = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    num += double(g[i] - g_bf[i]) * double(g[i] - g_bf[i]);
    den += double(g[i]) * double(g[i]);
  }
  // Two operands rounded at relative ≤ 2⁻⁹ each, errors of independent sign summed over 128 rows:
  // the relative RMS error is about 2⁻⁹ (≈ 2e-3); 1e-2 leaves room, 1e-5 would mean no rounding.
  CHECK(std::sqrt(num / den) < 1e-2);
  CHECK(std::sqrt(num / den) > 1e-5);
  CHECK((dx - dx_bf).norm() / dx.norm() < 1e-2);
  CHECK((dx - dx_bf).norm() / dx.norm() > 1e-5);
}

}  // namespace gemm_bf16_test
