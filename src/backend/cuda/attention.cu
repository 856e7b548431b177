// Attention over the paged KV cache (ops.h), two kernels chosen per token by
// plan_attention:
//
// - Every token when the head dim has an instance (16, 32, 64, 80, 96, 128: dispatch_tile_dim):
//   a Tensor-Core flash-attention kernel. A CTA of 4 warps takes one query tile (up to kTileQ
//   consecutive tokens of one sequence, 16 rows per warp) and one head, and walks the
//   sequence's keys in blocks of kTileK: K and V blocks are gathered from the paged cache
//   into shared memory with cp.async, double-buffered; S = Q K^T and O += P V run on
//   mma.sync m16n8k16 (FP16 or BF16 inputs, FP32 accumulators) with the online softmax of
//   FlashAttention-2 in registers: the S accumulators are reused as the A fragments of P.
//   Q is read once into registers (ldmatrix), K as B fragments with ldmatrix, V with
//   ldmatrix.trans. Shared rows are padded by 16 bytes so that the eight 16-byte rows of an
//   ldmatrix phase hit different banks. Causal and sliding-window masks per element on the
//   blocks that cross them; blocks a warp cannot see are skipped. GQA: each query head reads
//   its group's K/V (from L2 after the first head). Shared memory (kTileQ + 4 kTileK) x
//   (head_dim + 8) x 2 bytes, 87 KB at 128.
//   Prompt chunks go in tiles of 64 query tokens, decode tokens (and chunks under 8 tokens)
//   in one-token tiles; a decode step too small to give every SM two CTAs splits each
//   token's keys over CTAs (gridDim.z), merged by the split-context kernel's merge kernel.
//   A decode step (one-token tiles only) over at least 1024 positions in all runs the kernel's
//   one-token form: where the general form has warp 0 alone walk the blocks (the other warps'
//   rows are past the tile), its four warps each take a 32-key block of a round of four,
//   loaded together, with their own online softmax of the token's row, merged in shared memory
//   at the end (74 KB of shared memory at head dim 128: three CTAs per SM).
//
// - Other head dims: a split-context kernel in which each warp walks a slice of the context
//   with an online softmax, a lane per key (flash-decoding); a second kernel merges the slices.
//
// Targets: sm_80 and sm_90 (mma.sync, cp.async, ldmatrix).
#include <algorithm>
#include <cfloat>
#include <numeric>
#include <string>
#include <type_traits>

#include "backend/cuda/dtype.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/ptx.cuh"

namespace fp6serve::cuda {

namespace {

// --- the split-context kernel of single tokens ---

constexpr int kContextChunk = 256;  // positions per CTA in the split-context attention
constexpr int kMaxDimPerLane = 8;   // head_dim <= 256
constexpr int kAttnWarps = 4;

// The split-context kernel: one CTA of kAttnWarps warps per (single token, head, context
// chunk). Each warp takes 32 positions at a time, a lane per position: the lane computes its key's dot product with q
// (q in shared memory, the key row read with 16-byte loads when head_dim % 8 == 0), the warp updates its online
// softmax, then accumulates the 32 value rows (lane = dimension). The warps' partial softmaxes are merged in shared
// memory. With splits > 1 the CTA leaves (max, sum, unnormalized output) in the workspace for combine.
template <typename T, bool kVec, int kDims>  // kDims: head dimensions per lane (head_dim <= 32 kDims)
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const T* qkv, const int32_t* singles, int64_t heads, int64_t kv_heads, int64_t head_dim,
                     const int32_t* positions, const int32_t* seq_of_token, const int32_t* block_tables,
                     int64_t max_blocks, const T* k_cache, const T* v_cache, int64_t block_size, int64_t window,
                     int splits, float* workspace, T* out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  __shared__ float qs[32 * kMaxDimPerLane];
  __shared__ float part_m[kAttnWarps], part_l[kAttnWarps];
  __shared__ float part_acc[kAttnWarps][32 * kMaxDimPerLane];
  const int64_t item = blockIdx.x / heads, token = singles[item], h = blockIdx.x % heads;
  const int split = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kvh = h / (heads / kv_heads);
  const int64_t p = positions[token];
  const int64_t first = window > 0 ? max(int64_t{0}, p - window + 1) : 0;
  const int64_t begin = first + static_cast<int64_t>(split) * kContextChunk;
  const int64_t end = min(p + 1, begin + kContextChunk);
  const int32_t* table = block_tables + static_cast<int64_t>(seq_of_token[token]) * max_blocks;
  const T* q = qkv + token * (heads + 2 * kv_heads) * head_dim + h * head_dim;
  const float scale = rsqrtf(static_cast<float>(head_dim));
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = to_float(q[d]) * scale;
  __syncthreads();

