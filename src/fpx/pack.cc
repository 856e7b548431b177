#include "fpx/pack.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::fpx {

PackPlan pack_plan(Format format, DType target) {
  check_format(format);
  FP6_CHECK(target == DType::kF16 || target == DType::kBF16, kInvalidArgument,
            "FPx weights dequantize to f16 or bf16, not {}", dtype_name(target));
  FP6_CHECK(target_supported(format, target), kUnsupported,
            "format {} cannot be dequantized to {} by bit placement (f16 holds at most 4 "
            "exponent bits); use bf16 activations",
            format.name(), dtype_name(target));
  const PackPlan plan = make_pack_plan(format, target);
  FP6_ASSERT(plan.num_segments > 0);  // 1-bit segments always tile, so a plan exists
  return plan;
}

DType default_target(Format format) {
  return target_supported(format, DType::kF16) ? DType::kF16 : DType::kBF16;
}

namespace {

// For each segment, the bits a code contributes to a half at the targets (slot translate
// 0, low half); slot h and half j then rotate it left by c_h + 16 j.
struct SegmentTables {
  std::array<std::array<uint32_t, 256>, 8> bits{};
  explicit SegmentTables(const PackPlan& plan) {
    for (int s = 0; s < plan.num_segments; ++s) {
      const Segment& seg = plan.segments[s];
      for (int code = 0; code < 256; ++code) {
        uint32_t v = 0;
        for (int k = 0; k < seg.width; ++k) v |= ((code >> seg.code_bits[k]) & 1u) << seg.targets[k];
        bits[s][code] = v;
      }
    }
  }
};

// Packs one 16-row tile. `codes` is [16, cols_padded] with padding already zero.
void pack_row_tile(const PackPlan& plan, const SegmentTables& tables, const uint8_t* codes, int64_t cols_padded,
                   uint8_t* out) {
  const int64_t units = cols_padded / kUnitCols;
  for (int64_t u = 0; u < units; ++u) {
    uint8_t* unit = out + u * plan.unit_bytes();
    const uint8_t* tile = codes + u * kUnitCols;
    for (int s = 0; s < plan.num_segments; ++s) {
      const Segment& seg = plan.segments[s];
      const auto& table = tables.bits[s];
      for (int lane = 0; lane < kWarpLanes; ++lane) {
        for (int word = 0; word < seg.words_per_lane(); ++word) {
          uint32_t w = 0;
          for (int h = 0; h < seg.slots(); ++h) {
            const int fragment = word * seg.fragments_per_word() + h / 4;
            const int reg = h % 4;
            const int row = unit_row(lane, reg);
            for (int half = 0; half < 2; ++half) {
              const uint8_t code = tile[row * cols_padded + unit_col(lane, reg, half, fragment)];
              w |= std::rotl(table[code], seg.translates[h] + 16 * half);
            }
          }
          std::memcpy(unit + plan.word_offset(s, lane, word), &w, 4);
        }
      }
    }
  }
}

void check_shape(int64_t rows, int64_t cols) {
  FP6_CHECK(rows > 0 && cols > 0, kInvalidArgument, "cannot pack an empty [{}, {}] matrix", rows, cols);
}

PackedWeight make_packed(int64_t rows, int64_t cols, Format format, DType target) {
  check_shape(rows, cols);
  PackedWeight p;
  p.plan = pack_plan(format, target);
  p.rows = rows;
  p.cols = cols;
  p.data = HostBuffer(p.plan.packed_bytes(p.rows, p.cols));
  p.scales.assign(static_cast<size_t>(p.rows_padded()), 0.0f);
  return p;
}

// Runs body(row_tile, codes_tile) over row tiles in parallel, each thread reusing one zeroed
// [16, cols_padded] code buffer.
template <typename Fill>
void for_each_row_tile(PackedWeight& p, const Fill& fill) {
  const SegmentTables tables(p.plan);
  const int64_t cp = p.cols_padded();
  ThreadPool::global()->parallel_for(p.row_tiles(), [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> tile(static_cast<size_t>(kUnitRows * cp));
    for (int64_t rt = begin; rt < end; ++rt) {
      std::fill(tile.begin(), tile.end(), 0);
      fill(rt, tile.data(), cp);
      pack_row_tile(p.plan, tables, tile.data(), cp, p.data.data() + rt * p.col_units() * p.plan.unit_bytes());
    }
  });
}

}  // namespace

