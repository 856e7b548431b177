// Reading a Hugging Face checkpoint's weights, quantizing every linear layer on the way in.
//
// Every tensor's name, dtype and shape is checked against the config before any work. Then
// the layers are read one at a time: q/k/v and gate/up are stacked into one weight each,
// quantized and packed tile by tile straight from the memory-mapped file
// (fpx::quantize_pack), and handed to the sink. The 16-bit model is never copied whole into
// memory: the peak is what the sink keeps plus one layer's packed weights.
#pragma once

#include "loader/safetensors.h"
#include "loader/weight_sink.h"
#include "model/config.h"

namespace fp6serve::loader {

// Throws (naming file and tensor) on anything missing or inconsistent with the config.
void validate_checkpoint(const Checkpoint& ckpt, const model::ModelConfig& config);

// Validates, then feeds every weight to `sink` (weight_sink.h's order).
void read_hf_weights(const Checkpoint& ckpt, const model::ModelConfig& config, const LinearSpec& spec,
                     WeightSink& sink);

}  // namespace fp6serve::loader
