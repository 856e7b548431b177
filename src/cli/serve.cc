// fp6serve serve: the OpenAI-compatible HTTP server.
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "cli/commands.h"
#include "core/check.h"
#include "core/file.h"
#include "engine/service.h"
#include "model/config.h"
#include "server/http_server.h"

namespace fp6serve::cli {

Action add_serve(CLI::App& app) {
  struct Args {
    std::string model, random_weights;
    Options options;
    ModelFlags flags;
    server::ServerOptions server;
    double max_body_mib = 8;
    std::string chat_template_file, log_level = "info";
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model with an OpenAI-compatible HTTP API");
  auto* model =
      cmd->add_option("--model", a->model, "Model directory (Hugging Face checkpoint or fp6serve quantize output)");
  auto* random = cmd->add_option("--random-weights", a->random_weights,
                                 "Serve random weights of a shape instead (" +
                                     fmt::format("{}", fmt::join(model::ModelConfig::shape_names(), ", ")) +
                                     ", or a config.json) with a synthetic tokenizer: for benchmarks");
  model->excludes(random);
  add_model_options(cmd, a->options, a->flags, true);
  server::ServerOptions& so = a->server;
  cmd->add_option("--host", so.host, "Address to bind (127.0.0.1: this machine only)")->capture_default_str();
  cmd->add_option("--port", so.port, "Port (0: any free port, printed at start)")
      ->check(kDecimalInteger)
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--api-key", so.api_key, "Require 'Authorization: Bearer KEY' (default: $FP6SERVE_API_KEY)");
  cmd->add_option("--served-model-name", so.model_name, "Model name in the API (default: the model directory's name)");
  cmd->add_option("--chat-template", a->chat_template_file,
                  "A Jinja chat template file to use instead of the model's (tokenizer_config.json)");
  cmd->add_option("--log-level", a->log_level, "debug, info, warn or error")->capture_default_str();
  cmd->add_flag("--log-requests", a->server.log_requests, "Log a line per answered request (info level)");
  cmd->add_option("--allowed-origins", a->server.allowed_origins,
                  "Browser origins allowed to call the API (CORS), e.g. http://localhost:3000, or '*'")
      ->delimiter(',');
  cmd->add_option("--max-body-mib", a->max_body_mib, "Largest request body in MiB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-connections", so.max_connections, "Open connections at most; more are answered 503")
      ->check(kDecimalInteger)
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--request-timeout", so.request_timeout_seconds,
                  "Seconds a whole request may take to arrive (idle keep-alive time included)")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  cmd->add_option("--shutdown-grace", so.shutdown_grace_seconds,
                  "Seconds in-flight requests may finish after SIGINT/SIGTERM")
      ->capture_default_str();
  return [a]() -> int {
    // Signals go to a watcher thread only (every later thread inherits the blocked mask), so
    // SIGINT/SIGTERM start a graceful shutdown instead of killing the process.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    server::ServerOptions& so = a->server;
    const spdlog::level::level_enum level = spdlog::level::from_str(a->log_level);
    FP6_CHECK(spdlog::level::to_string_view(level) == a->log_level || (a->log_level == "warn"), kInvalidArgument,
              "--log-level '{}' is not one of debug, info, warn, error", a->log_level);
    spdlog::set_level(level);
    if (!a->chat_template_file.empty())  // parsed now, so that a bad file stops serve before it listens
      so.chat_template = load_chat_template(a->chat_template_file, "", a->model).source();
    if (so.api_key.empty())
      if (const char* k = std::getenv("FP6SERVE_API_KEY")) so.api_key = k;
    FP6_CHECK(!a->model.empty() || !a->random_weights.empty(), kInvalidArgument,
              "give --model DIR, or --random-weights SHAPE for a benchmark");
    finish_model_options(a->options, a->flags);
    std::unique_ptr<Service> owned = a->model.empty() ? Service::random_weights(a->random_weights, a->options)
                                                      : std::make_unique<Service>(a->model, a->options);
    Service& service = *owned;
    if (so.model_name.empty() && service.random()) {
      so.model_name = std::filesystem::path(a->random_weights).stem().string() + "-random-weights";
    } else if (so.model_name.empty()) {
      const std::filesystem::path dir = std::filesystem::path(a->model).lexically_normal();
      so.model_name = dir.filename().empty() ? dir.parent_path().filename().string() : dir.filename().string();
    }
    so.max_body_bytes = static_cast<size_t>(a->max_body_mib * (1 << 20));
    server::HttpServer http(service, so);
    http.bind();
    fmt::print("fp6serve: serving '{}' on http://{}:{} ({})\n", so.model_name, so.host, http.port(),
               service.describe());
    std::fflush(stdout);
    std::thread watcher([&] {
      int sig = 0;
      sigwait(&signals, &sig);
      fmt::print(stderr, "fp6serve: {} received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
      http.shutdown();
    });
    http.serve();
    // serve() also returns when listening fails: wake the watcher so it can exit.
    pthread_kill(watcher.native_handle(), SIGTERM);
    watcher.join();
    return 0;
  };
}

}  // namespace fp6serve::cli
