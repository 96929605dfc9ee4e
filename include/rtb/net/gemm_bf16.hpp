// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The bfloat16 product behind `Precision::BFloat16`: C = A·B (or C += A·B) over float matrices
/// of any strides, with both operands rounded to bfloat16 (round to nearest even, subnormals read
/// as zero, as VCVTNEPS2BF16 does) and the products summed in float. Products of two bfloat16
/// values are exact in float, so the only differences from float arithmetic are the operands'
/// rounding (relative 2⁻⁹ each) and the order of the float sums.
///
/// Three engines, chosen at run time, so a build for a generic x86-64 still uses the instructions
/// where the machine has them (RTB_BF16_ENGINE=avx512bf16 or =emulated in the environment forces a
/// lesser one, to reproduce another machine's numbers on this one):
/// - `amx`: AMX-BF16 tiles (Intel Sapphire Rapids on), where CPUID has them and Linux grants the
///   process the tile state (arch_prctl, asked once). TDPBF16PS multiplies a 16×32 bfloat16 tile
///   of A by a 32×16 one of B into a 16×16 float tile; 2×2 C tiles per block, A packed as
///   bfloat16 rows, B as the avx512bf16 engine packs it. C tiles are loaded and stored straight
///   from C where they are whole, through a 16×16 scratch tile at the edges.
/// - `avx512bf16`: hand-written micro-kernels on VDPBF16PS (AVX512-BF16: Intel Cooper Lake and
///   Sapphire Rapids on, AMD Zen 4 on). A's bfloat16 pairs are broadcast, B's are packed into
///   pair-interleaved panels of 16 columns (a 16×16 register transpose where B's
///   columns are contiguous, as for x·Wᵀ); a tile of up to 6 rows × 64 columns lives in 24 zmm
///   registers.
/// - `emulated` elsewhere: the operands rounded the same way into stack blocks, then Eigen's
///   float product. Same rounding of the inputs, another order of the sums; slower than float.
/// Packing converts float to bfloat16 16 or 32 values at a time and lives on the stack (at most
/// 148 KiB per call: the amx engine's A and B panels, its A transpose buffer and 4 KiB of C
/// scratch), so nothing allocates. The three engines sum in different orders, so their last bits
/// differ from one another.
/// All three are deterministic: a result depends on the operands only, not on threads or on blocking
/// across calls. docs/algorithm.md ("Precision") says what bfloat16 changes numerically.

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "rtb/base.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RTB_BF16_X86 1
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace rtb::detail {

/// Float → bfloat16 bits, rounding to nearest even; subnormal inputs become signed zero and NaNs
/// stay NaN (quiet), as VCVTNEPS2BF16 does.
inline std::uint16_t to_bf16_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0) return static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
inline float from_bf16_bits(std::uint16_t b) noexcept {
  const std::uint32_t u = std::uint32_t{b} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
/// `f` rounded to the nearest bfloat16, as a float.
inline float round_to_bf16(float f) noexcept { return from_bf16_bits(to_bf16_bits(f)); }

/// A float matrix as a pointer and the strides of its rows and columns (in elements).
struct StridedF32 {
  const float* p;
  Index rs, cs;
  float operator()(Index i, Index j) const noexcept { return p[i * rs + j * cs]; }
};

/// Which engine gemm_bf16 uses on this machine.
enum class Bf16Engine { Emulated, Avx512Bf16, Amx };
inline bool cpu_has_avx512bf16() noexcept {
#if defined(RTB_BF16_X86)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
#else
  return false;
#endif
}
/// AMX-BF16 usable: the CPU has it (with AVX512-BF16, which the packing uses) and the kernel lets
/// this process use the tile registers (rtb asks Linux with arch_prctl; without the
/// permission the first tile instruction would raise SIGILL). Checked once, on first use.
inline bool cpu_has_amx_bf16() noexcept {
#if defined(RTB_BF16_X86) && defined(__linux__)
  static const bool has = [] {
    __builtin_cpu_init();
    if (!cpu_has_avx512bf16() || !__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16"))
      return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // <asm/prctl.h>, the XSAVE feature number
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return has;
#else
  return false;
#endif
}
/// The machine's best engine (amx, then avx512bf16, then emulated), or a lesser one that the
/// environment variable RTB_BF16_ENGINE names (emulated, avx512bf16), to reproduce on one
/// machine the numbers of another; a name the machine cannot run falls back to its best. Read once.
inline Bf16Engine bf16_engine() noexcept {
  static const Bf16Engine engine = [] {
    const char* env = std::getenv("RTB_BF16_ENGINE");
    if (env != nullptr && std::strcmp(env, "emulated") == 0) return Bf16Engine::Emulated;
    if (env != nullptr && std::strcmp(env, "avx512bf16") == 0 && cpu_has_avx512bf16()) return Bf16Engine::Avx512Bf16;
    if (cpu_has_amx_bf16()) return Bf16Engine::Amx;
    return cpu_has_avx512bf16() ? Bf16Engine::Avx512Bf16 : Bf16Engine::Emulated;
  }();
  return engine;
}
inline const char* bf16_engine_name(Bf16Engine e) noexcept {
  return e == Bf16Engine::Amx ? "amx" : e == Bf16Engine::Avx512Bf16 ? "avx512bf16" : "emulated";
}
inline const char* bf16_engine_name() noexcept { return bf16_engine_name(bf16_engine()); }

/// The emulated engine: C (m×n, strides c_rs, c_cs) = or += A·B with A (m×k) and B (k×n) rounded
/// to bfloat16, float sums by Eigen, in blocks of 64 that live on the stack; k ≥ 1 (gemm_bf16
/// handles k = 0).
inline void gemm_bf16_emulated(float* c, Index c_rs, Index c_cs, StridedF32 a, StridedF32 b, Index m, Index k,
                               Index n, bool accumulate) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<Mat, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  constexpr Index kB = 64;
  alignas(64) float ab[kB * kB], bb[kB * kB];
  for (Index i = 0; i < m; i += kB) {
    const Index mi = std::min(kB, m - i);
    for (Index j = 0; j < n; j += kB) {
      const Index nj = std::min(kB, n - j);
      Map cv(c + i * c_rs + j * c_cs, mi, nj, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(c_rs, c_cs));
      for (Index p = 0; p < k; p += kB) {
        const Index kp = std::min(kB, k - p);
        for (Index r = 0; r < mi; ++r)
          for (Index q = 0; q < kp; ++q) ab[r * kp + q] = round_to_bf16(a(i + r, p + q));
        for (Index q = 0; q < kp; ++q)
          for (Index s = 0; s < nj; ++s) bb[q * nj + s] = round_to_bf16(b(p + q, j + s));
        const Eigen::Map<const Mat> av(ab, mi, kp), bv(bb, kp, nj);
        if (accumulate || p > 0)
          cv.noalias() += av * bv;
        else
          cv.noalias() = av * bv;
      }
    }
  }
}

#if defined(RTB_BF16_X86)
#define RTB_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
// GCC 12's AVX-512 intrinsics (unpacks, widening) pass _mm512_undefined_epi32() through, which
// -W(maybe-)uninitialized reports (GCC PR 105593, fixed in 13); silenced here so that users' -Werror builds stay clean.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define RTB_BF16_POP_DIAGNOSTIC 1
#endif

namespace bf16 {

inline constexpr Index kMr = 6;    ///< rows of a register tile
inline constexpr Index kNv = 4;    ///< 16-column vectors of a register tile
inline constexpr Index kMc = 192;  ///< rows of A packed at once
inline constexpr Index kNc = 192;  ///< columns of B packed at once (a multiple of 16)
inline constexpr Index kKc = 128;  ///< depth packed at once (even): 64 pairs

RTB_BF16_TARGET inline __mmask16 tail_mask(Index left) noexcept {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
}

/// 16 floats → 16 bfloat16 in the low halves of 16 32-bit lanes.
RTB_BF16_TARGET inline __m512i widen(__m512 v) noexcept {
  return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v));
}
/// Pairs (lo[i], hi[i]) as bfloat16 in lane i: what VDPBF16PS multiplies together.
RTB_BF16_TARGET inline __m512i pairs(__m512 lo, __m512 hi) noexcept {
  return _mm512_or_si512(widen(lo), _mm512_slli_epi32(widen(hi), 16));
}

/// Two contiguous lines of len floats → pairs (l0[s], l1[s]) at out[s] for s < count (count ≥
/// len; pairs past the data are zero, and so are the partners when l1 is null: an odd depth).
RTB_BF16_TARGET inline void interleaved_pairs(const float* l0, const float* l1, Index len, std::uint32_t* out,
                                              Index count) noexcept {
  for (Index s = 0; s < count; s += 16) {
    const __mmask16 mk = tail_mask(std::max<Index>(0, len - s));
    const __m512 lo = _mm512_maskz_loadu_ps(mk, l0 + s);
    const __m512 hi = l1 ? _mm512_maskz_loadu_ps(mk, l1 + s) : _mm512_setzero_ps();
    _mm512_mask_storeu_epi32(out + s, tail_mask(count - s), pairs(lo, hi));
  }
}

/// kc contiguous floats at src → pairs (src[2q], src[2q+1]) at out[q] for q < count (count ≥
/// ⌈kc/2⌉; pairs past the data are zero), 32 floats per conversion.
RTB_BF16_TARGET inline void contiguous_pairs(const float* src, Index kc, std::uint32_t* out, Index count) noexcept {
  for (Index q = 0; q < count; q += 16) {
    const Index left = std::max<Index>(0, kc - 2 * q);
    const __m512 lo = _mm512_maskz_loadu_ps(tail_mask(left), src + 2 * q);
    const __m512 hi = _mm512_maskz_loadu_ps(tail_mask(left > 16 ? left - 16 : 0), src + 2 * q + 16);
    _mm512_mask_storeu_epi32(out + q, tail_mask(count - q), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
}

/// w[j] = column j of the 16×16 block of 32-bit values at in (rows ld apart): lane l of w[j] is
/// in[l·ld + j]. Four rounds of unpacks and lane shuffles.
RTB_BF16_TARGET inline void transpose16(const std::uint32_t* in, Index ld, __m512i w[16]) noexcept {
  __m512i r[16], t[16], u[16], v[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(in + i * ld);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {
    const __m512i* a = t + 4 * g;
    __m512i* o = u + 4 * g;
    o[0] = _mm512_unpacklo_epi64(a[0], a[2]);
    o[1] = _mm512_unpackhi_epi64(a[0], a[2]);
    o[2] = _mm512_unpacklo_epi64(a[1], a[3]);
    o[3] = _mm512_unpackhi_epi64(a[1], a[3]);
  }
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j) {
      v[8 * h + j] = _mm512_shuffle_i32x4(u[8 * h + j], u[8 * h + 4 + j], 0x88);
      v[8 * h + 4 + j] = _mm512_shuffle_i32x4(u[8 * h + j], u[8 * h + 4 + j], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    w[j] = _mm512_shuffle_i32x4(v[j], v[8 + j], 0x88);
    w[8 + j] = _mm512_shuffle_i32x4(v[j], v[8 + j], 0xdd);
  }
}

/// B's rows [p0, p0+kc) and columns [j0, j0+nc) → out[q·ncp + s] = pair (B(2q, s), B(2q+1, s)),
/// ncp = nc rounded up to 16, zero-padded (an odd kc gets a zero partner row).
RTB_BF16_TARGET inline void pack_b(StridedF32 b, Index p0, Index kc, Index j0, Index nc, std::uint32_t* out,
                                   Index ncp) {
  const Index kq = (kc + 1) / 2;
  if (b.cs == 1) {  // a row's columns are contiguous: two rows make 16 pairs per vector
    for (Index q = 0; q < kq; ++q) {
      const float* r0 = b.p + (p0 + 2 * q) * b.rs + j0;
      interleaved_pairs(r0, 2 * q + 1 < kc ? r0 + b.rs : nullptr, nc, out + q * ncp, ncp);
    }
    return;
  }
  if (b.rs == 1) {  // a column's rows are contiguous (B = Wᵀ): convert columns, then transpose
    alignas(64) std::uint32_t col[kNc * (kKc / 2)];
    const Index kq16 = (kq + 15) / 16 * 16;
    for (Index s = 0; s < nc; ++s) {
      contiguous_pairs(b.p + (j0 + s) * b.cs + p0, kc, col + s * kq16, kq16);
    }
    for (Index s = nc; s < ncp; ++s)
      for (Index q = 0; q < kq16; q += 16) _mm512_store_si512(col + s * kq16 + q, _mm512_setzero_si512());
    for (Index s = 0; s < ncp; s += 16)
      for (Index q = 0; q < kq; q += 16) {
        __m512i w[16];
        transpose16(col + s * kq16 + q, kq16, w);
        for (Index j = 0; j < 16 && q + j < kq; ++j) _mm512_store_si512(out + (q + j) * ncp + s, w[j]);
      }
    return;
  }
  for (Index q = 0; q < kq; ++q)  // any other strides
    for (Index s = 0; s < ncp; ++s) {
      const bool in = s < nc;
      const std::uint32_t lo = in ? to_bf16_bits(b(p0 + 2 * q, j0 + s)) : 0;
      const std::uint32_t hi = in && 2 * q + 1 < kc ? to_bf16_bits(b(p0 + 2 * q + 1, j0 + s)) : 0;
      out[q * ncp + s] = lo | (hi << 16);
    }
}

/// A's rows [i0, i0+mc) and columns [p0, p0+kc) → pairs, in whichever order reads A fastest:
/// the pair (A(i, 2q), A(i, 2q+1)) is at out[i·rs + q·qs]; returns {rs, qs}.
struct PackedA {
  Index rs, qs;
};
RTB_BF16_TARGET inline PackedA pack_a(StridedF32 a, Index i0, Index mc, Index p0, Index kc, std::uint32_t* out) {
  const Index kq = (kc + 1) / 2;
  if (a.cs == 1) {  // rows contiguous: 32 floats of a row are 16 pairs
    for (Index i = 0; i < mc; ++i) {
      contiguous_pairs(a.p + (i0 + i) * a.rs + p0, kc, out + i * kq, kq);
    }
    return {kq, 1};
  }
  if (a.rs == 1) {  // columns contiguous (A = dYᵀ): two columns make 16 pairs per vector
    for (Index q = 0; q < kq; ++q) {
      const float* c0 = a.p + (p0 + 2 * q) * a.cs + i0;
      interleaved_pairs(c0, 2 * q + 1 < kc ? c0 + a.cs : nullptr, mc, out + q * mc, mc);
    }
    return {1, mc};
  }
  for (Index i = 0; i < mc; ++i)
    for (Index q = 0; q < kq; ++q) {
      const std::uint32_t lo = to_bf16_bits(a(i0 + i, p0 + 2 * q));
      const std::uint32_t hi = 2 * q + 1 < kc ? to_bf16_bits(a(i0 + i, p0 + 2 * q + 1)) : 0;
      out[i * kq + q] = lo | (hi << 16);
    }
  return {kq, 1};
}

/// One register tile: MR rows × NV·16 columns (the last vector masked to `last`), over kq pairs.
template <int MR, int NV>
RTB_BF16_TARGET inline void tile(const std::uint32_t* ap, PackedA pa, const std::uint32_t* bp, Index ncp, Index kq,
                                 float* c, Index c_rs, Index c_cs, __mmask16 last, bool load_c) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (Index q = 0; q < kq; ++q) {
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_load_si512(bp + q * ncp + 16 * v);
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(ap[r * pa.rs + q * pa.qs]));
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mk = v == NV - 1 ? last : __mmask16(0xFFFF);
      float* dst = c + r * c_rs + 16 * v * c_cs;
      if (c_cs == 1) {
        __m512 x = acc[r][v];
        if (load_c) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk, dst));
        _mm512_mask_storeu_ps(dst, mk, x);
      } else {
        alignas(64) float t[16];
        _mm512_store_ps(t, acc[r][v]);
        for (int l = 0; l < 16; ++l)
          if ((mk >> l) & 1) dst[l * c_cs] = load_c ? dst[l * c_cs] + t[l] : t[l];
      }
    }
}

