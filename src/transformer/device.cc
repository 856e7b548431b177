#include "transformer/device.h"

#include "backend/cpu/cpu_backend.h"
#include "core/check.h"
#include "core/thread_pool.h"
#ifdef FP6SERVE_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#include "backend/cuda/nccl_communicator.h"
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
  return cuda::device_count();
#else
  return 0;
#endif
}

std::string cuda_device_summary() {
#ifdef FP6SERVE_WITH_CUDA
  return cuda::device_summary();
#else
  return "CUDA backend not built";
#endif
}

namespace {

void require_cuda() {
  FP6_CHECK(cuda_built(), kUnsupported,
            "the CUDA backend was not built into this fp6serve (configure with nvcc available, FP6SERVE_CUDA=AUTO "
            "or ON); use --device cpu");
  FP6_CHECK(cuda_device_count() > 0, kUnsupported, "no CUDA GPU is visible on this machine; use --device cpu");
}

}  // namespace

double cuda_read_bandwidth_gbs() {
  require_cuda();
#ifdef FP6SERVE_WITH_CUDA
  return cuda::read_bandwidth_gbs();
#else
  return 0;
#endif
}

std::unique_ptr<Backend> make_backend(const model::ModelConfig& config, const model::QuantizationMode& mode,
                                      const Options& options, int rank) {
  const std::string& device = options.device;
  FP6_CHECK(device == "cpu" || device == "cuda" || device == "auto", kInvalidArgument,
            "unknown device '{}' (expected auto, cpu or cuda)", device);
  const int ranks = options.tensor_parallel_size;
  FP6_CHECK(rank >= 0 && rank < ranks, kInternal, "rank {} of tensor_parallel_size {}", rank, ranks);
  const bool f32 = !mode.quantized && mode.dense_dtype == DType::kF32;
  FP6_CHECK(!(f32 && device == "cuda"), kUnsupported,
            "the fp32 mode runs on the CPU (the CUDA backend computes in FP16/BF16): use --device cpu or "
            "--quantization-mode fp16");
  if (device == "cuda") require_cuda();
  ThreadPool::resize_global(options.threads);  // CPU kernels, and quantization on load for any backend
  if (device == "cpu" || f32 || cuda_device_count() == 0) return cpu::make_cpu_backend(config, options);
#ifdef FP6SERVE_WITH_CUDA
  FP6_CHECK(ranks <= cuda_device_count(), kUnsupported,
            "tensor_parallel_size {} needs {} GPUs, but this machine has {} visible (or use --device cpu, where the "
            "ranks are threads: for testing)",
            ranks, ranks, cuda_device_count());
  FP6_CHECK(ranks == 1 || cuda::nccl_built(), kUnsupported,
            "tensor_parallel_size {} on the GPU needs NCCL, which this fp6serve was built without (configure with "
            "NCCL's nccl.h and libnccl in the CUDA toolkit)",
            ranks);
  return cuda::make_cuda_backend(config, options, rank);
#else
  FP6_ASSERT(false);
#endif
}

std::vector<std::unique_ptr<Communicator>> make_communicators(const std::vector<Backend*>& backends) {
  FP6_ASSERT(!backends.empty());
  if (backends.size() == 1) {
    std::vector<std::unique_ptr<Communicator>> one;
    one.push_back(solo_communicator());
    return one;
  }
  const Device device = backends.front()->device();
  for (const Backend* b : backends) FP6_ASSERT(b->device() == device);
  if (device == Device::kCpu) return host_communicators(static_cast<int>(backends.size()));
#ifdef FP6SERVE_WITH_CUDA
  return cuda::nccl_communicators(backends);
#else
  FP6_ASSERT(false);
#endif
}

}  // namespace fp6serve
