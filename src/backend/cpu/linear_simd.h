// SIMD bodies of the CPU linear layers, compiled once per instruction set: linear_avx512.cc
// (16 x 32-bit lanes) and linear_avx2.cc (8 lanes) include this file with FP6_SIMD_WIDTH and
// FP6_SIMD_NS defined; linear.cc picks one at run time.
//
// FPx decoding follows the GPU: a vector holds the segment words of 4 (AVX-512) or 2
// (AVX2) GPU lanes of one lane quad g (rows g and g+8 of the unit), four fragments each; the
// plan's rotation + mask per segment yields FP16 halves in place, which F16C converts. The
// decoded halves of register i come out in the order (lane, fragment, half), so x is
// permuted once per call into that order (see permute_x) and the multiply-adds need no
// shuffles. The dequantized weight exists only in registers.
//
// Loop nest per 16-row tile: lane quad g (8) > token block > 128-column unit > fragment
// quad c (2) > register i (4) > tokens. Each pass over g reads one 64-byte line out of every
// 512-byte chunk, so DRAM sees every line once.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backend/cpu/linear_isa.h"
#include "fpx/pack.h"

#ifndef FP6_SIMD_WIDTH
#error "define FP6_SIMD_WIDTH (8 or 16) before including linear_simd.h"
#endif

