// Error-feedback rounding (GPTQ, Frantar et al. 2022) onto the same per-row-scale FPx codes as
// quantize.h: the output format, the packed layout and the kernels are unchanged, only which
// code each weight gets.
//
// Given H = sum over calibration inputs x of x x^T (the layer's [cols, cols] input second
// moment), the columns are rounded one at a time, largest H[c, c] first, and each column's
// rounding error is spread over the columns not yet rounded so as to minimise
// sum_x |(W - Q) x|^2 rather than |W - Q|^2: with U the upper Cholesky factor of
// (H + damp)^-1, after rounding column i every row r does
//   W[r, j] -= (W[r, i] - Q[r, i]) / U[i, i] * U[i, j]   for the columns j after i.
// Each row's scale is chosen first, from its original values: absmax / max (ScaleRule::kAbsmax),
// or (kMinError) the candidate of quantize.h's min-error search whose round-to-nearest error
// weighted by each column's H[c, c] is least; each code is encode(value / scale) in float32
// as there. Rows are independent; they are
// spread over the thread pool. Deterministic: the same inputs give the same codes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "fpx/quantize.h"

namespace fp6serve::fpx {

// The input statistics of one linear layer: sum of x x^T over `samples` input rows.
struct Hessian {
  int64_t cols = 0;
  int64_t samples = 0;
  std::vector<double> xtx;  // [cols, cols], symmetric
};

struct GptqOptions {
  double damp = 0.01;     // added to the diagonal: damp * mean(diag(H)) (GPTQ's percdamp)
  bool act_order = true;  // round the columns of larger H[c, c] first
};

// The parts stacked along rows (q, k and v share one input, so one H), rounded as above.
QuantizedMatrix gptq_quantize(std::span<const MatrixView> parts, const Hessian& h, Format format, ScaleRule rule,
                              const GptqOptions& options = {});

// The upper Cholesky factor U of (H / samples + damp)^-1 in the column order `order`
// (U^T U = that inverse, permuted), [cols, cols] row-major; exposed for tests.
std::vector<double> gptq_factor(const Hessian& h, const std::vector<int64_t>& order, double damp);

}  // namespace fp6serve::fpx
