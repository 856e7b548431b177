// CUDA transformer ops (see transformer_ops.h). Simple, correct kernels first: one block per
// row for the norms, one thread per rotary pair, and a split-context attention in which one
// warp walks a slice of a sequence's cached keys with an online softmax (flash-decoding), so a
// long context spreads over many warps and a decode step of a big batch fills the GPU.
// Targets: sm_80 and sm_90 (no architecture-specific instructions).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/transformer_ops.h"

namespace fp6serve::cuda {

namespace {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_float(float v) { return v; }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ float from_float(float v) { return v; }

// Calls f.template operator()<T>() with T the CUDA type of a 16-bit (or f32) dtype.
template <typename F>
void dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF16: f.template operator()<__half>(); return;
    case DType::kBF16: f.template operator()<__nv_bfloat16>(); return;
    case DType::kF32: f.template operator()<float>(); return;
    default: FP6_CUDA_REQUIRE(false, kInvalidArgument, std::string("CUDA ops take f16, bf16 or f32, not ") + dtype_name(dtype));
  }
}

// The kernels that precede a linear layer let it launch early (programmatic dependent launch,
// sm_90): its CTAs start streaming their weights while this kernel runs, and wait for its
// completion before reading activations (fpx_gemm_kernel.cuh).
__device__ __forceinline__ void allow_dependents_to_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

constexpr int kNormThreads = 512;
constexpr int kNormPerThread = 16;  // rows up to 8192 stay in registers between the two passes

__device__ float block_sum(float v) {
  __shared__ float partial[kNormThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < kNormThreads / 32; ++i) total += partial[i];
  __syncthreads();
  return total;
}

template <typename Tin, typename Tout>
__global__ void embedding_kernel(const Tin* table, int64_t dim, const int32_t* tokens, Tout* out) {
  const int64_t row = blockIdx.x;
  const Tin* src = table + static_cast<int64_t>(tokens[row]) * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) out[row * dim + j] = from_float<Tout>(to_float(src[j]));
}

// Residual add (optional) then RMSNorm of one row per block; the row stays in registers
// (rows longer than kNormThreads * kNormPerThread are read twice).
template <typename T, bool kAdd>
__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(T* residual, const T* x, const float* w, int64_t dim, float eps, T* out) {
  allow_dependents_to_launch();
  const int64_t row = blockIdx.x;
  const T* in = x + row * dim;
  T* res = kAdd ? residual + row * dim : nullptr;
  T* o = out + row * dim;
  // The value the norm sees: the residual sum as stored (rounded), like the CPU twin.
  auto load = [&](int j) {
    float v = to_float(in[j]);
    if constexpr (kAdd) {
      const T sum = from_float<T>(v + to_float(res[j]));
      res[j] = sum;
      v = to_float(sum);
    }
    return v;
  };
  float vals[kNormPerThread];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int j = static_cast<int>(threadIdx.x) + k * kNormThreads;
    vals[k] = j < dim ? load(j) : 0.0f;
    ss += vals[k] * vals[k];
  }
  for (int j = static_cast<int>(threadIdx.x) + kNormPerThread * kNormThreads; j < dim; j += kNormThreads) {
    const float v = load(j);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int j = static_cast<int>(threadIdx.x) + k * kNormThreads;
    if (j < dim) o[j] = from_float<T>(w[j] * (vals[k] * inv));
  }
  for (int j = static_cast<int>(threadIdx.x) + kNormPerThread * kNormThreads; j < dim; j += kNormThreads) {
    const float v = kAdd ? to_float(res[j]) : to_float(in[j]);
    o[j] = from_float<T>(w[j] * (v * inv));
  }
}

// A block per (token, head), a thread per rotary pair; k heads also go to the cache, with v.
template <typename T>
__global__ void rope_write_kv_kernel(T* qkv, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     const int32_t* positions, const int32_t* slots, const float* inv_freq, T* k_cache,
                                     T* v_cache) {
  const int64_t token = blockIdx.x, h = blockIdx.y;  // a block per (token, q or k head)
  const int64_t half = head_dim / 2;
  const int64_t width = (heads + 2 * kv_heads) * head_dim;
  T* row = qkv + token * width;
  const auto pos = static_cast<float>(positions[token]);
  const int64_t slot = slots[token];
  for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
    T* v = row + h * head_dim;
    float s, c;
    sincosf(pos * inv_freq[j], &s, &c);
    const float a = to_float(v[j]), b = to_float(v[j + half]);
    const T ra = from_float<T>(a * c - b * s), rb = from_float<T>(b * c + a * s);
    v[j] = ra;
    v[j + half] = rb;
    if (h >= heads) {
      const int64_t kvh = h - heads;
      T* dst = k_cache + (slot * kv_heads + kvh) * head_dim;
      dst[j] = ra;
      dst[j + half] = rb;
      const T* vsrc = row + (heads + kv_heads + kvh) * head_dim;
      T* vdst = v_cache + (slot * kv_heads + kvh) * head_dim;
      vdst[j] = vsrc[j];
      vdst[j + half] = vsrc[j + half];
    }
  }
}