namespace fp6serve::cpu::FP6_SIMD_NS {

constexpr int kW = FP6_SIMD_WIDTH;  // 32-bit elements per vector
constexpr int kL = kW / 4;          // GPU lanes per vector
constexpr int kTokenBlock = kW == 16 ? 8 : 4;
constexpr int kMaxSegments = 8;

using u32v = uint32_t __attribute__((vector_size(kW * 4)));
using f32v = float __attribute__((vector_size(kW * 4)));

[[gnu::always_inline]] inline f32v load_f(const float* p) {
  f32v v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// FP16 halves of the low / high half of h to floats.
[[gnu::always_inline]] inline f32v cvt_low(u32v h) {
#if FP6_SIMD_WIDTH == 16
  return (f32v)_mm512_cvtph_ps(_mm512_castsi512_si256((__m512i)h));
#else
  return (f32v)_mm256_cvtph_ps(_mm256_castsi256_si128((__m256i)h));
#endif
}
[[gnu::always_inline]] inline f32v cvt_high(u32v h) {
#if FP6_SIMD_WIDTH == 16
  return (f32v)_mm512_cvtph_ps(_mm512_extracti64x4_epi64((__m512i)h, 1));
#else
  return (f32v)_mm256_cvtph_ps(_mm256_extracti128_si256((__m256i)h, 1));
#endif
}

// a * b + c as one fused instruction (ISO C++ mode does not contract a*b+c by itself).
[[gnu::always_inline]] inline f32v fmadd(f32v a, f32v b, f32v c) {
#if FP6_SIMD_WIDTH == 16
  return (f32v)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#else
  return (f32v)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#endif
}

inline float hsum(f32v v) {
  float s = 0.0f;
  for (int i = 0; i < kW; ++i) s += v[i];
  return s;
}

// Per-segment constants of the decoder for one plan, expanded to vectors.
// v[idx[i]] for each lane i (a run-time permutation: the intrinsic, as clang has no
// __builtin_shuffle with a variable mask).
[[gnu::always_inline]] inline u32v permute(u32v v, u32v idx) {
#if FP6_SIMD_WIDTH == 16
  return (u32v)_mm512_permutexvar_epi32((__m512i)idx, (__m512i)v);
#else
  return (u32v)_mm256_permutevar8x32_epi32((__m256i)v, (__m256i)idx);
#endif
}

struct Decoder {
  int num_segments = 0;
  bool half_load[kMaxSegments] = {};  // 1-bit segments: 8 bytes per lane, half a vector
  int chunk_bytes[kMaxSegments] = {};
  int chunk_offset[kMaxSegments][2] = {};  // byte offset of the chunk that holds fragment quad c
  u32v gather[kMaxSegments][2] = {};       // element (q, p) <- loaded word index
  bool identity[kMaxSegments][2] = {};
  u32v rotation[2][4][kMaxSegments] = {};  // per element left rotation for register i
  u32v mask[kMaxSegments] = {};

  explicit Decoder(const fpx::PackPlan& plan) {
    num_segments = plan.num_segments;
    for (int s = 0; s < num_segments; ++s) {
      const fpx::Segment& seg = plan.segments[s];
      chunk_bytes[s] = seg.chunk_bytes();
      half_load[s] = seg.chunk_bytes() == 8;
      const int words_per_chunk = seg.chunk_bytes() / 4;
      const int fpw = seg.fragments_per_word();
      for (int i = 0; i < kW; ++i) mask[s][i] = seg.half2_mask();
      for (int c = 0; c < 2; ++c) {
        const int chunk = (4 * c / fpw) / words_per_chunk;
        chunk_offset[s][c] = plan.region_offset(s) + chunk * fpx::kWarpLanes * seg.chunk_bytes();
        identity[s][c] = true;
        for (int e = 0; e < kW; ++e) {
          const int q = e / 4, p = e % 4;
          const int fragment = 4 * c + p;
          const int word = fragment / fpw - chunk * words_per_chunk;
          gather[s][c][e] = static_cast<uint32_t>(q * words_per_chunk + word);
          identity[s][c] = identity[s][c] && gather[s][c][e] == static_cast<uint32_t>(e);
          for (int i = 0; i < 4; ++i)
            rotation[c][i][s][e] = static_cast<uint32_t>(seg.rotation((fragment % fpw) * 4 + i));
        }
      }
    }
  }

  // Loads segment s of lanes [lane, lane + kL) for fragment quad c, words in (q, p) order.
  [[gnu::always_inline]] u32v load(const uint8_t* unit, int s, int c, int lane) const {
    u32v v = {};
    const uint8_t* p = unit + chunk_offset[s][c] + lane * chunk_bytes[s];
    if (half_load[s])
      std::memcpy(&v, p, sizeof(v) / 2);
    else
      std::memcpy(&v, p, sizeof(v));
    return identity[s][c] ? v : permute(v, gather[s][c]);
  }
};

[[gnu::always_inline]] inline u32v rotl(u32v v, u32v r) {
#if FP6_SIMD_WIDTH == 16
  return (u32v)_mm512_rolv_epi32((__m512i)v, (__m512i)r);
#else
  return (u32v)_mm256_or_si256(_mm256_sllv_epi32((__m256i)v, (__m256i)r),
                               _mm256_srlv_epi32((__m256i)v, (__m256i)((32u - r) & 31u)));
#endif
}

// Accumulates rows (g, g+8) of one row tile over all units for kTokens tokens, kSegments
// segments (template parameters so every loop unrolls and the accumulators stay in
// registers). x_perm points at the first token, token stride x_stride floats.
template <int kSegments, int kTokens>
inline void fpx_tile_quad(const Decoder& dec, const uint8_t* tile, const uint8_t* next_tile, int64_t units,
                          int unit_bytes, int g, int sub, const float* x_perm, int64_t x_stride,
                          float (*sums)[kTokenBlock]) {
  const int lane = 4 * g + sub * kL;
  f32v acc[2][kTokens] = {};
  for (int64_t u = 0; u < units; ++u) {
    const uint8_t* unit = tile + u * unit_bytes;
    // Each of the 8 passes over this tile (one per lane quad) reads 1/8 of its lines, which
    // are in L2; meanwhile it prefetches a different 1/8 of the next tile's lines, so DRAM
    // streams evenly under the decoding instead of in bursts.
    if (next_tile && sub == 0) {
      const uint8_t* ahead = next_tile + u * unit_bytes + g * (unit_bytes / 8);
      for (int b = 0; b < unit_bytes / 8; b += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + b), _MM_HINT_T1);
    }
    const float* xu = x_perm + u * fpx::kUnitCols + sub * 2 * kW;
    for (int c = 0; c < 2; ++c) {
      u32v words[kSegments];
      for (int s = 0; s < kSegments; ++s) words[s] = dec.load(unit, s, c, lane);
      for (int i = 0; i < 4; ++i) {
        u32v h = rotl(words[0], dec.rotation[c][i][0]) & dec.mask[0];
        for (int s = 1; s < kSegments; ++s) h |= rotl(words[s], dec.rotation[c][i][s]) & dec.mask[s];
        const f32v a = cvt_low(h);
        const f32v b = cvt_high(h);
        const float* xp = xu + (2 * c + (i >> 1)) * 32;
        for (int t = 0; t < kTokens; ++t) {
          const float* xt = xp + t * x_stride;
          acc[i & 1][t] = fmadd(b, load_f(xt + kW), fmadd(a, load_f(xt), acc[i & 1][t]));
        }
      }
    }
  }
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < kTokens; ++t) sums[r][t] += hsum(acc[r][t]);
}

