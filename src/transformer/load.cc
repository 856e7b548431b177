// Building a Model: from a checkpoint directory (Model::load) or with random weights of a
// real shape (Model::random). The loader's weights go straight to the backend(s), one at a
// time (split across tensor-parallel ranks on the way), so a host copy of the whole model
// never exists.
#include <algorithm>
#include <random>

#include "core/check.h"
#include "loader/hf_weights.h"
#include "loader/prequantized.h"
#include "transformer/device.h"
#include "transformer/model.h"
#include "transformer/tensor_parallel.h"

namespace fp6serve {

namespace {

using model::LayerWeights;
using model::QuantizationMode;
using model::WeightId;
using model::WeightKind;

// Where each kind of weight goes in ModelWeights.
class Slots {
 public:
  Slots(const ModelConfig& config, ModelWeights& weights) : config_(config), weights_(weights) {
    weights_.layers.resize(static_cast<size_t>(config.num_layers));
  }

  void tensor(WeightId id, Tensor t) {
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

  void experts(WeightId id, std::unique_ptr<model::ExpertWeights> w) {
    if (id.kind == WeightKind::kExpertGateUp)
      moe(id).gate_up = std::move(w);
    else if (id.kind == WeightKind::kExpertDown)
      moe(id).down = std::move(w);
    else
      FP6_THROW(kInternal, "weight {} is not an expert", model::weight_name(id));
  }

  void linear(WeightId id, std::unique_ptr<model::LinearWeight> w) {
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

  // Every weight (lm_head when `head`), or kBadInput naming what is missing.
  void check(bool head) const {
    FP6_CHECK(weights_.embed.numel() > 0 && weights_.final_norm.numel() > 0 && (weights_.lm_head || !head), kBadInput,
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
  ModelWeights& weights_;
};

// Hands each weight the loader produces to every rank's backend, on the rank's thread, and
// keeps it in the rank's slot: norms, embeddings and routers whole, the linear layers split
// (transformer/tensor_parallel.h; one rank takes them whole), lm_head to rank 0 only.
class Adopter : public loader::WeightSink {
 public:
  Adopter(const ModelConfig& config, std::vector<Model::Rank>& ranks, RankThreads& threads)
      : config_(config), ranks_(ranks), threads_(threads) {
    for (Model::Rank& r : ranks) slots_.emplace_back(config, r.weights);
  }

  void tensor(WeightId id, Tensor host) override {
    // Host tensors share their storage: every rank adopts the same one (the CPU keeps it).
    threads_.run([&](int r) { slots_[r].tensor(id, rank(r).adopt_tensor(host)); });
  }

  void experts(std::vector<model::HostLinear>&& all) override {
    FP6_ASSERT(!all.empty());
    const WeightId id = all.front().id;
    if (ranks_.size() == 1) return slots_[0].experts(id, rank(0).adopt_experts(std::move(all)));
    std::vector<std::vector<model::HostLinear>> shards(ranks_.size());
    for (const model::HostLinear& e : all) {
      std::vector<model::HostLinear> split = shard_linear(e, config_, size());
      for (size_t r = 0; r < shards.size(); ++r) shards[r].push_back(std::move(split[r]));
    }
    all.clear();
    threads_.run([&](int r) { slots_[r].experts(id, rank(r).adopt_experts(std::move(shards[r]))); });
  }

  void linear(model::HostLinear&& host) override {
    const WeightId id = host.id;
    if (ranks_.size() == 1 || id.kind == WeightKind::kLmHead)
      return slots_[0].linear(id, rank(0).adopt_linear(std::move(host)));
    std::vector<model::HostLinear> shards = shard_linear(host, config_, size());
    host = {};
    threads_.run([&](int r) { slots_[r].linear(id, rank(r).adopt_linear(std::move(shards[r]))); });
  }

  // Every rank's weights are complete, or kBadInput naming what is missing.
  void check() const {
    for (size_t r = 0; r < slots_.size(); ++r) slots_[r].check(r == 0);
  }

 private:
  Backend& rank(int r) { return *ranks_[static_cast<size_t>(r)].backend; }
  int size() const { return static_cast<int>(ranks_.size()); }

  const ModelConfig& config_;
  std::vector<Model::Rank>& ranks_;
  RankThreads& threads_;
  std::vector<Slots> slots_;
};

// A model's ranks, options.tensor_parallel_size of them, each with its backend (made on its
// thread, for the rank's shape) and communicator; no weights yet.
std::vector<Model::Rank> make_ranks(const ModelConfig& config, const QuantizationMode& mode, const Options& options,
                                    RankThreads& threads) {
  const ModelConfig shape = rank_config(config, options.tensor_parallel_size);
  std::vector<Model::Rank> ranks(static_cast<size_t>(threads.size()));
  threads.run([&](int r) { ranks[static_cast<size_t>(r)].backend = make_backend(shape, mode, options, r); });
  std::vector<Backend*> backends;
  for (Model::Rank& r : ranks) backends.push_back(r.backend.get());
  std::vector<std::unique_ptr<Communicator>> comms = make_communicators(backends);
  for (size_t r = 0; r < ranks.size(); ++r) ranks[r].comm = std::move(comms[r]);
  return ranks;
}

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
  FP6_CHECK(!backend || options.tensor_parallel_size == 1, kInvalidArgument,
            "a model loaded onto a given backend is not split: tensor_parallel_size must be 1, got {}",
            options.tensor_parallel_size);
  ModelConfig config = ModelConfig::load(dir);
  const loader::Checkpoint ckpt(dir);
  const QuantizationMode mode = resolve_mode(ckpt, options);
  auto threads = std::make_unique<RankThreads>(options.tensor_parallel_size);
  std::vector<Rank> ranks;
  if (backend) {
    ranks.resize(1);
    ranks[0].backend = std::move(backend);
    ranks[0].comm = solo_communicator();
  } else {
    ranks = make_ranks(config, mode, options, *threads);
  }
  const DType target = ranks[0].backend->pack_target(mode.format);
  Adopter adopter(config, ranks, *threads);
  if (loader::is_prequantized(ckpt)) {
    loader::read_prequantized(ckpt, config, target, adopter);
  } else {
    const loader::LinearSpec spec{mode, options.quantize_lm_head, mode.quantized ? target : DType::kF16,
                                  options.progress, fpx::parse_scale_rule(options.quantization_scale)};
    loader::read_hf_weights(ckpt, config, spec, adopter);
  }
  adopter.check();
  return std::make_unique<Model>(std::move(config), mode, std::move(threads), std::move(ranks));
}

std::unique_ptr<Model> Model::random(const ModelConfig& config, const QuantizationMode& mode, const Options& options,
                                     uint64_t seed) {
  options.validate();
  auto threads = std::make_unique<RankThreads>(options.tensor_parallel_size);
  std::vector<Rank> ranks = make_ranks(config, mode, options, *threads);
  const ModelConfig c = rank_config(config, options.tensor_parallel_size);
  threads->run([&](int rank) {
    Backend& be = *ranks[static_cast<size_t>(rank)].backend;
    ModelWeights& w = ranks[static_cast<size_t>(rank)].weights;
    // Weights every rank holds whole (embeddings, routers) are drawn from the same seeds on
    // every rank; each rank's shards of the linear layers from seeds of its own.
    uint64_t s = seed;
    const uint64_t own = static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ull;
    // Weights ~ N(0, 0.02) as Llama's initializer; norms are ones.
    constexpr float kStd = 0.02f;
    Tensor ones = Tensor::empty({c.hidden_size}, DType::kF32);
    std::fill_n(ones.data_as<float>(), c.hidden_size, 1.0f);
    w.embed = be.random_tensor({c.vocab_size, c.hidden_size}, kStd, s++);
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
      lw.qkv = be.random_linear(c.q_size() + 2 * c.kv_size(), c.hidden_size, mode, kStd, own + s++);
      lw.o = be.random_linear(c.hidden_size, c.q_size(), mode, kStd, own + s++);
      if (!c.moe_layer(l)) {
        lw.gate_up = be.random_linear(2 * c.intermediate_size, c.hidden_size, mode, kStd, own + s++);
        lw.down = be.random_linear(c.hidden_size, c.intermediate_size, mode, kStd, own + s++);
        continue;
      }
      // The router in f32, made on the host (it is small); the experts on the backend's device.
      const bool shared = moe.shared_intermediate_size > 0;
      auto& m = *(lw.moe = std::make_unique<model::MoeWeights>());
      Tensor router = Tensor::empty({moe.num_experts + (shared ? 1 : 0), c.hidden_size}, DType::kF32);
      std::mt19937_64 rng(s++);
      std::normal_distribution<float> normal(0.0f, kStd);
      for (int64_t i = 0; i < router.numel(); ++i) router.data_as<float>()[i] = normal(rng);
      m.router = be.adopt_tensor(std::move(router));
      m.gate_up = be.random_experts(moe.num_experts, 2 * moe.intermediate_size, c.hidden_size, mode, kStd, own + s);
      s += static_cast<uint64_t>(moe.num_experts);
      m.down = be.random_experts(moe.num_experts, c.hidden_size, moe.intermediate_size, mode, kStd, own + s);
      s += static_cast<uint64_t>(moe.num_experts);
      if (shared) {
        m.shared_gate_up = be.random_linear(2 * moe.shared_intermediate_size, c.hidden_size, mode, kStd, own + s++);
        m.shared_down = be.random_linear(c.hidden_size, moe.shared_intermediate_size, mode, kStd, own + s++);
      }
    }
    if (rank != 0) return;         // lm_head on rank 0 only
    QuantizationMode head = mode;  // lm_head stays 16-bit unless asked, as when loading
    head.quantized = mode.quantized && options.quantize_lm_head;
    w.lm_head = be.random_linear(c.vocab_size, c.hidden_size, head, kStd, s++);
  });
  return std::make_unique<Model>(config, mode, std::move(threads), std::move(ranks));
}

}  // namespace fp6serve
