#include "loader/hf_weights.h"

#include <cstring>

#include "core/check.h"
#include "core/progress.h"
#include "core/thread_pool.h"

namespace fp6serve::loader {

using model::HostLinear;
using model::ModelConfig;
using model::WeightId;
using model::WeightKind;

namespace {

struct Expected {
  std::string name;
  std::vector<int64_t> shape;
};

// Hugging Face's names of a MoE layer's tensors (relative to the layer's prefix): Mixtral's
// block_sparse_moe.{gate, experts.N.w1 (gate), w3 (up), w2 (down)}; the Qwens'
// mlp.{gate, experts.N.{gate,up,down}_proj, shared_expert.*, shared_expert_gate}.
struct MoeNames {
  bool mixtral;
  std::string router() const { return mixtral ? "block_sparse_moe.gate.weight" : "mlp.gate.weight"; }
  std::string expert(int64_t e, const char* part) const {  // part: gate, up, down
    const std::string p = (mixtral ? "block_sparse_moe.experts." : "mlp.experts.") + std::to_string(e) + ".";
    if (!mixtral) return p + part + "_proj.weight";
    return p + (part[0] == 'g' ? "w1" : part[0] == 'u' ? "w3" : "w2") + ".weight";
  }
  static std::string shared(const char* part) { return std::string("mlp.shared_expert.") + part + "_proj.weight"; }
  static std::string shared_gate() { return "mlp.shared_expert_gate.weight"; }
};

MoeNames moe_names(const ModelConfig& c) {
  return {c.family == model::Family::kMixtral};
}

std::vector<Expected> expected_tensors(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.q_size(), kv = c.kv_size(), inter = c.intermediate_size;
  const MoeNames moe = moe_names(c);
  std::vector<Expected> out = {{"model.embed_tokens.weight", {c.vocab_size, h}}, {"model.norm.weight", {h}}};
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = model::layer_prefix(i);
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "post_attention_layernorm.weight", {h}});
    out.push_back({p + "self_attn.q_proj.weight", {q, h}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.o_proj.weight", {h, q}});
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {c.head_dim}});
      out.push_back({p + "self_attn.k_norm.weight", {c.head_dim}});
    }
    if (c.moe_layer(i)) {
      const int64_t e_inter = c.moe.intermediate_size, s_inter = c.moe.shared_intermediate_size;
      out.push_back({p + moe.router(), {c.moe.num_experts, h}});
      for (int64_t e = 0; e < c.moe.num_experts; ++e) {
        out.push_back({p + moe.expert(e, "gate"), {e_inter, h}});
        out.push_back({p + moe.expert(e, "up"), {e_inter, h}});
        out.push_back({p + moe.expert(e, "down"), {h, e_inter}});
      }
      if (s_inter > 0) {
        out.push_back({p + MoeNames::shared("gate"), {s_inter, h}});
        out.push_back({p + MoeNames::shared("up"), {s_inter, h}});
        out.push_back({p + MoeNames::shared("down"), {h, s_inter}});
        out.push_back({p + MoeNames::shared_gate(), {1, h}});
      }
    } else {
      out.push_back({p + "mlp.gate_proj.weight", {inter, h}});
      out.push_back({p + "mlp.up_proj.weight", {inter, h}});
      out.push_back({p + "mlp.down_proj.weight", {h, inter}});
    }
    if (c.qkv_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q}});
      out.push_back({p + "self_attn.k_proj.bias", {kv}});
      out.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (c.o_bias) out.push_back({p + "self_attn.o_proj.bias", {h}});
    if (c.mlp_bias) {
      out.push_back({p + "mlp.gate_proj.bias", {inter}});
      out.push_back({p + "mlp.up_proj.bias", {inter}});
      out.push_back({p + "mlp.down_proj.bias", {h}});
    }
  }
  return out;
}

fpx::MatrixView view_of(const TensorInfo& t, const Checkpoint& ckpt) {
  return {t.data, ckpt.float_dtype(t), t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1, t.name};
}

// A float tensor of the checkpoint as a host f32 tensor.
Tensor host_f32(const TensorInfo& t, const Checkpoint& ckpt) {
  Tensor out = Tensor::empty(t.shape, DType::kF32);
  convert_to_f32(t.data, ckpt.float_dtype(t), out.data_as<float>(), static_cast<size_t>(t.numel()));
  return out;
}

