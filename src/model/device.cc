#include "model/device.h"

#include "core/check.h"
#include "core/gpu.h"

namespace fp6serve::model {

std::unique_ptr<Backend> make_backend(const std::string& device, const ModelConfig& config) {
  FP6_CHECK(device == "cpu" || device == "cuda" || device == "auto", kInvalidArgument,
            "unknown device '{}' (expected auto, cpu or cuda)", device);
  if (device == "cpu") return make_cpu_backend(config);
  if (device == "cuda") {
    require_cuda();
    FP6_THROW(kUnsupported,
              "the CUDA model runtime is not part of this build yet (the FPx GEMM kernel is; the model runtime on "
              "the GPU is issue #5): use --device cpu");
  }
  return make_cpu_backend(config);  // auto: the CPU until the CUDA runtime lands
}

}  // namespace fp6serve::model
