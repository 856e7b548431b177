#include "backend/cpu/linear.h"

#ifdef FP6SERVE_X86_SIMD
#include <cpuid.h>
#endif

#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/linear_isa.h"
#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::cpu {

#ifndef FP6SERVE_X86_SIMD
const IsaKernels* isa_kernels_avx512() {
  return nullptr;
}
const IsaKernels* isa_kernels_avx2() {
  return nullptr;
}
#endif

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kBest:
      return "best";
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

#ifdef FP6SERVE_X86_SIMD
namespace {
// CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports does not know "f16c"). The OS
// saves the AVX state whenever avx2 is reported, so the bit alone is enough beside it.
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}
}  // namespace
#endif

bool isa_available(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kBest:
    case CpuIsa::kScalar:
      return true;
#ifdef FP6SERVE_X86_SIMD
    case CpuIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case CpuIsa::kAvx512:
      return isa_available(CpuIsa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
    default:
      return false;
#endif
  }
  return false;
}

CpuIsa best_isa() {
  static const CpuIsa best = isa_available(CpuIsa::kAvx512) ? CpuIsa::kAvx512
                             : isa_available(CpuIsa::kAvx2) ? CpuIsa::kAvx2
                                                            : CpuIsa::kScalar;
  return best;
}

namespace {

const IsaKernels* resolve(CpuIsa isa) {
  if (isa == CpuIsa::kBest) isa = best_isa();
  FP6_CHECK(isa_available(isa), kUnsupported, "CPU instruction set {} is not available on this machine", isa_name(isa));
  switch (isa) {
    case CpuIsa::kAvx512:
      return isa_kernels_avx512();
    case CpuIsa::kAvx2:
      return isa_kernels_avx2();
    default:
      return nullptr;
  }
}

void check_activations(DType act, int64_t n) {
  FP6_CHECK(is_float_dtype(act), kInvalidArgument, "linear: activations must be f32, f16 or bf16, not {}",
            dtype_name(act));
  FP6_CHECK(n >= 0, kInvalidArgument, "linear: negative token count {}", n);
}

// x [n, cols] in `act` -> f32 with row stride `stride` (zero beyond cols).
std::vector<float> to_f32(const void* x, DType act, int64_t n, int64_t cols, int64_t stride) {
  std::vector<float> out(static_cast<size_t>(n * stride), 0.0f);
  const size_t element = dtype_size(act);
  for (int64_t t = 0; t < n; ++t)
    convert_to_f32(static_cast<const uint8_t*>(x) + static_cast<size_t>(t * cols) * element, act,
                   out.data() + t * stride, static_cast<size_t>(cols));
  return out;
}

// out [n, rows] f32 (+ bias) -> y in `act`.
void finish(std::vector<float>& out, const float* bias, int64_t n, int64_t rows, DType act, void* y) {
  if (bias)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < rows; ++r) out[t * rows + r] += bias[r];
  convert_from_f32(out.data(), y, act, out.size());
}

// The order in which the SIMD decoder emits a unit's halves (see linear_simd.h):
// [c][s][q][p][half] -> column 16 (4c + p) + 2q + half + 8s.
std::vector<float> permute_x_for_simd(const std::vector<float>& x, int64_t n, int64_t cp) {
  std::vector<float> out(x.size());
  for (int64_t t = 0; t < n; ++t) {
    const float* src = x.data() + t * cp;
    float* dst = out.data() + t * cp;
    for (int64_t u = 0; u < cp / fpx::kUnitCols; ++u) {
      int i = 0;
      for (int c = 0; c < 2; ++c)
        for (int s = 0; s < 2; ++s)
          for (int q = 0; q < 4; ++q)
            for (int p = 0; p < 4; ++p)
              for (int half = 0; half < 2; ++half)
                dst[u * fpx::kUnitCols + i++] = src[u * fpx::kUnitCols + 16 * (4 * c + p) + 2 * q + half + 8 * s];
    }
  }
  return out;
}

