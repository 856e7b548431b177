// Rotary embedding and the paged KV-cache write (ops.h; the twin of cuda/rope_kv.cu).
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/thread_pool.h"

namespace fp6serve::cpu {

void rope(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq) {
  const int64_t half = head_dim / 2;
  ThreadPool::global()->parallel_for(rows, [&](int64_t b, int64_t e) {
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t i = b; i < e; ++i) {
      const auto pos = static_cast<float>(positions[i]);
      for (int64_t j = 0; j < half; ++j) {
        const float angle = pos * inv_freq[j];
        cs[j] = std::cos(angle);
        sn[j] = std::sin(angle);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + i * row_stride + h * head_dim;
        for (int64_t j = 0; j < half; ++j) {
          const float a = v[j], c = v[j + half];
          v[j] = a * cs[j] - c * sn[j];
          v[j + half] = c * cs[j] + a * sn[j];
        }
      }
    }
  });
}

void rope_write_kv(float* qkv, int64_t n, int64_t heads, const int32_t* positions, const int32_t* slots,
                   const float* inv_freq, const PagedKv& kv) {
  const int64_t kv_width = kv.kv_heads * kv.head_dim, stride = heads * kv.head_dim + 2 * kv_width;
  rope(qkv, n, stride, heads, kv.head_dim, positions, inv_freq);
  rope(qkv + heads * kv.head_dim, n, stride, kv.kv_heads, kv.head_dim, positions, inv_freq);
  const size_t row = static_cast<size_t>(kv_width) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    const float* k = qkv + i * stride + heads * kv.head_dim;
    std::memcpy(kv.k + slots[i] * kv_width, k, row);
    std::memcpy(kv.v + slots[i] * kv_width, k + kv_width, row);
  }
}

}  // namespace fp6serve::cpu
