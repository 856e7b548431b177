#include "model/device.h"

#include "core/check.h"
#include "core/gpu.h"

namespace fp6serve::model {

std::unique_ptr<Backend> make_backend(const std::string& device, const ModelConfig& config,
                                      const QuantizationMode& mode) {
  FP6_CHECK(device == "cpu" || device == "cuda" || device == "auto", kInvalidArgument,
            "unknown device '{}' (expected auto, cpu or cuda)", device);
  const bool f32 = !mode.quantized && mode.dense_dtype == DType::kF32;
  FP6_CHECK(!(f32 && device == "cuda"), kUnsupported,
            "the fp32 mode runs on the CPU (the CUDA backend computes in FP16/BF16): use --device cpu or "
            "--quantization-mode fp16");
  if (device == "cpu" || f32) return make_cpu_backend(config);
#ifdef FP6SERVE_WITH_CUDA
  if (device == "cuda" || cuda_device_count() > 0) return make_cuda_backend(config);
#else
  FP6_CHECK(device != "cuda", kUnsupported, "this build of fp6serve has no CUDA backend (configure with nvcc found)");
#endif
  return make_cpu_backend(config);
}

}  // namespace fp6serve::model
