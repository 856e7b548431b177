#include "server/generation.h"

#include <boost/asio/post.hpp>
#include <random>

#include "core/json.h"

namespace fp6serve::server {

using json = nlohmann::ordered_json;

void ActiveRequests::add(const std::vector<uint64_t>& ids) {
  std::lock_guard lock(mutex_);
  ids_.insert(ids.begin(), ids.end());
}

void ActiveRequests::remove(uint64_t id) {
  std::lock_guard lock(mutex_);
  ids_.erase(id);
}

void ActiveRequests::cancel_all(EngineRunner& runner) {
  std::lock_guard lock(mutex_);
  for (uint64_t id : ids_) runner.cancel(id);
}

namespace {

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s = prefix;
  for (int i = 0; i < 24; ++i) s += kHex[rng() % 16];
  return s;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string sse(const json& j) {
  return "data: " + dump_json(j) + "\n\n";
}

}  // namespace

void Generation::start(GenerationContext& ctx, std::shared_ptr<Connection> connection, bool chat, std::string body) {
  std::shared_ptr<Generation> g(new Generation(ctx, std::move(connection), chat));
  g->conn_->on_gone([g] { g->cancel(); });
  net::post(ctx.work, [g, body = std::move(body)] { g->submit(body); });
}

Generation::Generation(GenerationContext& ctx, std::shared_ptr<Connection> connection, bool chat)
    : ctx_(ctx), conn_(std::move(connection)), chat_(chat), route_(chat ? "/v1/chat/completions" : "/v1/completions") {
  ++ctx_.in_flight;
}

Generation::~Generation() {
  --ctx_.in_flight;
}

void Generation::submit(const std::string& body) {
  try {
    if (chat_ && !ctx_.chat_template)
      throw ApiError(400,
                     ctx_.chat_template_error.empty()
                         ? "this model ships no chat template; use /v1/completions"
                         : "this model's chat template could not be parsed: " + ctx_.chat_template_error,
                     "messages");
    const json parsed = parse_json<json>(body, "the request body");
    request_ = parse_request(parsed, chat_, {ctx_.service, ctx_.model_name, ctx_.chat_template});
    const size_t choices = request_.prompts.size() * static_cast<size_t>(request_.n);
    choices_.resize(choices);
    started_.assign(choices, false);
    text_sent_.assign(choices, 0);
    last_token_.resize(choices);
    got_token_.assign(choices, false);
    unfinished_ = choices;
    for (const auto& p : request_.prompts) prompt_tokens_ += static_cast<int64_t>(p.size());
    id_ = random_id(chat_ ? "chatcmpl-" : "cmpl-");
    created_ = unix_now();
    EngineRunner& runner = ctx_.service.runner();
    try {
      for (size_t p = 0; p < request_.prompts.size(); ++p)
        for (int64_t k = 0; k < request_.n; ++k) {
          const size_t choice = p * static_cast<size_t>(request_.n) + static_cast<size_t>(k);
          GenerateOptions options = request_.options;
          // n samples of one prompt differ: each its own seed (derived from the request's).
          if (options.seed) *options.seed += static_cast<uint64_t>(k);
          auto executor = conn_->executor();
          ids_.push_back(runner.submit(
              request_.prompts[p], options, [self = shared_from_this(), executor, choice](const StreamChunk& c) {
                net::post(executor, [self, choice, c, at = Clock::now()] { self->on_chunk(choice, c, at); });
              }));
        }
    } catch (const ContextLengthError& e) {
      for (uint64_t id : ids_) runner.cancel(id);
      throw ApiError(400, e.what(), request_.length_param, "context_length_exceeded");
    } catch (...) {
      for (uint64_t id : ids_) runner.cancel(id);
      throw;
    }
    ctx_.active.add(ids_);
    net::post(conn_->executor(), [self = shared_from_this()] { self->on_submitted(); });
  } catch (...) {
    net::post(conn_->executor(), [self = shared_from_this(), e = std::current_exception()] { self->fail(e); });
  }
}

void Generation::on_submitted() {
  submitted_ = true;
  if (answered_) return;  // the client left while the prompts were being parsed
  if (request_.stream) {
    ctx_.metrics.count_request(route_, 200);
    conn_->begin_stream("text/event-stream");
  }
  for (auto& [choice, chunk] : early_) on_chunk(choice, chunk, Clock::now());
  early_.clear();
}

void Generation::on_chunk(size_t choice, const StreamChunk& c, Clock::time_point at) {
  if (!submitted_) {
    early_.emplace_back(choice, c);
    return;
  }
  if (!c.token_ids.empty()) {
    if (!got_token_[choice])
      ctx_.metrics.observe_ttft(std::chrono::duration<double>(at - arrival_).count());
    else
      ctx_.metrics.observe_inter_token(std::chrono::duration<double>(at - last_token_[choice]).count());
    got_token_[choice] = true;
    last_token_[choice] = at;
  }
  if (c.finish != FinishReason::kNone) {
    ctx_.metrics.observe_e2e(std::chrono::duration<double>(at - arrival_).count());
    ctx_.metrics.add_tokens(c.prompt_tokens, c.generated_tokens);
    ctx_.active.remove(c.request_id);
    completion_tokens_ += c.generated_tokens;
    --unfinished_;
  }
  if (answered_) return;
  if (request_.stream)
    stream(choice, c);
  else
    collect(choice, c);
  if (unfinished_ == 0 && !answered_) finish();
}

void Generation::stream(size_t choice, const StreamChunk& c) {
  if (c.finish == FinishReason::kError) {
    conn_->send(sse(error_body("generation failed: " + c.error, "server_error", "", "")));
  } else {
    conn_->send(sse(stream_chunk(id_, created_, ctx_.model_name, chat_, static_cast<int64_t>(choice), c,
                                 !started_[choice], request_.logprobs, ctx_.service.tokenizer(), text_sent_[choice])));
    text_sent_[choice] += c.text.size();
  }
  started_[choice] = true;
}

void Generation::collect(size_t choice, const StreamChunk& c) {
  Choice& ch = choices_[choice];
  ch.text += c.text;
  ch.tokens.insert(ch.tokens.end(), c.token_ids.begin(), c.token_ids.end());
  ch.samples.insert(ch.samples.end(), c.samples.begin(), c.samples.end());
  ch.generated_tokens = c.generated_tokens;
  if (c.finish == FinishReason::kError)
    return fail(std::make_exception_ptr(ApiError(500, "generation failed: " + c.error, "", "", "server_error")));
  if (c.finish != FinishReason::kNone) ch.finish = c.finish;
}

void Generation::finish() {
  answered_ = true;
  if (request_.stream) {
    std::string tail;
    if (request_.include_usage)
      tail += sse(usage_chunk(id_, created_, ctx_.model_name, chat_, prompt_tokens_, completion_tokens_));
    tail += "data: [DONE]\n\n";
    conn_->send(std::move(tail));
    conn_->end_stream();
    return;
  }
  reply(200, dump_json(completion_response(id_, created_, ctx_.model_name, chat_, choices_, prompt_tokens_,
                                           request_.logprobs, ctx_.service.tokenizer())));
}

void Generation::fail(std::exception_ptr error) {
  cancel();
  const ErrorReply e = error_reply(error);
  if (request_.stream && submitted_) {
    conn_->send(sse(e.body));  // the headers (200) are out: the error goes in the stream
    conn_->end_stream();
    return;
  }
  reply(e.status, dump_json(e.body));
}

// Stops every engine request of this generation (the client left, or the answer failed);
// their last chunks still come and are dropped.
void Generation::cancel() {
  if (answered_) return;
  answered_ = true;
  for (uint64_t id : ids_) ctx_.service.runner().cancel(id);
}

void Generation::reply(int status, std::string body) {
  answered_ = true;
  ctx_.metrics.count_request(route_, status);
  conn_->reply(static_cast<http::status>(status), "application/json", std::move(body));
}

}  // namespace fp6serve::server
