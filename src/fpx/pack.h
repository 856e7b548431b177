// Ahead-of-time prepacking of quantized weights into the layout of pack_plan.h, and its
// exact inverse.
//
// Memory order: units of m16 x k128 in row-tile-major order, [rows/16][cols/128], each
// plan.unit_bytes() long (256 * bits: 1536 B for FP6). A warp streaming one row tile along K
// reads contiguous memory, and every lane's 16-byte load is exactly its own fragment words.
// Rows and columns that are not multiples of 16 and 128 are padded with +0 codes and scale 0,
// never rejected.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/host_buffer.h"
#include "fpx/pack_plan.h"
#include "fpx/quantize.h"

namespace fp6serve::fpx {

struct PackedWeight {
  PackPlan plan;
  int64_t rows = 0;  // logical shape [rows (out), cols (in)]
  int64_t cols = 0;
  HostBuffer data;            // units, see above
  std::vector<float> scales;  // [rows_padded()], 0 for padding rows

  Format format() const { return plan.format; }
  int64_t rows_padded() const { return (rows + kUnitRows - 1) / kUnitRows * kUnitRows; }
  int64_t cols_padded() const { return (cols + kUnitCols - 1) / kUnitCols * kUnitCols; }
  int64_t row_tiles() const { return rows_padded() / kUnitRows; }
  int64_t col_units() const { return cols_padded() / kUnitCols; }
  const uint8_t* unit(int64_t row_tile, int64_t col_unit) const {
    return data.data() + (row_tile * col_units() + col_unit) * plan.unit_bytes();
  }
  size_t bytes() const { return data.size(); }
};

// Packs codes ([rows, cols], one per byte) and their row scales.
PackedWeight pack(const uint8_t* codes, const float* scales, int64_t rows, int64_t cols, Format format, DType target);
inline PackedWeight pack(const QuantizedMatrix& q, DType target) {
  return pack(q.codes.data(), q.scales.data(), q.rows, q.cols, q.format, target);
}

// Quantizes and packs in one pass over 16-row tiles, never holding more than a tile of codes
// per thread: what quantize-on-load uses. Several parts with the same column count are
// stacked along rows (q, k and v become one weight). The per-layer FP6 default packs in
// best_format's choice (quantize.h).
PackedWeight quantize_pack(std::span<const MatrixView> parts, Format format, DType target,
                           ScaleRule rule = ScaleRule::kAbsmax);
inline PackedWeight quantize_pack(const MatrixView& src, Format format, DType target,
                                  ScaleRule rule = ScaleRule::kAbsmax) {
  return quantize_pack(std::span<const MatrixView>(&src, 1), format, target, rule);
}

// The exact inverse of pack: codes [rows, cols] (padding dropped) and scales [rows].
QuantizedMatrix unpack(const PackedWeight& packed);

// Unpacks one unit into its codes, row-major [kUnitRows][kUnitCols].
void unpack_unit(const PackPlan& plan, const uint8_t* unit, uint8_t* codes);

}  // namespace fp6serve::fpx
