// The subcommands of the fp6serve command. Each add_* function declares its options on the
// app and returns the action to run when it was chosen.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace fp6serve::cli {

using Action = std::function<int()>;

Action add_generate(CLI::App& app);
Action add_serve(CLI::App& app);
Action add_quantize(CLI::App& app);
Action add_bench(CLI::App& app);

}  // namespace fp6serve::cli
