// The CPU linear layers: the CPU backend's matrix products, and the yardstick every CUDA
// kernel is tested against (with linear_reference.h as theirs).
//
//   fpx_linear:   y[n, out] = x[n, in] . (scale (.) dequant(W))^T (+ bias[out])
//   dense_linear: y[n, out] = x[n, in] . W^T (+ bias[out]),  W in f16, bf16 or f32
//
// x and y share one activation dtype (f32, f16 or bf16); products accumulate in f32. The
// FPx weight is decoded in registers, never materialized whole. Work is split over 16-row
// tiles on the thread pool; the SIMD path (AVX-512 or AVX2 with F16C, chosen at run time)
// takes weights packed for an F16 target, anything else takes the portable scalar path.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "fpx/pack.h"

namespace fp6serve::cpu {

enum class CpuIsa { kBest, kScalar, kAvx2, kAvx512 };

const char* isa_name(CpuIsa isa);
bool isa_available(CpuIsa isa);
CpuIsa best_isa();  // what kBest means on this machine

void fpx_linear(const void* x, DType act, int64_t n, const fpx::PackedWeight& w, const float* bias, void* y,
                CpuIsa isa = CpuIsa::kBest);

void dense_linear(const void* x, DType act, int64_t n, const void* w, DType w_dtype, int64_t rows, int64_t cols,
                  const float* bias, void* y, CpuIsa isa = CpuIsa::kBest);

}  // namespace fp6serve::cpu
