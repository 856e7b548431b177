#include "model/quantization.h"

#include "core/check.h"

namespace fp6serve::model {

QuantizationMode QuantizationMode::parse(std::string_view name) {
  QuantizationMode m;
  m.name = std::string(name);
  if (name == "wf6af16") {
    m.format = kFp6Formats[0];
    m.per_layer_fp6 = true;
  } else if (name == "wf5af16") {
    m.format = fpx::kE2M2;
  } else if (name == "wf4af16") {
    m.format = fpx::kE2M1;
  } else if (name == "fp16" || name == "bf16" || name == "fp32") {
    m.quantized = false;
    m.dense_dtype = name == "fp16" ? DType::kF16 : name == "bf16" ? DType::kBF16 : DType::kF32;
  } else {
    try {
      m.format = fpx::parse_format(name);
    } catch (const Error&) {
      FP6_THROW(kInvalidArgument, "unknown quantization mode '{}' (expected {})", name, kChoices);
    }
  }
  return m;
}

}  // namespace fp6serve::model
