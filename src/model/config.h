// Model configuration from a Hugging Face config.json (and generation_config.json).
//
// Both layouts seen in the wild are read: transformers 4.x (torch_dtype, rope_theta,
// rope_scaling) and 5.x (dtype, rope_parameters). Families: llama (Llama-2, Llama-3 with
// rope_type "llama3"), mistral, qwen2, and the mixtures of experts mixtral, qwen2_moe (with
// its shared expert and shared-expert gate) and qwen3_moe (q/k norms). Every field is
// validated; a bad one is an Error(kBadInput) naming the file and the field, an unknown
// model_type or a feature fp6serve lacks is kUnsupported naming what is supported.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace fp6serve::model {

enum class Family { kLlama, kMistral, kQwen2, kMixtral, kQwen2Moe, kQwen3Moe };
const char* family_name(Family family);

struct RopeConfig {
  std::string type = "default";  // default, linear, llama3
  double theta = 10000.0;
  double factor = 1.0;                   // linear, llama3
  double low_freq_factor = 1.0;          // llama3
  double high_freq_factor = 4.0;         // llama3
  int64_t original_max_position = 8192;  // llama3
};

// The mixture-of-experts MLP (Mixtral, Qwen-MoE), as transformers computes it: router logits
// x . gate^T, softmax over all experts (f32), the top_k most probable (ties: the lowest expert
// id first; torch.topk leaves their order unspecified), their probabilities renormalized to
// sum 1 when renormalize (Mixtral always; Qwen's norm_topk_prob), out = sum of weight x
// expert(x) over the chosen experts, each expert a SwiGLU MLP (down(silu(gate x) * up x)).
// qwen2_moe adds a shared expert (a SwiGLU MLP of shared_intermediate_size) scaled by
// sigmoid(shared_expert_gate . x).
struct MoeConfig {
  int64_t num_experts = 0;  // 0: a dense model
  int64_t top_k = 0;
  int64_t intermediate_size = 0;         // of each expert
  int64_t shared_intermediate_size = 0;  // of the shared expert; 0: none
  bool renormalize = true;
  // Layers with a dense MLP of ModelConfig::intermediate_size instead (Qwen's mlp_only_layers
  // and decoder_sparse_step); empty when every layer is sparse.
  std::vector<int64_t> dense_layers;
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
  bool qk_norm = false;        // RMSNorm of each q and k head before RoPE (qwen3_moe)
  int64_t sliding_window = 0;  // 0: full attention
  DType dtype = DType::kBF16;  // the checkpoint's declared dtype
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;
  MoeConfig moe;

  int64_t q_size() const { return num_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }
  bool is_moe() const { return moe.num_experts > 0; }
  // Whether layer l's MLP is the mixture of experts (else a dense MLP).
  bool moe_layer(int64_t l) const;
  // Whether any layer has a dense MLP (of intermediate_size).
  bool has_dense_mlp() const;

  // Parses dir/config.json. Throws kNotFound, kBadInput (naming the field) or kUnsupported.
  static ModelConfig load(const std::filesystem::path& dir);
  static ModelConfig parse(const std::string& json_text, const std::string& source);
  // A model shape by name: llama2-7b, llama2-13b, llama2-70b, llama3-8b, mixtral-8x7b,
  // qwen1.5-moe-a2.7b, qwen3-30b-a3b (FP16; shape_names() lists them), or the path of a
  // config.json (or of a directory holding one).
  static ModelConfig shape(const std::string& name);
  static const std::vector<std::string>& shape_names();

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
