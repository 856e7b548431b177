// The forward pass, written once against Backend (model.h).
#include "transformer/model.h"

#include "core/check.h"

namespace fp6serve {

Model::Model(ModelConfig config, model::QuantizationMode mode, std::unique_ptr<Backend> backend, ModelWeights weights)
    : config_(std::move(config)), mode_(std::move(mode)), backend_(std::move(backend)), weights_(std::move(weights)) {}

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
  // The dense MLP's (a MoE backend keeps the experts' own buffers).
  Tensor gate_up = c.has_dense_mlp() ? be.activations(n, 2 * c.intermediate_size) : Tensor();
  Tensor act = c.has_dense_mlp() ? be.activations(n, c.intermediate_size) : Tensor();
  Tensor all = hook ? be.activations(n, c.hidden_size) : Tensor();
  Tensor last = be.activations(rows, c.hidden_size);
  Tensor normed = be.activations(rows, c.hidden_size);
  Tensor logits = be.activations(rows, c.vocab_size);

  auto ops = [&] {
    be.embed(weights_.embed, residual);
    if (hook) hook(0, residual);
    be.rms_norm(residual, weights_.layers[0].input_norm, eps, h);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const model::LayerWeights& w = weights_.layers[l];
      be.linear(h, *w.qkv, qkv);
      if (c.qk_norm) be.qk_norm(qkv, w.q_norm, w.k_norm, eps);
      be.rope_write_kv(qkv, cache, l);
      be.attention(qkv, cache, l, attn);
      be.linear(attn, *w.o, proj);
      be.add_rms_norm(residual, proj, w.post_norm, eps, h);
      if (w.moe) {
        be.moe(h, *w.moe, proj);
      } else {
        be.linear(h, *w.gate_up, gate_up);
        be.silu_mul(gate_up, act);
        be.linear(act, *w.down, proj);
      }
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
    be.gather_logit_rows(residual, last);
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

}  // namespace fp6serve
