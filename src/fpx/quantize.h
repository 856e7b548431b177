// Round-to-nearest weight quantization with one scale per output channel (row):
//   scale_r = max_c |W[r,c]| / max_value(format),   code[r,c] = encode(W[r,c] / scale_r)
// computed in float32 (ScaleRule::kAbsmax). ScaleRule::kMinError tries scale_r * f for
// f = 1, 0.99, ..., 0.75 (clipping the largest values a little buys finer steps for the
// others) and keeps the one with the least squared error of the dequantized row (the first on
// ties). An all-zero row gets scale 1 and zero codes (nothing divides by zero); NaN or Inf
// anywhere is an error naming the tensor and the position.
//
// best_format picks, for one linear layer, the format (of a few of one width, e.g. FP6's e2m3
// and e3m2) that quantizes it with the least summed squared error (over evenly spaced rows of a
// large layer): what the default mode wf6af16 does per layer (model/quantization.h,
// docs/quality.md).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "fpx/format.h"

namespace fp6serve::fpx {

// A row-major [rows, cols] matrix in F32, F16 or BF16 that is not owned.
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::string_view name;  // used in error messages, e.g. "model.layers.0.mlp.up_proj.weight"
};

enum class ScaleRule { kAbsmax, kMinError };
// kMinError's candidates: absmax / max x (1 - kMinErrorStep x k), k = 0..kMinErrorSteps.
inline constexpr int kMinErrorSteps = 25;
inline constexpr float kMinErrorStep = 0.01f;
// "absmax" or "min-error"; anything else is an Error(kInvalidArgument) listing both.
ScaleRule parse_scale_rule(std::string_view name);
const char* scale_rule_name(ScaleRule rule);

struct QuantizedMatrix {
  Format format;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> codes;  // [rows, cols], one code per byte
  std::vector<float> scales;   // [rows]
};

// The scale `rule` gives one row of finite values; with `error`, also that row's squared error
// at that scale (row_error).
float choose_scale(std::span<const float> row, const Codec& codec, ScaleRule rule, double* error = nullptr);

// The squared error of one row quantized at `scale`: the sum over its values v of
// (v - scale * decode(encode(v / scale)))^2, in double, in column order.
double row_error(std::span<const float> row, const Codec& codec, float scale);

// Quantizes rows [row_begin, row_end) of src into codes (row stride codes_stride) and
// scales, both indexed from row_begin. Single-threaded; quantize() and the packers split rows.
void quantize_rows(const MatrixView& src, const Codec& codec, int64_t row_begin, int64_t row_end, uint8_t* codes,
                   int64_t codes_stride, float* scales, ScaleRule rule = ScaleRule::kAbsmax);

// The summed squared error of quantizing `parts` (matrices of any widths, taken row by row) in
// `format` with `rule`'s scales: the rows' errors summed in row order, so the same for any
// thread count. With row_stride > 1, of the rows 0, row_stride, 2 row_stride, ... of the stack
// only.
double quantization_error(std::span<const MatrixView> parts, Format format, ScaleRule rule, int64_t row_stride = 1);

// best_format judges a layer by about this many of its rows, evenly spaced: the choice needs
// no more (on the trained fixture the two FP6 formats' errors differ 3.5x), and judging every
// row cost as much as quantizing the layer again, per format.
inline constexpr int64_t kFormatSampleRows = 512;
// Of `formats` (not empty), the one with the least quantization_error over the stack's rows
// 0, s, 2 s, ..., s = max(1, rows / kFormatSampleRows) (the first on ties).
Format best_format(std::span<const MatrixView> parts, std::span<const Format> formats, ScaleRule rule);

// The whole matrix, rows spread over the thread pool.
QuantizedMatrix quantize(const MatrixView& src, Format format, ScaleRule rule = ScaleRule::kAbsmax);

// The dequantized value of one element: scale * decode(code).
inline float dequantize(const QuantizedMatrix& q, const Codec& codec, int64_t r, int64_t c) {
  return q.scales[r] * codec.decode(q.codes[r * q.cols + c]);
}

}  // namespace fp6serve::fpx
