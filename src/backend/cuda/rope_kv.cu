// Rotary embedding fused with the paged KV-cache write (the CUDA twin of cpu/rope_kv.cc): a
// block per (token, q or k head), a thread per rotary pair.
// Targets: sm_80 and sm_90.
#include "backend/cuda/dtype.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/ptx.cuh"

namespace fp6serve::cuda {

namespace {

// A block per (token, head), a thread per rotary pair; k heads also go to the cache, with v.
template <typename T>
__global__ void rope_write_kv_kernel(T* __restrict__ qkv, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     const int32_t* __restrict__ positions, const int32_t* __restrict__ slots,
                                     const float* __restrict__ inv_freq, T* __restrict__ k_cache,
                                     T* __restrict__ v_cache) {
  allow_dependents_to_launch();
  wait_for_previous_grid();
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

}  // namespace

void rope_write_kv(void* qkv, int64_t n, int64_t heads, const int32_t* positions, const int32_t* slots,
                   const float* inv_freq, const PagedKvView& kv, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&]<typename T>() {
    const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(heads + kv.kv_heads));
    launch_kernel(rope_write_kv_kernel<T>, grid, 64, 0, stream, static_cast<T*>(qkv), heads, kv.kv_heads, kv.head_dim,
                  positions, slots, inv_freq, static_cast<T*>(kv.k), static_cast<T*>(kv.v));
  });
  FP6_CUDA_CHECK_LAUNCH();
}
}  // namespace fp6serve::cuda