template <int kSegments, int kTokens = kTokenBlock>
inline void fpx_tile_quad_n(int nt, const Decoder& dec, const uint8_t* tile, const uint8_t* next_tile, int64_t units,
                            int unit_bytes, int g, int sub, const float* x_perm, int64_t x_stride,
                            float (*sums)[kTokenBlock]) {
  if constexpr (kTokens > 1) {
    if (nt < kTokens)
      return fpx_tile_quad_n<kSegments, kTokens - 1>(nt, dec, tile, next_tile, units, unit_bytes, g, sub, x_perm,
                                                     x_stride, sums);
  }
  fpx_tile_quad<kSegments, kTokens>(dec, tile, next_tile, units, unit_bytes, g, sub, x_perm, x_stride, sums);
}

// y rows [row_tile*16, +16) for tokens [0, n): FPx weights with an F16-target plan of at
// most kMaxSimdSegments segments. x_perm: [n, cols_padded] permuted activations; out:
// [n, rows] f32; row_scale holds scale * 2^-raw_exponent_offset.
inline void fpx_row_tile(const fpx::PackedWeight& w, const Decoder& dec, int64_t row_tile, bool prefetch_next,
                         const float* x_perm, int64_t n, const float* row_scale, float* out) {
  const uint8_t* tile = w.unit(row_tile, 0);
  const uint8_t* next_tile = prefetch_next && n <= kTokenBlock ? w.unit(row_tile + 1, 0) : nullptr;
  const int64_t units = w.col_units();
  const int64_t cp = w.cols_padded();
  const int unit_bytes = w.plan.unit_bytes();
  for (int g = 0; g < 8; ++g) {
    for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
      const int nt = static_cast<int>(std::min<int64_t>(kTokenBlock, n - t0));
      float sums[2][kTokenBlock] = {};
      for (int sub = 0; sub < 4 / kL; ++sub) {
        const float* xb = x_perm + t0 * cp;
        switch (dec.num_segments) {
          case 1:
            fpx_tile_quad_n<1>(nt, dec, tile, next_tile, units, unit_bytes, g, sub, xb, cp, sums);
            break;
          case 2:
            fpx_tile_quad_n<2>(nt, dec, tile, next_tile, units, unit_bytes, g, sub, xb, cp, sums);
            break;
          case 3:
            fpx_tile_quad_n<3>(nt, dec, tile, next_tile, units, unit_bytes, g, sub, xb, cp, sums);
            break;
          default:
            fpx_tile_quad_n<4>(nt, dec, tile, next_tile, units, unit_bytes, g, sub, xb, cp, sums);
            break;
        }
      }
      for (int r = 0; r < 2; ++r) {
        const int64_t row = row_tile * fpx::kUnitRows + g + 8 * r;
        if (row >= w.rows) continue;
        for (int t = 0; t < nt; ++t) out[(t0 + t) * w.rows + row] = sums[r][t] * row_scale[row];
      }
    }
  }
}

