// The fp6serve command: subcommands for generating, serving, quantizing and benchmarking.
#include <fmt/core.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <exception>
#include <memory>
#include <vector>

#include "cli/commands.h"
#include "fp6serve/error.h"

int main(int argc, char** argv) {
  // Log lines (warnings, serve's access log) go to stderr: stdout is the command's output
  // (generate's text or JSON, serve's start-up line).
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
  CLI::App app{"fp6serve: serve large language models with FP6 (FPx) weight-only quantization"};
  app.set_version_flag("--version", std::string("fp6serve ") + FP6SERVE_VERSION);
  app.require_subcommand(0, 1);
  std::vector<std::pair<CLI::App*, fp6serve::cli::Action>> commands;
  for (auto add : {fp6serve::cli::add_generate, fp6serve::cli::add_serve, fp6serve::cli::add_quantize,
                   fp6serve::cli::add_bench, fp6serve::cli::add_perplexity, fp6serve::cli::add_chat}) {
    const size_t before = app.get_subcommands({}).size();
    auto action = add(app);
    commands.emplace_back(app.get_subcommands({})[before], std::move(action));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every mistake on the command line exits 2 (docs/options.md).
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (auto& [sub, action] : commands)
      if (sub->parsed()) return action();
    fmt::print("{}", app.help());
    return 0;
  } catch (const fp6serve::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return e.kind() == fp6serve::ErrorKind::kInvalidArgument ? 2 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
