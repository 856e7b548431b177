// The per-instruction-set entry points of the SIMD linear bodies (linear_simd.h), one table
// per compiled ISA. Internal to the CPU backend.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "fpx/pack.h"

namespace fp6serve::cpu {

// Plans with more segments (only exotic 8-bit formats) take the scalar path.
inline constexpr int kMaxSimdSegments = 4;

struct IsaKernels {
  // Row tiles [tile_begin, tile_end) of an F16-target FPx weight; x_perm [n, cols_padded] is
  // permuted by permute_x_for_simd; out [n, rows] f32 receives sum * row_scale[row].
  void (*fpx_rows)(const fpx::PackedWeight& w, int64_t tile_begin, int64_t tile_end, const float* x_perm, int64_t n,
                   const float* row_scale, float* out);
  // Rows [r0, r1) of a dense weight [rows, cols] in w_dtype; x [n, cols] f32; out [n, rows] f32.
  void (*dense_rows)(const void* w, DType w_dtype, int64_t rows, int64_t cols, int64_t r0, int64_t r1, const float* x,
                     int64_t n, float* out);
};

const IsaKernels* isa_kernels_avx512();  // nullptr when not built for this machine type
const IsaKernels* isa_kernels_avx2();

}  // namespace fp6serve::cpu