template <int MR>
RTB_BF16_TARGET inline void tile_nv(Index nv, const std::uint32_t* ap, PackedA pa, const std::uint32_t* bp, Index ncp,
                                    Index kq, float* c, Index c_rs, Index c_cs, __mmask16 last, bool load_c) {
  switch (nv) {
    case 1: return tile<MR, 1>(ap, pa, bp, ncp, kq, c, c_rs, c_cs, last, load_c);
    case 2: return tile<MR, 2>(ap, pa, bp, ncp, kq, c, c_rs, c_cs, last, load_c);
    case 3: return tile<MR, 3>(ap, pa, bp, ncp, kq, c, c_rs, c_cs, last, load_c);
    default: return tile<MR, 4>(ap, pa, bp, ncp, kq, c, c_rs, c_cs, last, load_c);
  }
}

RTB_BF16_TARGET inline void gemm(float* c, Index c_rs, Index c_cs, StridedF32 a, StridedF32 b, Index m, Index k,
                                 Index n, bool accumulate) {
  alignas(64) std::uint32_t bp[(kKc / 2) * kNc];
  alignas(64) std::uint32_t ap[kMc * (kKc / 2)];
  for (Index j0 = 0; j0 < n; j0 += kNc) {
    const Index nc = std::min(kNc, n - j0), ncp = (nc + 15) / 16 * 16;
    for (Index p0 = 0; p0 < k; p0 += kKc) {
      const Index kc = std::min(kKc, k - p0), kq = (kc + 1) / 2;
      const bool load_c = accumulate || p0 > 0;
      pack_b(b, p0, kc, j0, nc, bp, ncp);
      for (Index i0 = 0; i0 < m; i0 += kMc) {
        const Index mc = std::min(kMc, m - i0);
        const PackedA pa = pack_a(a, i0, mc, p0, kc, ap);
        for (Index s = 0; s < ncp; s += 16 * kNv) {
          const Index nv = std::min(kNv, (ncp - s) / 16);
          const __mmask16 last = tail_mask(nc - (s + 16 * (nv - 1)));
          for (Index r = 0; r < mc; r += kMr) {
            const Index mr = std::min(kMr, mc - r);
            const std::uint32_t* at = ap + r * pa.rs;
            const std::uint32_t* bt = bp + s;
            float* ct = c + (i0 + r) * c_rs + (j0 + s) * c_cs;
            switch (mr) {
              case 1: tile_nv<1>(nv, at, pa, bt, ncp, kq, ct, c_rs, c_cs, last, load_c); break;
              case 2: tile_nv<2>(nv, at, pa, bt, ncp, kq, ct, c_rs, c_cs, last, load_c); break;
              case 3: tile_nv<3>(nv, at, pa, bt, ncp, kq, ct, c_rs, c_cs, last, load_c); break;
              case 4: tile_nv<4>(nv, at, pa, bt, ncp, kq, ct, c_rs, c_cs, last, load_c); break;
              case 5: tile_nv<5>(nv, at, pa, bt, ncp, kq, ct, c_rs, c_cs, last, load_c); break;
              default: tile_nv<6>(nv, at, pa, bt, ncp, kq, ct, c_rs, c_cs, last, load_c); break;
            }
          }
        }
      }
    }
  }
}

