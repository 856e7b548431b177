// The prequantized checkpoint that `fp6serve quantize` writes and any fp6serve loads without
// quantizing again (docs/checkpoint.md). It is a normal model directory: config.json (with a
// quantization_config naming fp6serve), the tokenizer and generation files copied, and
// model.safetensors holding, per linear layer, the packed FPx units (U8) and fp32 scales,
// plus the 16-bit embeddings and fp32 norms. The safetensors metadata key "fp6serve" says
// the mode, format, pack target and every linear layer's logical shape.
#pragma once

#include <filesystem>

#include "model/backend.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace fp6serve::model {

inline constexpr const char* kPrequantizedKey = "fp6serve";
inline constexpr int kPrequantizedVersion = 1;

bool is_prequantized(const Checkpoint& ckpt);

// Loads a prequantized checkpoint. Repacks when the backend wants the other pack target;
// throws kInvalidArgument when options.mode_explicit names another mode than the stored one.
ModelWeights load_prequantized(const Checkpoint& ckpt, const ModelConfig& config, const LoadOptions& options,
                               Backend& backend);

// Quantizes model_dir and writes the prequantized checkpoint to out_dir (created; it must
// not be model_dir). Peak memory: one layer's weights.
void write_prequantized(const std::filesystem::path& model_dir, const std::filesystem::path& out_dir,
                        const LoadOptions& options);

}  // namespace fp6serve::model
