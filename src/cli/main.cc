// The fp6serve command: subcommands for serving, generating, quantizing and benchmarking.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <exception>

#include "fp6serve/error.h"

int main(int argc, char** argv) {
  CLI::App app{"fp6serve: serve large language models with FP6 (FPx) weight-only quantization"};
  app.set_version_flag("--version", std::string("fp6serve ") + FP6SERVE_VERSION);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (app.get_subcommands().empty()) {
      fmt::print("{}", app.help());
      return 0;
    }
  } catch (const fp6serve::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