/// AMX-BF16 (Intel Sapphire Rapids on): TDPBF16PS multiplies a 16×32 bfloat16 tile of A by a
/// 32×16 one of B into a 16×16 float tile, 16 times VDPBF16PS's work per instruction. Eight tile
/// registers: four C tiles (a 32×32 block), two of A, two of B. The instructions are written as
/// inline assembly (the compiler never allocates tile registers), so no AMX target flag is needed
/// to build, and the code runs only where CPUID and the kernel (arch_prctl) allow it.
namespace amx {

struct alignas(64) TileConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

inline void load_config(const TileConfig* cfg) noexcept { __asm__ volatile("ldtilecfg (%0)" ::"r"(cfg) : "memory"); }
inline void release() noexcept { __asm__ volatile("tilerelease" ::: "memory"); }
template <int T>
inline void zero() noexcept {
  __asm__ volatile("tilezero %%tmm%c0" ::"i"(T));
}
template <int T>
inline void load(const void* base, Index stride_bytes) noexcept {
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(base), "r"(stride_bytes), "i"(T) : "memory");
}
template <int T>
inline void store(void* base, Index stride_bytes) noexcept {
  __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(base), "r"(stride_bytes), "i"(T) : "memory");
}
/// tmm[C] += tmm[A]·tmm[B] (A: 16 rows of 16 pairs; B: 16 pair rows of 16 columns).
template <int C, int A, int B>
inline void dot() noexcept {
  __asm__ volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(C), "i"(A), "i"(B));
}

