// The subcommands of the fp6serve command. Each add_* function declares its options on the
// app and returns the action to run when it was chosen. Flags bind straight to the fields of
// Options and GenerateOptions (include/fp6serve/options.h), so their defaults are those.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "fp6serve/options.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve::cli {

using Action = std::function<int()>;

// For integer flags: CLI11 2.1 reads integers in base 0 ("010" is 8, "0x10" 16) and a value
// past 64 bits silently becomes the largest one; these take decimal digits (no leading zero)
// that fit, else the flag's error says which. kNonNegativeInteger: 0 to 2^64 - 1 (a seed).
extern const CLI::Validator kDecimalInteger;
extern const CLI::Validator kNonNegativeInteger;

// "1,2,3" -> {1, 2, 3}; an empty list or an item that is not an integer in [min, max] is a
// kInvalidArgument error naming `option` and the item.
std::vector<int64_t> parse_int_list(const std::string& text, const char* option, int64_t min, int64_t max);

// The flags of Options every command that loads a model has (and, with `engine`, the
// engine's and the KV cache's). Apply kv_cache_gib with finish_model_options.
struct ModelFlags {
  double kv_cache_gib = 0;
};
void add_model_options(CLI::App* cmd, Options& options, ModelFlags& flags, bool engine);
void finish_model_options(Options& options, const ModelFlags& flags);
// The chat template of chat, generate --chat and serve --chat-template: the file's when one
// is given (a syntax error names the file), else `model_source` (the model's own); neither is
// an Error(kInvalidArgument) naming model_dir.
ChatTemplate load_chat_template(const std::string& file, const std::string& model_source, const std::string& model_dir);
// A conversation rendered for generation, with the tokenizer's BOS/EOS strings as
// transformers passes them; encode the result without special tokens (the template writes
// BOS itself when the model wants one).
std::string render_chat(const ChatTemplate& t, const Tokenizer& tok, const std::vector<ChatMessage>& messages);

// The flags of GenerateOptions.
void add_generate_options(CLI::App* cmd, GenerateOptions& options);

Action add_generate(CLI::App& app);
Action add_serve(CLI::App& app);
Action add_quantize(CLI::App& app);
Action add_bench(CLI::App& app);
Action add_perplexity(CLI::App& app);
Action add_chat(CLI::App& app);

}  // namespace fp6serve::cli
