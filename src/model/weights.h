// What a model's weights are, wherever they live: the id of each weight, the host form the
// loader produces (HostLinear), the handle a backend keeps for a linear layer
// (LinearWeight), the experts of a mixture-of-experts layer as a backend keeps them
// (ExpertWeights), and the whole set (ModelWeights). q/k/v are stacked into one linear layer,
// and so are gate/up (of the dense MLP, of each expert, of the shared expert).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "fpx/pack.h"

namespace fp6serve::model {

enum class WeightKind : uint8_t {
  kEmbed,
  kFinalNorm,
  kInputNorm,
  kPostNorm,
  kQkv,
  kO,
  kGateUp,
  kDown,
  kLmHead,
  kQNorm,         // [head_dim], qwen3_moe
  kKNorm,         // [head_dim], qwen3_moe
  kRouter,        // [experts (+1: the shared expert's gate), hidden] f32
  kExpertGateUp,  // [2 expert inter, hidden] of expert `expert`
  kExpertDown,    // [hidden, expert inter]
  kSharedGateUp,  // [2 shared inter, hidden], qwen2_moe's shared expert
  kSharedDown,    // [hidden, shared inter]
};

struct WeightId {
  WeightKind kind = WeightKind::kEmbed;
  int64_t layer = -1;   // for the per-layer kinds
  int64_t expert = -1;  // for kExpertGateUp, kExpertDown
  bool is_linear() const;
};

// fp6serve's name of a weight: Hugging Face's tensor name for the embeddings and norms
// ("model.layers.3.input_layernorm.weight"), the stacked layer's for linears
// ("model.layers.3.self_attn.qkv_proj", "model.layers.3.mlp.experts.5.gate_up_proj",
// "lm_head"), "model.layers.3.mlp.router.weight" for the router (with the shared expert's gate
// as its last row). Prequantized checkpoints store under it.
std::string weight_name(WeightId id);
// "model.layers.<i>.", the prefix of layer i's Hugging Face tensors.
std::string layer_prefix(int64_t layer);

// One linear layer on the host, as the loader produces it: packed FPx, or dense.
struct HostLinear {
  WeightId id;
  int64_t rows = 0;
  int64_t cols = 0;
  std::unique_ptr<fpx::PackedWeight> packed;  // when quantized
  Tensor dense;                               // [rows, cols] otherwise
  std::vector<float> bias;                    // [rows] or empty
};

// A linear layer's weight as a backend keeps it.
class LinearWeight {
 public:
  virtual ~LinearWeight() = default;
  int64_t rows = 0;
  int64_t cols = 0;
  bool quantized = false;
  size_t weight_bytes = 0;  // resident bytes of the weight itself
};

// The experts of one kind (gate_up or down) of one MoE layer, all of one shape [rows, cols],
// as a backend keeps them (together: one grouped launch runs them all).
class ExpertWeights {
 public:
  virtual ~ExpertWeights() = default;
  int64_t num_experts = 0;
  int64_t rows = 0;  // of each expert
  int64_t cols = 0;
  bool quantized = false;
  size_t weight_bytes = 0;  // resident bytes of all of them
};

// A mixture-of-experts MLP (model/config.h MoeConfig).
struct MoeWeights {
  Tensor router;                                 // [experts (+1: the shared expert's gate), hidden] f32
  std::unique_ptr<ExpertWeights> gate_up;        // experts x [2 expert inter, hidden]
  std::unique_ptr<ExpertWeights> down;           // experts x [hidden, expert inter]
  std::unique_ptr<LinearWeight> shared_gate_up;  // [2 shared inter, hidden], or null
  std::unique_ptr<LinearWeight> shared_down;     // [hidden, shared inter]
  size_t bytes() const;
};

struct LayerWeights {
  Tensor input_norm;  // [hidden] f32 on the backend
  Tensor post_norm;
  Tensor q_norm, k_norm;                  // [head_dim] f32 (qwen3_moe), else empty
  std::unique_ptr<LinearWeight> qkv;      // [q + 2 kv, hidden]
  std::unique_ptr<LinearWeight> o;        // [hidden, q]
  std::unique_ptr<LinearWeight> gate_up;  // [2 inter, hidden] (null in a MoE layer)
  std::unique_ptr<LinearWeight> down;     // [hidden, inter]
  std::unique_ptr<MoeWeights> moe;        // the MoE MLP, or null
};

struct ModelWeights {
  Tensor embed;  // [vocab, hidden] in the checkpoint's 16-bit dtype (or f32)
  std::vector<LayerWeights> layers;
  Tensor final_norm;
  std::unique_ptr<LinearWeight> lm_head;  // [vocab, hidden]
  size_t bytes() const;
  // The weight bytes a forward pass of `tokens` tokens reads: all of them, except that of the
  // experts of each MoE layer only those a uniform router choosing top_k of E is expected to
  // pick, E (1 - (1 - top_k / E)^tokens) (the benchmarks' roofline; a trained router is not
  // uniform).
  size_t bytes_read(int64_t tokens, int64_t top_k) const;
};

}  // namespace fp6serve::model