/// A's rows [i0, i0+mc) and columns [p0, p0+kc) → out[i·kq16 + q] = pair (A(i, 2q), A(i, 2q+1)):
/// rows of kq16 pairs (kq rounded up to 16, zero-padded), rows up to mc16 (mc rounded up to 16)
/// zero, as A tiles read them.
RTB_BF16_TARGET inline void pack_a(StridedF32 a, Index i0, Index mc, Index p0, Index kc, std::uint32_t* out,
                                   Index kq16) {
  const Index kq = (kc + 1) / 2, mc16 = (mc + 15) / 16 * 16;
  if (a.cs == 1) {  // rows contiguous
    for (Index i = 0; i < mc; ++i) contiguous_pairs(a.p + (i0 + i) * a.rs + p0, kc, out + i * kq16, kq16);
  } else if (a.rs == 1) {  // columns contiguous (A = Xᵀ): pair two columns, then transpose 16×16 blocks
    alignas(64) std::uint32_t tmp[(kKc / 2) * kMc];
    for (Index q = 0; q < kq16; ++q) {
      if (q < kq) {
        const float* c0 = a.p + (p0 + 2 * q) * a.cs + i0;
        interleaved_pairs(c0, 2 * q + 1 < kc ? c0 + a.cs : nullptr, mc, tmp + q * mc16, mc16);
      } else {
        std::memset(tmp + q * mc16, 0, static_cast<std::size_t>(mc16) * 4);
      }
    }
    for (Index q = 0; q < kq16; q += 16)
      for (Index i = 0; i < mc16; i += 16) {
        __m512i w[16];
        transpose16(tmp + q * mc16 + i, mc16, w);
        for (Index j = 0; j < 16; ++j) _mm512_store_si512(out + (i + j) * kq16 + q, w[j]);
      }
    return;
  } else {
    for (Index i = 0; i < mc; ++i)
      for (Index q = 0; q < kq16; ++q) {
        const std::uint32_t lo = q < kq ? to_bf16_bits(a(i0 + i, p0 + 2 * q)) : 0;
        const std::uint32_t hi = 2 * q + 1 < kc ? to_bf16_bits(a(i0 + i, p0 + 2 * q + 1)) : 0;
        out[i * kq16 + q] = lo | (hi << 16);
      }
  }
  std::memset(out + mc * kq16, 0, static_cast<std::size_t>((mc16 - mc) * kq16) * 4);
}

