#include "model/model.h"

#include <algorithm>

#include "core/check.h"

namespace fp6serve::model {

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const LoadOptions& options,
                                   std::unique_ptr<Backend> backend) {
  ModelConfig config = ModelConfig::load(dir);
  const Checkpoint ckpt(dir);
  if (!backend) backend = make_cpu_backend(config);
  ModelWeights weights = load_weights(ckpt, config, options, *backend);
  return std::make_unique<Model>(std::move(config), std::move(backend), std::move(weights));
}

std::unique_ptr<LinearWeight> Backend::random_linear(int64_t, int64_t, const QuantizationMode&, float, uint64_t) {
  FP6_THROW(kUnsupported, "random-weight models are built on the GPU; the {} backend cannot make them", describe());
}
Tensor Backend::random_tensor(const std::vector<int64_t>&, float, uint64_t) {
  FP6_THROW(kUnsupported, "random-weight models are built on the GPU; the {} backend cannot make them", describe());
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
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w.layers.emplace_back();
    lw.input_norm = be.adopt_tensor(ones);
    lw.post_norm = be.adopt_tensor(ones);
    lw.qkv = be.random_linear(c.q_size() + 2 * c.kv_size(), c.hidden_size, mode, kStd, seed++);
    lw.o = be.random_linear(c.hidden_size, c.q_size(), mode, kStd, seed++);
    lw.gate_up = be.random_linear(2 * c.intermediate_size, c.hidden_size, mode, kStd, seed++);
    lw.down = be.random_linear(c.hidden_size, c.intermediate_size, mode, kStd, seed++);
  }
  QuantizationMode head = mode;  // lm_head stays 16-bit, as when loading
  head.quantized = false;
  w.lm_head = be.random_linear(c.vocab_size, c.hidden_size, head, kStd, seed++);
  return std::make_unique<Model>(c, std::move(backend), std::move(w));
}

Model::Model(ModelConfig config, std::unique_ptr<Backend> backend, ModelWeights weights)
    : config_(std::move(config)), backend_(std::move(backend)), weights_(std::move(weights)) {}

Tensor Model::forward(const Batch& batch, KvCache& cache, const HiddenStateHook& hook) {
  Tensor logits = run(batch, cache, hook);
  if (logits.dim(0) == 0) return Tensor::empty({0, config_.vocab_size}, DType::kF32);
  return backend_->to_host_f32(logits);
}

std::vector<Sample> Model::forward_sample(const Batch& batch, KvCache& cache, const std::vector<SampleRow>& rows) {
  FP6_CHECK(rows.size() == batch.logit_rows.size(), kInvalidArgument, "{} sampling rows for {} logits rows",
            rows.size(), batch.logit_rows.size());
  Tensor logits = run(batch, cache, nullptr);
  return rows.empty() ? std::vector<Sample>{} : backend_->sample(logits, rows);
}

Tensor Model::run(const Batch& batch, KvCache& cache, const HiddenStateHook& hook) {
  const int64_t n = batch.num_tokens();
  FP6_CHECK(n > 0, kInvalidArgument, "forward of an empty batch");
  for (const BatchSeq& s : batch.seqs)
    FP6_CHECK(s.start_pos + s.token_count <= config_.max_position_embeddings, kInvalidArgument,
              "sequence reaches position {} but the model supports {} positions", s.start_pos + s.token_count,
              config_.max_position_embeddings);
  Backend& be = *backend_;
  const ModelConfig& c = config_;
  const double eps = c.rms_norm_eps;

  const auto rows = static_cast<int64_t>(batch.logit_rows.size());
  be.begin_forward(batch, cache);
  // Every activation of the pass is taken before the ops, so that a backend that records the
  // ops (CUDA graphs) sees the same buffers when it replays them.
  Tensor residual = be.activations(n, c.hidden_size);
  Tensor h = be.activations(n, c.hidden_size);
  Tensor qkv = be.activations(n, c.q_size() + 2 * c.kv_size());
  Tensor attn = be.activations(n, c.q_size());
  Tensor proj = be.activations(n, c.hidden_size);
  Tensor gate_up = be.activations(n, 2 * c.intermediate_size);
  Tensor act = be.activations(n, c.intermediate_size);
  Tensor all = hook ? be.activations(n, c.hidden_size) : Tensor();
  Tensor last = be.activations(rows, c.hidden_size);
  Tensor normed = be.activations(rows, c.hidden_size);
  Tensor logits = be.activations(rows, c.vocab_size);

  auto ops = [&] {
    be.embed(weights_.embed, batch, residual);
    if (hook) hook(0, residual);
    be.rms_norm(residual, weights_.layers[0].input_norm, eps, h);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const LayerWeights& w = weights_.layers[l];
      be.linear(h, *w.qkv, qkv);
      be.rope_write_kv(qkv, batch, cache, l);
      be.attention(qkv, batch, cache, l, attn);
      be.linear(attn, *w.o, proj);
      be.add_rms_norm(residual, proj, w.post_norm, eps, h);
      be.linear(h, *w.gate_up, gate_up);
      be.silu_mul(gate_up, act);
      be.linear(act, *w.down, proj);
      if (l + 1 < c.num_layers) {
        be.add_rms_norm(residual, proj, weights_.layers[l + 1].input_norm, eps, h);
        if (hook) hook(l + 1, residual);
      } else {
        be.add(residual, proj);
      }
    }
    if (hook) {
      be.rms_norm(residual, weights_.final_norm, eps, all);
      hook(c.num_layers, all);
    }
    if (rows == 0) return;
    be.gather_logit_rows(residual, batch, last);
    be.rms_norm(last, weights_.final_norm, eps, normed);
    be.linear(normed, *weights_.lm_head, logits);
  };
  // A backend may replay a recording of these ops, or record them (not with a hook, which
  // reads activations on the host in the middle).
  const bool may_record = !hook;
  if (!(may_record && be.replay_forward())) {
    if (may_record) be.begin_recording();
    try {
      ops();
    } catch (...) {
      if (may_record) be.abort_recording();
      throw;
    }
    if (may_record && !be.end_recording()) ops();  // recording failed: run them directly
  }
  return logits;
}

}  // namespace fp6serve::model
