// The kernels of device.h: random 16-bit fills and the read-bandwidth probe.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"

namespace fp6serve::cuda {

namespace {

__device__ float normal_at(uint64_t i, uint64_t seed) {
  // Two uniforms from a splitmix64 hash of the index, Box-Muller.
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const uint64_t h = mix(i * 2 + seed * 0x632BE59BD9B4E019ull);
  const float u1 = ((h >> 40) + 1) * (1.0f / 16777217.0f), u2 = ((h >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

__global__ void fill_kernel(uint16_t* p, int64_t n, uint64_t seed, float stddev, bool bf16) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = normal_at(static_cast<uint64_t>(i), seed) * stddev;
    p[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
  }
}

__global__ void read_kernel(const uint4* p, int64_t n, uint4* sink) {
  uint4 acc = {0, 0, 0, 0};
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const uint4 v = p[i];
    acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w;
  }
  if ((acc.x & acc.y & acc.z & acc.w) == 0xFFFFFFFFu) *sink = acc;  // never true for real data
}

}  // namespace

void fill_normal(void* p, int64_t n, uint64_t seed, float stddev, bool bf16) {
  fill_kernel<<<4096, 256>>>(static_cast<uint16_t*>(p), n, seed, stddev, bf16);
  FP6_CUDA_CHECK_LAUNCH();
}

void read_all(const void* p, size_t bytes, void* sink) {
  read_kernel<<<sm_count() * 8, 512>>>(static_cast<const uint4*>(p), static_cast<int64_t>(bytes / 16),
                                       static_cast<uint4*>(sink));
  FP6_CUDA_CHECK_LAUNCH();
}

}  // namespace fp6serve::cuda
