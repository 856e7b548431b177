#include "engine/engine.h"

#include <algorithm>

#include "core/check.h"
#include "core/gpu.h"

namespace fp6serve {

namespace {

// Without a size from the user: 1 GiB on the CPU; on the GPU 90% of what the weights left
// free, less 2 GiB for activations and workspaces (at least 256 MiB).
size_t default_kv_cache_bytes(const model::Backend& backend) {
  if (backend.device() != Device::kCuda) return size_t{1} << 30;
  const double usable = 0.9 * static_cast<double>(cuda_free_bytes()) - static_cast<double>(size_t{2} << 30);
  return std::max<size_t>(size_t{256} << 20, usable > 0 ? static_cast<size_t>(usable) : 0);
}

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "?";
}

struct Engine::Sequence {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;
  GenerationParams params;
  StreamCallback callback;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<IncrementalDecoder> decoder;
  std::vector<int32_t> blocks;
  int64_t cached = 0;       // tokens whose keys and values are in the cache
  int64_t scheduled = 0;    // tokens in the current batch
  bool decoding = false;    // its whole prompt (and what it generated) is cached
  std::string pending;      // decoded text held back: it could be the start of a stop string
  StreamChunk news;         // accumulated for the callback at the end of the step
  FinishReason finished = FinishReason::kNone;

  int64_t tokens() const { return static_cast<int64_t>(prompt.size() + generated.size()); }
  int32_t token(int64_t i) const {
    const auto p = static_cast<int64_t>(prompt.size());
    return i < p ? prompt[static_cast<size_t>(i)] : generated[static_cast<size_t>(i - p)];
  }
};

Engine::Engine(model::Model& model, const Tokenizer& tokenizer, EngineConfig config)
    : model_(model),
      tokenizer_(tokenizer),
      config_(std::move(config)),
      blocks_([&] {
        if (config_.num_blocks > 0) return config_.num_blocks;
        const size_t bytes = config_.kv_cache_bytes ? config_.kv_cache_bytes : default_kv_cache_bytes(model.backend());
        return std::max<int64_t>(1, static_cast<int64_t>(bytes / model.backend().kv_block_bytes(config_.block_size)));
      }(), config_.block_size) {
  FP6_CHECK(config_.max_batch_tokens > 0, kInvalidArgument, "max_batch_tokens must be positive");
  FP6_CHECK(config_.max_running > 0, kInvalidArgument, "max_running must be positive");
  // Every running sequence must be able to decode in the same step.
  config_.max_running = std::min(config_.max_running, config_.max_batch_tokens);
  if (config_.max_model_len <= 0) config_.max_model_len = model.config().max_position_embeddings;
  config_.max_model_len = std::min(config_.max_model_len, model.config().max_position_embeddings);
  config_.num_blocks = blocks_.num_blocks();
  cache_ = model_.make_kv_cache(blocks_.num_blocks(), blocks_.block_size());
  stats_.kv_blocks_total = blocks_.num_blocks();
}

Engine::~Engine() = default;

uint64_t Engine::submit(std::vector<int32_t> prompt, GenerationParams params, StreamCallback on_chunk) {
  FP6_CHECK(!prompt.empty(), kInvalidArgument, "the prompt is empty");
  params.sampling.validate();
  FP6_CHECK(params.max_new_tokens >= 1, kInvalidArgument, "max_tokens must be at least 1, got {}",
            params.max_new_tokens);
  const auto len = static_cast<int64_t>(prompt.size());
  FP6_CHECK(len < config_.max_model_len, kInvalidArgument,
            "the prompt has {} tokens but the context length is {} tokens", len, config_.max_model_len);
  FP6_CHECK(len + params.max_new_tokens <= config_.max_model_len, kInvalidArgument,
            "prompt ({} tokens) + max_tokens ({}) exceeds the context length of {} tokens", len,
            params.max_new_tokens, config_.max_model_len);
  FP6_CHECK(blocks_.blocks_for(len + params.max_new_tokens) <= blocks_.num_blocks(), kInvalidArgument,
            "prompt + max_tokens need {} KV blocks but the cache has {}", blocks_.blocks_for(len + params.max_new_tokens),
            blocks_.num_blocks());
  const int32_t vocab = static_cast<int32_t>(model_.config().vocab_size);
  for (int32_t t : prompt)
    FP6_CHECK(t >= 0 && t < vocab, kInvalidArgument, "prompt token id {} is outside the vocabulary [0, {})", t, vocab);
  auto s = std::make_unique<Sequence>();
  s->id = next_id_++;
  s->prompt = std::move(prompt);
  s->sampler = std::make_unique<Sampler>(params.sampling);
  s->decoder = std::make_unique<IncrementalDecoder>(tokenizer_, params.skip_special_tokens);
  s->params = std::move(params);
  s->callback = std::move(on_chunk);
  const uint64_t id = s->id;
  std::lock_guard lock(inbox_mutex_);
  inbox_.push_back(std::move(s));
  return id;
}

void Engine::cancel(uint64_t id) {
  std::lock_guard lock(inbox_mutex_);
  cancels_.push_back(id);
}

bool Engine::idle() const {
  std::lock_guard lock(inbox_mutex_);
  return inbox_.empty() && cancels_.empty() && waiting_.empty() && running_.empty();
}

EngineStats Engine::stats() const {
  std::lock_guard lock(stats_mutex_);
  EngineStats s = stats_;
  std::lock_guard inbox(inbox_mutex_);
  s.waiting += static_cast<int64_t>(inbox_.size());
  return s;
}

void Engine::admit_inbox() {
  std::vector<uint64_t> cancels;
  {
    std::lock_guard lock(inbox_mutex_);
    for (auto& s : inbox_) waiting_.push_back(std::move(s));
    inbox_.clear();
    cancels.swap(cancels_);
  }
  for (uint64_t id : cancels) {
    for (auto& s : waiting_)
      if (s->id == id && s->finished == FinishReason::kNone) finish(*s, FinishReason::kCancelled);
    for (auto& s : running_)
      if (s->id == id && s->finished == FinishReason::kNone) finish(*s, FinishReason::kCancelled);
  }
}

void Engine::finish(Sequence& s, FinishReason reason, const std::string& error) {
  s.finished = reason;
  s.news.finish = reason;
  s.news.error = error;
  if (reason == FinishReason::kLength || reason == FinishReason::kCancelled) {
    // Nothing can follow: what was held back for a stop string is final.
    s.news.text += s.pending + s.decoder->flush();
    s.pending.clear();
  }
  blocks_.release(s.blocks);
  s.cached = 0;
}

// Drops the cache of the most recently arrived sequence holding blocks (other than `keep`);
// it will be recomputed from its prompt and generated tokens. False if there is none.
bool Engine::preempt_one(const Sequence* keep) {
  Sequence* victim = nullptr;
  auto consider = [&](Sequence& s) {
    if (&s != keep && !s.blocks.empty() && s.finished == FinishReason::kNone && (!victim || s.id > victim->id))
      victim = &s;
  };
  for (auto& s : running_) consider(*s);
  for (auto& s : waiting_) consider(*s);
  if (!victim) return false;
  blocks_.release(victim->blocks);
  victim->cached = 0;
  victim->scheduled = 0;
  victim->decoding = false;
  ++stats_.preemptions;
  const auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == victim; });
  if (it != running_.end()) {
    // Back to the queue in arrival order.
    auto owned = std::move(*it);
    running_.erase(it);
    const auto pos = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& w) { return w->id > owned->id; });
    waiting_.insert(pos, std::move(owned));
  }
  return true;
}

