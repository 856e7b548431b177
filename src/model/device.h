// Choosing the backend a model runs on from a user's --device.
#pragma once

#include <memory>
#include <string>

#include "model/backend.h"

namespace fp6serve::model {

// "cpu", "cuda" or "auto" (cuda when built and a GPU is visible, else cpu) for a model in
// `mode`. The CUDA backend computes in 16 bits, so the fp32 mode runs on the CPU: "auto" picks
// it, "cuda" is an error. Throws kInvalidArgument for other names and kUnsupported when cuda
// cannot be used.
std::unique_ptr<Backend> make_backend(const std::string& device, const ModelConfig& config,
                                      const QuantizationMode& mode);

}  // namespace fp6serve::model
