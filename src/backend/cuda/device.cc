#include "backend/cuda/device.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "core/check.h"

namespace fp6serve::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

void require_device() {
  FP6_CHECK(device_count() > 0, kUnsupported, "no CUDA GPU is visible on this machine; use --device cpu");
}

std::string device_summary(int device) {
  if (device_count() <= device) return "no CUDA device";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "CUDA device properties unavailable";
  return fmt::format("{}, sm_{}{}, {} SMs, {:.1f} GiB, L2 {} MiB", p.name, p.major, p.minor, p.multiProcessorCount,
                     p.totalGlobalMem / double(1 << 30), p.l2CacheSize >> 20);
}

int sm_count() {
  static const int sms = [] {
    int device = 0, n = 0;
    FP6_CUDA_CHECK(cudaGetDevice(&device));
    FP6_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }();
  return sms;
}

size_t free_bytes() {
  size_t free = 0, total = 0;
  if (device_count() == 0 || cudaMemGetInfo(&free, &total) != cudaSuccess) return 0;
  return free;
}

double read_bandwidth_gbs() {
  require_device();
  const size_t bytes = size_t{2} << 30;
  void* buf = nullptr;
  void* sink = nullptr;
  FP6_CHECK(cudaMalloc(&buf, bytes) == cudaSuccess && cudaMalloc(&sink, 16) == cudaSuccess, kOutOfMemory,
            "no 2 GiB free on the GPU to measure its read bandwidth");
  cudaMemset(buf, 1, bytes);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  read_all(buf, bytes, sink);  // warm-up
  float best = 1e30f;
  for (int i = 0; i < 5; ++i) {
    cudaEventRecord(a);
    read_all(buf, bytes, sink);
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
}

}  // namespace fp6serve::cuda