  float m = -FLT_MAX, l = 0.0f, acc[kDims] = {};
  for (int64_t base = begin + 32 * warp; base < end; base += 32 * kAttnWarps) {
    const int64_t j = base + lane;
    const bool valid = j < end;
    const int64_t slot = valid ? static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size : 0;
    float dot = -FLT_MAX;
    if (valid) {
      const T* kr = k_cache + (slot * kv_heads + kvh) * head_dim;
      dot = 0.0f;
      if constexpr (kVec && sizeof(T) == 2) {
        // The whole key row in flight at once, 16 bytes a load (predicated, not a loop that
        // breaks at head_dim: that kept each load behind the previous one's use, 16 round
        // trips per key at head_dim 128).
        uint4 raw_row[4 * kDims];  // head_dim <= 32 kDims
#pragma unroll
        for (int c = 0; c < 4 * kDims; ++c)
          raw_row[c] = 8 * c < head_dim ? *reinterpret_cast<const uint4*>(kr + 8 * c) : make_uint4(0, 0, 0, 0);
        float part[4] = {};  // four independent FMA chains
#pragma unroll
        for (int c = 0; c < 4 * kDims; ++c) {
          const int d = 8 * c;
          if (d >= head_dim) break;
          const uint4 raw = raw_row[c];
          const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            part[i] += qs[d + 2 * i] * bits_to_float<T>(static_cast<uint16_t>(words[i]));
            part[i] += qs[d + 2 * i + 1] * bits_to_float<T>(static_cast<uint16_t>(words[i] >> 16));
          }
        }
        dot = (part[0] + part[1]) + (part[2] + part[3]);
      } else {
        for (int64_t d = 0; d < head_dim; ++d) dot += qs[d] * to_float(kr[d]);
      }
    }
    float m_new = dot;
    for (int o = 16; o > 0; o >>= 1) m_new = fmaxf(m_new, __shfl_xor_sync(0xffffffffu, m_new, o));
    m_new = fmaxf(m, m_new);
    const float w = valid ? __expf(dot - m_new) : 0.0f, correction = __expf(m - m_new);
    float wsum = w;
    for (int o = 16; o > 0; o >>= 1) wsum += __shfl_xor_sync(0xffffffffu, wsum, o);
    l = l * correction + wsum;
    m = m_new;
#pragma unroll
    for (int k = 0; k < kDims; ++k) acc[k] *= correction;
    // The weighted value rows, 8 at a time with every load issued before the FMAs (the
    // rows are independent; a one-row loop waited on each load in turn).
    const int count = static_cast<int>(min(int64_t{32}, end - base));
    constexpr int kRows = 8;
    for (int i0 = 0; i0 < count; i0 += kRows) {
      float vals[kRows][kDims], wv[kRows];
#pragma unroll
      for (int u = 0; u < kRows; ++u) {
        const int i = min(i0 + u, count - 1);  // past the end: a valid row, weight 0
        wv[u] = i0 + u < count ? __shfl_sync(0xffffffffu, w, i) : 0.0f;
        const int64_t si = __shfl_sync(0xffffffffu, slot, i);
        const T* vr = v_cache + (si * kv_heads + kvh) * head_dim;
#pragma unroll
        for (int k = 0; k < kDims; ++k) {
          const int64_t d = lane + 32 * k;
          vals[u][k] = d < head_dim ? to_float(vr[d]) : 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kRows; ++u)
#pragma unroll
        for (int k = 0; k < kDims; ++k) acc[k] += wv[u] * vals[u][k];
    }
  }
  // Merge the warps: M = max m_w, L = sum l_w e^(m_w - M), acc = sum acc_w e^(m_w - M).
  if (lane == 0) part_m[warp] = m, part_l[warp] = l;
#pragma unroll
  for (int k = 0; k < kDims; ++k) part_acc[warp][lane + 32 * k] = acc[k];
  __syncthreads();
  float big_m = -FLT_MAX;
  for (int w = 0; w < kAttnWarps; ++w) big_m = fmaxf(big_m, part_m[w]);
  float big_l = 0.0f;
  for (int w = 0; w < kAttnWarps; ++w) big_l += part_l[w] * __expf(part_m[w] - big_m);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w) v += part_acc[w][d] * __expf(part_m[w] - big_m);
    if (splits == 1) {
      out[token * heads * head_dim + h * head_dim + d] = from_float<T>(v / big_l);
    } else {
      float* ws = workspace + ((item * heads + h) * splits + split) * (head_dim + 2);
      ws[2 + d] = v;
      if (d == 0) ws[0] = begin < end ? big_m : -FLT_MAX, ws[1] = big_l;
    }
  }
}

