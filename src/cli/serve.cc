// fp6serve serve: the OpenAI-compatible HTTP server.
#include <fmt/core.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <filesystem>
#include <cstdlib>
#include <thread>

#include "cli/commands.h"
#include "core/check.h"
#include "engine/service.h"
#ifdef FP6SERVE_WITH_SERVER
#include "server/http_server.h"
#endif

namespace fp6serve::cli {

Action add_serve(CLI::App& app) {
  struct Options {
    std::string model, host = "127.0.0.1", api_key, name, mode = "wf6af16", device = "auto";
    int port = 8000;
    int64_t max_batch_tokens = 768, max_model_len = 0;
    double kv_cache_gib = 0, max_body_mib = 8, grace = 10;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model with an OpenAI-compatible HTTP API");
  cmd->add_option("--model", o->model, "Model directory (Hugging Face checkpoint or fp6serve quantize output)")->required();
  cmd->add_option("--host", o->host, "Address to bind (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", o->port, "Port (0: any free port, printed at start)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' (default: $FP6SERVE_API_KEY)");
  cmd->add_option("--served-model-name", o->name, "Model name in the API (default: the model directory's name)");
  cmd->add_option("--quantization-mode", o->mode, "wf6af16 (default), wf5af16, wf4af16, eXmY, or fp16, bf16, fp32");
  cmd->add_option("--device", o->device, "auto, cpu or cuda");
  cmd->add_option("--max-batch-tokens", o->max_batch_tokens, "Tokens per forward pass (SplitFuse budget)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-model-len", o->max_model_len, "Context length limit (default: the model's)");
  cmd->add_option("--kv-cache-gib", o->kv_cache_gib, "KV cache size in GiB (default: backend's)");
  cmd->add_option("--max-body-mib", o->max_body_mib, "Largest request body in MiB")->check(CLI::PositiveNumber);
  cmd->add_option("--shutdown-grace", o->grace, "Seconds in-flight requests may finish after SIGINT/SIGTERM");
  return [o]() -> int {
#ifndef FP6SERVE_WITH_SERVER
    FP6_THROW(kUnsupported, "this fp6serve was built without cpp-httplib, so it has no HTTP server "
                            "(install libcpp-httplib-dev and rebuild)");
#else
    // Signals go to a watcher thread only (every later thread inherits the blocked mask), so
    // SIGINT/SIGTERM start a graceful shutdown instead of killing the process.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    if (o->api_key.empty())
      if (const char* k = std::getenv("FP6SERVE_API_KEY")) o->api_key = k;
    PipelineOptions po;
    po.quantization_mode = o->mode;
    po.device = o->device;
    po.max_batch_tokens = o->max_batch_tokens;
    po.max_model_len = o->max_model_len;
    po.kv_cache_bytes = static_cast<size_t>(o->kv_cache_gib * (1ull << 30));
    Service service(o->model, po);
    server::ServerOptions so;
    so.host = o->host;
    so.port = o->port;
    so.api_key = o->api_key;
    so.model_name = o->name.empty() ? std::filesystem::path(o->model).lexically_normal().filename().string() : o->name;
    if (so.model_name.empty()) so.model_name = std::filesystem::path(o->model).lexically_normal().parent_path().filename().string();
    so.max_body_bytes = static_cast<size_t>(o->max_body_mib * (1 << 20));
    so.shutdown_grace_seconds = o->grace;
    server::HttpServer http(service, so);
    http.bind();
    fmt::print("fp6serve: serving '{}' on http://{}:{} ({})\n", so.model_name, so.host, http.port(), service.describe());
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
#endif
  };
}

}  // namespace fp6serve::cli
