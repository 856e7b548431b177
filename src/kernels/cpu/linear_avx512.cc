// The avx512 instantiation of the SIMD linear bodies (compiled with avx512 flags, see
// src/CMakeLists.txt; only called after a run-time CPU check).
#define FP6_SIMD_WIDTH 16
#define FP6_SIMD_NS avx512
#include "kernels/cpu/linear_simd.h"

#include "core/check.h"
#include "kernels/cpu/linear_isa.h"

namespace fp6serve::cpu {

namespace {

void fpx_rows(const fpx::PackedWeight& w, int64_t tile_begin, int64_t tile_end, const float* x_perm, int64_t n,
              const float* row_scale, float* out) {
  const avx512::Decoder decoder(w.plan);
  for (int64_t rt = tile_begin; rt < tile_end; ++rt)
    avx512::fpx_row_tile(w, decoder, rt, rt + 1 < tile_end, x_perm, n, row_scale, out);
}

void dense_rows(const void* w, DType w_dtype, int64_t rows, int64_t cols, int64_t r0, int64_t r1, const float* x,
                int64_t n, float* out) {
  switch (w_dtype) {
    case DType::kF32: return avx512::dense_rows<DType::kF32>(w, cols, r0, r1, x, n, out, rows);
    case DType::kF16: return avx512::dense_rows<DType::kF16>(w, cols, r0, r1, x, n, out, rows);
    case DType::kBF16: return avx512::dense_rows<DType::kBF16>(w, cols, r0, r1, x, n, out, rows);
    default: FP6_ASSERT(false);
  }
}

constexpr IsaKernels kKernels{fpx_rows, dense_rows};

}  // namespace

const IsaKernels* isa_kernels_avx512() { return &kKernels; }

}  // namespace fp6serve::cpu
