#include "server/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>
#include <random>

#include "core/check.h"
#include "server/openai.h"

namespace fp6serve::server {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// The engine requests of one HTTP request (n choices of each prompt) and the chunks they
// produce, handed from the engine's thread to the HTTP thread.
struct HttpServer::Group {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<std::pair<size_t, StreamChunk>> chunks;  // (choice index, chunk)
  std::vector<uint64_t> ids;
  size_t unfinished = 0;
  Clock::time_point arrival = Clock::now();
  std::vector<Clock::time_point> last_token;  // per choice
  std::vector<bool> got_token;
  std::string id;  // the response's "id"
  int64_t created = 0;
  int64_t prompt_tokens = 0;  // over the distinct prompts

  size_t choices() const { return last_token.size(); }

  enum class Next { kChunk, kDone, kTimeout };
  // The next chunk, waiting up to `timeout` for one; kDone when every choice has finished
  // and every chunk was taken.
  Next next(std::pair<size_t, StreamChunk>& out, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    if (!ready.wait_for(lock, timeout, [&] { return !chunks.empty() || unfinished == 0; })) return Next::kTimeout;
    if (chunks.empty()) return Next::kDone;
    out = std::move(chunks.front());
    chunks.pop_front();
    return Next::kChunk;
  }
};

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

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& param = "",
                const std::string& code = "", const std::string& type = "invalid_request_error") {
  res.status = status;
  res.set_content(error_body(message, type, param, code).dump(), "application/json");
}