/// One C tile's place: straight in C (a full tile of a row-major C), or a 16×16 scratch tile that
/// holds C's part (zeros elsewhere) and is copied back. Either way the tile starts from C when
/// load_c, so the arithmetic, and hence every element, is the same on both paths.
struct CTile {
  float* c;
  Index c_rs, c_cs, rows, cols;
  bool direct;
  float* scratch;
  RTB_BF16_TARGET void* base() const noexcept { return direct ? static_cast<void*>(c) : scratch; }
  Index stride() const noexcept { return direct ? c_rs * 4 : 64; }
  RTB_BF16_TARGET void fill_scratch() const noexcept {
    for (Index r = 0; r < 16; ++r)
      for (Index s = 0; s < 16; ++s) scratch[r * 16 + s] = r < rows && s < cols ? c[r * c_rs + s * c_cs] : 0.0f;
  }
  RTB_BF16_TARGET void copy_back() const noexcept {
    for (Index r = 0; r < rows; ++r)
      for (Index s = 0; s < cols; ++s) c[r * c_rs + s * c_cs] = scratch[r * 16 + s];
  }
};

template <int T>
RTB_BF16_TARGET inline void begin(const CTile& t, bool load_c) noexcept {
  if (!load_c) return zero<T>();
  if (!t.direct) t.fill_scratch();
  load<T>(t.base(), t.stride());
}
template <int T>
RTB_BF16_TARGET inline void finish(const CTile& t) noexcept {
  store<T>(t.base(), t.stride());
  if (!t.direct) t.copy_back();
}

