#include "fpx/quantize.h"

#include <algorithm>
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

// The scale of ScaleRule::kMinError for one row (see quantize.h), from its absmax scale, and
// its error.
float min_error_scale(std::span<const float> row, const Codec& codec, float absmax_scale, double* best_error) {
  float best = absmax_scale;
  *best_error = INFINITY;
  for (int step = 0; step <= kMinErrorSteps; ++step) {
    const float s = absmax_scale * (1.0f - kMinErrorStep * static_cast<float>(step));
    if (s == 0.0f) break;  // a subnormal absmax scale: nothing smaller to try
    const double error = row_error(row, codec, s);
    if (error < *best_error) *best_error = error, best = s;
  }
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
                   int64_t codes_stride, float* scales, ScaleRule rule, double* row_errors) {
  check_view(src);
  std::vector<float> row(static_cast<size_t>(src.cols));
  const size_t element = dtype_size(src.dtype);
  for (int64_t r = row_begin; r < row_end; ++r) {
    convert_to_f32(static_cast<const uint8_t*>(src.data) + static_cast<size_t>(r * src.cols) * element, src.dtype,
                   row.data(), row.size());
    uint32_t non_finite = 0;
    for (float v : row) non_finite |= (std::bit_cast<uint32_t>(v) & 0x7F800000u) == 0x7F800000u;
    if (non_finite) throw_non_finite(src, r, row.data());
    const float scale = choose_scale(row, codec, rule, row_errors ? row_errors + (r - row_begin) : nullptr);
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

double quantization_error(std::span<const MatrixView> parts, Format format, ScaleRule rule) {
  const Codec codec(format);
  double total = 0;
  for (const MatrixView& p : parts) {
    check_view(p);
    std::vector<double> errors(static_cast<size_t>(p.rows));
    ThreadPool::global()->parallel_for(p.rows, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(p.cols));
      const size_t element = dtype_size(p.dtype);
      for (int64_t r = begin; r < end; ++r) {
        convert_to_f32(static_cast<const uint8_t*>(p.data) + static_cast<size_t>(r * p.cols) * element, p.dtype,
                       row.data(), row.size());
        uint32_t non_finite = 0;
        for (float v : row) non_finite |= (std::bit_cast<uint32_t>(v) & 0x7F800000u) == 0x7F800000u;
        if (non_finite) throw_non_finite(p, r, row.data());
        choose_scale(row, codec, rule, &errors[static_cast<size_t>(r)]);
      }
    });
    for (double e : errors) total += e;
  }
  return total;
}

Format best_format(std::span<const MatrixView> parts, std::span<const Format> formats, ScaleRule rule) {
  FP6_CHECK(!formats.empty(), kInvalidArgument, "best_format: no format to choose from");
  if (formats.size() == 1) return formats[0];
  Format best = formats[0];
  double best_error = INFINITY;
  for (Format f : formats) {
    const double e = quantization_error(parts, f, rule);
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
