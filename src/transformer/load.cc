// Building a Model: from a checkpoint directory (Model::load) or with random weights of a
// real shape (Model::random). The loader's weights go straight to the backend, one at a
// time, so a host copy of the whole model never exists.
#include <algorithm>
#include <random>

#include "core/check.h"
#include "loader/hf_weights.h"
#include "loader/prequantized.h"
#include "transformer/device.h"
#include "transformer/model.h"

namespace fp6serve {

namespace {

using model::LayerWeights;
using model::QuantizationMode;
using model::WeightId;
using model::WeightKind;

// Hands each weight the loader produces to the backend and keeps it in its slot.
class Adopter : public loader::WeightSink {
 public:
  Adopter(const ModelConfig& config, Backend& backend) : config_(config), backend_(backend) {
    weights_.layers.resize(static_cast<size_t>(config.num_layers));
  }

  void tensor(WeightId id, Tensor host) override {
    Tensor t = backend_.adopt_tensor(std::move(host));
    switch (id.kind) {
      case WeightKind::kEmbed:
        weights_.embed = std::move(t);
        return;
      case WeightKind::kFinalNorm:
        weights_.final_norm = std::move(t);
        return;
      case WeightKind::kInputNorm:
        layer(id).input_norm = std::move(t);
        return;
      case WeightKind::kPostNorm:
        layer(id).post_norm = std::move(t);
        return;
      case WeightKind::kQNorm:
        layer(id).q_norm = std::move(t);
        return;
      case WeightKind::kKNorm:
        layer(id).k_norm = std::move(t);
        return;
      case WeightKind::kRouter:
        moe(id).router = std::move(t);  // f32: the loaders convert it
        return;
      default:
        FP6_THROW(kInternal, "weight {} is not a tensor", model::weight_name(id));
    }
  }

  void experts(std::vector<model::HostLinear>&& all) override {
    FP6_ASSERT(!all.empty());
    const WeightId id = all.front().id;
    auto w = backend_.adopt_experts(std::move(all));
    if (id.kind == WeightKind::kExpertGateUp)
      moe(id).gate_up = std::move(w);
    else if (id.kind == WeightKind::kExpertDown)
      moe(id).down = std::move(w);
    else
      FP6_THROW(kInternal, "weight {} is not an expert", model::weight_name(id));
  }

  void linear(model::HostLinear&& host) override {
    const WeightId id = host.id;
    auto w = backend_.adopt_linear(std::move(host));
    switch (id.kind) {
      case WeightKind::kQkv:
        layer(id).qkv = std::move(w);
        return;
      case WeightKind::kO:
        layer(id).o = std::move(w);
        return;
      case WeightKind::kGateUp:
        layer(id).gate_up = std::move(w);
        return;
      case WeightKind::kDown:
        layer(id).down = std::move(w);
        return;
      case WeightKind::kLmHead:
        weights_.lm_head = std::move(w);
        return;
      case WeightKind::kSharedGateUp:
        moe(id).shared_gate_up = std::move(w);
        return;
      case WeightKind::kSharedDown:
        moe(id).shared_down = std::move(w);
        return;
      default:
        FP6_THROW(kInternal, "weight {} is not a linear layer", model::weight_name(id));
    }
  }

  // Every weight, or kBadInput naming what is missing.
  ModelWeights take() {
    FP6_CHECK(weights_.embed.numel() > 0 && weights_.final_norm.numel() > 0 && weights_.lm_head, kBadInput,
              "the checkpoint lacks embeddings, final norm or lm_head");
    for (size_t i = 0; i < weights_.layers.size(); ++i) {
      const LayerWeights& l = weights_.layers[i];
      const auto li = static_cast<int64_t>(i);
      const bool mlp = config_.moe_layer(li) ? l.moe && l.moe->router.numel() > 0 && l.moe->gate_up && l.moe->down &&
                                                   (config_.moe.shared_intermediate_size == 0 ||
                                                    (l.moe->shared_gate_up && l.moe->shared_down))
                                             : l.gate_up && l.down;
      FP6_CHECK(l.qkv && l.o && mlp && l.input_norm.numel() > 0 && l.post_norm.numel() > 0 &&
                    (!config_.qk_norm || (l.q_norm.numel() > 0 && l.k_norm.numel() > 0)),
                kBadInput, "layer {} is incomplete in the checkpoint", i);
    }
    return std::move(weights_);
  }