std::string sse(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace

HttpServer::HttpServer(Service& service, ServerOptions options)
    : service_(service), options_(std::move(options)), http_(std::make_unique<httplib::Server>()) {
  if (options_.model_name.empty()) options_.model_name = service_.model_dir();
  const std::string& source = service_.tokenizer().chat_template();
  if (!source.empty()) {
    try {
      chat_template_ = std::make_unique<ChatTemplate>(source);
    } catch (const Error& e) {
      chat_template_error_ = e.what();
      spdlog::warn("the model's chat template does not parse; /v1/chat/completions is off: {}", e.what());
    }
  }
  register_routes();
}

HttpServer::~HttpServer() {
  shutdown();
}

std::shared_ptr<HttpServer::Group> HttpServer::submit_group(const ParsedRequest& req) {
  auto group = std::make_shared<Group>();
  const size_t choices = req.prompts.size() * static_cast<size_t>(req.n);
  group->last_token.resize(choices);
  group->got_token.assign(choices, false);
  group->unfinished = choices;
  for (const auto& p : req.prompts) group->prompt_tokens += static_cast<int64_t>(p.size());
  group->id = random_id(req.chat ? "chatcmpl-" : "cmpl-");
  group->created = unix_now();
  EngineRunner& runner = service_.runner();
  try {
    for (size_t p = 0; p < req.prompts.size(); ++p)
      for (int64_t k = 0; k < req.n; ++k) {
        const size_t choice = p * static_cast<size_t>(req.n) + static_cast<size_t>(k);
        GenerateOptions options = req.options;
        // n samples of one prompt differ: each its own seed (derived from the request's).
        if (options.seed) *options.seed += static_cast<uint64_t>(k);
        std::weak_ptr<Group> weak = group;
        group->ids.push_back(runner.submit(req.prompts[p], options, [this, weak, choice](const StreamChunk& c) {
          auto g = weak.lock();
          if (!g) return;
          const auto now = Clock::now();
          if (!c.token_ids.empty()) {
            if (!g->got_token[choice])
              metrics_.observe_ttft(std::chrono::duration<double>(now - g->arrival).count());
            else
              metrics_.observe_inter_token(std::chrono::duration<double>(now - g->last_token[choice]).count());
            g->got_token[choice] = true;
            g->last_token[choice] = now;
          }
          if (c.finish != FinishReason::kNone) {
            metrics_.observe_e2e(std::chrono::duration<double>(now - g->arrival).count());
            metrics_.add_tokens(c.prompt_tokens, c.generated_tokens);
          }
          if (c.finish != FinishReason::kNone) forget({c.request_id});
          std::lock_guard lock(g->mutex);
          g->chunks.emplace_back(choice, c);
          if (c.finish != FinishReason::kNone) --g->unfinished;
          g->ready.notify_all();
        }));
      }
  } catch (...) {
    cancel(*group);
    throw;
  }
  std::lock_guard lock(active_mutex_);
  active_.insert(group->ids.begin(), group->ids.end());
  return group;
}

void HttpServer::cancel(const Group& group) {
  for (uint64_t id : group.ids) service_.runner().cancel(id);
}

ParsedRequest HttpServer::parse(const std::string& body, bool chat) const {
  json parsed;
  try {
    parsed = json::parse(body);
  } catch (const json::exception& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (chat && !chat_template_)
    throw ApiError(400,
                   chat_template_error_.empty()
                       ? "this model ships no chat template; use /v1/completions"
                       : "this model's chat template could not be parsed: " + chat_template_error_,
                   "messages");
  return parse_request(parsed, chat, {service_, options_.model_name, chat_template_.get()});
}

bool HttpServer::handle_generation(const std::string& body, bool chat, httplib::Response& res) {
  const ParsedRequest req = parse(body, chat);
  std::shared_ptr<Group> group;
  try {
    group = submit_group(req);
  } catch (const ContextLengthError& e) {
    throw ApiError(400, e.what(), req.length_param, "context_length_exceeded");
  } catch (const Error& e) {
    throw ApiError(e.kind() == ErrorKind::kInvalidArgument ? 400 : 500, e.what());
  }
  if (!req.stream) {
    respond_json(*group, req, res);
    return false;
  }
  respond_stream(group, req, res);
  return true;
}

// The whole response once every choice has finished.
void HttpServer::respond_json(Group& group, const ParsedRequest& req, httplib::Response& res) {
  std::vector<Choice> choices(group.choices());
  std::pair<size_t, StreamChunk> next;
  for (;;) {
    const Group::Next got = group.next(next, std::chrono::milliseconds(200));
    if (got == Group::Next::kDone) break;
    if (got == Group::Next::kTimeout) continue;
    auto& [i, c] = next;
    Choice& ch = choices[i];
    ch.text += c.text;
    ch.tokens.insert(ch.tokens.end(), c.token_ids.begin(), c.token_ids.end());
    ch.samples.insert(ch.samples.end(), c.samples.begin(), c.samples.end());
    ch.generated_tokens = c.generated_tokens;
    if (c.finish == FinishReason::kError) {
      cancel(group);
      throw ApiError(500, "generation failed: " + c.error, "", "", "server_error");
    }
    if (c.finish != FinishReason::kNone) ch.finish = c.finish;
  }
  res.set_content(completion_response(group.id, group.created, options_.model_name, req.chat, choices,
                                      group.prompt_tokens, req.logprobs, service_.tokenizer())
                      .dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

// SSE chunks as they come, [DONE] last. A failed write means the client left: everything it
// asked for is cancelled so its KV blocks are freed at the next step. While nothing comes (a
// long prompt), an SSE comment every 500 ms finds out whether the client is still there.
void HttpServer::respond_stream(std::shared_ptr<Group> group, const ParsedRequest& req, httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, group, req](size_t, httplib::DataSink& sink) {
        const Tokenizer& tok = service_.tokenizer();
        std::vector<bool> started(group->choices(), false);
        int64_t completion_tokens = 0;
        auto write = [&](const std::string& out) {
          if (sink.is_writable() && sink.write(out.data(), out.size())) return true;
          cancel(*group);
          return false;
        };
        std::pair<size_t, StreamChunk> next;
        for (;;) {
          const Group::Next got = group->next(next, std::chrono::milliseconds(500));
          if (got == Group::Next::kDone) break;
          if (got == Group::Next::kTimeout) {
            if (!write(": keep-alive\n\n")) return false;
            continue;
          }
          const auto& [i, c] = next;
          const std::string out = c.finish == FinishReason::kError
                                      ? sse(error_body("generation failed: " + c.error, "server_error", "", ""))
                                      : sse(stream_chunk(group->id, group->created, options_.model_name, req.chat,
                                                         static_cast<int64_t>(i), c, !started[i], req.logprobs, tok));
          started[i] = true;
          if (c.finish != FinishReason::kNone) completion_tokens += c.generated_tokens;
          if (!write(out)) return false;
        }
        std::string tail;
        if (req.include_usage)
          tail += sse(usage_chunk(group->id, group->created, options_.model_name, req.chat, group->prompt_tokens,
                                  completion_tokens));
        tail += "data: [DONE]\n\n";
        if (!write(tail)) return false;
        sink.done();
        return true;
      },
      [this, group](bool success) {
        if (!success) cancel(*group);
        --in_flight_;
      });
}

void HttpServer::forget(const std::vector<uint64_t>& ids) {
  std::lock_guard lock(active_mutex_);
  for (uint64_t id : ids) active_.erase(id);
}

void HttpServer::register_routes() {
  httplib::Server& s = *http_;
  s.new_task_queue = [threads = options_.threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_payload_max_length(options_.max_body_bytes);

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool api = req.path.rfind("/v1/", 0) == 0;
    if (api && draining_) {
      send_error(res, 503, "the server is shutting down", "", "", "server_error");
      metrics_.count_request(req.path, 503);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (api && !options_.api_key.empty() && req.get_header_value("Authorization") != "Bearer " + options_.api_key) {
      send_error(res, 401,
                 req.has_header("Authorization") ? "Incorrect API key provided."
                                                 : "Missing API key: send 'Authorization: Bearer <key>'.",
                 "", "invalid_api_key");
      metrics_.count_request(req.path, 401);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Unknown routes and oversized bodies get the OpenAI error shape too.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404)
      send_error(res, 404, "no route " + req.method + " " + req.path, "", "not_found");
    else if (res.status == 413)
      send_error(res, 413, "the request body is too large", "", "request_too_large");
    else
      send_error(res, res.status, "request failed with HTTP status " + std::to_string(res.status));
  });

  auto generation = [this](bool chat) {
    return [this, chat](const httplib::Request& req, httplib::Response& res) {
      const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
      ++in_flight_;
      bool streaming = false;
      try {
        streaming = handle_generation(req.body, chat, res);
        res.status = 200;
      } catch (const ApiError& e) {
        send_error(res, e.status, e.what(), e.param, e.code, e.type);
      } catch (const Error& e) {
        send_error(res, e.kind() == ErrorKind::kInvalidArgument ? 400 : 500, e.what(), "", "",
                   e.kind() == ErrorKind::kInvalidArgument ? "invalid_request_error" : "server_error");
      } catch (const std::exception& e) {
        send_error(res, 500, e.what(), "", "", "server_error");
      }
      if (!streaming) --in_flight_;
      metrics_.count_request(endpoint, res.status);
    };
  };
  s.Post("/v1/completions", generation(false));
  s.Post("/v1/chat/completions", generation(true));

  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const json body = {{"object", "list"},
                       {"data", json::array({{{"id", options_.model_name},
                                              {"object", "model"},
                                              {"created", unix_now()},
                                              {"owned_by", "fp6serve"},
                                              {"max_model_len", service_.engine().max_model_len()}}})}};
    res.set_content(body.dump(), "application/json");
    metrics_.count_request("/v1/models", 200);
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(json{{"status", draining_ ? "shutting_down" : "ok"}}.dump(), "application/json");
    res.status = draining_ ? 503 : 200;
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const EngineStats st = service_.engine().stats();
    res.set_content(metrics_.render({st.waiting, st.running, st.kv_blocks_used, st.kv_blocks_total, st.preemptions}),
                    "text/plain; version=0.0.4");
  });
}

void HttpServer::bind() {
  port_ = options_.port == 0 ? http_->bind_to_any_port(options_.host)
                             : (http_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  FP6_CHECK(port_ > 0, kInvalidArgument, "cannot listen on {}:{} (in use, or not an address of this machine)",
            options_.host, options_.port);
}

void HttpServer::serve() {
  http_->listen_after_bind();
}

void HttpServer::shutdown() {
  std::call_once(shutdown_once_, [this] {
    draining_ = true;
    auto wait_idle = [this](double seconds) {
      const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
      while (in_flight_ > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    };
    wait_idle(options_.shutdown_grace_seconds);
    // What is left is cancelled; the engine's thread delivers that, ending streams and waits.
    {
      std::lock_guard lock(active_mutex_);
      for (uint64_t id : active_) service_.runner().cancel(id);
    }
    wait_idle(5.0);
    http_->stop();
  });
}
}  // namespace fp6serve::server
