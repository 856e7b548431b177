#include "server/http_server.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <mutex>
#include <thread>

#include "core/check.h"
#include "core/json.h"
#include "server/connection.h"
#include "server/generation.h"

namespace fp6serve::server {

using json = nlohmann::ordered_json;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

// Compares the whole length whatever the contents, so the time taken does not tell how much
// of a guessed key was right.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i)
    diff |= static_cast<unsigned>(i < a.size() ? a[i] : 0) ^ static_cast<unsigned>(i < b.size() ? b[i] : 0);
  return diff == 0;
}

// Lets the server hold as many sockets as the hard limit allows (the soft limit is often 1024).
void raise_open_file_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

struct HttpServer::Impl : Connection::Handler {
  Impl(Service& s, ServerOptions o)
      : service(s),
        options(std::move(o)),
        acceptor(io),
        work(static_cast<size_t>(std::max(1, options.work_threads))),
        context{service, options.model_name, nullptr, "", metrics, active, in_flight, work.get_executor()} {
    if (context.model_name.empty()) context.model_name = options.model_name = service.model_dir();
    limits.max_body_bytes = options.max_body_bytes;
    limits.request_timeout = millis(options.request_timeout_seconds);
    limits.write_timeout = millis(options.write_timeout_seconds);
    // A template the user gave must parse (the server does not start otherwise); the model's
    // own may not, and then only /v1/chat/completions is off.
    if (!options.chat_template.empty()) {
      chat_template = std::make_unique<ChatTemplate>(options.chat_template);
      context.chat_template = chat_template.get();
    }
    const std::string& source = service.tokenizer().chat_template();
    if (options.chat_template.empty() && !source.empty()) {
      try {
        chat_template = std::make_unique<ChatTemplate>(source);
        context.chat_template = chat_template.get();
      } catch (const Error& e) {
        context.chat_template_error = e.what();
        spdlog::warn("the model's chat template does not parse; /v1/chat/completions is off: {}", e.what());
      }
    }
  }

  void on_request(const std::shared_ptr<Connection>& conn, Request req) override;
  void on_answered(const std::string& request_line, int status, double seconds) override {
    if (options.log_requests) spdlog::info("{} {} {:.1f} ms", request_line, status, seconds * 1e3);
  }
  void on_unreadable(const std::shared_ptr<Connection>& conn, http::status status, const std::string& why) override;
  void reply_error(const std::shared_ptr<Connection>& conn, const char* route, int status, const std::string& message,
                   const std::string& code, const std::string& type = "invalid_request_error", bool close = false,
                   std::vector<std::pair<std::string, std::string>> headers = {});
  void reply_json(const std::shared_ptr<Connection>& conn, const char* route, int status, const json& body);
  void accept();
  void refuse(tcp::socket socket);

  Service& service;
  ServerOptions options;
  net::io_context io;
  tcp::acceptor acceptor;
  net::thread_pool work;
  Metrics metrics;
  ActiveRequests active;
  std::atomic<int> in_flight{0};
  std::atomic<int> open{0};
  std::atomic<bool> draining{false};
  std::unique_ptr<ChatTemplate> chat_template;
  GenerationContext context;
  ConnectionLimits limits;
  int port = 0;
  std::once_flag shutdown_once;
};

void HttpServer::Impl::reply_json(const std::shared_ptr<Connection>& conn, const char* route, int status,
                                  const json& body) {
  metrics.count_request(route, status);
  conn->reply(static_cast<http::status>(status), "application/json", dump_json(body));
}

void HttpServer::Impl::reply_error(const std::shared_ptr<Connection>& conn, const char* route, int status,
                                   const std::string& message, const std::string& code, const std::string& type,
                                   bool close, std::vector<std::pair<std::string, std::string>> headers) {
  metrics.count_request(route, status);
  conn->reply(static_cast<http::status>(status), "application/json", dump_json(error_body(message, type, "", code)),
              close, std::move(headers));
}

void HttpServer::Impl::on_unreadable(const std::shared_ptr<Connection>& conn, http::status status,
                                     const std::string& why) {
  const int code = static_cast<int>(status);
  reply_error(conn, "other", code, why, code == 413 ? "request_too_large" : "", "invalid_request_error", true);
}

