#include "core/gpu.h"

#include <fmt/format.h>

#include "core/check.h"

#ifdef FP6SERVE_WITH_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>

#include "kernels/cuda/measure.h"
#endif

namespace fp6serve {

bool cuda_built() {
#ifdef FP6SERVE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef FP6SERVE_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

void require_cuda() {
  FP6_CHECK(cuda_built(), kUnsupported,
            "the CUDA backend was not built into this fp6serve (configure with nvcc available, "
            "FP6SERVE_CUDA=AUTO or ON); use --device cpu");
  FP6_CHECK(cuda_device_count() > 0, kUnsupported, "no CUDA GPU is visible on this machine; use --device cpu");
}

std::string cuda_device_summary(int device) {
#ifdef FP6SERVE_WITH_CUDA
  if (cuda_device_count() <= device) return "no CUDA device";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "CUDA device properties unavailable";
  return fmt::format("{}, sm_{}{}, {} SMs, {:.1f} GiB, L2 {} MiB", p.name, p.major, p.minor, p.multiProcessorCount,
                     p.totalGlobalMem / double(1 << 30), p.l2CacheSize >> 20);
#else
  (void)device;
  return "CUDA backend not built";
#endif
}

size_t cuda_free_bytes() {
#ifdef FP6SERVE_WITH_CUDA
  size_t free = 0, total = 0;
  if (cuda_device_count() == 0 || cudaMemGetInfo(&free, &total) != cudaSuccess) return 0;
  return free;
#else
  return 0;
#endif
}

double cuda_read_bandwidth_gbs() {
  require_cuda();
#ifdef FP6SERVE_WITH_CUDA
  const size_t bytes = size_t{2} << 30;
  void* buf = nullptr;
  void* sink = nullptr;
  FP6_CHECK(cudaMalloc(&buf, bytes) == cudaSuccess && cudaMalloc(&sink, 16) == cudaSuccess, kOutOfMemory,
            "no 2 GiB free on the GPU to measure its read bandwidth");
  cudaMemset(buf, 1, bytes);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cuda::read_all(buf, bytes, sink);  // warm-up
  float best = 1e30f;
  for (int i = 0; i < 5; ++i) {
    cudaEventRecord(a);
    cuda::read_all(buf, bytes, sink);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    best = std::min(best, ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaFree(buf);
  cudaFree(sink);
  return static_cast<double>(bytes) / (best * 1e-3) / 1e9;
#else
  return 0;
#endif
}

}  // namespace fp6serve
