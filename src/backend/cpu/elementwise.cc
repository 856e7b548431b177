// The elementwise ops (ops.h; the twins of cuda/elementwise.cu).
#include <cmath>
#include <cstring>

#include "backend/cpu/ops.h"
#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::cpu {

void embedding(const void* table, DType dtype, int64_t vocab, int64_t dim, const int32_t* tokens, int64_t n,
               float* out) {
  for (int64_t i = 0; i < n; ++i)
    FP6_CHECK(tokens[i] >= 0 && tokens[i] < vocab, kInvalidArgument, "token id {} is outside the vocabulary [0, {})",
              tokens[i], vocab);
  const size_t row_bytes = static_cast<size_t>(dim) * dtype_size(dtype);
  ThreadPool::global()->parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      convert_to_f32(static_cast<const uint8_t*>(table) + static_cast<size_t>(tokens[i]) * row_bytes, dtype,
                     out + i * dim, static_cast<size_t>(dim));
  });
}

void silu_mul(const float* gate_up, int64_t n, int64_t inter, float* out) {
  ThreadPool::global()->parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* g = gate_up + i * 2 * inter;
      const float* u = g + inter;
      for (int64_t j = 0; j < inter; ++j) out[i * inter + j] = g[j] / (1.0f + std::exp(-g[j])) * u[j];
    }
  });
}

void add(float* acc, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

void gather_rows(const float* x, int64_t cols, const int64_t* rows, int64_t n, float* out) {
  const size_t row = static_cast<size_t>(cols) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * cols, x + rows[i] * cols, row);
}

}  // namespace fp6serve::cpu