/// A block of MT×NT C tiles (tiles 0–3) over kq16 pairs: A tiles 4–5 from ap (rows kq16 pairs
/// long), B tiles 6–7 from bp (rows ncp columns long).
template <int MT, int NT>
RTB_BF16_TARGET inline void block(const std::uint32_t* ap, Index kq16, const std::uint32_t* bp, Index ncp,
                                  const CTile (&ct)[2][2], bool load_c) noexcept {
  begin<0>(ct[0][0], load_c);
  if constexpr (NT == 2) begin<1>(ct[0][1], load_c);
  if constexpr (MT == 2) begin<2>(ct[1][0], load_c);
  if constexpr (MT == 2 && NT == 2) begin<3>(ct[1][1], load_c);
  const Index sa = kq16 * 4, sb = ncp * 4;
  for (Index q = 0; q < kq16; q += 16) {
    load<4>(ap + q, sa);
    if constexpr (MT == 2) load<5>(ap + 16 * kq16 + q, sa);
    load<6>(bp + q * ncp, sb);
    if constexpr (NT == 2) load<7>(bp + q * ncp + 16, sb);
    dot<0, 4, 6>();
    if constexpr (NT == 2) dot<1, 4, 7>();
    if constexpr (MT == 2) dot<2, 5, 6>();
    if constexpr (MT == 2 && NT == 2) dot<3, 5, 7>();
  }
  finish<0>(ct[0][0]);
  if constexpr (NT == 2) finish<1>(ct[0][1]);
  if constexpr (MT == 2) finish<2>(ct[1][0]);
  if constexpr (MT == 2 && NT == 2) finish<3>(ct[1][1]);
}

