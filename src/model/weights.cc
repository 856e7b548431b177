#include "model/weights.h"

#include <cmath>

#include "core/check.h"

namespace fp6serve::model {

bool WeightId::is_linear() const {
  switch (kind) {
    case WeightKind::kQkv:
    case WeightKind::kO:
    case WeightKind::kGateUp:
    case WeightKind::kDown:
    case WeightKind::kLmHead:
    case WeightKind::kExpertGateUp:
    case WeightKind::kExpertDown:
    case WeightKind::kSharedGateUp:
    case WeightKind::kSharedDown:
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
    case WeightKind::kQNorm:
      return layer_prefix(id.layer) + "self_attn.q_norm.weight";
    case WeightKind::kKNorm:
      return layer_prefix(id.layer) + "self_attn.k_norm.weight";
    case WeightKind::kRouter:
      return layer_prefix(id.layer) + "mlp.router.weight";
    case WeightKind::kExpertGateUp:
      return layer_prefix(id.layer) + "mlp.experts." + std::to_string(id.expert) + ".gate_up_proj";
    case WeightKind::kExpertDown:
      return layer_prefix(id.layer) + "mlp.experts." + std::to_string(id.expert) + ".down_proj";
    case WeightKind::kSharedGateUp:
      return layer_prefix(id.layer) + "mlp.shared_expert.gate_up_proj";
    case WeightKind::kSharedDown:
      return layer_prefix(id.layer) + "mlp.shared_expert.down_proj";
  }
  FP6_ASSERT(false);
}

namespace {
size_t bytes_of(const std::unique_ptr<LinearWeight>& w) {
  return w ? w->weight_bytes : 0;
}
size_t bytes_of(const std::unique_ptr<ExpertWeights>& w) {
  return w ? w->weight_bytes : 0;
}
}  // namespace

size_t MoeWeights::bytes() const {
  return router.bytes() + bytes_of(gate_up) + bytes_of(down) + bytes_of(shared_gate_up) + bytes_of(shared_down);
}

size_t ModelWeights::bytes() const {
  size_t b = embed.bytes() + final_norm.bytes() + bytes_of(lm_head);
  for (const auto& l : layers)
    b += l.input_norm.bytes() + l.post_norm.bytes() + l.q_norm.bytes() + l.k_norm.bytes() + bytes_of(l.qkv) +
         bytes_of(l.o) + bytes_of(l.gate_up) + bytes_of(l.down) + (l.moe ? l.moe->bytes() : 0);
  return b;
}

size_t ModelWeights::bytes_read(int64_t tokens, int64_t top_k) const {
  size_t b = bytes();
  for (const auto& l : layers) {
    if (!l.moe) continue;
    const auto experts = static_cast<double>(l.moe->gate_up->num_experts);
    const double picked = experts * (1.0 - std::pow(1.0 - std::min(1.0, static_cast<double>(top_k) / experts),
                                                    static_cast<double>(tokens)));
    const auto all = static_cast<double>(bytes_of(l.moe->gate_up) + bytes_of(l.moe->down));
    b -= static_cast<size_t>(all * (1.0 - picked / experts));
  }
  return b;
}

}  // namespace fp6serve::model
