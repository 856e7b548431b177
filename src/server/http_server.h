// The OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions (both with SSE
// streaming), /v1/models, /health, /metrics. The service's runner steps the continuous-
// batching engine; HTTP worker threads submit requests and wait for their chunks. A bad
// request is answered with OpenAI's error JSON and never disturbs the others; a client that
// disconnects mid-stream has its request cancelled and its KV blocks freed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "engine/service.h"
#include "server/metrics.h"

namespace httplib {
class Server;
struct Response;
}  // namespace httplib

namespace fp6serve::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;         // 0: any free port (see HttpServer::port)
  std::string api_key;     // empty: no authentication
  std::string model_name;  // what /v1/models lists and requests must name
  size_t max_body_bytes = size_t{8} << 20;
  int threads = 256;                     // HTTP workers: each streaming client holds one
  double shutdown_grace_seconds = 10.0;  // in-flight requests may finish this long
};

class HttpServer {
 public:
  HttpServer(Service& service, ServerOptions options);
  ~HttpServer();

  // Binds; throws kInvalidArgument when it cannot.
  void bind();
  int port() const { return port_; }
  // Serves until shutdown(). Call bind() first.
  void serve();
  // Graceful: new requests get 503, in-flight ones get the grace period, then the rest are
  // cancelled and serve() returns. Safe from any thread, idempotent.
  void shutdown();

 private:
  struct Group;
  void register_routes();
  // One generation request: parse, submit, answer. Fills res; returns true when a stream was
  // set up (its provider then owns in_flight_).
  bool handle_generation(const std::string& body, bool chat, httplib::Response& res);
  struct ParsedRequest parse(const std::string& body, bool chat) const;
  std::shared_ptr<Group> submit_group(const struct ParsedRequest& req);
  void respond_json(Group& group, const struct ParsedRequest& req, httplib::Response& res);
  void respond_stream(std::shared_ptr<Group> group, const struct ParsedRequest& req, httplib::Response& res);
  void cancel(const Group& group);
  void forget(const std::vector<uint64_t>& ids);

  Service& service_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<ChatTemplate> chat_template_;
  std::string chat_template_error_;
  Metrics metrics_;
  int port_ = 0;

  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};  // generation requests being answered (streams included)
  std::mutex active_mutex_;
  std::set<uint64_t> active_;  // engine request ids not finished yet
  std::once_flag shutdown_once_;
};

}  // namespace fp6serve::server