RTB_BF16_TARGET inline void gemm(float* c, Index c_rs, Index c_cs, StridedF32 a, StridedF32 b, Index m, Index k,
                                 Index n, bool accumulate) {
  alignas(64) std::uint32_t bp[(kKc / 2) * kNc];
  alignas(64) std::uint32_t ap[kMc * (kKc / 2)];
  alignas(64) float scratch[4][256];
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  load_config(&cfg);
  for (Index j0 = 0; j0 < n; j0 += kNc) {
    const Index nc = std::min(kNc, n - j0), ncp = (nc + 15) / 16 * 16;
    for (Index p0 = 0; p0 < k; p0 += kKc) {
      const Index kc = std::min(kKc, k - p0), kq = (kc + 1) / 2, kq16 = (kq + 15) / 16 * 16;
      const bool load_c = accumulate || p0 > 0;
      bf16::pack_b(b, p0, kc, j0, nc, bp, ncp);
      std::memset(bp + kq * ncp, 0, static_cast<std::size_t>((kq16 - kq) * ncp) * 4);
      for (Index i0 = 0; i0 < m; i0 += kMc) {
        const Index mc = std::min(kMc, m - i0), mc16 = (mc + 15) / 16 * 16;
        pack_a(a, i0, mc, p0, kc, ap, kq16);
        for (Index r = 0; r < mc16; r += 32) {
          const int mt = mc16 - r >= 32 ? 2 : 1;
          for (Index s = 0; s < ncp; s += 32) {
            const int nt = ncp - s >= 32 ? 2 : 1;
            CTile ct[2][2];
            for (int u = 0; u < 2; ++u)
              for (int v = 0; v < 2; ++v) {
                const Index rows = std::clamp<Index>(mc - r - 16 * u, 0, 16);
                const Index cols = std::clamp<Index>(nc - s - 16 * v, 0, 16);
                ct[u][v] = {c + (i0 + r + 16 * u) * c_rs + (j0 + s + 16 * v) * c_cs, c_rs, c_cs, rows, cols,
                            c_cs == 1 && rows == 16 && cols == 16, scratch[2 * u + v]};
              }
            const std::uint32_t* at = ap + r * kq16;
            const std::uint32_t* bt = bp + s;
            if (mt == 2 && nt == 2)
              block<2, 2>(at, kq16, bt, ncp, ct, load_c);
            else if (mt == 2)
              block<2, 1>(at, kq16, bt, ncp, ct, load_c);
            else if (nt == 2)
              block<1, 2>(at, kq16, bt, ncp, ct, load_c);
            else
              block<1, 1>(at, kq16, bt, ncp, ct, load_c);
          }
        }
      }
    }
  }
  release();
}

}  // namespace amx

}  // namespace bf16
#undef RTB_BF16_TARGET
#if defined(RTB_BF16_POP_DIAGNOSTIC)
#pragma GCC diagnostic pop
#undef RTB_BF16_POP_DIAGNOSTIC
#endif
#endif

