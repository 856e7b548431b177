#include "engine/engine.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/check.h"
#include "engine/kv_budget.h"
#include "engine/output.h"
#include "engine/sampler.h"

namespace fp6serve {

namespace {

// The KV cache's size from the options and what the backend reports (engine/kv_budget.h).
KvBudget kv_cache_budget(Model& model, const Options& o, int64_t max_model_len) {
  Backend& backend = model.backend();
  const Backend::Memory memory = backend.memory();
  const KvDeviceFacts facts{.device = backend.device(),
                            .total = memory.total,
                            .free = memory.free,
                            .weight_bytes = model.weights().bytes(),
                            .block_bytes = backend.kv_block_bytes(o.kv_block_size)};
  return fp6serve::kv_cache_budget(o, facts, o.kv_block_size, max_model_len);
}

}  // namespace

ContextLengthError::ContextLengthError(int64_t limit, int64_t prompt_tokens, int64_t max_new_tokens)
    : Error(ErrorKind::kInvalidArgument,
            fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens ({} in "
                        "the prompt, {} in the completion). Please reduce the length of the prompt or the "
                        "completion.",
                        limit, static_cast<uint64_t>(prompt_tokens) + static_cast<uint64_t>(max_new_tokens),
                        prompt_tokens, max_new_tokens)),
      limit(limit),
      prompt_tokens(prompt_tokens),
      max_new_tokens(max_new_tokens) {}

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "?";
}

struct Engine::Sequence {
  Sequence(uint64_t id, std::vector<int32_t> prompt, const GenerateOptions& options, StreamCallback callback,
           const Tokenizer& tokenizer, const model::GenerationDefaults& defaults)
      : id(id),
        prompt(std::move(prompt)),
        max_new_tokens(options.max_new_tokens),
        logprobs(options.top_logprobs >= 0),
        callback(std::move(callback)),
        sampler(options, defaults),
        output(tokenizer, options, defaults.eos_token_ids) {}

  uint64_t id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;
  int64_t max_new_tokens;
  bool logprobs;
  StreamCallback callback;
  Sampler sampler;
  OutputStream output;
  std::vector<int32_t> blocks;
  int64_t cached = 0;     // tokens whose keys and values are in the cache
  int64_t scheduled = 0;  // tokens in the current batch
  bool decoding = false;  // its whole prompt (and what it generated) is cached
  StreamChunk news;       // accumulated for the callback at the end of the step
  FinishReason finished = FinishReason::kNone;

  int64_t tokens() const { return static_cast<int64_t>(prompt.size() + generated.size()); }
  int32_t token(int64_t i) const {
    const auto p = static_cast<int64_t>(prompt.size());
    return i < p ? prompt[static_cast<size_t>(i)] : generated[static_cast<size_t>(i - p)];
  }
};

Engine::Engine(Model& model, const Tokenizer& tokenizer, const Options& options,
               const model::GenerationDefaults& defaults)
    : model_(model),
      tokenizer_(tokenizer),
      defaults_(defaults),
      max_batch_tokens_(options.max_batch_tokens),
      // Every running sequence must be able to decode in the same step.
      max_num_seqs_(std::min(options.max_num_seqs, options.max_batch_tokens)),
      max_model_len_(options.max_model_len > 0 ? std::min(options.max_model_len, model.config().max_position_embeddings)
                                               : model.config().max_position_embeddings),
      kv_budget_((options.validate(), kv_cache_budget(model, options, max_model_len_))),
      blocks_(kv_budget_.blocks, options.kv_block_size) {
  FP6_CHECK(options.max_model_len <= model.config().max_position_embeddings, kInvalidArgument,
            "max_model_len {} is longer than the model's context ({} tokens, max_position_embeddings)",
            options.max_model_len, model.config().max_position_embeddings);
  if (defaults_.eos_token_ids.empty() && tokenizer.eos_id()) defaults_.eos_token_ids.push_back(*tokenizer.eos_id());
  cache_ = model_.make_kv_cache(blocks_.num_blocks(), blocks_.block_size());
  stats_.kv_blocks_total = blocks_.num_blocks();
  if (kv_budget_.limited_by_free)
    spdlog::warn("the KV cache is smaller than gpu_memory_utilization allows: other processes hold GPU memory ({})",
                 kv_budget_.how);
  const int64_t cache_tokens = blocks_.num_blocks() * blocks_.block_size();
  if (cache_tokens < max_model_len_)
    spdlog::warn(
        "the KV cache holds {} tokens, less than one full context of {}: a request needs prompt + max_tokens within "
        "it (a larger --kv-cache-gib or a smaller --max-model-len avoids this)",
        cache_tokens, max_model_len_);
}

Engine::~Engine() = default;

