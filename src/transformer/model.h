// A loaded model: config, weights on a backend, and the transformer forward pass over a
// batch of sequences (prompt chunks and decode tokens mixed, each at its own position, with
// a paged KV cache). Llama-family: pre-norm RMSNorm, rotary attention with grouped-query
// heads (q/k norms for qwen3_moe), SwiGLU MLP or a mixture of SwiGLU experts (Backend::moe).
// A model may be split over Options::tensor_parallel_size ranks (transformer/tensor_parallel.h,
// docs/tensor_parallel.md): one backend per rank, each holding a shard of every layer, driven
// by a thread per rank; the model is used as one (rank 0 returns the logits and samples).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>

#include "backend/backend.h"
#include "backend/batch.h"
#include "backend/communicator.h"
#include "backend/kv_cache.h"
#include "fp6serve/options.h"
#include "model/config.h"
#include "model/quantization.h"
#include "model/weights.h"
#include "transformer/tensor_parallel.h"

namespace fp6serve {

using model::ModelConfig;
using model::ModelWeights;

class Model {
 public:
  // Reads config.json and the safetensors in dir (a Hugging Face checkpoint, quantized while
  // loading as options.quantization_mode says, or one `fp6serve quantize` wrote) onto
  // `backend`, or onto the backend(s) options.device and options.tensor_parallel_size name
  // (transformer/device.h; a given backend is one rank: tensor_parallel_size must be 1).
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, const Options& options,
                                     std::unique_ptr<Backend> backend = nullptr);
  // A model of the config's shape with random weights made on the device(s) options name
  // (Backend::random_linear): for benchmarks of real shapes without a checkpoint. Split over
  // ranks, each rank draws its own shards (not those of the unsplit model of the same seed).
  static std::unique_ptr<Model> random(const ModelConfig& config, const model::QuantizationMode& mode,
                                       const Options& options, uint64_t seed = 1);

  // One rank: its backend (its device), made for rank_config(config, ranks); its shard of the
  // weights (lm_head on rank 0 only); its communicator (solo_communicator() for one rank).
  struct Rank {
    std::unique_ptr<Backend> backend;
    ModelWeights weights;
    std::unique_ptr<Communicator> comm;
  };
  // threads->size() ranks; rank r's backend is driven from threads' rank r.
  Model(ModelConfig config, model::QuantizationMode mode, std::unique_ptr<RankThreads> threads,
        std::vector<Rank> ranks);
  ~Model();  // each rank's weights are released on its thread (its device)

  const ModelConfig& config() const { return config_; }
  const model::QuantizationMode& quantization() const { return mode_; }
  int tensor_parallel_size() const { return static_cast<int>(ranks_.size()); }
  // Rank 0's backend and weights: those of one device. Every rank holds the same number of KV
  // blocks and rank 0 the most weights (lm_head), so the engine sizes the KV cache from it.
  Backend& backend() { return *ranks_[0].backend; }
  const ModelWeights& weights() const { return ranks_[0].weights; }
  // Every rank's cache of num_blocks blocks (rank 0's, holding the others' in KvCache::ranks).
  KvCache make_kv_cache(int64_t num_blocks, int64_t block_size);

  // Called with the residual stream [tokens, hidden] after the embeddings (0) and after each
  // layer (1..L-1), and with the final-norm output (L): Hugging Face's output_hidden_states.
  using HiddenStateHook = std::function<void(int64_t index, const Tensor& hidden)>;

  // Logits [batch.logit_rows.size(), vocab] as a host f32 tensor.
  Tensor forward(const Batch& batch, KvCache& cache, const HiddenStateHook& hook = nullptr);
  // The pass, then the next token of each logits row as rows[i] says, sampled where the
  // logits are (on the GPU only tokens and log-probabilities come back).
  std::vector<Sample> forward_sample(const Batch& batch, KvCache& cache, const std::vector<SampleRow>& rows);

 private:
  // The pass on every rank: rank 0's logits [batch.logit_rows.size(), vocab] on its backend
  // (valid until the next pass).
  Tensor run(const Batch& batch, KvCache& cache, const HiddenStateHook& hook);
  // Rank r's part of the pass, on its thread; the hook only on rank 0. Only rank 0 computes
  // logits (the others return an empty tensor).
  Tensor run_rank(int r, const Batch& batch, KvCache& cache, const HiddenStateHook& hook);

  ModelConfig config_;
  ModelConfig rank_config_;  // the shape each rank computes (config_ for one rank)
  model::QuantizationMode mode_;
  std::unique_ptr<RankThreads> threads_;
  std::vector<Rank> ranks_;
};

}  // namespace fp6serve