 private:
  LayerWeights& layer(WeightId id) {
    FP6_ASSERT(id.layer >= 0 && id.layer < config_.num_layers);
    return weights_.layers[static_cast<size_t>(id.layer)];
  }
  model::MoeWeights& moe(WeightId id) {
    LayerWeights& l = layer(id);
    FP6_ASSERT(config_.moe_layer(id.layer));
    if (!l.moe) l.moe = std::make_unique<model::MoeWeights>();
    return *l.moe;
  }
  const ModelConfig& config_;
  Backend& backend_;
  ModelWeights weights_;
};

// The mode the weights are loaded in: a prequantized checkpoint's own (naming another is an
// error), else the one the options name, else the default.
QuantizationMode resolve_mode(const loader::Checkpoint& ckpt, const Options& options) {
  if (loader::is_prequantized(ckpt)) {
    QuantizationMode stored = loader::prequantized_mode(ckpt);
    FP6_CHECK(options.quantization_mode.empty() || options.quantization_mode == stored.name, kInvalidArgument,
              "{} is prequantized as {}; it cannot be loaded as {} (quantize the original checkpoint again)",
              ckpt.dir().string(), stored.name, options.quantization_mode);
    return stored;
  }
  return QuantizationMode::parse(options.quantization_mode.empty() ? QuantizationMode::kDefault
                                                                   : options.quantization_mode);
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const Options& options,
                                   std::unique_ptr<Backend> backend) {
  options.validate();
  ModelConfig config = ModelConfig::load(dir);
  const loader::Checkpoint ckpt(dir);
  const QuantizationMode mode = resolve_mode(ckpt, options);
  if (!backend) backend = make_backend(config, mode, options);
  Adopter adopter(config, *backend);
  if (loader::is_prequantized(ckpt)) {
    loader::read_prequantized(ckpt, config, backend->pack_target(mode.format), adopter);
  } else {
    const loader::LinearSpec spec{mode, options.quantize_lm_head,
                                  mode.quantized ? backend->pack_target(mode.format) : DType::kF16, options.progress,
                                  fpx::parse_scale_rule(options.quantization_scale)};
    loader::read_hf_weights(ckpt, config, spec, adopter);
  }
  return std::make_unique<Model>(std::move(config), mode, std::move(backend), adopter.take());
}

std::unique_ptr<Model> Model::random(const ModelConfig& c, const QuantizationMode& mode,
                                     std::unique_ptr<Backend> backend, uint64_t seed) {
  Backend& be = *backend;
  // Weights ~ N(0, 0.02) as Llama's initializer; norms are ones.
  constexpr float kStd = 0.02f;
  Tensor ones = Tensor::empty({c.hidden_size}, DType::kF32);
  std::fill_n(ones.data_as<float>(), c.hidden_size, 1.0f);
  ModelWeights w;
  w.embed = be.random_tensor({c.vocab_size, c.hidden_size}, kStd, seed++);
  w.final_norm = be.adopt_tensor(ones);
  Tensor head_ones = Tensor::empty({c.head_dim}, DType::kF32);
  std::fill_n(head_ones.data_as<float>(), c.head_dim, 1.0f);
  const model::MoeConfig& moe = c.moe;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w.layers.emplace_back();
    lw.input_norm = be.adopt_tensor(ones);
    lw.post_norm = be.adopt_tensor(ones);
    if (c.qk_norm) {
      lw.q_norm = be.adopt_tensor(head_ones);
      lw.k_norm = be.adopt_tensor(head_ones);
    }
    lw.qkv = be.random_linear(c.q_size() + 2 * c.kv_size(), c.hidden_size, mode, kStd, seed++);
    lw.o = be.random_linear(c.hidden_size, c.q_size(), mode, kStd, seed++);
    if (!c.moe_layer(l)) {
      lw.gate_up = be.random_linear(2 * c.intermediate_size, c.hidden_size, mode, kStd, seed++);
      lw.down = be.random_linear(c.hidden_size, c.intermediate_size, mode, kStd, seed++);
      continue;
    }
    // The router in f32, made on the host (it is small); the experts on the backend's device.
    const bool shared = moe.shared_intermediate_size > 0;
    auto& m = *(lw.moe = std::make_unique<model::MoeWeights>());
    Tensor router = Tensor::empty({moe.num_experts + (shared ? 1 : 0), c.hidden_size}, DType::kF32);
    std::mt19937_64 rng(seed++);
    std::normal_distribution<float> normal(0.0f, kStd);
    for (int64_t i = 0; i < router.numel(); ++i) router.data_as<float>()[i] = normal(rng);
    m.router = be.adopt_tensor(std::move(router));
    m.gate_up = be.random_experts(moe.num_experts, 2 * moe.intermediate_size, c.hidden_size, mode, kStd, seed);
    seed += static_cast<uint64_t>(moe.num_experts);
    m.down = be.random_experts(moe.num_experts, c.hidden_size, moe.intermediate_size, mode, kStd, seed);
    seed += static_cast<uint64_t>(moe.num_experts);
    if (shared) {
      m.shared_gate_up = be.random_linear(2 * moe.shared_intermediate_size, c.hidden_size, mode, kStd, seed++);
      m.shared_down = be.random_linear(c.hidden_size, moe.shared_intermediate_size, mode, kStd, seed++);
    }
  }
  QuantizationMode head = mode;  // lm_head stays 16-bit, as when loading
  head.quantized = false;
  w.lm_head = be.random_linear(c.vocab_size, c.hidden_size, head, kStd, seed++);
  return std::make_unique<Model>(c, mode, std::move(backend), std::move(w));
}

}  // namespace fp6serve
