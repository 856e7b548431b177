// RMSNorm and RMSNorm fused with the residual add (the CUDA twins of cpu/norm.cc): a block of
// kNormThreads per row, the row held in registers between the two passes; and the per-head
// RMSNorm of q and k (qk_norm), a warp per head.
// Targets: sm_80 and sm_90 (no architecture-specific instructions but griddepcontrol).
#include "backend/cuda/dtype.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/ptx.cuh"

namespace fp6serve::cuda {

namespace {

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

// Residual add (optional) then RMSNorm of one row per block; the row stays in registers
// (rows longer than kNormThreads * kNormPerThread are read twice). Every load of the row
// (and of w) is issued before the first store: with pointers that might alias, the compiler
// kept each load behind the previous store, one L2 round trip per element (9.5 us per 4096-row
// on the H100, Nsight Compute; the outputs never overlap the inputs, hence __restrict__).
template <typename T, bool kAdd>
__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(T* __restrict__ residual, const T* __restrict__ x, const float* __restrict__ w, int64_t dim,
                    float eps, T* __restrict__ out) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  const int64_t row = blockIdx.x;
  const T* in = x + row * dim;
  T* res = kAdd ? residual + row * dim : nullptr;
  T* o = out + row * dim;
  float vals[kNormPerThread], ws[kNormPerThread];
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int j = static_cast<int>(threadIdx.x) + k * kNormThreads;
    vals[k] = j < dim ? to_float(in[j]) + (kAdd ? to_float(res[j]) : 0.0f) : 0.0f;
    ws[k] = j < dim ? w[j] : 0.0f;
  }
  // The value the norm sees: the residual sum as stored (rounded), like the CPU twin.
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int j = static_cast<int>(threadIdx.x) + k * kNormThreads;
    if constexpr (kAdd) {
      const T sum = from_float<T>(vals[k]);
      if (j < dim) res[j] = sum;
      vals[k] = j < dim ? to_float(sum) : 0.0f;
    }
    ss += vals[k] * vals[k];
  }
  for (int j = static_cast<int>(threadIdx.x) + kNormPerThread * kNormThreads; j < dim; j += kNormThreads) {
    float v = to_float(in[j]);
    if constexpr (kAdd) {
      const T sum = from_float<T>(v + to_float(res[j]));
      res[j] = sum;
      v = to_float(sum);
    }
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int j = static_cast<int>(threadIdx.x) + k * kNormThreads;
    if (j < dim) o[j] = from_float<T>(ws[k] * (vals[k] * inv));
  }
  for (int j = static_cast<int>(threadIdx.x) + kNormPerThread * kNormThreads; j < dim; j += kNormThreads) {
    const float v = kAdd ? to_float(res[j]) : to_float(in[j]);
    o[j] = from_float<T>(w[j] * (v * inv));
  }
}
// qk_norm: a warp per head vector (token i, head h of the q heads then the k heads), the
// vector in f32, normalized in place.
template <typename T>
__global__ void qk_norm_kernel(T* __restrict__ qkv, int64_t vectors, int heads, int kv_heads, int head_dim,
                               const float* __restrict__ q_w, const float* __restrict__ k_w, float eps) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
  const int64_t v = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (v >= vectors) return;
  const int64_t token = v / (heads + kv_heads);
  const int h = static_cast<int>(v % (heads + kv_heads));
  T* x = qkv + token * (heads + 2 * kv_heads) * head_dim + static_cast<int64_t>(h) * head_dim;
  const float* w = h < heads ? q_w : k_w;
  float ss = 0.0f;
  for (int j = lane; j < head_dim; j += 32) ss += to_float(x[j]) * to_float(x[j]);
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const float inv = rsqrtf(ss / static_cast<float>(head_dim) + eps);
  for (int j = lane; j < head_dim; j += 32) x[j] = from_float<T>(w[j] * (to_float(x[j]) * inv));
}

}  // namespace

void qk_norm(void* qkv, int64_t n, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q_w,
             const float* k_w, double eps, DType dtype, cudaStream_t stream) {
  const int64_t vectors = n * (heads + kv_heads);
  if (vectors == 0) return;
  dispatch(dtype, [&]<typename T>() {
    launch_kernel(qk_norm_kernel<T>, static_cast<unsigned>((vectors * 32 + 255) / 256), 256, 0, stream,
                  static_cast<T*>(qkv), vectors, static_cast<int>(heads), static_cast<int>(kv_heads),
                  static_cast<int>(head_dim), q_w, k_w, static_cast<float>(eps));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void rms_norm(const void* x, const float* w, int64_t rows, int64_t dim, double eps, void* out, DType dtype,
              cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&]<typename T>() {
    launch_kernel(rms_norm_kernel<T, false>, static_cast<unsigned>(rows), kNormThreads, 0, stream, nullptr,
                  static_cast<const T*>(x), w, dim, static_cast<float>(eps), static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}

void add_rms_norm(void* residual, const void* x, const float* w, int64_t rows, int64_t dim, double eps, void* out,
                  DType dtype, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&]<typename T>() {
    launch_kernel(rms_norm_kernel<T, true>, static_cast<unsigned>(rows), kNormThreads, 0, stream,
                  static_cast<T*>(residual), static_cast<const T*>(x), w, dim, static_cast<float>(eps),
                  static_cast<T*>(out));
  });
  FP6_CUDA_CHECK_LAUNCH();
}
}  // namespace fp6serve::cuda
