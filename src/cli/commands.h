// The subcommands of the fp6serve command. Each add_* function declares its options on the
// app and returns the action to run when it was chosen.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fp6serve::cli {

using Action = std::function<int()>;

// "1,2,3" -> {1, 2, 3}; an empty list or an item that is not an integer in [min, max] is a
// kInvalidArgument error naming `option` and the item.
std::vector<int64_t> parse_int_list(const std::string& text, const char* option, int64_t min, int64_t max);

Action add_generate(CLI::App& app);
Action add_serve(CLI::App& app);
Action add_quantize(CLI::App& app);
Action add_bench(CLI::App& app);

}  // namespace fp6serve::cli
