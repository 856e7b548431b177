// RMSNorm and RMSNorm fused with the residual add (ops.h; the twin of cuda/norm.cu).
#include <cmath>

#include "backend/cpu/ops.h"
#include "core/thread_pool.h"

namespace fp6serve::cpu {

namespace {

void norm_row(const float* x, const float* w, int64_t dim, double eps, float* out) {
  double ss = 0.0;
  for (int64_t j = 0; j < dim; ++j) ss += static_cast<double>(x[j]) * x[j];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
  for (int64_t j = 0; j < dim; ++j) out[j] = w[j] * (x[j] * inv);
}

}  // namespace

void rms_norm(const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* out) {
  ThreadPool::global()->parallel_for(rows, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) norm_row(x + i * dim, w, dim, eps, out + i * dim);
  });
}

void add_rms_norm(float* residual, const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* out) {
  ThreadPool::global()->parallel_for(rows, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* r = residual + i * dim;
      for (int64_t j = 0; j < dim; ++j) r[j] += x[i * dim + j];
      norm_row(r, w, dim, eps, out + i * dim);
    }
  });
}

void qk_norm(float* qkv, int64_t n, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q_w,
             const float* k_w, double eps) {
  const int64_t width = (heads + 2 * kv_heads) * head_dim;
  ThreadPool::global()->parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      for (int64_t h = 0; h < heads + kv_heads; ++h) {
        float* v = qkv + i * width + h * head_dim;
        norm_row(v, h < heads ? q_w : k_w, head_dim, eps, v);
      }
  });
}

}  // namespace fp6serve::cpu