void HttpServer::Impl::on_request(const std::shared_ptr<Connection>& conn, Request req) {
  const std::string_view target = req.target();
  const std::string path(target.substr(0, target.find('?')));
  const http::verb method = req.method();
  struct Route {
    const char* path;
    http::verb method;
  };
  static constexpr Route kRoutes[] = {{"/health", http::verb::get},          {"/metrics", http::verb::get},
                                      {"/v1/models", http::verb::get},       {"/v1/models/{id}", http::verb::get},
                                      {"/v1/completions", http::verb::post}, {"/v1/chat/completions", http::verb::post},
                                      {"/tokenize", http::verb::post},       {"/detokenize", http::verb::post}};
  const Route* route = nullptr;
  const bool model_id = path.rfind("/v1/models/", 0) == 0 && path.size() > 11;
  for (const Route& r : kRoutes)
    if (path == r.path || (model_id && std::string_view(r.path) == "/v1/models/{id}")) route = &r;
  // Metric labels are the route table's, never a client's string.
  const char* label = route ? route->path : "other";
  // The API key guards everything that reaches the model.
  const bool api = path.rfind("/v1/", 0) == 0 || path == "/tokenize" || path == "/detokenize";
  // CORS: an allowed Origin gets Access-Control-Allow-Origin on the answer, and its preflight
  // (OPTIONS, which browsers send without credentials) is answered before authentication.
  if (const auto origin = req.find(http::field::origin); origin != req.end() && !options.allowed_origins.empty()) {
    const std::string o(origin->value());
    const bool any =
        std::find(options.allowed_origins.begin(), options.allowed_origins.end(), "*") != options.allowed_origins.end();
    if (any ||
        std::find(options.allowed_origins.begin(), options.allowed_origins.end(), o) != options.allowed_origins.end()) {
      conn->add_answer_headers({{"Access-Control-Allow-Origin", any ? "*" : o}, {"Vary", "Origin"}});
      if (method == http::verb::options && route) {
        metrics.count_request(label, 204);
        return conn->reply(http::status::no_content, "text/plain", "", false,
                           {{"Access-Control-Allow-Methods", std::string(http::to_string(route->method)) + ", OPTIONS"},
                            {"Access-Control-Allow-Headers", "Authorization, Content-Type"},
                            {"Access-Control-Max-Age", "600"}});
      }
    }
  }
  if (api && draining) return reply_error(conn, label, 503, "the server is shutting down", "", "server_error");
  if (api && !options.api_key.empty()) {
    const auto auth = req.find(http::field::authorization);
    if (auth == req.end())
      return reply_error(conn, label, 401, "Missing API key: send 'Authorization: Bearer <key>'.", "invalid_api_key");
    if (!same_secret(auth->value(), "Bearer " + options.api_key))
      return reply_error(conn, label, 401, "Incorrect API key provided.", "invalid_api_key");
  }
  if (!route)
    return reply_error(conn, label, 404, "no route " + std::string(req.method_string()) + " " + path, "not_found");
  if (method != route->method)
    return reply_error(conn, label, 405, "method " + std::string(req.method_string()) + " is not allowed on " + path,
                       "method_not_allowed", "invalid_request_error", false,
                       {{"Allow", std::string(http::to_string(route->method))}});
  if (path == "/health") {
    return reply_json(conn, label, draining ? 503 : 200, json{{"status", draining ? "shutting_down" : "ok"}});
  }
  if (path == "/metrics") {
    const EngineStats st = service.engine().stats();
    metrics.count_request(label, 200);
    return conn->reply(http::status::ok, "text/plain; version=0.0.4",
                       metrics.render({st.waiting, st.running, st.kv_blocks_used, st.kv_blocks_total, st.preemptions,
                                       open.load(), in_flight.load()}));
  }
  const ApiContext api_context{service, context.model_name, context.chat_template};
  if (path == "/v1/models")
    return reply_json(conn, label, 200,
                      {{"object", "list"}, {"data", json::array({model_card(api_context, service.random())})}});
  if (model_id) {
    const std::string id = path.substr(11);
    if (id != context.model_name)
      return reply_error(conn, label, 404,
                         "The model `" + id + "` does not exist. This server serves `" + context.model_name + "`.",
                         "model_not_found");
    return reply_json(conn, label, 200, model_card(api_context, service.random()));
  }
  if (path == "/tokenize" || path == "/detokenize") {
    // Tokenizing is CPU work: on the work pool, the answer back on the connection's strand.
    return net::post(work, [this, conn, label, body = std::move(req.body()), tokenize = path == "/tokenize"] {
      int status = 200;
      json answer;
      try {
        const ApiContext ctx{service, context.model_name, context.chat_template};
        const json parsed = parse_json<json>(body, "the request body");
        answer = tokenize ? tokenize_response(parsed, ctx) : detokenize_response(parsed, ctx);
      } catch (...) {
        const ErrorReply e = error_reply(std::current_exception());
        status = e.status;
        answer = e.body;
      }
      net::post(conn->executor(), [this, conn, label, status, answer] { reply_json(conn, label, status, answer); });
    });
  }
  Generation::start(context, conn, path == "/v1/chat/completions", std::move(req.body()));
}

