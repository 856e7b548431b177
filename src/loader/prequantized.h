// The prequantized checkpoint that `fp6serve quantize` writes and any fp6serve loads without
// quantizing again (docs/checkpoint.md). It is a normal model directory: config.json (with a
// quantization_config naming fp6serve), the tokenizer and generation files copied, and
// model.safetensors holding, per linear layer, the packed FPx units (U8) and fp32 scales,
// plus the 16-bit embeddings and fp32 norms. The safetensors metadata key "fp6serve" says
// the mode, format, pack target and every linear layer's logical shape and format.
#pragma once

#include <filesystem>

#include "loader/safetensors.h"
#include "loader/weight_sink.h"
#include "model/config.h"

namespace fp6serve::loader {

inline constexpr const char* kPrequantizedKey = "fp6serve";
// Version 2 names each quantized layer's format (linears[name].format); version 1 files (one
// format, the metadata's "format") still load.
inline constexpr int kPrequantizedVersion = 2;

bool is_prequantized(const Checkpoint& ckpt);

// The mode the checkpoint was written in; throws kUnsupported for another format version.
model::QuantizationMode prequantized_mode(const Checkpoint& ckpt);

// Feeds the stored weights to `sink` (weight_sink.h's order), repacking the FPx layers when
// `pack_target` differs from the stored one.
void read_prequantized(const Checkpoint& ckpt, const model::ModelConfig& config, DType pack_target, WeightSink& sink);

// Quantizes model_dir as `spec` says (its pack_target is ignored: the file is packed for FP16
// tensor cores when the format allows) and writes the prequantized checkpoint to out_dir
// (created; it must not be model_dir). Peak memory: one layer's weights.
void write_prequantized(const std::filesystem::path& model_dir, const std::filesystem::path& out_dir,
                        const LinearSpec& spec);

}  // namespace fp6serve::loader
