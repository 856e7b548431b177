// Internal: the launches of the FPx kernels (fpx_gemm.cu), called by fpx_linear.cc. Free of
// {fmt} so that CUDA sources can include it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "fpx/pack_plan.h"

namespace fp6serve::cuda {

struct FpxLaunch {
  fpx::PackPlan plan;
  const uint8_t* w;      // packed units
  const float* scales;   // [rows padded], times 2^-raw_exponent_offset for F16 targets
  int64_t rows, cols, row_tiles, col_units;
  const void* x;         // [n, cols] in plan.target
  int64_t n;
  float* acc;            // [n, ld_acc] f32, zeroed before the GEMM
  int64_t ld_acc;
  int splits;
  cudaStream_t stream;
};

bool fpx_gpu_format_supported(fpx::Format f);
void launch_fpx_gemm(const FpxLaunch& l);                                // acc += X . dequant(W)^T
void launch_fpx_finish(const FpxLaunch& l, const float* bias, void* y);  // y = acc * scale + bias
// Row tiles [rt0, rt1) dequantized and scaled into out[(rt1 - rt0) * 16, cols] (16-bit).
void launch_fpx_dequant(const FpxLaunch& l, int64_t rt0, int64_t rt1, void* out);
void launch_add_bias(void* y, DType dtype, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);

}  // namespace fp6serve::cuda