template <typename T>
// tokens[i * stride]: the token of item i (single tokens: stride 1; one-token tiles: 2).
__global__ void attention_combine_kernel(const int32_t* tokens, int stride, int64_t heads, int64_t head_dim, int splits,
                                         const float* workspace, T* out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  const int64_t th = blockIdx.x;  // item * heads + head
  const int64_t token = tokens[th / heads * stride], h = th % heads;
  const float* ws = workspace + th * splits * (head_dim + 2);
  float m = -FLT_MAX;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, ws[s * (head_dim + 2)]);
  float l = 0.0f;
  for (int s = 0; s < splits; ++s) l += ws[s * (head_dim + 2) + 1] * __expf(ws[s * (head_dim + 2)] - m);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += ws[s * (head_dim + 2) + 2 + d] * __expf(ws[s * (head_dim + 2)] - m);
    out[(token * heads + h) * head_dim + d] = from_float<T>(v / l);
  }
}

int context_splits(int64_t max_context) {
  return static_cast<int>(std::max<int64_t>(1, (max_context + kContextChunk - 1) / kContextChunk));
}

// --- the Tensor-Core kernel of query tiles ---

constexpr int kTileQ = kAttentionTileTokens;  // query rows per CTA, 16 per warp
constexpr int kTileK = 64;                    // keys per block
constexpr int kTileThreads = 128;
// The most CTAs per SM a split decode step makes: a sweep of 2, 4, 8 and unbounded on the H100
// (Llama-2-7B and 70B, batch 1 and 4, contexts 1024 and 4096; bench/results/) put 8 at or
// near the best everywhere.
constexpr int64_t kSplitCtasPerSm = 8;

// One-token tiles (a decode step with no prompt chunk, kOneToken): the CTA's four warps take
// four key blocks at once, each with its own online softmax over row 0 (its Q fragment is the
// same 16 rows; only row 0 is a token), merged in shared memory at the end; the blocks of a
// round are loaded together. Otherwise every warp owns 16 query rows and the CTA walks the key
// blocks one at a time, double-buffered.
constexpr int kOneTokenSlots = 4;           // key blocks in flight per one-token CTA (one per warp)
constexpr int kOneTokenBlockK = 32;         // keys per block of the one-token form
constexpr int64_t kOneTokenMinKeys = 1024;  // the least a decode step attends over, summed over its tokens, to use it
template <int kD, bool kOneToken>
constexpr int tile_smem_bytes() {
  return kOneToken ? (16 + 2 * kOneTokenSlots * kOneTokenBlockK) * (kD + 8) * 2  // Q rows 0-15, K and V of 4 blocks
                   : (kTileQ + 4 * kTileK) * (kD + 8) * 2;                       // Q, and K and V double-buffered
}

