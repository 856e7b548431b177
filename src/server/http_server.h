// The OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions (both with SSE
// streaming), /v1/models, /health, /metrics.
//
// Sized for load and for hostile clients (docs/security.md): a few I/O threads serve every
// connection asynchronously (no thread per client: slow or idle connections cannot starve
// /health), a listen backlog of 1024, a connection limit past which clients get 503, one
// deadline for each whole request, a deadline on every write, bounded request sizes and JSON
// nesting. Requests are parsed on a small work pool and run by the service's engine; a bad
// request is answered with OpenAI's error JSON and never disturbs the others, and a client
// that leaves (streaming or not) has its requests cancelled and its KV blocks freed.
#pragma once

#include <memory>
#include <string>

#include "engine/service.h"

namespace fp6serve::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;            // 0: any free port (see HttpServer::port)
  std::string api_key;        // empty: no authentication
  std::string model_name;     // what /v1/models lists and requests must name
  std::string chat_template;  // Jinja source replacing the model's own (empty: the model's)
  // Browser origins allowed to call the API (CORS): exact origins, or "*" for any; empty: none
  // (no CORS headers, preflight requests 404 as any unknown route).
  std::vector<std::string> allowed_origins;
  bool log_requests = false;  // an access-log line per answer (method, target, status, time)
  size_t max_body_bytes = size_t{8} << 20;
  int max_connections = 1024;            // open at once; more are answered 503 and closed
  int listen_backlog = 1024;             // connections waiting to be accepted (the kernel caps it at somaxconn)
  double request_timeout_seconds = 30;   // a whole request, idle keep-alive time included
  double write_timeout_seconds = 60;     // a client that reads nothing of its answer this long is dropped
  int io_threads = 2;                    // network I/O (asynchronous; a few serve thousands of clients)
  int work_threads = 2;                  // parsing and tokenizing requests
  double shutdown_grace_seconds = 10.0;  // in-flight requests may finish this long after shutdown()
};

class HttpServer {
 public:
  HttpServer(Service& service, ServerOptions options);
  ~HttpServer();

  // Binds and listens; throws Error(kInvalidArgument) when it cannot (in use, not an address
  // of this machine).
  void bind();
  int port() const;
  // Serves until shutdown(). Call bind() first.
  void serve();
  // Graceful: new API requests get 503, in-flight ones get the grace period, then the rest are
  // cancelled and serve() returns. Safe from any thread, idempotent.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp6serve::server
