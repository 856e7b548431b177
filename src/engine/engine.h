// The continuous-batching engine (DeepSpeed-FastGen's scheduler, as its users asked for it).
//
// Requests enter a queue. Each step() builds ONE forward batch under a token budget: first
// one decode token for every running sequence, then chunks of waiting prompts to fill the
// budget (Dynamic SplitFuse), so a long prompt never stalls the decodes. KV blocks are taken
// as sequences grow and freed when they finish or are cancelled; when blocks run out, the
// most recently admitted running sequence is preempted (its cache dropped, recomputed
// later) instead of failing. Every request has its own sampling parameters, stop strings
// (matched across token boundaries, never emitted), EOS ids and max tokens, and streams text
// through a callback with incremental detokenization that never splits a UTF-8 character.
//
// submit() and cancel() may be called from any thread; step() runs on one thread (the
// caller's), and callbacks run there.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sampling.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve {

struct EngineConfig {
  int64_t block_size = 16;
  int64_t num_blocks = 0;         // 0: from kv_cache_bytes
  size_t kv_cache_bytes = 0;      // 0: 1 GiB on the CPU, 90% of the free memory less 2 GiB on the GPU
  int64_t max_batch_tokens = 768; // tokens per forward pass (decodes + prompt chunks)
  int64_t max_running = 256;      // sequences holding KV blocks at once
  int64_t max_model_len = 0;      // prompt + generated tokens; 0: the model's max_position_embeddings
  std::vector<int32_t> eos_token_ids;
};

struct GenerationParams {
  int64_t max_new_tokens = 128;
  std::vector<std::string> stop;        // stop strings (not included in the output)
  std::vector<int32_t> stop_token_ids;  // extra stop ids (not included)
  bool ignore_eos = false;
  bool skip_special_tokens = true;
  SamplingParams sampling;
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason reason);

// What a request's callback receives whenever it has news.
struct StreamChunk {
  uint64_t request_id = 0;
  std::string text;                // newly final text
  std::vector<int32_t> token_ids;  // tokens generated since the last chunk
  std::vector<Sample> samples;     // their log-probabilities, when requested
  FinishReason finish = FinishReason::kNone;
  std::string error;               // with kError
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;    // so far
};
using StreamCallback = std::function<void(const StreamChunk&)>;

struct EngineStats {
  int64_t waiting = 0;
  int64_t running = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_total = 0;
  int64_t preemptions = 0;
  int64_t steps = 0;
};

class Engine {
 public:
  Engine(model::Model& model, const Tokenizer& tokenizer, EngineConfig config);
  ~Engine();

  // Queues a request; throws Error(kInvalidArgument) for an empty or too long prompt or bad
  // parameters (nothing is queued then). Returns its id.
  uint64_t submit(std::vector<int32_t> prompt, GenerationParams params, StreamCallback on_chunk);
  // Finishes the request with kCancelled at the next step (no-op if already finished).
  void cancel(uint64_t id);

  // One scheduler iteration. Returns false when there was nothing to do.
  bool step();
  bool idle() const;
  EngineStats stats() const;
  const EngineConfig& config() const { return config_; }
  int64_t max_model_len() const { return config_.max_model_len; }

 private:
  struct Sequence;
  void admit_inbox();
  void finish(Sequence& s, FinishReason reason, const std::string& error = "");
  bool preempt_one(const Sequence* keep);
  void emit_token(Sequence& s, const Sample& sample);

  model::Model& model_;
  const Tokenizer& tokenizer_;
  EngineConfig config_;
  model::KvCache cache_;
  BlockManager blocks_;

  mutable std::mutex inbox_mutex_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<uint64_t> cancels_;
  std::atomic<uint64_t> next_id_{1};

  // Owned by the step() thread.
  std::deque<std::unique_ptr<Sequence>> waiting_;  // not yet (fully) in the cache, arrival order
  std::vector<std::unique_ptr<Sequence>> running_;  // fully prefilled, decoding
  EngineStats stats_;
  mutable std::mutex stats_mutex_;
};

}  // namespace fp6serve