template <typename T>
__device__ __forceinline__ float bits_to_float(uint16_t b) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(__ushort_as_half(b));
  else return __bfloat162float(__ushort_as_bfloat16(b));
}

constexpr int kContextChunk = 256;  // positions per CTA in the split-context attention
constexpr int kMaxDimPerLane = 8;   // head_dim <= 256
constexpr int kAttnWarps = 4;

// One CTA of kAttnWarps warps per (token, head, context chunk). Each warp takes 32 positions
// at a time, a lane per position: the lane computes its key's dot product with q (q in shared
// memory, the key row read with 16-byte loads when head_dim % 8 == 0), the warp updates its
// online softmax, then accumulates the 32 value rows (lane = dimension). The warps' partial
// softmaxes are merged in shared memory. With splits > 1 the CTA leaves (max, sum,
// unnormalized output) in the workspace for combine.
template <typename T, bool kVec, int kDims>  // kDims: head dimensions per lane (head_dim <= 32 kDims)
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const T* qkv, int64_t heads, int64_t kv_heads, int64_t head_dim, const int32_t* positions,
                     const int32_t* seq_of_token, const int32_t* block_tables, int64_t max_blocks, const T* k_cache,
                     const T* v_cache, int64_t block_size, int64_t window, int splits, float* workspace, T* out) {
  allow_dependents_to_launch();
  __shared__ float qs[32 * kMaxDimPerLane];
  __shared__ float part_m[kAttnWarps], part_l[kAttnWarps];
  __shared__ float part_acc[kAttnWarps][32 * kMaxDimPerLane];
  const int64_t token = blockIdx.x / heads, h = blockIdx.x % heads;
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
        float part[4] = {};  // four independent FMA chains
#pragma unroll
        for (int c = 0; c < 4 * kDims; ++c) {  // 16 bytes at a time; head_dim <= 32 kDims
          const int d = 8 * c;
          if (d >= head_dim) break;
          const uint4 raw = *reinterpret_cast<const uint4*>(kr + d);
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
      float* ws = workspace + ((token * heads + h) * splits + split) * (head_dim + 2);
      ws[2 + d] = v;
      if (d == 0) ws[0] = begin < end ? big_m : -FLT_MAX, ws[1] = big_l;
    }
  }
}

template <typename T>
__global__ void attention_combine_kernel(int64_t heads, int64_t head_dim, int splits, const float* workspace, T* out) {
  allow_dependents_to_launch();
  const int64_t th = blockIdx.x;  // token * heads + head
  const float* ws = workspace + th * splits * (head_dim + 2);
  float m = -FLT_MAX;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, ws[s * (head_dim + 2)]);
  float l = 0.0f;
  for (int s = 0; s < splits; ++s) l += ws[s * (head_dim + 2) + 1] * __expf(ws[s * (head_dim + 2)] - m);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += ws[s * (head_dim + 2) + 2 + d] * __expf(ws[s * (head_dim + 2)] - m);
    out[th * head_dim + d] = from_float<T>(v / l);
  }
}

template <typename T>
__global__ void silu_mul_kernel(const T* gate_up, int64_t inter, T* out) {
  allow_dependents_to_launch();
  const int64_t row = blockIdx.y;
  for (int64_t j = blockIdx.x * blockDim.x + threadIdx.x; j < inter; j += gridDim.x * blockDim.x) {
    const float g = to_float(gate_up[row * 2 * inter + j]), u = to_float(gate_up[row * 2 * inter + inter + j]);
    out[row * inter + j] = from_float<T>(g / (1.0f + __expf(-g)) * u);
  }
}

template <typename T>
__global__ void add_kernel(T* acc, const T* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    acc[i] = from_float<T>(to_float(acc[i]) + to_float(x[i]));
}

template <typename T>
__global__ void gather_rows_kernel(const T* x, int64_t cols, const int64_t* rows, T* out) {
  const int64_t r = blockIdx.x;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) out[r * cols + j] = x[rows[r] * cols + j];
}

template <typename T>
__global__ void to_f32_kernel(const T* x, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = to_float(x[i]);
}

unsigned elementwise_blocks(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535)); }

int context_splits(int64_t max_context) {
  return static_cast<int>(std::max<int64_t>(1, (max_context + kContextChunk - 1) / kContextChunk));
}

}  // namespace

