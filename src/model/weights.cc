#include "model/weights.h"

#include "core/check.h"

namespace fp6serve::model {

bool WeightId::is_linear() const {
  switch (kind) {
    case WeightKind::kQkv:
    case WeightKind::kO:
    case WeightKind::kGateUp:
    case WeightKind::kDown:
    case WeightKind::kLmHead:
      return true;
    default:
      return false;
  }
}

std::string layer_prefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".";
}

std::string weight_name(WeightId id) {
  switch (id.kind) {
    case WeightKind::kEmbed:
      return "model.embed_tokens.weight";
    case WeightKind::kFinalNorm:
      return "model.norm.weight";
    case WeightKind::kLmHead:
      return "lm_head";
    case WeightKind::kInputNorm:
      return layer_prefix(id.layer) + "input_layernorm.weight";
    case WeightKind::kPostNorm:
      return layer_prefix(id.layer) + "post_attention_layernorm.weight";
    case WeightKind::kQkv:
      return layer_prefix(id.layer) + "self_attn.qkv_proj";
    case WeightKind::kO:
      return layer_prefix(id.layer) + "self_attn.o_proj";
    case WeightKind::kGateUp:
      return layer_prefix(id.layer) + "mlp.gate_up_proj";
    case WeightKind::kDown:
      return layer_prefix(id.layer) + "mlp.down_proj";
  }
  FP6_ASSERT(false);
}

size_t ModelWeights::bytes() const {
  size_t b = embed.bytes() + final_norm.bytes() + (lm_head ? lm_head->weight_bytes : 0);
  for (const auto& l : layers)
    b += l.input_norm.bytes() + l.post_norm.bytes() + l.qkv->weight_bytes + l.o->weight_bytes +
         l.gate_up->weight_bytes + l.down->weight_bytes;
  return b;
}

}  // namespace fp6serve::model
