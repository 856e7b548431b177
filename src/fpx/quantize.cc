#include "fpx/quantize.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>

#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::fpx {

namespace {

void check_view(const MatrixView& src) {
  FP6_CHECK(is_float_dtype(src.dtype), kInvalidArgument,
            "tensor '{}': cannot quantize dtype {} (need f32, f16 or bf16)", src.name, dtype_name(src.dtype));
  FP6_CHECK(src.rows > 0 && src.cols > 0, kInvalidArgument, "tensor '{}': cannot quantize an empty [{}, {}] matrix",
            src.name, src.rows, src.cols);
  FP6_CHECK(src.data != nullptr, kInvalidArgument, "tensor '{}': no data", src.name);
}

[[noreturn]] void throw_non_finite(const MatrixView& src, int64_t row, const float* values) {
  for (int64_t c = 0; c < src.cols; ++c) {
    if (!std::isfinite(values[c])) {
      FP6_THROW(kBadInput, "tensor '{}' has {} at [{}, {}] (shape [{}, {}]): cannot quantize", src.name,
                std::isnan(values[c]) ? "NaN" : "Inf", row, c, src.rows, src.cols);
    }
  }
  FP6_ASSERT(false);
}

// Row r of src as f32 into row (src.cols values); NaN or Inf is an error naming the position.
void read_row(const MatrixView& src, int64_t r, std::vector<float>& row) {
  convert_to_f32(static_cast<const uint8_t*>(src.data) + static_cast<size_t>(r * src.cols) * dtype_size(src.dtype),
                 src.dtype, row.data(), row.size());
  uint32_t non_finite = 0;
  for (float v : row) non_finite |= (std::bit_cast<uint32_t>(v) & 0x7F800000u) == 0x7F800000u;
  if (non_finite) throw_non_finite(src, r, row.data());
}

// Four candidate scales at once (GCC/Clang vector extensions, SSE2 on x86-64): lane i of a
// vector belongs to candidate i, so each lane adds its row's squared errors in column order,
// with the same float and double operations as row_error: the same sums bit for bit
// (Quantize.MinErrorSearchEqualsRowErrorOnTinyAndDegenerateRows), with eight candidates'
// dependency chains in flight instead of one (1.65x faster quantize-on-load with min-error
// scales on the 2-core development machine; wider AVX2 vectors and decoding by bit placement
// instead of the table measured no faster).
using F4 = float __attribute__((vector_size(16)));
using U4 = uint32_t __attribute__((vector_size(16)));
using D4 = double __attribute__((vector_size(32)));

// fpx::encode (format.h), lane by lane.
U4 encode4(const EncodeParams& p, F4 x) {
  const U4 bits = std::bit_cast<U4>(x);
  const U4 sign = (bits >> 31) * p.sign_bit;
  const U4 u = bits & 0x7FFFFFFFu;
  const F4 a = std::bit_cast<F4>(u);
  const U4 rounded = u + ((1u << (p.shift - 1)) - 1u) + ((u >> p.shift) & 1u);
  const U4 normal = (rounded >> p.shift) - p.rebias;
  const F4 scaled = a * p.subnormal_scale + 0x1p23f;
  const U4 subnormal = std::bit_cast<U4>(scaled) - 0x4B000000u;
  const U4 is_subnormal = std::bit_cast<U4>(a < p.min_normal);
  const U4 magnitude = (subnormal & is_subnormal) | (normal & ~is_subnormal);
  const U4 saturate = ~std::bit_cast<U4>(a < p.max_value) | std::bit_cast<U4>(magnitude > p.max_magnitude);
  return sign | (p.max_magnitude & saturate) | (magnitude & ~saturate);
}

// The squared errors over the row of the eight candidate scales scales[0 .. 8).
void candidate_errors8(std::span<const float> row, const Codec& codec, const float* scales, double* errors) {
  const F4 s0 = {scales[0], scales[1], scales[2], scales[3]}, s1 = {scales[4], scales[5], scales[6], scales[7]};
  const std::array<float, 256>& table = codec.table();
  D4 e0 = {0, 0, 0, 0}, e1 = {0, 0, 0, 0};
  auto step = [&](float v, const F4& s, D4& e) {
    const U4 c = encode4(codec.params(), v / s);
    const F4 q = s * F4{table[c[0] & 255], table[c[1] & 255], table[c[2] & 255], table[c[3] & 255]};
    const D4 d = static_cast<double>(v) - __builtin_convertvector(q, D4);
    e += d * d;
  };
  for (float v : row) {
    step(v, s0, e0);
    step(v, s1, e1);
  }
  for (int i = 0; i < 4; ++i) errors[i] = e0[i], errors[4 + i] = e1[i];
}

// The scale of ScaleRule::kMinError for one row (see quantize.h), from its absmax scale, and
// its error: the first of the least row_error over the candidates, tried in order.
float min_error_scale(std::span<const float> row, const Codec& codec, float absmax_scale, double* best_error) {
  constexpr int kCandidates = kMinErrorSteps + 1, kPadded = (kCandidates + 7) / 8 * 8;
  float scales[kPadded];
  for (int step = 0; step < kPadded; ++step)
    scales[step] = absmax_scale * (1.0f - kMinErrorStep * static_cast<float>(std::min(step, kMinErrorSteps)));
  double errors[kPadded];
  int candidates = 0;  // up to the first zero scale (a subnormal absmax scale: nothing smaller)
  while (candidates < kCandidates && scales[candidates] != 0.0f) ++candidates;
  for (int first = 0; first < candidates; first += 8) candidate_errors8(row, codec, scales + first, errors + first);
  float best = absmax_scale;
  *best_error = INFINITY;
  for (int step = 0; step < candidates; ++step)
    if (errors[step] < *best_error) *best_error = errors[step], best = scales[step];
  return best;
}

}  // namespace

