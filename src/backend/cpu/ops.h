// The CPU transformer ops other than the linear layers: the CPU backend's kernels, and the
// twins every CUDA op (cuda/ops.h) is tested against. Each op's file is paired by name with
// its CUDA file: norm.cc / norm.cu, rope_kv.cc / rope_kv.cu, attention.cc / attention.cu,
// elementwise.cc / elementwise.cu, moe.cc / moe.cu. Activations are f32, row-major; work is
// spread over the thread pool. Semantics follow Hugging Face's Llama-family modelling code in
// float32.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace fp6serve::cpu {

// --- norm.cc
// out[i, :] = x[i, :] * rsqrt(mean(x[i, :]^2) + eps) * w
void rms_norm(const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* out);
// residual += x, then out = rms_norm(residual): the pre-norm of the next sub-layer fused
// with the residual add of the previous one.
void add_rms_norm(float* residual, const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* out);
// qkv [n, (heads + 2 kv_heads) * head_dim]: each of the `heads` q vectors RMS-normalized and
// scaled by q_w, each of the kv_heads k vectors by k_w (both [head_dim]), in place; v untouched.
void qk_norm(float* qkv, int64_t n, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q_w,
             const float* k_w, double eps);

// One layer's paged KV cache: k and v are [num_blocks, block_size, kv_heads, head_dim] f32.
struct PagedKv {
  float* k;
  float* v;
  int64_t num_blocks;
  int64_t block_size;
  int64_t kv_heads;
  int64_t head_dim;
};

// --- rope_kv.cc
// Rotary embedding in place ("rotate half" convention) on `heads` vectors of head_dim per
// row; row i sits at x + i * row_stride and is at position positions[i]; the angle of pair j
// is positions[i] * inv_freq[j] computed in float, as Hugging Face does.
void rope(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq);
// qkv [n, (heads + 2 kv_heads) * head_dim]: rotates q (heads) and k (kv_heads) in place and
// writes k and v of token i to cache slot slots[i] (block_id * block_size + position %
// block_size, backend/batch.h).
void rope_write_kv(float* qkv, int64_t n, int64_t heads, const int32_t* positions, const int32_t* slots,
                   const float* inv_freq, const PagedKv& kv);

// --- attention.cc
// One sequence's slice of a forward batch.
struct AttentionSeq {
  int64_t token_begin;  // its rows in the batch
  int64_t token_count;
  int64_t start_pos;           // position of its first new token
  const int32_t* block_table;  // blocks covering positions [0, start_pos + token_count)
  int64_t num_blocks;
};
// Causal attention of each new token over its sequence's cached keys/values, positions
// [max(0, p - window + 1), p] (window 0: all). q rows have stride q_stride and hold
// `heads` heads; grouped-query heads share kv head h / (heads / kv_heads). out [tokens,
// heads * head_dim].
void attention(const float* q, int64_t q_stride, int64_t heads, const AttentionSeq* seqs, int64_t num_seqs,
               const PagedKv& kv, int64_t window, float* out);

// --- elementwise.cc
// out[i, :] = table[tokens[i], :] in f32. tokens must lie in [0, vocab) (checked).
void embedding(const void* table, DType dtype, int64_t vocab, int64_t dim, const int32_t* tokens, int64_t n,
               float* out);
// gate_up [n, 2 * inter] (gate then up) -> out [n, inter] = silu(gate) * up.
void silu_mul(const float* gate_up, int64_t n, int64_t inter, float* out);
// acc += x (n elements).
void add(float* acc, const float* x, int64_t n);
// out[i, :] = x[rows[i], :].
void gather_rows(const float* x, int64_t cols, const int64_t* rows, int64_t n, float* out);

// --- moe.cc: the mixture-of-experts MLP in its steps (model/config.h MoeConfig). Token t's
// s-th choice is assignment a = t * top_k + s.
// The router of n tokens: logits x[t] . router[e] for e < experts (f32), their softmax (f32,
// the max subtracted first, as torch), the top_k most probable in descending order (ties:
// the lowest expert first) -> ids[a], and their probabilities -> weights[a], divided by their
// sum when renormalize. With shared_scale (the router's row `experts` is the shared expert's
// gate): shared_scale[t] = sigmoid(x[t] . router[experts]).
void moe_route(const float* x, int64_t n, int64_t hidden, const float* router, int64_t experts, int64_t top_k,
               bool renormalize, int32_t* ids, float* weights, float* shared_scale);
// The assignments grouped by expert: expert e has rows [offsets[e], offsets[e + 1]) of the
// grouped order (offsets: experts + 1 entries), its assignments in increasing order;
// order[r] is the assignment at row r, row_of[a] the row of assignment a.
void moe_group(const int32_t* ids, int64_t assignments, int64_t experts, int32_t* offsets, int32_t* order,
               int32_t* row_of);
// xs[r, :] = x[order[r] / top_k, :] for the `rows` rows of the grouped order.
void moe_gather(const float* x, int64_t hidden, const int32_t* order, int64_t rows, int64_t top_k, float* xs);
// out[t, :] = sum over s = 0, 1, ... of weights[a] * ys[row_of[a], :] (a = t * top_k + s), then
// + shared_scale[t] * shared[t, :] when shared_scale is given; in f32, in that order.
void moe_combine(const float* ys, const int32_t* row_of, const float* weights, int64_t n, int64_t top_k, int64_t hidden,
                 const float* shared_scale, const float* shared, float* out);

}  // namespace fp6serve::cpu
