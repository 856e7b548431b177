// A loaded model: config, weights on a backend, and the transformer forward pass over a
// batch of sequences (prompt chunks and decode tokens mixed, each at its own position, with
// a paged KV cache). Llama-family: pre-norm RMSNorm, rotary attention with grouped-query
// heads (q/k norms for qwen3_moe), SwiGLU MLP or a mixture of SwiGLU experts (Backend::moe).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>

#include "backend/backend.h"
#include "backend/batch.h"
#include "backend/kv_cache.h"
#include "fp6serve/options.h"
#include "model/config.h"
#include "model/quantization.h"
#include "model/weights.h"

namespace fp6serve {

using model::ModelConfig;
using model::ModelWeights;

class Model {
 public:
  // Reads config.json and the safetensors in dir (a Hugging Face checkpoint, quantized while
  // loading as options.quantization_mode says, or one `fp6serve quantize` wrote) onto
  // `backend`, or onto the backend options.device names (transformer/device.h).
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, const Options& options,
                                     std::unique_ptr<Backend> backend = nullptr);
  Model(ModelConfig config, model::QuantizationMode mode, std::unique_ptr<Backend> backend, ModelWeights weights);
  // A model of the config's shape with random weights made on the backend's device
  // (Backend::random_linear): for benchmarks of real shapes without a checkpoint.
  static std::unique_ptr<Model> random(const ModelConfig& config, const model::QuantizationMode& mode,
                                       std::unique_ptr<Backend> backend, uint64_t seed = 1);

  const ModelConfig& config() const { return config_; }
  const model::QuantizationMode& quantization() const { return mode_; }
  Backend& backend() { return *backend_; }
  const ModelWeights& weights() const { return weights_; }
  KvCache make_kv_cache(int64_t num_blocks, int64_t block_size) {
    return backend_->make_kv_cache(num_blocks, block_size);
  }

  // Called with the residual stream [tokens, hidden] after the embeddings (0) and after each
  // layer (1..L-1), and with the final-norm output (L): Hugging Face's output_hidden_states.
  using HiddenStateHook = std::function<void(int64_t index, const Tensor& hidden)>;

  // Logits [batch.logit_rows.size(), vocab] as a host f32 tensor.
  Tensor forward(const Batch& batch, KvCache& cache, const HiddenStateHook& hook = nullptr);
  // The pass, then the next token of each logits row as rows[i] says, sampled where the
  // logits are (on the GPU only tokens and log-probabilities come back).
  std::vector<Sample> forward_sample(const Batch& batch, KvCache& cache, const std::vector<SampleRow>& rows);

 private:
  // The pass: logits [batch.logit_rows.size(), vocab] on the backend (valid until the next pass).
  Tensor run(const Batch& batch, KvCache& cache, const HiddenStateHook& hook);

  ModelConfig config_;
  model::QuantizationMode mode_;
  std::unique_ptr<Backend> backend_;
  ModelWeights weights_;
};

}  // namespace fp6serve