/// C (m×n, strides c_rs, c_cs) = A·B (accumulate = false) or C += A·B, in bfloat16 with float sums,
/// on `engine` (the machine's best by default). Allocates nothing.
inline void gemm_bf16(float* c, Index c_rs, Index c_cs, StridedF32 a, StridedF32 b, Index m, Index k, Index n,
                      bool accumulate, Bf16Engine engine = bf16_engine()) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (Index i = 0; i < m; ++i)
        for (Index j = 0; j < n; ++j) c[i * c_rs + j * c_cs] = 0.0f;
    return;
  }
#if defined(RTB_BF16_X86)
  if ((engine == Bf16Engine::Amx && cpu_has_amx_bf16()) || (engine == Bf16Engine::Avx512Bf16 && cpu_has_avx512bf16())) {
    auto run = engine == Bf16Engine::Amx ? &bf16::amx::gemm : &bf16::gemm;
    // A thin C (a layer's 2 outputs) would use 1 or 2 of a tile's 16 columns: compute Cᵀ = Bᵀ·Aᵀ
    // instead, so the long side runs along the vectors. Chosen by the shape alone.
    if (n < 8 && m > n) return run(c, c_cs, c_rs, {b.p, b.cs, b.rs}, {a.p, a.cs, a.rs}, n, k, m, accumulate);
    return run(c, c_rs, c_cs, a, b, m, k, n, accumulate);
  }
#endif
  gemm_bf16_emulated(c, c_rs, c_cs, a, b, m, k, n, accumulate);
}

}  // namespace rtb::detail
