// Causal attention over the paged KV cache (ops.h; the twin of cuda/attention.cu): one work
// item per (token, head), the whole score row in float, softmax in double.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::cpu {

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
  ThreadPool::global()->parallel_for(items, [&](int64_t b, int64_t e) {
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