uint64_t Engine::submit(std::vector<int32_t> prompt, const GenerateOptions& options, StreamCallback on_chunk) {
  FP6_CHECK(!prompt.empty(), kInvalidArgument, "the prompt is empty");
  options.validate();
  const auto len = static_cast<int64_t>(prompt.size());
  // Compared without adding: max_new_tokens may be as large as int64 allows.
  if (len > max_model_len_ || options.max_new_tokens > max_model_len_ - len)
    throw ContextLengthError(max_model_len_, len, options.max_new_tokens);
  FP6_CHECK(blocks_.blocks_for(len + options.max_new_tokens) <= blocks_.num_blocks(), kInvalidArgument,
            "prompt + max_tokens need {} KV blocks but the cache has {}",
            blocks_.blocks_for(len + options.max_new_tokens), blocks_.num_blocks());
  const int32_t vocab = static_cast<int32_t>(model_.config().vocab_size);
  for (int32_t t : prompt)
    FP6_CHECK(t >= 0 && t < vocab, kInvalidArgument, "prompt token id {} is outside the vocabulary [0, {})", t, vocab);
  auto s =
      std::make_unique<Sequence>(next_id_++, std::move(prompt), options, std::move(on_chunk), tokenizer_, defaults_);
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
  // Nothing can follow: what was held back for a stop string is final.
  if (reason == FinishReason::kLength || reason == FinishReason::kCancelled) s.news.text += s.output.flush();
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
  s.generated.push_back(sample.token);
  s.news.token_ids.push_back(sample.token);
  if (s.logprobs) s.news.samples.push_back(sample);
  if (s.output.push(sample.token, s.news.text)) return finish(s, FinishReason::kStop);
  if (static_cast<int64_t>(s.generated.size()) >= s.max_new_tokens || s.tokens() >= max_model_len_)
    finish(s, FinishReason::kLength);
}

bool Engine::step() {
  admit_inbox();
  StepPlan plan;
  int64_t budget = max_batch_tokens_;
  reserve_decode_blocks();
  schedule_decodes(plan, budget);
  schedule_prefills(plan, budget);
  const bool worked = !plan.batch.seqs.empty() || unblock_prefills();
  if (!plan.batch.seqs.empty()) run(plan);
  std::vector<std::unique_ptr<Sequence>> done = retire();
  publish_stats(worked);
  deliver(done);
  return worked || !done.empty();
}

// Every decoding sequence gets the block its next token needs, preempting later arrivals
// when blocks run out (preempt_one moves them back to the queue, so walk a snapshot).
void Engine::reserve_decode_blocks() {
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
}

// One decode token for every running sequence.
void Engine::schedule_decodes(StepPlan& plan, int64_t& budget) {
  for (auto& p : running_) {
    Sequence& s = *p;
    if (!s.decoding || s.finished != FinishReason::kNone || budget <= 0) continue;
    const int32_t last = s.token(s.tokens() - 1);
    s.scheduled = 1;
    plan.batch.add(&last, 1, s.tokens() - 1, s.blocks, true);
    plan.scheduled.push_back(&s);
    plan.logit_owners.push_back(&s);
    --budget;
  }
}

// Prompt chunks in arrival order, as far as the budget and the free blocks go (Dynamic
// SplitFuse). A prompt that does not fit now lets later, smaller ones through.
void Engine::schedule_prefills(StepPlan& plan, int64_t& budget) {
  int64_t holders = 0;
  for (const auto& s : running_) holders += !s->blocks.empty();
  for (auto& p : waiting_) {
    Sequence& s = *p;
    if (budget <= 0) break;
    if (s.finished != FinishReason::kNone) continue;
    if (s.blocks.empty() && holders >= max_num_seqs_) continue;
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
    plan.batch.add(ids.data(), chunk, s.cached, s.blocks, completes);
    plan.scheduled.push_back(&s);
    if (completes) plan.logit_owners.push_back(&s);
    budget -= chunk;
  }
}

// Nothing could be scheduled: when the blocks are all held by partly prefilled prompts that
// cannot grow, free the latest one so the earliest can finish (submit checked that it fits
// the cache alone). True when that freed something.
bool Engine::unblock_prefills() {
  for (auto& p : waiting_)
    if (!p->blocks.empty() && p->finished == FinishReason::kNone) return preempt_one(waiting_.front().get());
  return false;
}

// The forward pass and its sampled tokens; a failure fails the requests in the batch, not
// the engine.
void Engine::run(StepPlan& plan) {
  try {
    std::vector<SampleRow> rows;
    for (Sequence* s : plan.logit_owners) rows.push_back(s->sampler.next_row(s->prompt, s->generated));
    const std::vector<Sample> samples = model_.forward_sample(plan.batch, cache_, rows);
    for (Sequence* s : plan.scheduled) {
      s->cached += s->scheduled;
      s->scheduled = 0;
    }
    for (size_t r = 0; r < plan.logit_owners.size(); ++r) {
      emit_token(*plan.logit_owners[r], samples[r]);
      plan.logit_owners[r]->decoding = true;
    }
  } catch (const std::exception& e) {
    for (Sequence* s : plan.scheduled) finish(*s, FinishReason::kError, e.what());
  }
}

// Fully prefilled sequences start decoding; finished ones leave (returned, with their last news).
std::vector<std::unique_ptr<Engine::Sequence>> Engine::retire() {
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
  return done;
}

void Engine::publish_stats(bool worked) {
  std::lock_guard lock(stats_mutex_);
  stats_.waiting = static_cast<int64_t>(waiting_.size());
  stats_.running = static_cast<int64_t>(running_.size());
  stats_.kv_blocks_used = blocks_.num_used();
  stats_.steps += worked;
}

// Callbacks last, so a callback that cancels or submits sees a consistent engine.
void Engine::deliver(std::vector<std::unique_ptr<Sequence>>& done) {
  auto send = [](Sequence& s) {
    if (s.news.text.empty() && s.news.token_ids.empty() && s.news.finish == FinishReason::kNone) return;
    s.news.request_id = s.id;
    s.news.prompt_tokens = static_cast<int64_t>(s.prompt.size());
    s.news.generated_tokens = static_cast<int64_t>(s.generated.size());
    if (s.callback) s.callback(s.news);
    s.news = StreamChunk{};
  };
  for (auto& s : running_) send(*s);
  for (auto& s : waiting_) send(*s);
  for (auto& s : done) send(*s);
}

}  // namespace fp6serve