// tiles[2 i], tiles[2 i + 1]: the first token and the token count of query tile i (blockIdx.x);
// blockIdx.y: the head. scale_log2: log2(e) / sqrt(head_dim).
template <typename T, int kD, bool kOneToken>
__global__ void __launch_bounds__(kTileThreads)
    tile_attention_kernel(const T* qkv, const int32_t* tiles, int64_t heads, int64_t kv_heads, const int32_t* positions,
                          const int32_t* seq_of_token, const int32_t* block_tables, int64_t max_blocks,
                          const T* k_cache, const T* v_cache, int64_t block_size, int64_t window, float scale_log2,
                          int64_t split_keys, float* workspace, T* out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  constexpr int kStride = kD + 8, kChunks = kD / 8, kKSlices = kD / 16, kDimTiles = kD / 8;
  constexpr int kQRows = kOneToken ? 16 : kTileQ, kSlots = kOneToken ? kOneTokenSlots : 2;
  constexpr int kBlockK = kOneToken ? kOneTokenBlockK : kTileK;  // keys per block
  extern __shared__ __align__(16) uint8_t smem[];
  T* qs = reinterpret_cast<T*>(smem);
  T* ks = qs + kQRows * kStride;  // [kSlots][kBlockK][kStride]
  T* vs = ks + kSlots * kBlockK * kStride;

  const int first = tiles[2 * blockIdx.x], count = tiles[2 * blockIdx.x + 1];
  const int64_t h = blockIdx.y, kvh = h / (heads / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t width = (heads + 2 * kv_heads) * kD;
  const int64_t p0 = positions[first], p_last = p0 + count - 1;  // a tile's tokens are consecutive
  // Split-KV (one-token tiles, gridDim.z > 1): this CTA takes positions [z, z + 1) x split_keys.
  const int splits = static_cast<int>(gridDim.z), split = static_cast<int>(blockIdx.z);
  int64_t k_begin = window > 0 ? max(int64_t{0}, p0 - window + 1) : 0, k_end = p_last + 1;
  if (splits > 1) {
    k_begin = max(k_begin, split * split_keys);
    k_end = min(k_end, (split + 1) * split_keys);
  }
  const int num_blocks = k_end > k_begin ? static_cast<int>((k_end - 1 - k_begin) / kBlockK + 1) : 0;
  const int32_t* table = block_tables + static_cast<int64_t>(seq_of_token[first]) * max_blocks;

  for (int c = threadIdx.x; c < kQRows * kChunks; c += kTileThreads) {
    const int r = c / kChunks, cc = c % kChunks;
    const bool in = r < count;
    cp_async16(qs + r * kStride + cc * 8, in ? qkv + (first + r) * width + h * kD + cc * 8 : qkv, in ? 16 : 0);
  }
  // Keys [kb, kb + kBlockK) into slot `slot`; positions past the tile's last token read as zeros.
  // Positions and block sizes fit in 32 bits: 32-bit division for the block table.
  const int bs = static_cast<int>(block_size);
  auto load_kv = [&](int64_t kb, int slot) {
    for (int c = threadIdx.x; c < kBlockK * kChunks; c += kTileThreads) {
      const int r = c / kChunks, cc = c % kChunks;
      const int j = static_cast<int>(kb) + r;
      const bool in = j < k_end;
      int64_t off = 0;
      if (in) off = ((static_cast<int64_t>(table[j / bs]) * bs + j % bs) * kv_heads + kvh) * kD + cc * 8;
      const int64_t dst = (slot * kBlockK + r) * kStride + cc * 8;
      cp_async16(ks + dst, k_cache + off, in ? 16 : 0);
      cp_async16(vs + dst, v_cache + off, in ? 16 : 0);
    }
  };

  // This warp's rows: positions pos[0] (row g) and pos[1] (row g + 8) of its 16 (one-token
  // tiles: every warp has rows 0-15, row 0 the token).
  const int row0 = kOneToken ? 0 : 16 * warp;
  const bool warp_active = row0 < count;
  const int64_t warp_first = p0 + row0, warp_last = p0 + min(row0 + 15, count - 1);
  const int64_t pos[2] = {p0 + row0 + g, p0 + row0 + g + 8};
  uint32_t qf[kKSlices][4];
  float o[kDimTiles][4] = {};
  float m[2] = {-1e30f, -1e30f}, l[2] = {0.0f, 0.0f};  // finite: a fully masked block gives 0, not NaN
  auto load_q_fragments = [&] {
#pragma unroll
    for (int kk = 0; kk < kKSlices; ++kk)
      ldmatrix_x4(qf[kk], qs + (row0 + lane % 16) * kStride + kk * 16 + 8 * (lane / 16));
  };

  // The online softmax of this warp's rows over the keys [kb, kb + kBlockK) in kbuf/vbuf.
  auto attend_block = [&](const T* kbuf, const T* vbuf, int64_t kb) {
    float s[kBlockK / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < kKSlices; ++kk)
#pragma unroll
      for (int np = 0; np < kBlockK / 16; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, kbuf + (np * 16 + 8 * (lane / 16) + lane % 8) * kStride + kk * 16 + 8 * (lane / 8 % 2));
        mma<kBf16>(s[2 * np], qf[kk], r[0], r[1]);
        mma<kBf16>(s[2 * np + 1], qf[kk], r[2], r[3]);
      }
    // s[nt][e]: row g + 8 (e / 2), key kb + 8 nt + 2 t + e % 2.
    // Keys at k_end and past it were read as zeros: masked too (they are past every row's
    // position unless the keys are split).
    const bool needs_mask =
        kb + kBlockK - 1 > warp_first || kb + kBlockK > k_end || (window > 0 && kb <= warp_last - window);
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < kBlockK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t j = kb + 8 * nt + 2 * t + (e & 1), p = pos[e >> 1];
        const bool ok = !needs_mask || (j < k_end && j <= p && (window == 0 || j > p - window));
        s[nt][e] = ok ? s[nt][e] * scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
    float corr[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      corr[i] = exp2f(m[i] - mx[i]);
      m[i] = mx[i];
      l[i] *= corr[i];
    }
#pragma unroll
    for (int nt = 0; nt < kBlockK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(s[nt][e] - m[e >> 1]);
        l[e >> 1] += s[nt][e];
      }
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dt][e] *= corr[e >> 1];
        // O += P V: the S accumulators of two key tiles are the A fragment of 16 keys.
#pragma unroll
    for (int k16 = 0; k16 < kBlockK / 16; ++k16) {
      const uint32_t a[4] = {pack2<T>(s[2 * k16][0], s[2 * k16][1]), pack2<T>(s[2 * k16][2], s[2 * k16][3]),
                             pack2<T>(s[2 * k16 + 1][0], s[2 * k16 + 1][1]),
                             pack2<T>(s[2 * k16 + 1][2], s[2 * k16 + 1][3])};
#pragma unroll
      for (int dp = 0; dp < kDimTiles / 2; ++dp) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, vbuf + (k16 * 16 + lane % 8 + 8 * (lane / 8 % 2)) * kStride + dp * 16 + 8 * (lane / 16));
        mma<kBf16>(o[2 * dp], a, r[0], r[1]);
        mma<kBf16>(o[2 * dp + 1], a, r[2], r[3]);
      }
    }
  };
  auto visible = [&](int64_t kb) {
    return warp_active && kb <= warp_last && (window == 0 || kb + kBlockK - 1 > warp_first - window);
  };

  if constexpr (kOneToken) {
    // Rounds of kSlots blocks, loaded together; warp w attends block w of the round.
    for (int b0 = 0; b0 < num_blocks; b0 += kSlots) {
      for (int s = 0; s < kSlots && b0 + s < num_blocks; ++s)
        load_kv(k_begin + static_cast<int64_t>(b0 + s) * kBlockK, s);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      if (b0 == 0) load_q_fragments();
      const int64_t kb = k_begin + static_cast<int64_t>(b0 + warp) * kBlockK;
      if (b0 + warp < num_blocks && visible(kb))
        attend_block(ks + warp * kBlockK * kStride, vs + warp * kBlockK * kStride, kb);
      __syncthreads();  // the slots are refilled by the next round
    }
    cp_async_wait<0>();
  } else {
    if (num_blocks > 0) load_kv(k_begin, 0);
    cp_async_commit();
    for (int b = 0; b < num_blocks; ++b) {
      const int64_t kb = k_begin + static_cast<int64_t>(b) * kBlockK;
      if (b + 1 < num_blocks) load_kv(kb + kBlockK, (b + 1) & 1);
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();
      if (b == 0) load_q_fragments();
      if (visible(kb)) attend_block(ks + (b & 1) * kBlockK * kStride, vs + (b & 1) * kBlockK * kStride, kb);
      __syncthreads();  // the buffer of block b is refilled by the next iteration's load
    }
    cp_async_wait<0>();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
  // A split's (max in natural-log units, sum, unnormalized output) for attention_combine_kernel,
  // as the split-context kernel leaves them; m is in log2 units, and -FLT_MAX marks no keys.
  float* const split_ws = workspace + ((static_cast<int64_t>(blockIdx.x) * heads + h) * splits + split) * (kD + 2);
  auto split_max = [&](float m_log2) { return num_blocks > 0 ? m_log2 * 0.6931471805599453f : -FLT_MAX; };
  if constexpr (kOneToken) {
    // Merge the warps' row 0 (lanes with g == 0 hold it): M = max m_w, L = sum l_w 2^(m_w - M),
    // O = sum O_w 2^(m_w - M), through the shared memory of the K slots (every warp is done).
    float* part_o = reinterpret_cast<float*>(ks);  // [kSlots][kD]
    float* part_ml = part_o + kSlots * kD;         // [kSlots][2]
    if (g == 0) {
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt)
        part_o[warp * kD + 8 * dt + 2 * t] = o[dt][0], part_o[warp * kD + 8 * dt + 2 * t + 1] = o[dt][1];
      if (t == 0) part_ml[2 * warp] = m[0], part_ml[2 * warp + 1] = l[0];
    }
    __syncthreads();
    float big_m = -1e30f;
    for (int w = 0; w < kSlots; ++w) big_m = fmaxf(big_m, part_ml[2 * w]);
    float big_l = 0.0f, wt[kSlots];
    for (int w = 0; w < kSlots; ++w) wt[w] = exp2f(part_ml[2 * w] - big_m), big_l += part_ml[2 * w + 1] * wt[w];
    for (int d = threadIdx.x; d < kD; d += kTileThreads) {
      float v = 0.0f;
      for (int w = 0; w < kSlots; ++w) v += part_o[w * kD + d] * wt[w];
      if (splits > 1) {
        split_ws[2 + d] = v;
        if (d == 0) split_ws[0] = split_max(big_m), split_ws[1] = big_l;
      } else {
        out[static_cast<int64_t>(first) * heads * kD + h * kD + d] = from_float<T>(v / big_l);
      }
    }
    return;
  }
  if (splits > 1) {
    // One-token tiles of a decode step too light for the one-token form (the planner splits
    // keys only when no prompt chunk is in the batch): row 0 of warp 0 is the token.
    if (warp == 0 && g == 0) {
      if (t == 0) split_ws[0] = split_max(m[0]), split_ws[1] = l[0];
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt)
        split_ws[2 + 8 * dt + 2 * t] = o[dt][0], split_ws[3 + 8 * dt + 2 * t] = o[dt][1];
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + g + 8 * i;
    if (row >= count) continue;
    T* dst = out + (static_cast<int64_t>(first) + row) * heads * kD + h * kD + 2 * t;
    const float inv = 1.0f / l[i];
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt)
      *reinterpret_cast<uint32_t*>(dst + 8 * dt) = pack2<T>(o[dt][2 * i] * inv, o[dt][2 * i + 1] * inv);
  }
}