PackedWeight pack(const uint8_t* codes, const float* scales, int64_t rows, int64_t cols, Format format, DType target) {
  PackedWeight p = make_packed(rows, cols, format, target);
  const uint8_t code_mask = static_cast<uint8_t>(format.num_codes() - 1);
  std::copy(scales, scales + rows, p.scales.begin());
  for_each_row_tile(p, [&](int64_t rt, uint8_t* tile, int64_t cp) {
    const int64_t r0 = rt * kUnitRows;
    for (int64_t r = r0; r < std::min(rows, r0 + kUnitRows); ++r) {
      const uint8_t* src = codes + r * cols;
      uint8_t* dst = tile + (r - r0) * cp;
      for (int64_t c = 0; c < cols; ++c) dst[c] = src[c] & code_mask;
    }
  });
  return p;
}

PackedWeight quantize_pack(std::span<const MatrixView> parts, Format format, DType target, ScaleRule rule) {
  FP6_CHECK(!parts.empty(), kInvalidArgument, "quantize_pack: no matrix given");
  int64_t rows = 0;
  for (const MatrixView& part : parts) {
    FP6_CHECK(part.cols == parts[0].cols, kInvalidArgument,
              "tensor '{}' has {} columns but '{}' has {}: cannot stack them", part.name, part.cols, parts[0].name,
              parts[0].cols);
    rows += part.rows;
  }
  PackedWeight p = make_packed(rows, parts[0].cols, format, target);
  const Codec codec(format);
  for_each_row_tile(p, [&](int64_t rt, uint8_t* tile, int64_t cp) {
    // The tile's rows [r0, r1) of the stack may come from several parts.
    const int64_t r0 = rt * kUnitRows, r1 = std::min(rows, r0 + kUnitRows);
    int64_t part_begin = 0;
    for (const MatrixView& part : parts) {
      const int64_t b = std::max(r0, part_begin), e = std::min(r1, part_begin + part.rows);
      if (b < e)
        quantize_rows(part, codec, b - part_begin, e - part_begin, tile + (b - r0) * cp, cp, p.scales.data() + b, rule);
      part_begin += part.rows;
    }
  });
  return p;
}

void unpack_unit(const PackPlan& plan, const uint8_t* unit, uint8_t* codes) {
  std::fill(codes, codes + kUnitRows * kUnitCols, 0);
  for (int s = 0; s < plan.num_segments; ++s) {
    const Segment& seg = plan.segments[s];
    for (int lane = 0; lane < kWarpLanes; ++lane) {
      for (int word = 0; word < seg.words_per_lane(); ++word) {
        uint32_t w;
        std::memcpy(&w, unit + plan.word_offset(s, lane, word), 4);
        for (int h = 0; h < seg.slots(); ++h) {
          const int fragment = word * seg.fragments_per_word() + h / 4;
          const int reg = h % 4;
          for (int half = 0; half < 2; ++half) {
            const uint32_t placed = std::rotr(w, seg.translates[h] + 16 * half);
            uint8_t bits = 0;
            for (int k = 0; k < seg.width; ++k)
              bits |= static_cast<uint8_t>(((placed >> seg.targets[k]) & 1u) << seg.code_bits[k]);
            codes[unit_row(lane, reg) * kUnitCols + unit_col(lane, reg, half, fragment)] |= bits;
          }
        }
      }
    }
  }
}

QuantizedMatrix unpack(const PackedWeight& p) {
  QuantizedMatrix q;
  q.format = p.plan.format;
  q.rows = p.rows;
  q.cols = p.cols;
  q.codes.resize(static_cast<size_t>(p.rows * p.cols));
  q.scales.assign(p.scales.begin(), p.scales.begin() + p.rows);
  ThreadPool::global()->parallel_for(p.row_tiles(), [&](int64_t begin, int64_t end) {
    uint8_t tile[kUnitRows * kUnitCols];
    for (int64_t rt = begin; rt < end; ++rt) {
      for (int64_t u = 0; u < p.col_units(); ++u) {
        unpack_unit(p.plan, p.unit(rt, u), tile);
        for (int r = 0; r < kUnitRows; ++r) {
          const int64_t row = rt * kUnitRows + r;
          const int64_t c0 = u * kUnitCols;
          if (row >= p.rows) break;
          const int64_t n = std::min<int64_t>(kUnitCols, p.cols - c0);
          std::memcpy(q.codes.data() + row * p.cols + c0, tile + r * kUnitCols, static_cast<size_t>(n));
        }
      }
    }
  });
  return q;
}

}  // namespace fp6serve::fpx