double row_error(std::span<const float> row, const Codec& codec, float scale) {
  double error = 0;
  for (float v : row) {
    const double d = static_cast<double>(v) - static_cast<double>(scale * codec.decode(codec.encode(v / scale)));
    error += d * d;
  }
  return error;
}

float choose_scale(std::span<const float> row, const Codec& codec, ScaleRule rule, double* error) {
  float amax = 0.0f;
  for (float v : row) amax = std::max(amax, std::fabs(v));
  float scale = amax / static_cast<float>(codec.format().max_value());
  // A zero row, or one so tiny that its scale underflows, quantizes to zeros with scale 1.
  if (scale == 0.0f) scale = 1.0f;
  if (rule == ScaleRule::kMinError && amax > 0.0f) {
    double e;
    scale = min_error_scale(row, codec, scale, &e);
    if (error) *error = e;
  } else if (error) {
    *error = row_error(row, codec, scale);
  }
  return scale;
}

void quantize_rows(const MatrixView& src, const Codec& codec, int64_t row_begin, int64_t row_end, uint8_t* codes,
                   int64_t codes_stride, float* scales, ScaleRule rule) {
  check_view(src);
  std::vector<float> row(static_cast<size_t>(src.cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    read_row(src, r, row);
    const float scale = choose_scale(row, codec, rule);
    uint8_t* out = codes + (r - row_begin) * codes_stride;
    for (int64_t c = 0; c < src.cols; ++c) out[c] = codec.encode(row[c] / scale);
    scales[r - row_begin] = scale;
  }
}

ScaleRule parse_scale_rule(std::string_view name) {
  if (name == "absmax") return ScaleRule::kAbsmax;
  if (name == "min-error") return ScaleRule::kMinError;
  FP6_THROW(kInvalidArgument, "quantization scale '{}' is not one of absmax, min-error", name);
}

const char* scale_rule_name(ScaleRule rule) {
  return rule == ScaleRule::kMinError ? "min-error" : "absmax";
}

double quantization_error(std::span<const MatrixView> parts, Format format, ScaleRule rule, int64_t row_stride) {
  FP6_CHECK(row_stride >= 1, kInvalidArgument, "quantization_error: row stride {} < 1", row_stride);
  const Codec codec(format);
  double total = 0;
  int64_t row0 = 0;  // the part's first row in the stack
  for (const MatrixView& p : parts) {
    check_view(p);
    const int64_t first = (row_stride - row0 % row_stride) % row_stride;  // its first row taken
    const int64_t count = first < p.rows ? (p.rows - first + row_stride - 1) / row_stride : 0;
    std::vector<double> errors(static_cast<size_t>(count));
    ThreadPool::global()->parallel_for(count, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(p.cols));
      for (int64_t i = begin; i < end; ++i) {
        read_row(p, first + i * row_stride, row);
        choose_scale(row, codec, rule, &errors[static_cast<size_t>(i)]);
      }
    });
    for (double e : errors) total += e;
    row0 += p.rows;
  }
  return total;
}

Format best_format(std::span<const MatrixView> parts, std::span<const Format> formats, ScaleRule rule) {
  FP6_CHECK(!formats.empty(), kInvalidArgument, "best_format: no format to choose from");
  if (formats.size() == 1) return formats[0];
  int64_t rows = 0;
  for (const MatrixView& p : parts) rows += p.rows;
  const int64_t stride = std::max<int64_t>(1, rows / kFormatSampleRows);
  Format best = formats[0];
  double best_error = INFINITY;
  for (Format f : formats) {
    const double e = quantization_error(parts, f, rule, stride);
    if (e < best_error) best_error = e, best = f;
  }
  return best;
}

QuantizedMatrix quantize(const MatrixView& src, Format format, ScaleRule rule) {
  check_view(src);
  const Codec codec(format);
  QuantizedMatrix q;
  q.format = format;
  q.rows = src.rows;
  q.cols = src.cols;
  q.codes.resize(static_cast<size_t>(src.rows * src.cols));
  q.scales.resize(static_cast<size_t>(src.rows));
  ThreadPool::global()->parallel_for(src.rows, [&](int64_t begin, int64_t end) {
    quantize_rows(src, codec, begin, end, q.codes.data() + begin * src.cols, src.cols, q.scales.data() + begin, rule);
  });
  return q;
}

}  // namespace fp6serve::fpx
