// How a model's linear layers are stored: quantized to an FPx format while loading, or kept
// as 16/32-bit weights (the unquantized baselines).
#pragma once

#include <string>
#include <string_view>

#include "core/dtype.h"
#include "fpx/format.h"

namespace fp6serve::model {

struct QuantizationMode {
  // The mode a model gets when the user names none (and the checkpoint is not prequantized).
  static constexpr const char* kDefault = "wf6af16";
  // What parse() accepts, for help texts and errors.
  static constexpr const char* kChoices =
      "wf6af16 (FP6 e3m2), wf5af16 (e2m2), wf4af16 (e2m1), any eXmY, or fp16, "
      "bf16, fp32 (unquantized)";

  std::string name;
  bool quantized = true;
  fpx::Format format = fpx::kE3M2;  // when quantized
  DType dense_dtype = DType::kF16;  // the weight dtype when not quantized

  // Throws Error(kInvalidArgument) listing kChoices.
  static QuantizationMode parse(std::string_view name);
};

}  // namespace fp6serve::model
