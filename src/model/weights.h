// What a model's weights are, wherever they live: the id of each weight, the host form the
// loader produces (HostLinear), the handle a backend keeps for a linear layer
// (LinearWeight), and the whole set (ModelWeights). q/k/v are stacked into one linear layer,
// and so are gate/up.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "fpx/pack.h"

namespace fp6serve::model {

enum class WeightKind : uint8_t { kEmbed, kFinalNorm, kInputNorm, kPostNorm, kQkv, kO, kGateUp, kDown, kLmHead };

struct WeightId {
  WeightKind kind = WeightKind::kEmbed;
  int64_t layer = -1;  // for the per-layer kinds
  bool is_linear() const;
};

// fp6serve's name of a weight: Hugging Face's tensor name for the embeddings and norms
// ("model.layers.3.input_layernorm.weight"), the stacked layer's for linears
// ("model.layers.3.self_attn.qkv_proj", "lm_head"). Prequantized checkpoints store under it.
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

struct LayerWeights {
  Tensor input_norm;  // [hidden] f32 on the backend
  Tensor post_norm;
  std::unique_ptr<LinearWeight> qkv;      // [q + 2 kv, hidden]
  std::unique_ptr<LinearWeight> o;        // [hidden, q]
  std::unique_ptr<LinearWeight> gate_up;  // [2 inter, hidden]
  std::unique_ptr<LinearWeight> down;     // [hidden, inter]
};

struct ModelWeights {
  Tensor embed;  // [vocab, hidden] in the checkpoint's 16-bit dtype (or f32)
  std::vector<LayerWeights> layers;
  Tensor final_norm;
  std::unique_ptr<LinearWeight> lm_head;  // [vocab, hidden]
  size_t bytes() const;
};

}  // namespace fp6serve::model
