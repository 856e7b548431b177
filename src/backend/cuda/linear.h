// The linear layers of the GPU runtime.
//
//   fpx_linear:   Y[n, rows] = X[n, cols] . (scale (.) dequant(W))^T (+ bias), W prepacked FPx
//   dense_linear: Y[n, rows] = X[n, cols] . W^T (+ bias), W FP16/BF16 (cuBLAS)
//
// X and Y are FP16 or BF16 row-major on the device; accumulation is FP32. Both are
// asynchronous on the given stream, allocate nothing and are CUDA-graph capturable; the
// caller provides a workspace of *_workspace_bytes(), ZERO-FILLED when allocated (its first
// bytes are split-K counters that every call leaves at zero; one workspace serves every layer
// of one stream). fpx_linear picks its path from n: the fused Tensor-Core kernels
// (fpx_gemm.cu: mma.sync up to 64 tokens, wgmma above on Hopper) up to a crossover, above it
// dequantization of row blocks to 16 bits followed by cuBLAS.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/fpx_gemm.h"
#include "core/dtype.h"
#include "fpx/pack_plan.h"
#include "fpx/quantize.h"

namespace fp6serve::fpx {
struct PackedWeight;
}

namespace fp6serve::cuda {

struct DeviceFpxWeight {
  fpx::PackPlan plan;
  int64_t rows = 0;  // logical [rows, cols]
  int64_t cols = 0;
  DeviceBuffer data;    // the packed units, as on the host
  DeviceBuffer scales;  // f32 [rows padded to 16], as fpx::PackedWeight has them
  int64_t row_tiles() const { return (rows + fpx::kUnitRows - 1) / fpx::kUnitRows; }
  int64_t col_units() const { return (cols + fpx::kUnitCols - 1) / fpx::kUnitCols; }
};

struct DeviceDenseWeight {
  DType dtype = DType::kF16;  // f16 or bf16
  int64_t rows = 0;
  int64_t cols = 0;
  DeviceBuffer data;  // [rows, cols] row-major
};

DeviceFpxWeight upload(const fpx::PackedWeight& w, cudaStream_t stream = nullptr);
DeviceDenseWeight upload_dense(const void* host, DType dtype, int64_t rows, int64_t cols);
// Quantizes a [rows, cols] matrix already on the device (16-bit or f32) into a new device
// weight packed for `target` activations; a NaN or Inf is an error naming `name` and where.
DeviceFpxWeight quantize_on_device(const void* src, DType src_dtype, int64_t rows, int64_t cols, fpx::Format format,
                                   DType target, const std::string& name, cudaStream_t stream = nullptr,
                                   fpx::ScaleRule rule = fpx::ScaleRule::kAbsmax);

// Tokens above which dequantize + cuBLAS beats the small-n kernel, measured on the H100
// (bench/results/2026-11-23-gemm-h100.md). Where the Hopper kernel serves the weight
// (fpx_wgmma_supported) the fused path takes every n: it beats dequantize + cuBLAS up to the
// 4096 tokens measured (bench/results/2026-11-24-hopper-gemm-h100.md). A crossover of 0 means
// these; Options::fpx_crossover may set another, for both.
inline constexpr int64_t kFpxCrossoverTokens = 64;
// Which path fpx_linear takes for n tokens: the fused kernels, or dequantize + cuBLAS.
enum class FpxPath { kFused, kDequantGemm };
FpxPath fpx_path(const DeviceFpxWeight& w, int64_t n, int64_t crossover = 0);

size_t fpx_linear_workspace_bytes(const DeviceFpxWeight& w, int64_t n, int64_t crossover = 0);
void fpx_linear(const void* x, DType act, int64_t n, const DeviceFpxWeight& w, const float* bias, void* y,
                void* workspace, size_t workspace_bytes, cudaStream_t stream, int64_t crossover = 0);
// The fused kernel alone, with an explicit K split (0: the heuristic) — for benchmarks.
void fpx_linear_fused(const void* x, DType act, int64_t n, const DeviceFpxWeight& w, const float* bias, void* y,
                      void* workspace, size_t workspace_bytes, int splits, cudaStream_t stream);
size_t fpx_fused_workspace_bytes(const DeviceFpxWeight& w, int64_t n, int splits);
// The large-n path alone: row blocks dequantized to 16 bits, then cuBLAS — for benchmarks.
// fpx_dequant_workspace_bytes is what it needs for its largest row block; a smaller
// workspace (at least 16 rows) makes more, smaller blocks.
size_t fpx_dequant_workspace_bytes(const DeviceFpxWeight& w);
void fpx_linear_dequant_gemm(const void* x, DType act, int64_t n, const DeviceFpxWeight& w, const float* bias, void* y,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream);
// The split the heuristic chooses.
int fpx_splits(const DeviceFpxWeight& w, int64_t n);
// The kernel-level launch description of one call (splits = 1), for benchmarks that launch
// the kernels of fpx_gemm.h directly.
FpxLaunch fpx_launch_for(const DeviceFpxWeight& w, const void* x, int64_t n, const float* bias, void* y,
                         void* workspace, cudaStream_t stream);

size_t dense_linear_workspace_bytes(const DeviceDenseWeight& w, int64_t n);
void dense_linear(const void* x, DType act, int64_t n, const DeviceDenseWeight& w, const float* bias, void* y,
                  void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace fp6serve::cuda