// Dense 16-bit (or f32) weights [rows, cols]: rows [r0, r1) for all tokens.
// x: [n, cols] f32. Weights are converted to float on the fly.
template <DType kWeight>
inline f32v load_weight(const void* w, int64_t index) {
  if constexpr (kWeight == DType::kF32) {
    return load_f(static_cast<const float*>(w) + index);
  } else if constexpr (kWeight == DType::kF16) {
#if FP6_SIMD_WIDTH == 16
    return (f32v)_mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + index)));
#else
    return (f32v)_mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + index)));
#endif
  } else {
    u32v v;
    for (int i = 0; i < kW; ++i) v[i] = static_cast<uint32_t>(static_cast<const uint16_t*>(w)[index + i]) << 16;
    return (f32v)v;
  }
}

template <DType kWeight>
inline float load_weight_scalar(const void* w, int64_t index) {
  if constexpr (kWeight == DType::kF32) {
    return static_cast<const float*>(w)[index];
  } else if constexpr (kWeight == DType::kF16) {
    return _cvtsh_ss(static_cast<const uint16_t*>(w)[index]);
  } else {
    uint32_t b = static_cast<uint32_t>(static_cast<const uint16_t*>(w)[index]) << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
}

template <DType kWeight>
inline void dense_rows(const void* w, int64_t cols, int64_t r0, int64_t r1, const float* x, int64_t n, float* out,
                       int64_t rows) {
  constexpr int kRows = 4;
  const int64_t vec_end = cols / kW * kW;
  for (int64_t rb = r0; rb < r1; rb += kRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kRows, r1 - rb));
    for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock / 2) {
      const int nt = static_cast<int>(std::min<int64_t>(kTokenBlock / 2, n - t0));
      f32v acc[kRows][kTokenBlock / 2] = {};
      for (int64_t k = 0; k < vec_end; k += kW) {
        for (int r = 0; r < nr; ++r) {
          const f32v wv = load_weight<kWeight>(w, (rb + r) * cols + k);
          for (int t = 0; t < nt; ++t) acc[r][t] = fmadd(wv, load_f(x + (t0 + t) * cols + k), acc[r][t]);
        }
      }
      for (int r = 0; r < nr; ++r) {
        for (int t = 0; t < nt; ++t) {
          float s = hsum(acc[r][t]);
          for (int64_t k = vec_end; k < cols; ++k)
            s += load_weight_scalar<kWeight>(w, (rb + r) * cols + k) * x[(t0 + t) * cols + k];
          out[(t0 + t) * rows + rb + r] = s;
        }
      }
    }
  }
}

// The entry points of this instruction set, for linear.cc's dispatch.
inline void fpx_rows(const fpx::PackedWeight& w, int64_t tile_begin, int64_t tile_end, const float* x_perm, int64_t n,
                     const float* row_scale, float* out) {
  const Decoder decoder(w.plan);
  for (int64_t rt = tile_begin; rt < tile_end; ++rt)
    fpx_row_tile(w, decoder, rt, rt + 1 < tile_end, x_perm, n, row_scale, out);
}

inline void dense_rows_any(const void* w, DType w_dtype, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                           const float* x, int64_t n, float* out) {
  switch (w_dtype) {
    case DType::kF32:
      return dense_rows<DType::kF32>(w, cols, r0, r1, x, n, out, rows);
    case DType::kF16:
      return dense_rows<DType::kF16>(w, cols, r0, r1, x, n, out, rows);
    default:
      return dense_rows<DType::kBF16>(w, cols, r0, r1, x, n, out, rows);
  }
}

inline constexpr IsaKernels kKernels{fpx_rows, dense_rows_any};

}  // namespace fp6serve::cpu::FP6_SIMD_NS
