#include "core/gpu.h"

#include <fmt/format.h>

#include "core/check.h"

#ifdef FP6SERVE_WITH_CUDA
#include <cuda_runtime_api.h>
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

}  // namespace fp6serve