// The stacked parts of one linear layer (q,k,v or gate,up stack along rows), quantized as
// `spec` says when `quantize`, else converted to `dense_dtype`.
HostLinear build_linear(const Checkpoint& ckpt, WeightId id, const std::vector<std::string>& parts,
                        const std::vector<std::string>& biases, bool quantize, const LinearSpec& spec,
                        DType dense_dtype) {
  std::vector<fpx::MatrixView> views;
  HostLinear out;
  out.id = id;
  for (const std::string& part : parts) {
    views.push_back(view_of(ckpt.get(part), ckpt));
    out.rows += views.back().rows;
  }
  out.cols = views[0].cols;
  if (quantize) {
    // The mode's format, or the best of its FP6 formats for this layer (by round-to-nearest's
    // error, with a calibration text too); GPTQ rounding where the calibration has the layer.
    const fpx::Format format = fpx::best_format(views, spec.mode.formats(), spec.scale_rule);
    const fpx::Hessian* hessian = spec.calibration ? spec.calibration->hessian(id) : nullptr;
    out.packed = std::make_unique<fpx::PackedWeight>(
        hessian ? fpx::pack(fpx::gptq_quantize(views, *hessian, format, spec.scale_rule), spec.pack_target)
                : fpx::quantize_pack(views, format, spec.pack_target, spec.scale_rule));
  } else {
    out.dense = Tensor::empty({out.rows, out.cols}, dense_dtype);
    auto* dst = static_cast<uint8_t*>(out.dense.data());
    const size_t dst_row = static_cast<size_t>(out.cols) * dtype_size(dense_dtype);
    int64_t row0 = 0;
    for (const fpx::MatrixView& v : views) {
      const size_t src_row = static_cast<size_t>(v.cols) * dtype_size(v.dtype);
      ThreadPool::global()->parallel_for(v.rows, [&](int64_t b, int64_t e) {
        std::vector<float> tmp(static_cast<size_t>(v.cols));
        for (int64_t r = b; r < e; ++r) {
          const auto* src = static_cast<const uint8_t*>(v.data) + static_cast<size_t>(r) * src_row;
          uint8_t* d = dst + static_cast<size_t>(row0 + r) * dst_row;
          if (v.dtype == dense_dtype) {
            std::memcpy(d, src, dst_row);
          } else {
            convert_to_f32(src, v.dtype, tmp.data(), tmp.size());
            convert_from_f32(tmp.data(), d, dense_dtype, tmp.size());
          }
        }
      });
      row0 += v.rows;
    }
  }
  for (const std::string& b : biases) {
    const TensorInfo& t = ckpt.get(b);
    const Tensor f = host_f32(t, ckpt);
    out.bias.insert(out.bias.end(), f.data_as<float>(), f.data_as<float>() + f.numel());
  }
  return out;
}

// One MoE layer's weights: the router (f32, the shared expert's gate as its last row), the
// experts' gate_up (gate and up stacked, as the dense MLP's) and down, the shared expert.
void read_moe_layer(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, const LinearSpec& spec,
                    WeightSink& sink) {
  const model::QuantizationMode& mode = spec.mode;
  const std::string p = model::layer_prefix(layer);
  const MoeNames names = moe_names(c);
  const bool shared = c.moe.shared_intermediate_size > 0;
  const int64_t experts = c.moe.num_experts, h = c.hidden_size;
  Tensor router = Tensor::empty({experts + (shared ? 1 : 0), h}, DType::kF32);
  const TensorInfo& gate = ckpt.get(p + names.router());
  convert_to_f32(gate.data, ckpt.float_dtype(gate), router.data_as<float>(), static_cast<size_t>(experts * h));
  if (shared) {
    const TensorInfo& g = ckpt.get(p + MoeNames::shared_gate());
    convert_to_f32(g.data, ckpt.float_dtype(g), router.data_as<float>() + experts * h, static_cast<size_t>(h));
  }
  sink.tensor({WeightKind::kRouter, layer}, std::move(router));
  for (const WeightKind kind : {WeightKind::kExpertGateUp, WeightKind::kExpertDown}) {
    const auto parts = [&](int64_t e) {
      return kind == WeightKind::kExpertGateUp
                 ? std::vector<std::string>{p + names.expert(e, "gate"), p + names.expert(e, "up")}
                 : std::vector<std::string>{p + names.expert(e, "down")};
    };
    // Every expert of the kind in one format (the kernels take one per layer): the best for
    // all of them together.
    LinearSpec one_format = spec;
    if (mode.quantized && mode.formats().size() > 1) {
      std::vector<fpx::MatrixView> views;
      for (int64_t e = 0; e < experts; ++e)
        for (const std::string& part : parts(e)) views.push_back(view_of(ckpt.get(part), ckpt));
      one_format.mode.format = fpx::best_format(views, mode.formats(), spec.scale_rule);
      one_format.mode.per_layer_fp6 = false;
    }
    std::vector<HostLinear> all;
    for (int64_t e = 0; e < experts; ++e)
      all.push_back(build_linear(ckpt, {kind, layer, e}, parts(e), {}, mode.quantized, one_format, mode.dense_dtype));
    sink.experts(std::move(all));
  }
  if (shared) {
    sink.linear(build_linear(ckpt, {WeightKind::kSharedGateUp, layer},
                             {p + MoeNames::shared("gate"), p + MoeNames::shared("up")}, {}, mode.quantized, spec,
                             mode.dense_dtype));
    sink.linear(build_linear(ckpt, {WeightKind::kSharedDown, layer}, {p + MoeNames::shared("down")}, {}, mode.quantized,
                             spec, mode.dense_dtype));
  }
}

}  // namespace