void embedding(const void* table, DType table_dtype, int64_t dim, const int32_t* tokens, int64_t n, void* out,
               DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(table_dtype, [&]<typename Tin>() {
    dispatch(dtype, [&]<typename Tout>() {
      embedding_kernel<<<static_cast<unsigned>(n), 256, 0, stream>>>(static_cast<const Tin*>(table), dim, tokens,
                                                                      static_cast<Tout*>(out));
    });
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void rms_norm(const void* x, const float* w, int64_t rows, int64_t dim, double eps, void* out, DType dtype,
              cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&]<typename T>() {
    rms_norm_kernel<T, false><<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(
        nullptr, static_cast<const T*>(x), w, dim, static_cast<float>(eps), static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void add_rms_norm(void* residual, const void* x, const float* w, int64_t rows, int64_t dim, double eps, void* out,
                  DType dtype, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&]<typename T>() {
    rms_norm_kernel<T, true><<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(
        static_cast<T*>(residual), static_cast<const T*>(x), w, dim, static_cast<float>(eps), static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void rope_write_kv(void* qkv, int64_t n, int64_t heads, const int32_t* positions, const int32_t* slots,
                   const float* inv_freq, const PagedKvView& kv, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(heads + kv.kv_heads));
    rope_write_kv_kernel<T><<<grid, 64, 0, stream>>>(
        static_cast<T*>(qkv), heads, kv.kv_heads, kv.head_dim, positions, slots, inv_freq, static_cast<T*>(kv.k),
        static_cast<T*>(kv.v));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

size_t paged_attention_workspace(int64_t n, int64_t heads, int64_t head_dim, int64_t max_context) {
  const int splits = context_splits(max_context);
  return splits == 1 ? 0 : static_cast<size_t>(n * heads * splits * (head_dim + 2));
}

void paged_attention(const void* qkv, int64_t n, int64_t heads, const int32_t* positions, const int32_t* seq_of_token,
                     const int32_t* block_tables, int64_t max_blocks, const PagedKvView& kv, int64_t window,
                     int64_t max_context, void* out, float* workspace, size_t workspace_floats, DType dtype,
                     cudaStream_t stream) {
  if (n == 0) return;
  FP6_CUDA_REQUIRE(kv.head_dim <= 32 * kMaxDimPerLane, kUnsupported,
                   "head_dim " + std::to_string(kv.head_dim) + " > 256 is not supported by the CUDA attention");
  const int splits = context_splits(window > 0 ? std::min(window, max_context) : max_context);
  FP6_CUDA_REQUIRE(workspace_floats >= paged_attention_workspace(n, heads, kv.head_dim, max_context), kInternal,
                   "paged_attention workspace too small");
  dispatch(dtype, [&]<typename T>() {
    const dim3 grid(static_cast<unsigned>(n * heads), static_cast<unsigned>(splits));
    const bool vec = kv.head_dim % 8 == 0 && sizeof(T) == 2;
    auto pick = [&]<int kDims>() { return vec ? attention_kernel<T, true, kDims> : attention_kernel<T, false, kDims>; };
    auto* kernel = kv.head_dim <= 64 ? pick.template operator()<2>()
                   : kv.head_dim <= 128 ? pick.template operator()<4>() : pick.template operator()<8>();
    kernel<<<grid, kAttnWarps * 32, 0, stream>>>(static_cast<const T*>(qkv), heads, kv.kv_heads, kv.head_dim, positions,
                                                 seq_of_token, block_tables, max_blocks, static_cast<const T*>(kv.k),
                                                 static_cast<const T*>(kv.v), kv.block_size, window, splits, workspace,
                                                 static_cast<T*>(out));
    if (splits > 1)
      attention_combine_kernel<T><<<static_cast<unsigned>(n * heads), 128, 0, stream>>>(heads, kv.head_dim, splits,
                                                                                         workspace, static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void silu_mul(const void* gate_up, int64_t n, int64_t inter, void* out, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>((inter + 255) / 256, 1024)), static_cast<unsigned>(n));
    silu_mul_kernel<T><<<grid, 256, 0, stream>>>(static_cast<const T*>(gate_up), inter, static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void add(void* acc, const void* x, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    add_kernel<T><<<elementwise_blocks(n), 256, 0, stream>>>(static_cast<T*>(acc), static_cast<const T*>(x), n);
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void gather_rows(const void* x, int64_t cols, const int64_t* rows, int64_t n, void* out, DType dtype,
                 cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    gather_rows_kernel<T><<<static_cast<unsigned>(n), 256, 0, stream>>>(static_cast<const T*>(x), cols, rows,
                                                                         static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void to_f32(const void* x, int64_t n, float* out, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    to_f32_kernel<T><<<elementwise_blocks(n), 256, 0, stream>>>(static_cast<const T*>(x), n, out);
  });
  FP6_CUDA_CHECK_LAUNCH();
}

}  // namespace fp6serve::cuda
