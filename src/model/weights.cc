#include "model/weights.h"

#include <cstring>

#include "core/check.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "model/backend.h"
#include "model/prequantized.h"

namespace fp6serve::model {

QuantizationMode QuantizationMode::parse(std::string_view name) {
  QuantizationMode m;
  m.name = std::string(name);
  if (name == "wf6af16") m.format = fpx::kE3M2;
  else if (name == "wf5af16") m.format = fpx::kE2M2;
  else if (name == "wf4af16") m.format = fpx::kE2M1;
  else if (name == "fp16" || name == "bf16" || name == "fp32") {
    m.quantized = false;
    m.dense_dtype = name == "fp16" ? DType::kF16 : name == "bf16" ? DType::kBF16 : DType::kF32;
  } else {
    try {
      m.format = fpx::parse_format(name);
    } catch (const Error&) {
      FP6_THROW(kInvalidArgument,
                "unknown quantization_mode '{}' (expected wf6af16, wf5af16, wf4af16, an FPx format such as e2m3, "
                "or fp16, bf16, fp32 for unquantized weights)",
                name);
    }
  }
  return m;
}

size_t ModelWeights::bytes() const {
  size_t b = embed.bytes() + final_norm.bytes() + (lm_head ? lm_head->weight_bytes : 0);
  for (const auto& l : layers)
    b += l.input_norm.bytes() + l.post_norm.bytes() + l.qkv->weight_bytes + l.o->weight_bytes +
         l.gate_up->weight_bytes + l.down->weight_bytes;
  return b;
}

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

namespace {

DType float_dtype(const TensorInfo& t, const Checkpoint& ckpt) {
  switch (t.dtype) {
    case StDType::kF32: return DType::kF32;
    case StDType::kF16: return DType::kF16;
    case StDType::kBF16: return DType::kBF16;
    default:
      FP6_THROW(kBadInput, "{}: tensor '{}' has dtype {}; expected F16, BF16 or F32", ckpt.file_of(t.name).string(),
                t.name, st_dtype_name(t.dtype));
  }
}

struct Expected {
  std::string name;
  std::vector<int64_t> shape;
};

std::vector<Expected> expected_tensors(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.q_size(), kv = c.kv_size(), inter = c.intermediate_size;
  std::vector<Expected> out = {{"model.embed_tokens.weight", {c.vocab_size, h}}, {"model.norm.weight", {h}}};
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = layer_prefix(i);
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "post_attention_layernorm.weight", {h}});
    out.push_back({p + "self_attn.q_proj.weight", {q, h}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.o_proj.weight", {h, q}});
    out.push_back({p + "mlp.gate_proj.weight", {inter, h}});
    out.push_back({p + "mlp.up_proj.weight", {inter, h}});
    out.push_back({p + "mlp.down_proj.weight", {h, inter}});
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
  return {t.data, float_dtype(t, ckpt), t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1, t.name};
}

// A float tensor of the checkpoint as a host f32 tensor.
Tensor host_f32(const TensorInfo& t, const Checkpoint& ckpt) {
  Tensor out = Tensor::empty(t.shape, DType::kF32);
  convert_to_f32(t.data, float_dtype(t, ckpt), out.data_as<float>(), static_cast<size_t>(t.numel()));
  return out;
}

// The stacked parts of one linear layer (q,k,v or gate,up stack along rows).
HostLinear build_linear(const Checkpoint& ckpt, const std::string& name, const std::vector<std::string>& parts,
                        const std::vector<std::string>& biases, bool quantize, const QuantizationMode& mode,
                        DType dense_dtype, DType pack_target) {
  std::vector<fpx::MatrixView> views;
  HostLinear out;
  out.name = name;
  for (const std::string& part : parts) {
    views.push_back(view_of(ckpt.get(part), ckpt));
    out.rows += views.back().rows;
  }
  out.cols = views[0].cols;
  if (quantize) {
    out.packed = std::make_unique<fpx::PackedWeight>(fpx::quantize_pack(views, mode.format, pack_target));
  } else {
    out.dense = Tensor::empty({out.rows, out.cols}, dense_dtype);
    auto* dst = static_cast<uint8_t*>(out.dense.data());
    const size_t dst_row = static_cast<size_t>(out.cols) * dtype_size(dense_dtype);
    int64_t row0 = 0;
    for (const fpx::MatrixView& v : views) {
      const size_t src_row = static_cast<size_t>(v.cols) * dtype_size(v.dtype);
      ThreadPool::global().parallel_for(v.rows, [&](int64_t b, int64_t e) {
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

}  // namespace

void validate_checkpoint(const Checkpoint& ckpt, const ModelConfig& config) {
  for (const Expected& e : expected_tensors(config)) {
    const TensorInfo* t = ckpt.find(e.name);
    FP6_CHECK(t != nullptr, kNotFound, "tensor '{}' is missing from the checkpoint in {} (config: {} layers, {})",
              e.name, ckpt.dir().string(), config.num_layers, config.model_type);
    float_dtype(*t, ckpt);
    FP6_CHECK(t->shape == e.shape, kBadInput, "{}: tensor '{}' has shape {} but the config implies {}",
              ckpt.file_of(e.name).string(), e.name, t->shape_string(), shape_string(e.shape));
  }
}

void visit_weights(const Checkpoint& ckpt, const ModelConfig& config, const LoadOptions& options, DType pack_target,
                   WeightSink& sink) {
  validate_checkpoint(ckpt, config);
  const QuantizationMode& mode = options.mode;
  auto linear = [&](const std::string& name, const std::vector<std::string>& parts,
                    const std::vector<std::string>& biases) {
    sink.linear(build_linear(ckpt, name, parts, biases, mode.quantized, mode, mode.dense_dtype, pack_target));
  };
  Progress progress("loading", config.num_layers + 2, options.progress);
  {
    const TensorInfo& e = ckpt.get("model.embed_tokens.weight");
    Tensor embed = Tensor::empty(e.shape, float_dtype(e, ckpt));
    std::memcpy(embed.data(), e.data, e.bytes);
    sink.tensor("model.embed_tokens.weight", std::move(embed));
    sink.tensor("model.norm.weight", host_f32(ckpt.get("model.norm.weight"), ckpt));
    progress.advance(1, "embeddings");
  }
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string p = layer_prefix(i);
    sink.tensor(p + "input_layernorm.weight", host_f32(ckpt.get(p + "input_layernorm.weight"), ckpt));
    sink.tensor(p + "post_attention_layernorm.weight", host_f32(ckpt.get(p + "post_attention_layernorm.weight"), ckpt));
    const auto bias = [&](bool has, std::initializer_list<const char*> names) {
      std::vector<std::string> out;
      if (has)
        for (const char* n : names) out.push_back(p + n);
      return out;
    };
    linear(p + "self_attn.qkv_proj",
           {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"},
           bias(config.qkv_bias, {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"}));
    linear(p + "self_attn.o_proj", {p + "self_attn.o_proj.weight"}, bias(config.o_bias, {"self_attn.o_proj.bias"}));
    linear(p + "mlp.gate_up_proj", {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"},
           bias(config.mlp_bias, {"mlp.gate_proj.bias", "mlp.up_proj.bias"}));
    linear(p + "mlp.down_proj", {p + "mlp.down_proj.weight"}, bias(config.mlp_bias, {"mlp.down_proj.bias"}));
    progress.advance(1, "layer " + std::to_string(i));
  }
  const std::string head = config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const bool quantize = mode.quantized && options.quantize_lm_head;
  const DType dense = mode.quantized ? float_dtype(ckpt.get(head), ckpt) : mode.dense_dtype;
  sink.linear(build_linear(ckpt, "lm_head", {head}, {}, quantize, mode, dense, pack_target));
  progress.advance(1, "lm_head");
}

ModelWeights adopt_weights(const ModelConfig& config, Backend& backend,
                           const std::function<void(WeightSink&)>& produce) {
  // Routes each weight to its slot in ModelWeights as it arrives.
  class Adopter : public WeightSink {
   public:
    Adopter(const ModelConfig& c, Backend& b) : config_(c), backend_(b) { w.layers.resize(static_cast<size_t>(c.num_layers)); }
    void tensor(const std::string& name, Tensor host) override {
      Tensor t = backend_.adopt_tensor(std::move(host));
      if (name == "model.embed_tokens.weight") w.embed = std::move(t);
      else if (name == "model.norm.weight") w.final_norm = std::move(t);
      else if (name.ends_with("input_layernorm.weight")) layer(name).input_norm = std::move(t);
      else if (name.ends_with("post_attention_layernorm.weight")) layer(name).post_norm = std::move(t);
      else FP6_THROW(kInternal, "unexpected weight '{}'", name);
    }
    void linear(HostLinear&& host) override {
      const std::string name = host.name;
      auto l = backend_.adopt_linear(std::move(host));
      if (name == "lm_head") w.lm_head = std::move(l);
      else if (name.ends_with("qkv_proj")) layer(name).qkv = std::move(l);
      else if (name.ends_with("o_proj")) layer(name).o = std::move(l);
      else if (name.ends_with("gate_up_proj")) layer(name).gate_up = std::move(l);
      else if (name.ends_with("down_proj")) layer(name).down = std::move(l);
      else FP6_THROW(kInternal, "unexpected linear weight '{}'", name);
    }
    ModelWeights w;

   private:
    LayerWeights& layer(const std::string& name) {
      const size_t prefix = std::string("model.layers.").size();
      const int64_t i = std::stoll(name.substr(prefix, name.find('.', prefix) - prefix));
      FP6_CHECK(i >= 0 && i < config_.num_layers, kBadInput, "weight '{}' names layer {} of {}", name, i, config_.num_layers);
      return w.layers[static_cast<size_t>(i)];
    }
    const ModelConfig& config_;
    Backend& backend_;
  } adopter(config, backend);
  produce(adopter);
  ModelWeights& w = adopter.w;
  FP6_CHECK(w.embed.numel() > 0 && w.final_norm.numel() > 0 && w.lm_head, kBadInput, "the checkpoint lacks embeddings, final norm or lm_head");
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    FP6_CHECK(l.qkv && l.o && l.gate_up && l.down && l.input_norm.numel() > 0 && l.post_norm.numel() > 0, kBadInput,
              "layer {} is incomplete in the checkpoint", i);
  }
  return std::move(adopter.w);
}

ModelWeights load_weights(const Checkpoint& ckpt, const ModelConfig& config, const LoadOptions& options,
                          Backend& backend) {
  if (is_prequantized(ckpt)) return load_prequantized(ckpt, config, options, backend);
  const DType target = options.mode.quantized ? backend.pack_target(options.mode.format) : DType::kF16;
  return adopt_weights(config, backend, [&](WeightSink& sink) { visit_weights(ckpt, config, options, target, sink); });
}

}  // namespace fp6serve::model
