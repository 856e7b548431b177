#include "model/model.h"

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

Model::Model(ModelConfig config, std::unique_ptr<Backend> backend, ModelWeights weights)
    : config_(std::move(config)), backend_(std::move(backend)), weights_(std::move(weights)) {}

Tensor Model::forward(const Batch& batch, KvCache& cache, const HiddenStateHook& hook) {
  const int64_t n = batch.num_tokens();
  FP6_CHECK(n > 0, kInvalidArgument, "forward of an empty batch");
  for (const BatchSeq& s : batch.seqs)
    FP6_CHECK(s.start_pos + s.token_count <= config_.max_position_embeddings, kInvalidArgument,
              "sequence reaches position {} but the model supports {} positions", s.start_pos + s.token_count,
              config_.max_position_embeddings);
  Backend& be = *backend_;
  const ModelConfig& c = config_;
  const double eps = c.rms_norm_eps;

  Tensor residual = be.activations(n, c.hidden_size);
  Tensor h = be.activations(n, c.hidden_size);
  Tensor qkv = be.activations(n, c.q_size() + 2 * c.kv_size());
  Tensor attn = be.activations(n, c.q_size());
  Tensor proj = be.activations(n, c.hidden_size);
  Tensor gate_up = be.activations(n, 2 * c.intermediate_size);
  Tensor act = be.activations(n, c.intermediate_size);

  be.begin_forward(batch, cache);
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
    Tensor all = be.activations(n, c.hidden_size);
    be.rms_norm(residual, weights_.final_norm, eps, all);
    hook(c.num_layers, all);
  }
  const auto rows = static_cast<int64_t>(batch.logit_rows.size());
  if (rows == 0) return Tensor::empty({0, c.vocab_size}, DType::kF32);
  Tensor last = be.activations(rows, c.hidden_size);
  be.gather_rows(residual, batch.logit_rows, last);
  Tensor normed = be.activations(rows, c.hidden_size);
  be.rms_norm(last, weights_.final_norm, eps, normed);
  Tensor logits = be.activations(rows, c.vocab_size);
  be.linear(normed, *weights_.lm_head, logits);
  return be.to_host_f32(logits);
}

}  // namespace fp6serve::model
