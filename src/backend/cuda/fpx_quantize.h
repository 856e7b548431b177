// Quantize-on-load on the GPU: per-row scales and the prepacked FPx layout, computed from a
// 16-bit (or f32) matrix already on the device, bit for bit what fpx::quantize_pack computes
// on the CPU (same encoder, fpx::encode; IEEE division; the min-error scale rule's search with
// the same float and double operations in the same order, without fused multiply-adds). Used
// to quantize layers straight into GPU memory and to build random-weight models of real shapes
// in place.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "fpx/pack_plan.h"
#include "fpx/quantize.h"

namespace fp6serve::cuda {

// src: [rows, cols] on the device. packed: row_tiles * col_units * plan.unit_bytes() bytes;
// scales: rows rounded up to 16 floats (padding rows get 0). Returns -1, or the flat index
// (row * cols + col) of the first NaN or Inf in src (nothing useful is written then).
// Synchronizes the stream (it reads that answer back).
int64_t quantize_pack(const void* src, DType src_dtype, int64_t rows, int64_t cols, const fpx::PackPlan& plan,
                      const fpx::EncodeParams& encode, uint8_t* packed, float* scales, cudaStream_t stream,
                      fpx::ScaleRule rule = fpx::ScaleRule::kAbsmax);

}  // namespace fp6serve::cuda
