// One request of /v1/completions or /v1/chat/completions, from its body to its answer: parsed
// and submitted off the I/O threads (tokenizing and rendering a template is CPU work), its
// choices' chunks collected from the engine, and answered as one JSON body or as server-sent
// events. A client that leaves has its engine requests cancelled at once (streaming or not),
// so their KV blocks are freed at the next step. Internal to server/.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "engine/service.h"
#include "server/connection.h"
#include "server/metrics.h"
#include "server/openai.h"

namespace fp6serve::server {

// The engine requests being answered, so a shutdown can cancel what is left of them.
class ActiveRequests {
 public:
  void add(const std::vector<uint64_t>& ids);
  void remove(uint64_t id);
  void cancel_all(EngineRunner& runner);

 private:
  std::mutex mutex_;
  std::set<uint64_t> ids_;
};

// What a generation needs of the server; it outlives every generation.
struct GenerationContext {
  Service& service;
  std::string model_name;
  const ChatTemplate* chat_template = nullptr;  // null: the model ships none (or it did not parse)
  std::string chat_template_error;
  Metrics& metrics;
  ActiveRequests& active;
  std::atomic<int>& in_flight;  // generations not answered yet
  net::any_io_executor work;    // the thread pool for parsing and tokenizing
};

class Generation : public std::enable_shared_from_this<Generation> {
 public:
  // Answers the request on `connection` (called on its strand).
  static void start(GenerationContext& ctx, std::shared_ptr<Connection> connection, bool chat, std::string body);
  ~Generation();

 private:
  using Clock = std::chrono::steady_clock;
  Generation(GenerationContext& ctx, std::shared_ptr<Connection> connection, bool chat);
  void submit(const std::string& body);  // on the work pool
  void on_submitted();                   // the rest on the connection's strand
  void on_chunk(size_t choice, const StreamChunk& chunk, Clock::time_point at);
  void stream(size_t choice, const StreamChunk& chunk);
  void collect(size_t choice, const StreamChunk& chunk);
  void finish();
  void fail(std::exception_ptr error);
  void cancel();
  void reply(int status, std::string body);

  GenerationContext& ctx_;
  std::shared_ptr<Connection> conn_;
  bool chat_;
  const char* route_;
  ParsedRequest request_;
  std::vector<uint64_t> ids_;
  std::string id_;  // the response's "id"
  int64_t created_ = 0;
  int64_t prompt_tokens_ = 0;
  bool submitted_ = false;                             // on_submitted ran: chunks are answered as they come
  bool answered_ = false;                              // the answer is complete, failed, or nobody listens any more
  std::vector<std::pair<size_t, StreamChunk>> early_;  // chunks that came before on_submitted
  size_t unfinished_ = 0;
  int64_t completion_tokens_ = 0;
  std::vector<Choice> choices_;    // not streaming: the answer being collected
  std::vector<bool> started_;      // streaming: a choice's first chunk was sent
  std::vector<size_t> text_sent_;  // streaming: bytes of text sent per choice (text_offset)
  Clock::time_point arrival_ = Clock::now();
  std::vector<Clock::time_point> last_token_;
  std::vector<bool> got_token_;
};

}  // namespace fp6serve::server
