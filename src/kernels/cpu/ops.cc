#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::cpu {

void embedding(const void* table, DType dtype, int64_t vocab, int64_t dim, const int32_t* tokens, int64_t n,
               float* out) {
  for (int64_t i = 0; i < n; ++i)
    FP6_CHECK(tokens[i] >= 0 && tokens[i] < vocab, kInvalidArgument, "token id {} is outside the vocabulary [0, {})",
              tokens[i], vocab);
  const size_t row_bytes = static_cast<size_t>(dim) * dtype_size(dtype);
  ThreadPool::global().parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      convert_to_f32(static_cast<const uint8_t*>(table) + static_cast<size_t>(tokens[i]) * row_bytes, dtype,
                     out + i * dim, static_cast<size_t>(dim));
  });
}

namespace {

void norm_row(const float* x, const float* w, int64_t dim, double eps, float* out) {
  double ss = 0.0;
  for (int64_t j = 0; j < dim; ++j) ss += static_cast<double>(x[j]) * x[j];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
  for (int64_t j = 0; j < dim; ++j) out[j] = w[j] * (x[j] * inv);
}

}  // namespace

void rms_norm(const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* out) {
  ThreadPool::global().parallel_for(rows, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) norm_row(x + i * dim, w, dim, eps, out + i * dim);
  });
}

void add_rms_norm(float* residual, const float* x, const float* w, int64_t rows, int64_t dim, double eps,
                  float* out) {
  ThreadPool::global().parallel_for(rows, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* r = residual + i * dim;
      for (int64_t j = 0; j < dim; ++j) r[j] += x[i * dim + j];
      norm_row(r, w, dim, eps, out + i * dim);
    }
  });
}

void rope(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq) {
  const int64_t half = head_dim / 2;
  ThreadPool::global().parallel_for(rows, [&](int64_t b, int64_t e) {
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

void silu_mul(const float* gate_up, int64_t n, int64_t inter, float* out) {
  ThreadPool::global().parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* g = gate_up + i * 2 * inter;
      const float* u = g + inter;
      for (int64_t j = 0; j < inter; ++j) out[i * inter + j] = g[j] / (1.0f + std::exp(-g[j])) * u[j];
    }
  });
}

namespace {

// Slot of position p of a sequence in one layer's cache, as an element offset.
int64_t slot_offset(const AttentionSeq& s, const PagedKv& kv, int64_t p) {
  const int64_t block = p / kv.block_size;
  FP6_CHECK(block < s.num_blocks, kInternal, "position {} needs KV block {} but the sequence has {}", p, block,
            s.num_blocks);
  const int32_t id = s.block_table[block];
  FP6_CHECK(id >= 0 && id < kv.num_blocks, kInternal, "KV block id {} outside the cache of {} blocks", id,
            kv.num_blocks);
  return ((static_cast<int64_t>(id) * kv.block_size) + p % kv.block_size) * kv.kv_heads * kv.head_dim;
}

}  // namespace

void write_kv(const float* k_src, const float* v_src, int64_t src_stride, const AttentionSeq* seqs, int64_t num_seqs,
              const PagedKv& kv) {
  const size_t row = static_cast<size_t>(kv.kv_heads * kv.head_dim) * sizeof(float);
  for (int64_t s = 0; s < num_seqs; ++s) {
    for (int64_t t = 0; t < seqs[s].token_count; ++t) {
      const int64_t off = slot_offset(seqs[s], kv, seqs[s].start_pos + t);
      const int64_t src = (seqs[s].token_begin + t) * src_stride;
      std::memcpy(kv.k + off, k_src + src, row);
      std::memcpy(kv.v + off, v_src + src, row);
    }
  }
}

void attention(const float* q, int64_t q_stride, int64_t heads, const AttentionSeq* seqs, int64_t num_seqs,
               const PagedKv& kv, int64_t window, float* out) {
  const int64_t d = kv.head_dim;
  const int64_t group = heads / kv.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // Work items: (sequence, token, head).
  std::vector<std::pair<int64_t, int64_t>> rows;  // (sequence, token index within it)
  for (int64_t s = 0; s < num_seqs; ++s)
    for (int64_t t = 0; t < seqs[s].token_count; ++t) rows.emplace_back(s, t);
  const auto items = static_cast<int64_t>(rows.size()) * heads;
  ThreadPool::global().parallel_for(items, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    for (int64_t item = b; item < e; ++item) {
      const auto [s, t] = rows[static_cast<size_t>(item / heads)];
      const int64_t h = item % heads;
      const AttentionSeq& seq = seqs[s];
      const int64_t p = seq.start_pos + t;
      const int64_t first = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
      const float* qv = q + (seq.token_begin + t) * q_stride + h * d;
      const int64_t kvh = h / group;
      scores.resize(static_cast<size_t>(p - first + 1));
      float max_score = -INFINITY;
      for (int64_t j = first; j <= p; ++j) {
        const float* kvec = kv.k + slot_offset(seq, kv, j) + kvh * d;
        float dot = 0.0f;
        for (int64_t c = 0; c < d; ++c) dot += qv[c] * kvec[c];
        scores[j - first] = dot * scale;
        max_score = std::max(max_score, scores[j - first]);
      }
      double denom = 0.0;
      for (float& sc : scores) {
        sc = std::exp(sc - max_score);
        denom += sc;
      }
      float* o = out + (seq.token_begin + t) * heads * d + h * d;
      std::fill(o, o + d, 0.0f);
      const auto inv = static_cast<float>(1.0 / denom);
      for (int64_t j = first; j <= p; ++j) {
        const float* vvec = kv.v + slot_offset(seq, kv, j) + kvh * d;
        const float w = scores[j - first] * inv;
        for (int64_t c = 0; c < d; ++c) o[c] += w * vvec[c];
      }
    }
  });
}

}  // namespace fp6serve::cpu
