// Plain double-precision references for the linear layers: the yardstick of the CPU and
// CUDA kernels' tests. Slow and obviously right: one multiply-add per weight, no tiling.
#pragma once

#include <cstdint>
#include <vector>

#include "fpx/quantize.h"

namespace fp6serve::cpu {

// y[n, r] = sum_c x[n, c] * scale[r] * decode(code[r, c]) (+ bias[r]), in double.
std::vector<double> fpx_linear_reference(const float* x, int64_t n, const fpx::QuantizedMatrix& w, const float* bias);

// y[n, r] = sum_c x[n, c] * w[r, c] (+ bias[r]) for w [rows, cols] in f32.
std::vector<double> dense_linear_reference(const float* x, int64_t n, const float* w, int64_t rows, int64_t cols,
                                           const float* bias);

}  // namespace fp6serve::cpu