void validate_checkpoint(const Checkpoint& ckpt, const ModelConfig& config) {
  // transformers 5 holds a layer's experts in two 3-D tensors in memory; its save_pretrained
  // writes them back one expert at a time, the layout published checkpoints have.
  for (const char* fused : {"mlp.experts.gate_up_proj", "block_sparse_moe.experts.gate_up_proj"})
    for (const std::string& name : {model::layer_prefix(0) + fused, model::layer_prefix(0) + fused + ".weight"})
      FP6_CHECK(ckpt.find(name) == nullptr, kUnsupported,
                "{}: tensor '{}' holds every expert of a layer in one tensor; fp6serve reads the layout with one "
                "tensor per expert and projection (experts.N.gate_proj / w1 ...), which save_pretrained writes",
                ckpt.file_of(name).string(), name);
  for (const Expected& e : expected_tensors(config)) {
    const TensorInfo* t = ckpt.find(e.name);
    FP6_CHECK(t != nullptr, kNotFound, "{}: tensor '{}' is missing (config: {} layers, {})", ckpt.describe().string(),
              e.name, config.num_layers, config.model_type);
    ckpt.float_dtype(*t);
    FP6_CHECK(t->shape == e.shape, kBadInput, "{}: tensor '{}' has shape {} but the config implies {}",
              ckpt.file_of(e.name).string(), e.name, t->shape_string(), shape_string(e.shape));
  }
}

void read_hf_weights(const Checkpoint& ckpt, const ModelConfig& config, const LinearSpec& spec, WeightSink& sink) {
  validate_checkpoint(ckpt, config);
  const model::QuantizationMode& mode = spec.mode;
  auto norm = [&](WeightId id) { sink.tensor(id, host_f32(ckpt.get(model::weight_name(id)), ckpt)); };
  Progress progress("loading", config.num_layers + 2, spec.progress);
  {
    const TensorInfo& e = ckpt.get("model.embed_tokens.weight");
    Tensor embed = Tensor::empty(e.shape, ckpt.float_dtype(e));
    std::memcpy(embed.data(), e.data, e.bytes);
    sink.tensor({WeightKind::kEmbed}, std::move(embed));
    norm({WeightKind::kFinalNorm});
    progress.advance(1, "embeddings");
  }
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string p = model::layer_prefix(i);
    norm({WeightKind::kInputNorm, i});
    norm({WeightKind::kPostNorm, i});
    const auto names = [&](bool present, std::initializer_list<const char*> suffixes) {
      std::vector<std::string> out;
      if (present)
        for (const char* n : suffixes) out.push_back(p + n);
      return out;
    };
    const auto linear = [&](WeightKind kind, std::initializer_list<const char*> parts, bool has_bias,
                            std::initializer_list<const char*> biases) {
      sink.linear(build_linear(ckpt, {kind, i}, names(true, parts), names(has_bias, biases), mode.quantized, spec,
                               mode.dense_dtype));
    };
    if (config.qk_norm) {
      norm({WeightKind::kQNorm, i});
      norm({WeightKind::kKNorm, i});
    }
    linear(WeightKind::kQkv, {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"},
           config.qkv_bias, {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"});
    linear(WeightKind::kO, {"self_attn.o_proj.weight"}, config.o_bias, {"self_attn.o_proj.bias"});
    if (!config.moe_layer(i)) {
      linear(WeightKind::kGateUp, {"mlp.gate_proj.weight", "mlp.up_proj.weight"}, config.mlp_bias,
             {"mlp.gate_proj.bias", "mlp.up_proj.bias"});
      linear(WeightKind::kDown, {"mlp.down_proj.weight"}, config.mlp_bias, {"mlp.down_proj.bias"});
    } else {
      read_moe_layer(ckpt, config, i, spec, sink);
    }
    progress.advance(1, "layer " + std::to_string(i));
  }
  const std::string head = config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const bool quantize = mode.quantized && spec.quantize_lm_head;
  const DType dense = mode.quantized ? ckpt.float_dtype(ckpt.get(head)) : mode.dense_dtype;
  sink.linear(build_linear(ckpt, {WeightKind::kLmHead}, {head}, {}, quantize, spec, dense));
  progress.advance(1, "lm_head");
}

}  // namespace fp6serve::loader