// Calls f.template operator()<kD>() for a head dim the tile kernel is built for; false if none.
template <typename F>
bool dispatch_tile_dim(int64_t head_dim, F&& f) {
  switch (head_dim) {
    case 16:
      f.template operator()<16>();
      return true;
    case 32:
      f.template operator()<32>();
      return true;
    case 64:
      f.template operator()<64>();
      return true;
    case 80:
      f.template operator()<80>();
      return true;
    case 96:
      f.template operator()<96>();
      return true;
    case 128:
      f.template operator()<128>();
      return true;
    default:
      return false;
  }
}

}  // namespace

AttentionPlan plan_attention(const std::vector<int64_t>& seq_starts, const std::vector<int64_t>& seq_tokens,
                             int64_t heads, int64_t head_dim, int sm_count) {
  AttentionPlan plan;
  const bool tiles_ok = dispatch_tile_dim(head_dim, [&]<int kD>() { static_assert(kD % 16 == 0 && kD <= 128); });
  struct Tile {
    int64_t first, count, end_pos;
  };
  std::vector<Tile> tiles;
  bool prompt_tiles = false;
  int64_t token = 0, max_end = 0;
  for (size_t i = 0; i < seq_tokens.size(); ++i) {
    const int64_t count = seq_tokens[i];
    max_end = std::max(max_end, seq_starts[i] + count);
    if (!tiles_ok) {
      for (int64_t f = 0; f < count; ++f) plan.singles.push_back(static_cast<int32_t>(token + f));
    } else {
      // Prompt chunks in tiles of up to kAttentionTileTokens, short chunks a tile per token.
      const int64_t per_tile = count >= kAttentionMinTileTokens ? kAttentionTileTokens : 1;
      prompt_tiles |= per_tile > 1;
      for (int64_t f = 0; f < count; f += per_tile) {
        const int64_t c = std::min(per_tile, count - f);
        tiles.push_back({token + f, c, seq_starts[i] + f + c});
      }
    }
    token += count;
  }
  // The longest key ranges first: the CTAs with the most work start first.
  std::stable_sort(tiles.begin(), tiles.end(), [](const Tile& a, const Tile& b) { return a.end_pos > b.end_pos; });
  for (const Tile& t : tiles) {
    plan.tiles.push_back(static_cast<int32_t>(t.first));
    plan.tiles.push_back(static_cast<int32_t>(t.count));
  }
  // Decode steps too small to give every SM two CTAs split their keys: at least
  // kAttentionSplitKeys positions per split, up to kSplitCtasPerSm CTAs per SM.
  const int64_t ctas = static_cast<int64_t>(tiles.size()) * heads;
  if (!prompt_tiles && ctas > 0 && ctas < 2 * int64_t{sm_count}) {
    const int64_t splits = std::min((max_end + kAttentionSplitKeys - 1) / kAttentionSplitKeys,
                                    (kSplitCtasPerSm * int64_t{sm_count} + ctas - 1) / ctas);
    if (splits > 1) {
      plan.splits = static_cast<int>(splits);
      plan.split_keys = ((max_end + splits - 1) / splits + kTileK - 1) / kTileK * kTileK;
    }
  }
  // A decode step (one-token tiles only) that attends over at least kOneTokenMinKeys positions
  // in all runs the one-token form; lighter steps keep the general form, which measured as fast
  // (Llama-2-7B) or faster (Mixtral-8x7B: batch 1 at 128 positions 5.49 against 6.00 ms per
  // step) there. bench/results/2026-11-25-pdl-h100.md.
  int64_t keys = 0;
  for (const Tile& t : tiles) keys += t.end_pos;
  plan.one_token_tiles = !tiles.empty() && !prompt_tiles && keys >= kOneTokenMinKeys;
  return plan;
}

