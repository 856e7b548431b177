// The mixture-of-experts steps (ops.h; the twins of cuda/moe.cu): the router, the grouping of
// the assignments by expert, the gather of the grouped rows and the weighted combine. The
// experts' own matrix products are cpu::fpx_linear / dense_linear on each expert's rows.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::cpu {

void moe_route(const float* x, int64_t n, int64_t hidden, const float* router, int64_t experts, int64_t top_k,
               bool renormalize, int32_t* ids, float* weights, float* shared_scale) {
  FP6_CHECK(top_k >= 1 && top_k <= experts, kInvalidArgument, "moe_route: top_k {} of {} experts", top_k, experts);
  ThreadPool::global()->parallel_for(n, [&](int64_t b, int64_t e) {
    std::vector<float> p(static_cast<size_t>(experts));
    std::vector<int32_t> order(static_cast<size_t>(experts));
    for (int64_t t = b; t < e; ++t) {
      const float* xt = x + t * hidden;
      auto dot = [&](int64_t row) {  // accumulated in double: the logits within an f32 rounding
        const float* w = router + row * hidden;
        double acc = 0.0;
        for (int64_t j = 0; j < hidden; ++j) acc += static_cast<double>(xt[j]) * w[j];
        return static_cast<float>(acc);
      };
      for (int64_t i = 0; i < experts; ++i) p[i] = dot(i);
      // softmax in f32 as torch: max subtracted, exp, divided by the sum
      const float mx = *std::max_element(p.begin(), p.end());
      float sum = 0.0f;
      for (float& v : p) sum += (v = std::exp(v - mx));
      for (float& v : p) v /= sum;
      // top_k by probability, ties to the lowest expert (NaN, from NaN activations, last)
      auto key = [&](int32_t e) { return std::isnan(p[e]) ? -0.5f : p[e]; };
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                        [&](int32_t a, int32_t c) { return key(a) > key(c) || (key(a) == key(c) && a < c); });
      float chosen = 0.0f;
      for (int64_t s = 0; s < top_k; ++s) chosen += p[order[s]];
      for (int64_t s = 0; s < top_k; ++s) {
        ids[t * top_k + s] = order[s];
        weights[t * top_k + s] = renormalize ? p[order[s]] / chosen : p[order[s]];
      }
      if (shared_scale) shared_scale[t] = 1.0f / (1.0f + std::exp(-dot(experts)));
    }
  });
}

void moe_group(const int32_t* ids, int64_t assignments, int64_t experts, int32_t* offsets, int32_t* order,
               int32_t* row_of) {
  std::vector<int32_t> cursor(static_cast<size_t>(experts) + 1, 0);
  for (int64_t a = 0; a < assignments; ++a) {
    FP6_CHECK(ids[a] >= 0 && ids[a] < experts, kInvalidArgument,
              "moe_group: expert {} of assignment {} outside [0, {})", ids[a], a, experts);
    ++cursor[static_cast<size_t>(ids[a]) + 1];
  }
  std::partial_sum(cursor.begin(), cursor.end(), cursor.begin());
  std::copy(cursor.begin(), cursor.end(), offsets);
  for (int64_t a = 0; a < assignments; ++a) {
    const int32_t r = cursor[static_cast<size_t>(ids[a])]++;
    order[r] = static_cast<int32_t>(a);
    row_of[a] = r;
  }
}

void moe_gather(const float* x, int64_t hidden, const int32_t* order, int64_t rows, int64_t top_k, float* xs) {
  const size_t bytes = static_cast<size_t>(hidden) * sizeof(float);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(xs + r * hidden, x + (order[r] / top_k) * hidden, bytes);
}

void moe_combine(const float* ys, const int32_t* row_of, const float* weights, int64_t n, int64_t top_k, int64_t hidden,
                 const float* shared_scale, const float* shared, float* out) {
  ThreadPool::global()->parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* o = out + t * hidden;
      std::fill_n(o, hidden, 0.0f);
      for (int64_t s = 0; s < top_k; ++s) {
        const float w = weights[t * top_k + s];
        const float* y = ys + static_cast<int64_t>(row_of[t * top_k + s]) * hidden;
        for (int64_t j = 0; j < hidden; ++j) o[j] += w * y[j];
      }
      if (shared_scale)
        for (int64_t j = 0; j < hidden; ++j) o[j] += shared_scale[t] * shared[t * hidden + j];
    }
  });
}

}  // namespace fp6serve::cpu
