// Model configuration from a Hugging Face config.json (and generation_config.json).
//
// Both layouts seen in the wild are read: transformers 4.x (torch_dtype, rope_theta,
// rope_scaling) and 5.x (dtype, rope_parameters). Families: llama (Llama-2, Llama-3 with
// rope_type "llama3"), mistral, qwen2. Every field is validated; a bad one is an
// Error(kBadInput) naming the file and the field, an unknown model_type is kUnsupported
// naming the supported list.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace fp6serve::model {

enum class Family { kLlama, kMistral, kQwen2 };
const char* family_name(Family family);

struct RopeConfig {
  std::string type = "default";  // default, linear, llama3
  double theta = 10000.0;
  double factor = 1.0;                   // linear, llama3
  double low_freq_factor = 1.0;          // llama3
  double high_freq_factor = 4.0;         // llama3
  int64_t original_max_position = 8192;  // llama3
};

struct ModelConfig {
  std::string model_type;
  Family family = Family::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;       // q, k, v projections carry biases (qwen2; llama attention_bias)
  bool o_bias = false;         // o projection carries a bias (llama attention_bias)
  bool mlp_bias = false;       // gate, up, down carry biases (llama mlp_bias)
  int64_t sliding_window = 0;  // 0: full attention
  DType dtype = DType::kBF16;  // the checkpoint's declared dtype
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;

  int64_t q_size() const { return num_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }

  // Parses dir/config.json. Throws kNotFound, kBadInput (naming the field) or kUnsupported.
  static ModelConfig load(const std::filesystem::path& dir);
  static ModelConfig parse(const std::string& json_text, const std::string& source);
  // A model shape by name: llama2-7b, llama2-13b, llama2-70b, llama3-8b (FP16), or the path of
  // a config.json (or of a directory holding one).
  static ModelConfig shape(const std::string& name);

  // RoPE inverse frequencies [head_dim / 2] after scaling, in float as Hugging Face computes them.
  std::vector<float> rope_inv_freq() const;
};

// Decoding defaults a checkpoint ships in generation_config.json.
struct GenerationDefaults {
  std::vector<int32_t> eos_token_ids;  // merged with config.json's
  bool do_sample = false;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;
  double repetition_penalty = 1.0;

  // Reads dir/generation_config.json if present; eos ids fall back to the model config's.
  static GenerationDefaults load(const std::filesystem::path& dir, const ModelConfig& config);
};

}  // namespace fp6serve::model
