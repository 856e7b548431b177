// fp6serve chat: an interactive conversation in the terminal (llama-cli -cnv): each line is a
// user turn, the model's chat template renders the conversation, the answer streams, and its
// speed follows on stderr. /reset forgets the conversation, /exit (or end of input) quits.
// When the conversation outgrows the context, its oldest turns are dropped.
#include <fmt/core.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"
#include "fp6serve/pipeline.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve::cli {

Action add_chat(CLI::App& app) {
  struct Args {
    std::string model, system, chat_template_file;
    Options options;
    ModelFlags flags;
    GenerateOptions generate;
  };
  auto a = std::make_shared<Args>();
  a->generate.max_new_tokens = 512;
  CLI::App* cmd = app.add_subcommand("chat", "Chat with a model in the terminal (its chat template applied)");
  cmd->add_option("--model", a->model, "Model directory (Hugging Face checkpoint or fp6serve quantize output)")
      ->required();
  cmd->add_option("--system", a->system, "A system message that starts the conversation");
  cmd->add_option("--chat-template", a->chat_template_file, "A Jinja chat template file to use instead of the model's");
  add_generate_options(cmd, a->generate);
  add_model_options(cmd, a->options, a->flags, true);
  return [a] {
    finish_model_options(a->options, a->flags);
    a->generate.validate();
    const Tokenizer tok = Tokenizer::load(a->model);
    const ChatTemplate chat_template = load_chat_template(a->chat_template_file, tok.chat_template(), a->model);
    Pipeline pipe(a->model, a->options);
    const bool tty = isatty(STDIN_FILENO);
    fmt::print(stderr, "{}\n/reset forgets the conversation, /exit quits.\n", pipe.describe());
    std::vector<ChatMessage> history;
    if (!a->system.empty()) history.push_back({"system", a->system});
    const size_t kept = history.size();  // the system message survives /reset and trimming
    for (std::string line;;) {
      if (tty) fmt::print(stderr, "> ");
      if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
      if (line == "/reset") {
        history.resize(kept);
        fmt::print(stderr, "(conversation reset)\n");
        continue;
      }
      if (line.empty()) continue;
      history.push_back({"user", line});
      const auto start = std::chrono::steady_clock::now();
      Response r;
      for (;;) {
        const std::string text = render_chat(chat_template, tok, history);
        try {
          r = pipe.generate(pipe.encode(text, false), a->generate, [](std::string_view piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
          });
          break;
        } catch (const Error& e) {
          // Too long for the context: drop the oldest exchange, or give up on a single turn.
          if (e.kind() != ErrorKind::kInvalidArgument || history.size() <= kept + 1) throw;
          history.erase(history.begin() + static_cast<std::ptrdiff_t>(kept),
                        history.begin() + static_cast<std::ptrdiff_t>(std::min(history.size() - 1, kept + 2)));
        }
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fputc('\n', stdout);
      std::fflush(stdout);
      fmt::print(stderr, "[{} tokens in {:.2f} s, {:.1f} tokens/s, {}]\n", r.generated_tokens, s,
                 s > 0 ? static_cast<double>(r.generated_tokens) / s : 0.0, r.finish_reason);
      history.push_back({"assistant", r.generated_text});
    }
    return 0;
  };
}

}  // namespace fp6serve::cli