// Portable path: unpack each unit's codes and decode through the format's table.
void fpx_rows_scalar(const fpx::PackedWeight& w, int64_t tile_begin, int64_t tile_end, const float* x, int64_t n,
                     float* out) {
  const fpx::Codec codec(w.format());
  const int64_t cp = w.cols_padded();
  uint8_t codes[fpx::kUnitRows * fpx::kUnitCols];
  float values[fpx::kUnitRows * fpx::kUnitCols];
  std::vector<float> acc(static_cast<size_t>(n * fpx::kUnitRows));
  for (int64_t rt = tile_begin; rt < tile_end; ++rt) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t u = 0; u < w.col_units(); ++u) {
      fpx::unpack_unit(w.plan, w.unit(rt, u), codes);
      for (int i = 0; i < fpx::kUnitRows * fpx::kUnitCols; ++i) values[i] = codec.decode(codes[i]);
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * cp + u * fpx::kUnitCols;
        for (int r = 0; r < fpx::kUnitRows; ++r) {
          float s = 0.0f;
          for (int c = 0; c < fpx::kUnitCols; ++c) s += values[r * fpx::kUnitCols + c] * xt[c];
          acc[t * fpx::kUnitRows + r] += s;
        }
      }
    }
    for (int r = 0; r < fpx::kUnitRows; ++r) {
      const int64_t row = rt * fpx::kUnitRows + r;
      if (row >= w.rows) break;
      for (int64_t t = 0; t < n; ++t) out[t * w.rows + row] = acc[t * fpx::kUnitRows + r] * w.scales[row];
    }
  }
}

float load_scalar(const void* w, DType dtype, int64_t i) {
  float f;
  convert_to_f32(static_cast<const uint8_t*>(w) + static_cast<size_t>(i) * dtype_size(dtype), dtype, &f, 1);
  return f;
}

void dense_rows_scalar(const void* w, DType w_dtype, int64_t rows, int64_t cols, int64_t r0, int64_t r1, const float* x,
                       int64_t n, float* out) {
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = 0; c < cols; ++c) row[c] = load_scalar(w, w_dtype, r * cols + c);
    for (int64_t t = 0; t < n; ++t) {
      float s = 0.0f;
      for (int64_t c = 0; c < cols; ++c) s += row[c] * x[t * cols + c];
      out[t * rows + r] = s;
    }
  }
}

}  // namespace

void fpx_linear(const void* x, DType act, int64_t n, const fpx::PackedWeight& w, const float* bias, void* y,
                CpuIsa isa) {
  check_activations(act, n);
  FP6_CHECK(w.rows > 0 && w.cols > 0 && w.data.data() != nullptr, kInvalidArgument, "fpx_linear: empty weight");
  if (n == 0) return;
  const int64_t cp = w.cols_padded();
  std::vector<float> x32 = to_f32(x, act, n, w.cols, cp);
  std::vector<float> out(static_cast<size_t>(n * w.rows));
  const IsaKernels* simd = resolve(isa);
  if (simd && w.plan.target == DType::kF16 && w.plan.num_segments <= kMaxSimdSegments) {
    const std::vector<float> x_perm = permute_x_for_simd(x32, n, cp);
    // The raw halves are value * 2^raw_exponent_offset: fold its inverse into the scale.
    std::vector<float> row_scale(w.scales);
    for (float& s : row_scale) s = std::ldexp(s, -w.plan.raw_exponent_offset());
    ThreadPool::global()->parallel_for(w.row_tiles(), [&](int64_t b, int64_t e) {
      simd->fpx_rows(w, b, e, x_perm.data(), n, row_scale.data(), out.data());
    });
  } else {
    ThreadPool::global()->parallel_for(
        w.row_tiles(), [&](int64_t b, int64_t e) { fpx_rows_scalar(w, b, e, x32.data(), n, out.data()); });
  }
  finish(out, bias, n, w.rows, act, y);
}

void dense_linear(const void* x, DType act, int64_t n, const void* w, DType w_dtype, int64_t rows, int64_t cols,
                  const float* bias, void* y, CpuIsa isa) {
  check_activations(act, n);
  FP6_CHECK(is_float_dtype(w_dtype), kInvalidArgument, "dense_linear: weights must be f32, f16 or bf16, not {}",
            dtype_name(w_dtype));
  FP6_CHECK(rows > 0 && cols > 0 && w != nullptr, kInvalidArgument, "dense_linear: empty weight [{}, {}]", rows, cols);
  if (n == 0) return;
  std::vector<float> x32 = to_f32(x, act, n, cols, cols);
  std::vector<float> out(static_cast<size_t>(n * rows));
  const IsaKernels* simd = resolve(isa);
  ThreadPool::global()->parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        if (simd)
          simd->dense_rows(w, w_dtype, rows, cols, r0, r1, x32.data(), n, out.data());
        else
          dense_rows_scalar(w, w_dtype, rows, cols, r0, r1, x32.data(), n, out.data());
      },
      16);
  finish(out, bias, n, rows, act, y);
}

}  // namespace fp6serve::cpu
