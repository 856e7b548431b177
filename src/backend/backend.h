// The device side of a model: where weights live and how each transformer op runs. The
// transformer (transformer/model.cc) is written once against this interface; the CPU backend
// (cpu/) and the CUDA backend (cuda/) implement it, and the op table test
// (tests/backend/ops_test.cc) runs every op of every backend against a plain reference.
// Activations are [tokens, width] tensors in act_dtype() on the backend's device.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/batch.h"
#include "backend/kv_cache.h"
#include "backend/sampling.h"
#include "core/tensor.h"
#include "fpx/format.h"
#include "model/quantization.h"
#include "model/weights.h"

namespace fp6serve {

using model::ExpertWeights;
using model::HostLinear;
using model::LinearWeight;
using model::MoeWeights;
using model::QuantizationMode;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual DType act_dtype() const = 0;
  // The raw placement FPx weights are packed for (fpx/pack_plan.h).
  virtual DType pack_target(fpx::Format format) const = 0;
  virtual std::string describe() const = 0;

  struct Memory {
    size_t free = 0;
    size_t total = 0;
  };
  // The device memory this backend allocates from, now (the host's for the CPU backend).
  virtual Memory memory() const = 0;

  // Weights: take a host weight (the host copy may be released).
  virtual std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& host) = 0;
  virtual Tensor adopt_tensor(Tensor host) = 0;
  // Copies a host tensor of a float dtype into `dst` on the backend (same element count),
  // converting to dst's dtype. For tests and tools, not for the hot path.
  virtual void upload(const Tensor& host, Tensor& dst) = 0;

  // Random weights (random-weight models of real shapes, for benchmarks): a linear layer of
  // N(0, stddev) values, quantized as `mode` says, and a 16-bit tensor (the embeddings). By
  // default made on the host and adopted; a GPU backend makes them in place.
  virtual std::unique_ptr<LinearWeight> random_linear(int64_t rows, int64_t cols, const QuantizationMode& mode,
                                                      float stddev, uint64_t seed);
  virtual Tensor random_tensor(const std::vector<int64_t>& shape, float stddev, uint64_t seed);

  // The experts of one kind of one MoE layer (model/weights.h ExpertWeights): every expert's
  // weight, in expert order, all of one shape and form. The default: kUnsupported.
  virtual std::unique_ptr<ExpertWeights> adopt_experts(std::vector<HostLinear>&& experts);
  // `experts` random weights [rows, cols] as random_linear makes one (seeds seed, seed + 1, ...);
  // by default made on the host and adopted.
  virtual std::unique_ptr<ExpertWeights> random_experts(int64_t experts, int64_t rows, int64_t cols,
                                                        const QuantizationMode& mode, float stddev, uint64_t seed);

  // Zero-filled.
  virtual KvCache make_kv_cache(int64_t num_blocks, int64_t block_size) = 0;
  // Bytes one KV block takes over all layers.
  virtual size_t kv_block_bytes(int64_t block_size) const = 0;

  // A new activation tensor [rows, cols].
  virtual Tensor activations(int64_t rows, int64_t cols) = 0;

  // Called once at the start of each forward pass, with its batch, after the weights are
  // adopted (a backend may size workspaces for the weights it holds) and before any
  // activations() or op: validates the batch against the cache (check_batch) and prepares
  // the per-token arrays (a GPU backend uploads them here, once for all layers, and recycles
  // the previous pass's activation memory: activations live for one pass).
  virtual void begin_forward(const Batch& batch, const KvCache& cache) = 0;

  // Recording the ops of a pass (CUDA graphs). After begin_forward and the activations:
  // replay_forward() runs the recording of a pass of the same shape, buffers and arguments
  // and returns true, or returns false; the model then calls begin_recording(), the ops, and
  // end_recording(), which runs what it recorded and returns true, or returns false if it
  // could not record (the model then runs the ops again, directly). Defaults: no recording.
  virtual bool replay_forward() { return false; }
  virtual void begin_recording() {}
  virtual bool end_recording() { return true; }
  virtual void abort_recording() {}  // an op threw while recording

  // Ops of the pass begin_forward announced (its batch: tokens, positions, block tables,
  // logit rows), which must outlive the pass.
  virtual void embed(const Tensor& table, Tensor& out) = 0;
  virtual void rms_norm(const Tensor& x, const Tensor& weight, double eps, Tensor& out) = 0;
  virtual void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, double eps, Tensor& out) = 0;
  virtual void linear(const Tensor& x, const LinearWeight& w, Tensor& y) = 0;
  // qkv [tokens, q + 2 kv]: rotates q and k in place and writes k, v into the layer's cache.
  virtual void rope_write_kv(Tensor& qkv, KvCache& cache, int64_t layer) = 0;
  // out [tokens, q] = attention of qkv's q over the cached keys and values.
  virtual void attention(const Tensor& qkv, const KvCache& cache, int64_t layer, Tensor& out) = 0;
  // qkv [tokens, q + 2 kv]: each q head and each k head RMS-normalized over head_dim and scaled
  // by q_weight or k_weight [head_dim] (f32), in place: qwen3_moe's q_norm and k_norm, before
  // RoPE. The default: kUnsupported.
  virtual void qk_norm(Tensor& qkv, const Tensor& q_weight, const Tensor& k_weight, double eps);
  // out [tokens, hidden] = the mixture-of-experts MLP (model/config.h MoeConfig, of the config
  // the backend was made for) of x [tokens, hidden]: the router's top-k, every expert's tokens
  // through its gate_up, silu_mul and down, the weighted sum (and the gated shared expert).
  // The default: kUnsupported.
  virtual void moe(const Tensor& x, const MoeWeights& w, Tensor& out);
  virtual void silu_mul(const Tensor& gate_up, Tensor& out) = 0;
  virtual void add(Tensor& acc, const Tensor& x) = 0;
  // out [batch.logit_rows.size(), cols] = x[batch.logit_rows, :]
  virtual void gather_logit_rows(const Tensor& x, Tensor& out) = 0;
  // A copy of a tensor of the backend (activations, logits) as a host f32 tensor.
  virtual Tensor to_host_f32(const Tensor& x) = 0;
  // The next token of each row of logits [rows.size(), vocab] (backend/sampling.h).
  virtual std::vector<Sample> sample(const Tensor& logits, const std::vector<SampleRow>& rows) = 0;
};

}  // namespace fp6serve