void Engine::emit_token(Sequence& s, const Sample& sample) {
  const int32_t token = sample.token;
  s.generated.push_back(token);
  s.news.token_ids.push_back(token);
  if (s.params.sampling.top_logprobs >= 0) s.news.samples.push_back(sample);
  const auto& eos = config_.eos_token_ids;
  const bool is_eos = !s.params.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end();
  const auto& stop_ids = s.params.stop_token_ids;
  if (is_eos || std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
    s.news.text += s.pending;  // no stop string completed: the held-back text is final
    s.pending.clear();
    finish(s, FinishReason::kStop);
    return;
  }
  s.pending += s.decoder->push(token);
  // The earliest stop string in the pending text ends the request before it.
  size_t cut = std::string::npos;
  for (const std::string& stop : s.params.stop)
    if (!stop.empty()) cut = std::min(cut, s.pending.find(stop));
  if (cut != std::string::npos) {
    s.news.text += s.pending.substr(0, cut);
    s.pending.clear();
    finish(s, FinishReason::kStop);
    return;
  }
  // Hold back the longest suffix that could still grow into a stop string.
  size_t hold = 0;
  for (const std::string& stop : s.params.stop)
    for (size_t k = std::min(stop.size() - 1, s.pending.size()); k > hold; --k)
      if (s.pending.compare(s.pending.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
  s.news.text += s.pending.substr(0, s.pending.size() - hold);
  s.pending.erase(0, s.pending.size() - hold);
  if (static_cast<int64_t>(s.generated.size()) >= s.params.max_new_tokens || s.tokens() >= config_.max_model_len)
    finish(s, FinishReason::kLength);
}

bool Engine::step() {
  admit_inbox();
  model::Batch batch;
  std::vector<Sequence*> in_batch;     // every scheduled sequence
  std::vector<Sequence*> logit_owner;  // per logits row
  int64_t budget = config_.max_batch_tokens;

  // 1. One decode token for every running sequence, preempting later arrivals when blocks
  //    run out (preempt_one moves them back to the queue, so walk a snapshot).
  std::vector<Sequence*> decoders;
  for (auto& p : running_) decoders.push_back(p.get());
  for (Sequence* s : decoders) {
    if (!s->decoding || s->finished != FinishReason::kNone) continue;
    while (!blocks_.ensure(s->blocks, s->tokens()))
      if (!preempt_one(s)) {
        // Cannot happen: submit() checked that every request fits the cache alone.
        finish(*s, FinishReason::kError, "the KV cache is exhausted");
        break;
      }
  }
  for (auto& p : running_) {
    Sequence& s = *p;
    if (!s.decoding || s.finished != FinishReason::kNone || budget <= 0) continue;
    const int32_t last = s.token(s.tokens() - 1);
    s.scheduled = 1;
    batch.add(&last, 1, s.tokens() - 1, s.blocks, true);
    in_batch.push_back(&s);
    logit_owner.push_back(&s);
    --budget;
  }

  // 2. Prompt chunks in arrival order, as far as the budget and the free blocks go. A prompt
  //    that does not fit now lets later, smaller ones through.
  int64_t holders = 0;
  for (const auto& s : running_) holders += !s->blocks.empty();
  for (auto& p : waiting_) {
    Sequence& s = *p;
    if (budget <= 0) break;
    if (s.finished != FinishReason::kNone) continue;
    if (s.blocks.empty() && holders >= config_.max_running) continue;
    const int64_t remaining = s.tokens() - s.cached;
    const int64_t room = (static_cast<int64_t>(s.blocks.size()) + blocks_.num_free()) * blocks_.block_size() - s.cached;
    const int64_t chunk = std::min({remaining, budget, room});
    if (chunk <= 0) continue;
    if (s.blocks.empty()) ++holders;
    FP6_ASSERT(blocks_.ensure(s.blocks, s.cached + chunk));
    std::vector<int32_t> ids(static_cast<size_t>(chunk));
    for (int64_t k = 0; k < chunk; ++k) ids[static_cast<size_t>(k)] = s.token(s.cached + k);
    const bool completes = s.cached + chunk == s.tokens();
    s.scheduled = chunk;
    batch.add(ids.data(), chunk, s.cached, s.blocks, completes);
    in_batch.push_back(&s);
    if (completes) logit_owner.push_back(&s);
    budget -= chunk;
  }

  bool worked = !batch.seqs.empty();
  if (!worked) {
    // Blocks are all held by partly prefilled prompts that cannot grow: free the latest
    // one so the earliest can finish (it was checked at submit to fit the cache alone).
    for (auto& p : waiting_)
      if (!p->blocks.empty() && p->finished == FinishReason::kNone) {
        worked = preempt_one(waiting_.front().get());
        break;
      }
  }

  if (!batch.seqs.empty()) {
    try {
      std::vector<SampleRow> rows;
      for (Sequence* s : logit_owner) rows.push_back(s->sampler->next_row(s->prompt, s->generated));
      const std::vector<Sample> samples = model_.forward_sample(batch, cache_, rows);
      for (Sequence* s : in_batch) {
        s->cached += s->scheduled;
        s->scheduled = 0;
      }
      for (size_t r = 0; r < logit_owner.size(); ++r) {
        emit_token(*logit_owner[r], samples[r]);
        logit_owner[r]->decoding = true;
      }
    } catch (const std::exception& e) {
      for (Sequence* s : in_batch) finish(*s, FinishReason::kError, e.what());
    }
  }

  // Fully prefilled sequences start decoding; finished ones leave with their last news.
  std::vector<std::unique_ptr<Sequence>> done;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    Sequence& s = **it;
    if (s.finished != FinishReason::kNone) {
      done.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else if (s.decoding) {
      running_.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->finished != FinishReason::kNone) {
      done.push_back(std::move(*it));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  {
    std::lock_guard lock(stats_mutex_);
    stats_.waiting = static_cast<int64_t>(waiting_.size());
    stats_.running = static_cast<int64_t>(running_.size());
    stats_.kv_blocks_used = blocks_.num_used();
    stats_.steps += worked;
  }
  // Callbacks last, so a callback that cancels or submits sees a consistent engine.
  auto deliver = [](Sequence& s) {
    if (s.news.text.empty() && s.news.token_ids.empty() && s.news.finish == FinishReason::kNone) return;
    s.news.request_id = s.id;
    s.news.prompt_tokens = static_cast<int64_t>(s.prompt.size());
    s.news.generated_tokens = static_cast<int64_t>(s.generated.size());
    if (s.callback) s.callback(s.news);
    s.news = StreamChunk{};
  };
  for (auto& s : running_) deliver(*s);
  for (auto& s : waiting_) deliver(*s);
  for (auto& s : done) deliver(*s);
  return worked || !done.empty();
}

}  // namespace fp6serve
