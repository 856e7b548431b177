// Internal: the launches of the FPx kernels (fpx_gemm.cu), called by linear.cc. Free of
// {fmt} so that CUDA sources can include it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "fpx/pack_plan.h"

namespace fp6serve::cuda {

// The tokens one CTA of the pipelined mma.sync kernel covers at most.
inline constexpr int kFpxGemmMaxTokens = 64;
// Calls of at most this many tokens take the small-n (streaming) kernel, fpx_gemv_kernel.cuh
// (and up to 32 on the H100 for the measured layers where it beats the Hopper kernel).
inline constexpr int64_t kFpxGemvMaxTokens = 16;
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
// Whether the Hopper kernel (fpx_wgmma_kernel.cuh) can serve this weight here: an sm_90 GPU,
// an FP6 format (e3m2, e2m3), K % 8 == 0 (and, per call, X 16-byte aligned; otherwise the
// pipelined mma.sync kernel runs in 64-token blocks with the same split).
bool fpx_wgmma_supported(const fpx::PackPlan& plan, int64_t cols);
// Calls of at least this many tokens take the Hopper kernel where it is supported (the
// small-n kernel wins below: bench/results/2026-11-24-hopper-gemm-h100.md).
inline constexpr int64_t kFpxHopperMinTokens = 17;

// How the fused path runs n tokens of a weight of row_tiles x col_units units: which kernel
// and tile (Hopper: an index into fpx_gemm.cu's tile list), the CTA's rows and tokens, and
// the K split. The Hopper tile and split are chosen together to fill the last wave of CTAs.
struct FpxGemmPlan {
  bool gemv = false;  // the small-n kernel
  bool hopper = false;
  int tile = 0;
  int rows_per_cta = 0, tokens_per_cta = 0;
  int splits = 1;
};
FpxGemmPlan fpx_gemm_plan(const fpx::PackPlan& plan, int64_t row_tiles, int64_t col_units, int64_t cols, int64_t n,
                          int sms);
// The Hopper tiles fpx_gemm_plan chooses from, and one launch of tile i (for the tests, which
// run every tile, and the benchmark's sweep; needs fpx_wgmma_supported and X 16-byte aligned).
struct FpxHopperTile {
  int tokens, consumers, x_stages, w_stages;  // X stages hold 64 columns, weight stages a unit
};
const std::vector<FpxHopperTile>& fpx_hopper_tiles();
void launch_fpx_gemm_hopper_tile(const FpxLaunch& l, int tile);
// y = X . (scale (.) dequant(W))^T + bias, one launch (split-K reduced by the last CTA).
void launch_fpx_gemm(const FpxLaunch& l);
// Row tiles [rt0, rt1) dequantized and scaled into out[(rt1 - rt0) * 16, cols] (16-bit).
void launch_fpx_dequant(const FpxLaunch& l, int64_t rt0, int64_t rt1, void* out);
void launch_add_bias(void* y, DType dtype, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);

}  // namespace fp6serve::cuda
