// The forward pass, written once against Backend (model.h), run by every tensor-parallel rank.
#include "transformer/model.h"

#include <mutex>

#include "core/check.h"

namespace fp6serve {

Model::Model(ModelConfig config, model::QuantizationMode mode, std::unique_ptr<RankThreads> threads,
             std::vector<Rank> ranks)
    : config_(std::move(config)),
      rank_config_(rank_config(config_, static_cast<int>(ranks.size()))),
      mode_(std::move(mode)),
      threads_(std::move(threads)),
      ranks_(std::move(ranks)) {
  FP6_ASSERT(threads_ && threads_->size() == static_cast<int>(ranks_.size()));
  for (const Rank& r : ranks_) FP6_ASSERT(r.backend && r.comm && r.comm->size() == static_cast<int>(ranks_.size()));
}

Model::~Model() {
  try {
    threads_->run([&](int r) {
      Rank& me = ranks_[static_cast<size_t>(r)];
      me.weights = ModelWeights{};
      me.comm.reset();
      me.backend.reset();
    });
  } catch (...) {  // the weights are released regardless; nothing to report from a destructor
  }
}

KvCache Model::make_kv_cache(int64_t num_blocks, int64_t block_size) {
  std::vector<KvCache> caches(ranks_.size());
  threads_->run([&](int r) {
    caches[static_cast<size_t>(r)] = ranks_[static_cast<size_t>(r)].backend->make_kv_cache(num_blocks, block_size);
  });
  KvCache cache = std::move(caches[0]);
  for (size_t r = 1; r < caches.size(); ++r) cache.ranks.push_back(std::move(caches[r]));
  return cache;
}

Tensor Model::forward(const Batch& batch, KvCache& cache, const HiddenStateHook& hook) {
  Tensor logits = run(batch, cache, hook);
  if (logits.dim(0) == 0) return Tensor::empty({0, config_.vocab_size}, DType::kF32);
  return backend().to_host_f32(logits);
}

std::vector<Sample> Model::forward_sample(const Batch& batch, KvCache& cache, const std::vector<SampleRow>& rows) {
  FP6_CHECK(rows.size() == batch.logit_rows.size(), kInvalidArgument, "{} sampling rows for {} logits rows",
            rows.size(), batch.logit_rows.size());
  Tensor logits = run(batch, cache, nullptr);
  return rows.empty() ? std::vector<Sample>{} : backend().sample(logits, rows);
}

Tensor Model::run(const Batch& batch, KvCache& cache, const HiddenStateHook& hook) {
  FP6_CHECK(batch.num_tokens() > 0, kInvalidArgument, "forward of an empty batch");
  for (const BatchSeq& s : batch.seqs)
    FP6_CHECK(s.start_pos + s.token_count <= config_.max_position_embeddings, kInvalidArgument,
              "sequence reaches position {} but the model supports {} positions", s.start_pos + s.token_count,
              config_.max_position_embeddings);
  if (ranks_.size() == 1) return run_rank(0, batch, cache, hook);
  // The batch is checked here, once: past this point a rank that throws is a failure of its
  // own, and the others must not wait for it in a collective (Communicator::abort).
  FP6_CHECK(cache.ranks.size() + 1 == ranks_.size(), kInvalidArgument,
            "a KV cache of {} ranks for a model of {} (make it with this model's make_kv_cache)",
            cache.ranks.size() + 1, ranks_.size());
  check_batch(batch, config_.vocab_size, cache.num_blocks, cache.block_size);
  Tensor logits;
  std::mutex mutex;
  std::exception_ptr first;  // the first rank's failure; the others' follow from the abort
  threads_->run([&](int r) {
    try {
      Tensor out =
          run_rank(r, batch, r == 0 ? cache : cache.ranks[static_cast<size_t>(r - 1)], r == 0 ? hook : nullptr);
      if (r == 0) logits = std::move(out);
    } catch (...) {
      {
        std::lock_guard lock(mutex);
        if (!first) first = std::current_exception();
      }
      ranks_[static_cast<size_t>(r)].comm->abort();
    }
  });
  if (first) std::rethrow_exception(first);
  return logits;
}

Tensor Model::run_rank(int rank, const Batch& batch, KvCache& cache, const HiddenStateHook& hook) {
  const int64_t n = batch.num_tokens();
  Rank& me = ranks_[static_cast<size_t>(rank)];
  Backend& be = *me.backend;
  Communicator& comm = *me.comm;
  const ModelWeights& weights = me.weights;
  const ModelConfig& c = rank_config_;  // this rank's share of heads and intermediate sizes
  const double eps = c.rms_norm_eps;
  // Only rank 0 computes logits: the others have no lm_head.
  const bool head = rank == 0;

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
  Tensor last = head ? be.activations(rows, c.hidden_size) : Tensor();
  Tensor normed = head ? be.activations(rows, c.hidden_size) : Tensor();
  Tensor logits = head ? be.activations(rows, c.vocab_size) : Tensor();

  auto ops = [&] {
    be.embed(weights.embed, residual);
    if (hook) hook(0, residual);
    be.rms_norm(residual, weights.layers[0].input_norm, eps, h);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const model::LayerWeights& w = weights.layers[l];
      be.linear(h, *w.qkv, qkv);
      if (c.qk_norm) be.qk_norm(qkv, w.q_norm, w.k_norm, eps);
      be.rope_write_kv(qkv, cache, l);
      be.attention(qkv, cache, l, attn);
      be.linear(attn, *w.o, proj);
      comm.all_reduce_sum(proj);  // row-parallel o: the ranks' partial sums
      be.add_rms_norm(residual, proj, w.post_norm, eps, h);
      if (w.moe) {
        be.moe(h, *w.moe, proj);
      } else {
        be.linear(h, *w.gate_up, gate_up);
        be.silu_mul(gate_up, act);
        be.linear(act, *w.down, proj);
      }
      comm.all_reduce_sum(proj);  // row-parallel down (each expert's too)
      if (l + 1 < c.num_layers) {
        be.add_rms_norm(residual, proj, weights.layers[l + 1].input_norm, eps, h);
        if (hook) hook(l + 1, residual);
      } else {
        be.add(residual, proj);
      }
    }
    if (hook) {
      be.rms_norm(residual, weights.final_norm, eps, all);
      hook(c.num_layers, all);
    }
    if (rows == 0 || !head) return;
    be.gather_logit_rows(residual, last);
    be.rms_norm(last, weights.final_norm, eps, normed);
    be.linear(normed, *weights.lm_head, logits);
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
