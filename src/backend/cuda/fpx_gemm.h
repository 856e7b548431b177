// Internal: the launches of the FPx kernels (fpx_gemm.cu), called by linear.cc. Free of
// {fmt} so that CUDA sources can include it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "fpx/pack_plan.h"

namespace fp6serve::cuda {

// The tokens one CTA of the fused kernel covers at most.
inline constexpr int kFpxGemmMaxTokens = 64;
// The first bytes of every fpx_linear workspace: the split-K arrival counters, one per
// (row block, token block). Zero when allocated; every launch leaves them zero.
inline constexpr size_t kFpxCounterBytes = size_t{256} << 10;

struct FpxLaunch {
  fpx::PackPlan plan;
  const uint8_t* w;     // packed units
  const float* scales;  // [rows padded]
  const float* bias;    // [rows] or null
  int64_t rows, cols, row_tiles, col_units;
  const void* x;  // [n, cols] in plan.target
  void* y;        // [n, rows] in plan.target
  int64_t n;
  int splits;       // K ranges per row block; > 1 needs the workspace below
  void* workspace;  // counters (kFpxCounterBytes), then f32 partials [splits][n][rows padded]
  cudaStream_t stream;
};

bool fpx_gpu_format_supported(fpx::Format f);
// Whether the Hopper kernel (fpx_wgmma_kernel.cuh) serves calls of more than
// kFpxGemmMaxTokens tokens for this weight here: an sm_90 GPU, FP6 e3m2, K % 8 == 0 (and, per
// call, X 16-byte aligned; otherwise the small-n kernel runs in 64-token blocks).
bool fpx_wgmma_supported(const fpx::PackPlan& plan, int64_t cols);
// Output rows one CTA of the fused kernel covers for n tokens (its row block).
int fpx_gemm_rows_per_cta(int64_t n);
// Tokens one CTA covers for n tokens (its token block).
int fpx_gemm_tokens_per_cta(int64_t n, const fpx::PackPlan& plan, int64_t cols);
// y = X . (scale (.) dequant(W))^T + bias, one launch (split-K reduced by the last CTA).
void launch_fpx_gemm(const FpxLaunch& l);
// Row tiles [rt0, rt1) dequantized and scaled into out[(rt1 - rt0) * 16, cols] (16-bit).
void launch_fpx_dequant(const FpxLaunch& l, int64_t rt0, int64_t rt1, void* out);
void launch_add_bias(void* y, DType dtype, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);

}  // namespace fp6serve::cuda