size_t paged_attention_workspace(const AttentionWork& work, int64_t heads, int64_t head_dim, int64_t max_context) {
  const int splits = context_splits(max_context);
  const size_t singles = splits == 1 ? 0 : static_cast<size_t>(work.num_singles * heads * splits * (head_dim + 2));
  const size_t tiles = work.splits > 1 ? static_cast<size_t>(work.num_tiles * heads * work.splits * (head_dim + 2)) : 0;
  return std::max(singles, tiles);  // a plan has split tiles or single tokens, not both
}

void paged_attention(const void* qkv, const AttentionWork& work, int64_t heads, const int32_t* positions,
                     const int32_t* seq_of_token, const int32_t* block_tables, int64_t max_blocks,
                     const PagedKvView& kv, int64_t window, int64_t max_context, void* out, float* workspace,
                     size_t workspace_floats, DType dtype, cudaStream_t stream) {
  FP6_CUDA_REQUIRE(kv.head_dim <= 32 * kMaxDimPerLane, kUnsupported,
                   "head_dim " + std::to_string(kv.head_dim) + " > 256 is not supported by the CUDA attention");
  FP6_CUDA_REQUIRE(workspace_floats >= paged_attention_workspace(work, heads, kv.head_dim, max_context), kInternal,
                   "paged_attention workspace too small");
  FP6_CUDA_REQUIRE(work.splits == 1 || work.num_singles == 0, kInternal, "split tiles and single tokens in one plan");
  FP6_CUDA_REQUIRE(dtype != DType::kF32 || work.num_tiles == 0, kInternal,
                   "the tile attention takes 16-bit activations");
  dispatch(dtype, [&]<typename T>() {
    if (work.num_tiles > 0) {
      const bool built = dispatch_tile_dim(kv.head_dim, [&]<int kD>() {
        if constexpr (!std::is_same_v<T, float>) {
          auto configured = [&]<bool kOneToken>() {
            auto* kernel = tile_attention_kernel<T, kD, kOneToken>;
            static const bool once = [&] {
              FP6_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                  tile_smem_bytes<kD, kOneToken>()));
              return true;
            }();
            (void)once;
            return kernel;
          };
          auto* kernel =
              work.one_token_tiles ? configured.template operator()<true>() : configured.template operator()<false>();
          const int kSmem = work.one_token_tiles ? tile_smem_bytes<kD, true>() : tile_smem_bytes<kD, false>();
          const dim3 grid(static_cast<unsigned>(work.num_tiles), static_cast<unsigned>(heads),
                          static_cast<unsigned>(work.splits));
          launch_kernel(kernel, grid, kTileThreads, kSmem, stream, static_cast<const T*>(qkv), work.tiles, heads,
                        kv.kv_heads, positions, seq_of_token, block_tables, max_blocks, static_cast<const T*>(kv.k),
                        static_cast<const T*>(kv.v), kv.block_size, window,
                        static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(kD))), work.split_keys,
                        workspace, static_cast<T*>(out));
          if (work.splits > 1)
            launch_kernel(attention_combine_kernel<T>, static_cast<unsigned>(work.num_tiles * heads), 128, 0, stream,
                          work.tiles, 2, heads, kD, work.splits, workspace, static_cast<T*>(out));
        }
      });
      FP6_CUDA_REQUIRE(built, kInternal, "query tiles planned for a head dim the tile attention is not built for");
      FP6_CUDA_CHECK_LAUNCH();
    }
    if (work.num_singles == 0) return;
    const int splits = context_splits(window > 0 ? std::min(window, max_context) : max_context);
    const dim3 grid(static_cast<unsigned>(work.num_singles * heads), static_cast<unsigned>(splits));
    const bool vec = kv.head_dim % 8 == 0 && sizeof(T) == 2;
    auto pick = [&]<int kDims>() { return vec ? attention_kernel<T, true, kDims> : attention_kernel<T, false, kDims>; };
    auto* kernel = kv.head_dim <= 64    ? pick.template operator()<2>()
                   : kv.head_dim <= 128 ? pick.template operator()<4>()
                                        : pick.template operator()<8>();
    launch_kernel(kernel, grid, kAttnWarps * 32, 0, stream, static_cast<const T*>(qkv), work.singles, heads,
                  kv.kv_heads, kv.head_dim, positions, seq_of_token, block_tables, max_blocks,
                  static_cast<const T*>(kv.k), static_cast<const T*>(kv.v), kv.block_size, window, splits, workspace,
                  static_cast<T*>(out));
    if (splits > 1)
      launch_kernel(attention_combine_kernel<T>, static_cast<unsigned>(work.num_singles * heads), 128, 0, stream,
                    work.singles, 1, heads, kv.head_dim, splits, workspace, static_cast<T*>(out));
    FP6_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace fp6serve::cuda
