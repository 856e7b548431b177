// How a model's linear layers are stored: quantized to an FPx format while loading, or kept
// as 16/32-bit weights (the unquantized baselines).
#pragma once

#include <span>
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
      "wf6af16 (FP6: e2m3 or e3m2 per layer), wf5af16 (e2m2), wf4af16 (e2m1), any eXmY (e.g. e3m2, "
      "e2m3: that format in every layer), or fp16, bf16, fp32 (unquantized)";
  // wf6af16's candidates: each linear layer (all experts of one kind of one MoE layer together)
  // is quantized in whichever quantizes its weights with the least summed squared error
  // (fpx::best_format: over evenly spaced rows of a large layer), the first on ties. Both run
  // on the same kernels at the same speed.
  static constexpr fpx::Format kFp6Formats[] = {fpx::kE2M3, fpx::kE3M2};

  std::string name;
  bool quantized = true;
  // When quantized: the format of every linear layer, or with per_layer_fp6 the first of
  // kFp6Formats (e2m3), the format random weights get (fpx::best_format picks it for
  // Gaussian rows) and the one pack targets are asked for (both FP6 formats have the same).
  fpx::Format format = fpx::kE3M2;
  bool per_layer_fp6 = false;       // wf6af16: the format is chosen per layer from kFp6Formats
  DType dense_dtype = DType::kF16;  // the weight dtype when not quantized

  // The formats a linear layer may be quantized in: kFp6Formats, or {format}.
  std::span<const fpx::Format> formats() const {
    return per_layer_fp6 ? std::span<const fpx::Format>(kFp6Formats) : std::span<const fpx::Format>(&format, 1);
  }

  // Throws Error(kInvalidArgument) listing kChoices.
  static QuantizationMode parse(std::string_view name);
};

}  // namespace fp6serve::model
