// The CUDA twins of cpu/ops.h: the transformer ops of the GPU runtime other than the linear
// layers, each op's .cu file paired by name with its CPU .cc (norm, rope_kv, attention,
// elementwise). Activations and the KV cache are FP16 or BF16 (`dtype`); all arithmetic
// (norms, rotary angles, softmax, accumulations) is f32. Every launch is asynchronous on the
// given stream and graph-capturable (no allocation, no host sync). tests/backend/cuda/ and
// the op table (tests/backend/ops_test.cc) compare each op with its CPU twin on random inputs.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace fp6serve::cuda {

// --- norm.cu
// out = x * rsqrt(mean(x^2) + eps) * w (w f32). With residual: residual += x first, and the
// norm is taken of the sum (the fused add of the previous sub-layer).
void rms_norm(const void* x, const float* w, int64_t rows, int64_t dim, double eps, void* out, DType dtype,
              cudaStream_t stream);
void add_rms_norm(void* residual, const void* x, const float* w, int64_t rows, int64_t dim, double eps, void* out,
                  DType dtype, cudaStream_t stream);
// qkv [n, (heads + 2 kv_heads) * head_dim]: each q head RMS-normalized and scaled by q_w, each
// k head by k_w ([head_dim] f32), in place (qwen3_moe's q_norm and k_norm).
void qk_norm(void* qkv, int64_t n, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q_w,
             const float* k_w, double eps, DType dtype, cudaStream_t stream);

// The paged KV cache of one layer: [num_blocks, block_size, kv_heads, head_dim] in `dtype`.
struct PagedKvView {
  void* k;
  void* v;
  int64_t block_size;
  int64_t kv_heads;
  int64_t head_dim;
};

// --- rope_kv.cu
// Per token of the batch (device arrays): its position and its cache slot
// (block_id * block_size + position % block_size).
// Rotates q (heads) and k (kv_heads) in place in qkv [n, (heads + 2 kv_heads) * head_dim] and
// writes k and v to their slots. inv_freq: [head_dim / 2] f32 on the device.
void rope_write_kv(void* qkv, int64_t n, int64_t heads, const int32_t* positions, const int32_t* slots,
                   const float* inv_freq, const PagedKvView& kv, DType dtype, cudaStream_t stream);

// --- attention.cu
// Causal attention of every new token over its sequence's cached keys and values (the new
// tokens' keys and values were written by rope_write_kv). plan_attention divides the tokens
// on the host:
// - head dims 16, 32, 64, 80, 96 and 128 (16-bit activations): query tiles for a
//   Tensor-Core flash-attention kernel, kAttentionTileTokens consecutive tokens of a prompt
//   chunk (of at least kAttentionMinTileTokens) or a single token (decode); a batch of
//   one-token tiles too small to give every SM two CTAs splits each token's keys into
//   `splits` ranges of `split_keys` positions (at least kAttentionSplitKeys, up to 8 CTAs
//   per SM); a decode step of one-token tiles only, over at least 1024 positions in all
//   (one_token_tiles), runs the kernel's one-token form, whose warps take four key blocks at
//   once;
// - other head dims: single tokens for a split-context kernel.
constexpr int64_t kAttentionTileTokens = 64;
constexpr int64_t kAttentionMinTileTokens = 8;
constexpr int64_t kAttentionSplitKeys = 256;
struct AttentionPlan {
  std::vector<int32_t> tiles;    // per tile: its first token and its token count
  std::vector<int32_t> singles;  // token indices
  int splits = 1;
  int64_t split_keys = 0;
  bool one_token_tiles = false;  // the kernel's one-token form (a decode step over >= 1024 positions in all)
};
// seq_starts/seq_tokens: per sequence of the batch, in batch order, its first position and
// its number of new tokens (a sequence's tokens are consecutive in the batch).
AttentionPlan plan_attention(const std::vector<int64_t>& seq_starts, const std::vector<int64_t>& seq_tokens,
                             int64_t heads, int64_t head_dim, int sm_count);
// An AttentionPlan uploaded to the device.
struct AttentionWork {
  const int32_t* tiles = nullptr;
  int64_t num_tiles = 0;
  const int32_t* singles = nullptr;
  int64_t num_singles = 0;
  int splits = 1;
  int64_t split_keys = 0;
  bool one_token_tiles = false;
};

// Per token (device arrays): its position and its sequence, whose block table is row
// seq_of_token[i] of `block_tables` (max_blocks entries per sequence). window 0: all earlier
// positions; else the last `window`. out: [n, heads * head_dim]. max_context bounds the
// longest context in the batch (it sizes the split of long contexts across blocks).
void paged_attention(const void* qkv, const AttentionWork& work, int64_t heads, const int32_t* positions,
                     const int32_t* seq_of_token, const int32_t* block_tables, int64_t max_blocks,
                     const PagedKvView& kv, int64_t window, int64_t max_context, void* out, float* workspace,
                     size_t workspace_floats, DType dtype, cudaStream_t stream);
// Workspace (in floats) that paged_attention needs for a plan and the given context.
size_t paged_attention_workspace(const AttentionWork& work, int64_t heads, int64_t head_dim, int64_t max_context);

// --- elementwise.cu
// out[i, :] = table[tokens[i], :] (table in `table_dtype`, out in `dtype`). Token ids were
// checked on the host.
void embedding(const void* table, DType table_dtype, int64_t dim, const int32_t* tokens, int64_t n, void* out,
               DType dtype, cudaStream_t stream);

// gate_up [n, 2 * inter] -> out [n, inter] = silu(gate) * up.
void silu_mul(const void* gate_up, int64_t n, int64_t inter, void* out, DType dtype, cudaStream_t stream);

// acc += x (n elements).
void add(void* acc, const void* x, int64_t n, DType dtype, cudaStream_t stream);

// out[i, :] = x[rows[i], :]; rows on the device.
void gather_rows(const void* x, int64_t cols, const int64_t* rows, int64_t n, void* out, DType dtype,
                 cudaStream_t stream);

// f32 copy of n 16-bit values.
void to_f32(const void* x, int64_t n, float* out, DType dtype, cudaStream_t stream);

}  // namespace fp6serve::cuda
