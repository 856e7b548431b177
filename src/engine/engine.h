// The continuous-batching engine (DeepSpeed-FastGen's scheduler, as its users asked for it).
//
// Requests enter a queue. Each step() builds ONE forward batch under a token budget: first
// one decode token for every running sequence, then chunks of waiting prompts to fill the
// budget (Dynamic SplitFuse), so a long prompt never stalls the decodes. KV blocks are taken
// as sequences grow and freed when they finish or are cancelled; when blocks run out, the
// most recently admitted running sequence is preempted (its cache dropped, recomputed
// later) instead of failing. Every request has its own sampling (sampler.h), stop strings,
// EOS ids and max tokens, and streams text through a callback (output.h).
//
// submit() and cancel() may be called from any thread; step() runs on one thread (an
// EngineRunner's, or a test's), and callbacks run there.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/sampling.h"
#include "engine/block_manager.h"
#include "engine/kv_budget.h"
#include "fp6serve/options.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "transformer/model.h"

namespace fp6serve {

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason reason);

// What a request's callback receives whenever it has news.
struct StreamChunk {
  uint64_t request_id = 0;
  std::string text;                // newly final text
  std::vector<int32_t> token_ids;  // tokens generated since the last chunk
  std::vector<Sample> samples;     // their log-probabilities, when requested
  FinishReason finish = FinishReason::kNone;
  std::string error;  // with kError
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;  // so far
};
using StreamCallback = std::function<void(const StreamChunk&)>;

// A request longer than the context: prompt + max_new_tokens > max_model_len. The message
// is OpenAI's; the server answers it with code context_length_exceeded.
class ContextLengthError : public Error {
 public:
  ContextLengthError(int64_t limit, int64_t prompt_tokens, int64_t max_new_tokens);
  int64_t limit, prompt_tokens, max_new_tokens;
};

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
  // Uses options' engine and KV-cache settings; `defaults` are the checkpoint's
  // (generation_config.json): the sampling a request leaves unset, and the EOS ids (the
  // tokenizer's EOS when it names none).
  Engine(Model& model, const Tokenizer& tokenizer, const Options& options,
         const model::GenerationDefaults& defaults = {});
  ~Engine();

  // Queues a request; throws Error(kInvalidArgument) for an empty prompt, a token outside the
  // vocabulary or bad options, ContextLengthError for one too long (nothing is queued then).
  // Returns its id.
  uint64_t submit(std::vector<int32_t> prompt, const GenerateOptions& options, StreamCallback on_chunk);
  // Finishes the request with kCancelled at the next step (no-op if already finished).
  void cancel(uint64_t id);

  // One scheduler iteration. Returns false when there was nothing to do.
  bool step();
  bool idle() const;
  EngineStats stats() const;
  int64_t max_model_len() const { return max_model_len_; }
  int64_t kv_blocks() const { return blocks_.num_blocks(); }
  int64_t kv_block_size() const { return blocks_.block_size(); }
  double kv_bytes() const { return static_cast<double>(cache_.bytes()); }
  // How the KV cache's size was chosen (engine/kv_budget.h), for the start-up line.
  const std::string& kv_sizing() const { return kv_budget_.how; }

 private:
  struct Sequence;
  // What one step runs: the batch, the sequences in it, and who owns each logits row.
  struct StepPlan {
    Batch batch;
    std::vector<Sequence*> scheduled;
    std::vector<Sequence*> logit_owners;
  };
  void admit_inbox();
  void reserve_decode_blocks();
  void schedule_decodes(StepPlan& plan, int64_t& budget);
  void schedule_prefills(StepPlan& plan, int64_t& budget);
  bool unblock_prefills();
  void run(StepPlan& plan);
  std::vector<std::unique_ptr<Sequence>> retire();
  void publish_stats(bool worked);
  void deliver(std::vector<std::unique_ptr<Sequence>>& done);
  void finish(Sequence& s, FinishReason reason, const std::string& error = "");
  bool preempt_one(const Sequence* keep);
  void emit_token(Sequence& s, const Sample& sample);

  Model& model_;
  const Tokenizer& tokenizer_;
  model::GenerationDefaults defaults_;
  int64_t max_batch_tokens_;
  int64_t max_num_seqs_;
  int64_t max_model_len_;
  KvBudget kv_budget_;
  BlockManager blocks_;
  KvCache cache_;

  mutable std::mutex inbox_mutex_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<uint64_t> cancels_;
  std::atomic<uint64_t> next_id_{1};

  // Owned by the step() thread.
  std::deque<std::unique_ptr<Sequence>> waiting_;   // not yet (fully) in the cache, arrival order
  std::vector<std::unique_ptr<Sequence>> running_;  // fully prefilled, decoding
  EngineStats stats_;
  mutable std::mutex stats_mutex_;
};

}  // namespace fp6serve