void HttpServer::Impl::accept() {
  acceptor.async_accept(net::make_strand(io), [this](boost::beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (acceptor.is_open()) accept();
      return;
    }
    if (open >= options.max_connections) {
      refuse(std::move(socket));
    } else {
      // Each SSE event goes out when written (Nagle's algorithm held small writes back up to
      // 40 ms behind the client's delayed ACK).
      boost::beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      ++open;
      std::shared_ptr<void> slot(nullptr, [this](void*) { --open; });
      std::make_shared<Connection>(std::move(socket), limits, *this, std::move(slot))->start();
    }
    accept();
  });
}

// Over the connection limit: a short 503, written without reading the request, then close.
void HttpServer::Impl::refuse(tcp::socket socket) {
  metrics.count_request("other", 503);
  static const std::string kBusy = [] {
    const std::string body = dump_json(error_body("the server has too many open connections; retry later",
                                                  "server_error", "", "too_many_connections"));
    return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
           "Retry-After: 1\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }();
  auto s = std::make_shared<tcp::socket>(std::move(socket));
  net::async_write(*s, net::buffer(kBusy), [s](boost::beast::error_code, size_t) {
    boost::beast::error_code ignored;
    s->shutdown(tcp::socket::shutdown_both, ignored);
    s->close(ignored);
  });
}

HttpServer::HttpServer(Service& service, ServerOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {}

HttpServer::~HttpServer() {
  shutdown();
  impl_->work.join();
}

void HttpServer::bind() {
  Impl& s = *impl_;
  raise_open_file_limit();
  boost::beast::error_code ec;
  const auto address = net::ip::make_address(s.options.host, ec);
  FP6_CHECK(!ec, kInvalidArgument, "cannot listen on {}: not an IP address", s.options.host);
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(s.options.port));
  s.acceptor.open(endpoint.protocol(), ec);
  // SO_REUSEADDR only (never SO_REUSEPORT): a second server on a port in use fails here.
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(s.options.listen_backlog, ec);
  // The address was fine; the system refused it (in use, not this machine's): exit status 1.
  FP6_CHECK(!ec, kUnavailable, "cannot listen on {}:{}: {}", s.options.host, s.options.port, ec.message());
  s.port = s.acceptor.local_endpoint().port();
}

int HttpServer::port() const {
  return impl_->port;
}

void HttpServer::serve() {
  Impl& s = *impl_;
  auto guard = net::make_work_guard(s.io);
  s.accept();
  std::vector<std::thread> threads;
  for (int i = 1; i < std::max(1, s.options.io_threads); ++i) threads.emplace_back([&] { s.io.run(); });
  s.io.run();
  for (auto& t : threads) t.join();
}

void HttpServer::shutdown() {
  Impl& s = *impl_;
  std::call_once(s.shutdown_once, [&s] {
    s.draining = true;
    auto wait_idle = [&s](double seconds) {
      const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
      while (s.in_flight > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    };
    wait_idle(s.options.shutdown_grace_seconds);
    // What is left is cancelled; the engine delivers that within a step, ending the answers.
    s.active.cancel_all(s.service.runner());
    wait_idle(30.0);
    if (s.in_flight > 0) spdlog::warn("shutting down with {} requests still unanswered", s.in_flight.load());
    net::post(s.io, [&s] {
      boost::beast::error_code ignored;
      s.acceptor.close(ignored);
    });
    s.io.stop();
  });
}

}  // namespace fp6serve::server
